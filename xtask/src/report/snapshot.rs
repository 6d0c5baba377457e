//! The committed snapshot of a series' results,
//! `bpf-selftests/snapshots/results@<series>.snap`: names and statuses only.
//! The file keeps insta's format (a `---` metadata header, then the text), so
//! a pending `.snap.new` can still be reviewed with `cargo insta review`;
//! `cargo xtask test --accept` writes the snapshot directly.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::judge::ktap::Report;

/// Names and statuses only: what the committed snapshot pins down.
pub fn normalized(report: &Report) -> String {
    let mut s = String::new();
    for t in &report.tests {
        s.push_str(&format!("{}: {}\n", t.name, t.status.name()));
    }
    for p in &report.problems {
        s.push_str(&format!("problem: {p}\n"));
    }
    s
}

pub fn path(repo: &Path, series: &str) -> PathBuf {
    repo.join(format!("bpf-selftests/snapshots/results@{series}.snap"))
}

/// The text of a snapshot file, without insta's metadata header.
fn body(file: &str) -> &str {
    file.strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map_or(file, |(_, body)| body)
}

/// A snapshot file: insta's header, then `content`.
fn file_text(content: &str) -> String {
    format!("---\nsource: {}\n---\n{content}", file!())
}

/// What [`compare`] concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Compared {
    Same,
    /// `accept` was given: the snapshot now holds the new results.
    Updated,
    /// The unified diff, snapshot first.
    Differs {
        diff: String,
    },
}

/// Compares `content` with the snapshot at `snap` (trailing line breaks
/// aside, as insta does); with `accept` a difference is written into it.
pub fn compare(snap: &Path, content: &str, accept: bool) -> Result<Compared> {
    let old = match std::fs::read_to_string(snap) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", snap.display())),
    };
    let old_body = old.as_deref().map(body).unwrap_or("");
    if old.is_some() && old_body.trim_end_matches('\n') == content.trim_end_matches('\n') {
        return Ok(Compared::Same);
    }
    if accept {
        write(snap, content)?;
        return Ok(Compared::Updated);
    }
    let diff = similar::TextDiff::from_lines(old_body, content)
        .unified_diff()
        .context_radius(3)
        .header("snapshot", "this run")
        .to_string();
    Ok(Compared::Differs { diff })
}

fn write(path: &Path, content: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, file_text(content)).with_context(|| format!("writing {}", path.display()))
}

/// insta's test for CI, where no `.snap.new` is left behind.
fn in_ci() -> bool {
    match std::env::var("CI").ok().as_deref() {
        Some("false" | "0" | "") => false,
        Some(_) => true,
        None => std::env::var_os("TF_BUILD").is_some(),
    }
}

/// Compares the results with the series' snapshot and says what it found on
/// stderr: the diff on a difference, and (outside CI) a `.snap.new` next to
/// the snapshot for `cargo insta review`. True when they match, or when
/// `accept` wrote them into the snapshot.
pub fn check(repo: &Path, series: &str, content: &str, accept: bool) -> Result<bool> {
    let snap = path(repo, series);
    let pending = snap.with_extension("snap.new");
    let rel = snap
        .strip_prefix(repo)
        .unwrap_or(&snap)
        .display()
        .to_string();
    match compare(&snap, content, accept)? {
        Compared::Same => {
            let _ = std::fs::remove_file(&pending);
            Ok(true)
        }
        Compared::Updated => {
            let _ = std::fs::remove_file(&pending);
            eprintln!("[report] updated snapshot {rel}");
            Ok(true)
        }
        Compared::Differs { diff } => {
            eprintln!("[report] the results differ from the snapshot {rel}:\n{diff}");
            if !in_ci() {
                write(&pending, content)?;
                eprintln!(
                    "[report] stored the new results in {}: `cargo xtask test --accept` or \
                     `cargo insta review` to update the snapshot",
                    pending.strip_prefix(repo).unwrap_or(&pending).display()
                );
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-snapshot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_committed_snapshot_reads_as_its_text() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let snap = path(&repo, "global-ma");
        let text = std::fs::read_to_string(&snap).unwrap();
        let b = body(&text);
        assert!(b.starts_with("cpus_online: PASSED\n"), "{b}");
        assert!(!b.contains("---"));
        // What the snapshot holds compares equal to itself, so the committed
        // file is left as it is.
        assert_eq!(compare(&snap, b, false).unwrap(), Compared::Same);
        assert_eq!(compare(&snap, b.trim_end(), true).unwrap(), Compared::Same);
    }

    #[test]
    fn a_difference_is_a_unified_diff_and_accept_writes_it() {
        let d = temp_dir("diff");
        let snap = d.join("results@s.snap");
        std::fs::write(
            &snap,
            "---\nsource: xtask/src/results.rs\n---\na: PASSED\nb: PASSED\n",
        )
        .unwrap();
        let new = "a: PASSED\nb: FAILED\n";
        let Compared::Differs { diff } = compare(&snap, new, false).unwrap() else {
            panic!("no difference found");
        };
        assert!(diff.contains("--- snapshot\n+++ this run\n"), "{diff}");
        assert!(diff.contains("\n-b: PASSED\n+b: FAILED\n"), "{diff}");
        assert_eq!(compare(&snap, new, true).unwrap(), Compared::Updated);
        let written = std::fs::read_to_string(&snap).unwrap();
        assert!(written.starts_with("---\nsource: "), "{written}");
        assert_eq!(body(&written), new);
        assert_eq!(compare(&snap, new, false).unwrap(), Compared::Same);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_snapshot_differs_unless_accepted() {
        let d = temp_dir("missing");
        let snap = d.join("snapshots/results@new.snap");
        assert!(matches!(
            compare(&snap, "a: PASSED\n", false).unwrap(),
            Compared::Differs { .. }
        ));
        assert!(!snap.exists());
        assert_eq!(
            compare(&snap, "a: PASSED\n", true).unwrap(),
            Compared::Updated
        );
        assert_eq!(
            body(&std::fs::read_to_string(&snap).unwrap()),
            "a: PASSED\n"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
