//! Stage `apply`: each patch of `patches/<series>/series` becomes one commit
//! on the branch `rig/<series>`, made from the baseline. An unchanged series
//! on an unchanged branch is not re-applied, so no file's mtime moves.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::stages::hashing::{stamp_matches, write_stamp, Key};
use crate::stages::tree::{Tree, BASELINE_TAG};
use crate::sys::progress::Stage;

pub struct Series {
    pub name: String,
    pub patches: Vec<PathBuf>,
}

/// `--series` is a name under patches/ or a path to a series dir; the
/// branch and reports use the dir's last component.
pub fn series_name(arg: &str) -> String {
    Path::new(arg)
        .file_name()
        .map_or_else(|| arg.to_string(), |n| n.to_string_lossy().into_owned())
}

impl Series {
    /// The series dir `--series` names.
    pub fn dir(repo: &Path, arg: &str) -> Result<PathBuf> {
        if arg.contains('/') {
            std::path::absolute(arg).with_context(|| format!("--series {arg}"))
        } else {
            Ok(repo.join("patches").join(arg))
        }
    }

    pub fn load(repo: &Path, arg: &str) -> Result<Series> {
        let name = series_name(arg);
        let name = name.as_str();
        let dir = Series::dir(repo, arg)?;
        let list = dir.join("series");
        let text = std::fs::read_to_string(&list).with_context(|| {
            format!(
                "series `{name}`: cannot read {} (create it, one patch file name per line)",
                list.display()
            )
        })?;
        let mut patches = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let patch = dir.join(line);
            if !patch.is_file() {
                bail!(
                    "{}:{}: patch `{line}` does not exist in {}",
                    list.display(),
                    n + 1,
                    dir.display()
                );
            }
            patches.push(patch);
        }
        Ok(Series {
            name: name.to_string(),
            patches,
        })
    }

    pub fn key(&self) -> Result<String> {
        let mut key = Key::new("series");
        key.str(&self.name);
        for p in &self.patches {
            key.file(p)?;
        }
        Ok(key.finish())
    }
}

/// Brings the managed tree to `rig/<series>` with the series applied.
pub fn apply(tree: &Tree, series: &Series) -> Result<()> {
    let sh = Shell::new()?;
    let path = &tree.path;
    let branch = format!("rig/{}", series.name);
    let stamp = path
        .join(".git")
        .join(format!("rig-applied-{}", series.name));
    let key = series.key()?;
    let head = cmd!(sh, "git -C {path} symbolic-ref -q HEAD")
        .quiet()
        .ignore_status()
        .read()?;
    let dirty = !cmd!(sh, "git -C {path} status --porcelain --untracked-files=no")
        .quiet()
        .read()?
        .is_empty();
    if head == format!("refs/heads/{branch}") && stamp_matches(&stamp, &key) {
        if dirty {
            eprintln!(
                "[apply] warning: {} has uncommitted changes on {branch}; building them as they are",
                path.display()
            );
        }
        return Ok(());
    }
    // Debian's tree ignores everything at its top level (`/*` in .gitignore),
    // so a stray file is invisible to `git status`; builds are out of tree,
    // so any untracked file here is a leftover that could break `git am`.
    let stray = cmd!(sh, "git -C {path} ls-files --others").quiet().read()?;
    if !stray.is_empty() {
        let first: Vec<&str> = stray.lines().take(5).collect();
        bail!(
            "{} has untracked files ({}); the series cannot be re-applied over them: \
             remove them (git -C {} clean -fdx) or move them away",
            path.display(),
            first.join(", "),
            path.display()
        );
    }
    if dirty {
        bail!(
            "{} has uncommitted changes and the series `{}` changed: commit or stash them \
             (git -C {} stash) before the rig re-applies the series",
            path.display(),
            series.name,
            path.display()
        );
    }
    let stage = Stage::start(
        "apply",
        &format!(
            "series `{}`: {} patch(es) onto {BASELINE_TAG}",
            series.name,
            series.patches.len()
        ),
    );
    let _ = std::fs::remove_file(&stamp);
    cmd!(sh, "git -C {path} checkout -q -B {branch} {BASELINE_TAG}")
        .quiet()
        .run()
        .with_context(|| format!("checking out {BASELINE_TAG} as {branch}"))?;
    for (i, patch) in series.patches.iter().enumerate() {
        let out = duct::cmd!("git", "-C", path, "am", "-q", "--no-3way", patch)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running git am")?;
        if !out.status.success() {
            let log = String::from_utf8_lossy(&out.stdout).into_owned();
            let _ = cmd!(sh, "git -C {path} am --abort").quiet().run();
            // Diagnose against the patches before this one, then reset.
            let why = describe_failure(path, patch, &log);
            let _ = cmd!(sh, "git -C {path} checkout -q -f {BASELINE_TAG}")
                .quiet()
                .run();
            let _ = cmd!(sh, "git -C {path} branch -q -D {branch}")
                .quiet()
                .run();
            bail!(
                "applying {} (patch {} of {}): {}\n(the tree is back at {BASELINE_TAG}, clean)",
                patch.display(),
                i + 1,
                series.patches.len(),
                why
            );
        }
    }
    write_stamp(&stamp, &key)?;
    stage.done(&format!("{branch} ready"));
    Ok(())
}

/// Names the file and hunk that did not apply, from `patch --dry-run`.
fn describe_failure(tree: &Path, patch: &Path, am_log: &str) -> String {
    let dry = duct::cmd!("patch", "-p1", "--dry-run", "--fuzz=0", "-f", "-i", patch)
        .dir(tree)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run();
    let mut lines: Vec<String> = Vec::new();
    if let Ok(out) = dry {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut file = String::new();
        for line in text.lines() {
            if let Some(f) = line.strip_prefix("checking file ") {
                file = f.to_string();
            } else if line.starts_with("Hunk #") && line.contains("FAILED") {
                lines.push(format!("{file}: {line}"));
            } else if line.contains("can't find file") || line.contains("No file to patch") {
                lines.push(line.to_string());
            }
        }
    }
    if lines.is_empty() {
        lines.extend(
            am_log
                .lines()
                .filter(|l| l.starts_with("error:") || l.contains("does not exist"))
                .map(str::to_string),
        );
    }
    if lines.is_empty() {
        am_log.trim().to_string()
    } else {
        lines.join("; ")
    }
}
