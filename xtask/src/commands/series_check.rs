//! `cargo xtask check-series`: ktest.pl's patchcheck for our series. Each
//! patch in order: checkpatch --strict, an incremental build, and with
//! --boot the selftests that exist at that point. One line per patch. At
//! the series head, the kernel's own check that bpftool's lists of map,
//! program and attach types match the UAPI headers
//! (tools/testing/selftests/bpf/test_bpftool_synctypes.py, as BPF CI runs
//! it): a series may add a type in one patch and teach bpftool in a later
//! one, so it is judged on the whole series only.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::commands::checkpatch_exceptions::{self, Exception};
use crate::commands::test::{boot_and_judge, Built};
use crate::flags::CheckSeriesFlags;
use crate::judge::verdict::SnapshotMode;
use crate::pipeline::Pipeline;
use crate::stages::patches::Series;
use crate::sys::progress::fmt_secs;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checkpatch {
    pub errors: usize,
    pub warnings: usize,
    pub checks: usize,
}

/// Reads checkpatch's "total: E errors, W warnings, C checks, N lines checked".
pub fn parse_checkpatch(output: &str) -> Option<Checkpatch> {
    let line = output.lines().find(|l| l.starts_with("total: "))?;
    let num = |word: &str| -> Option<usize> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| w.starts_with(word))?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some(Checkpatch {
        errors: num("error")?,
        warnings: num("warning")?,
        checks: num("check").unwrap_or(0),
    })
}

/// checkpatch --strict on `patch`, with the types in `ignore` left out.
pub fn checkpatch(tree: &Path, patch: &Path, ignore: &[Exception]) -> Result<(Checkpatch, String)> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "scripts/checkpatch.pl".into(),
        "--strict".into(),
        "--no-color".into(),
    ];
    if !ignore.is_empty() {
        let kinds: Vec<&str> = ignore.iter().map(|e| e.kind.as_str()).collect();
        args.push(format!("--ignore={}", kinds.join(",")).into());
    }
    args.push(patch.into());
    let out = duct::cmd("perl", args)
        .dir(tree)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running scripts/checkpatch.pl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let counts = parse_checkpatch(&text).with_context(|| {
        format!(
            "checkpatch printed no totals for {}:\n{text}",
            patch.display()
        )
    })?;
    Ok((counts, text))
}

/// The kernel's bpftool/UAPI consistency check, relative to the tree.
const SYNCTYPES: &str = "tools/testing/selftests/bpf/test_bpftool_synctypes.py";

/// Runs SYNCTYPES in `tree` (as checked out): `None` when the tree has no
/// such script, else whether it passed and what it printed.
pub fn synctypes(tree: &Path) -> Result<Option<(bool, String)>> {
    if !tree.join(SYNCTYPES).is_file() {
        return Ok(None);
    }
    let out = duct::cmd!("python3", SYNCTYPES)
        .dir(tree)
        .stderr_to_stdout()
        .unchecked()
        .run()
        .with_context(|| format!("running python3 {SYNCTYPES} (is python3 installed?)"))?;
    Ok(Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )))
}

/// Puts the managed tree back on the series branch however the check ends.
struct Restore<'a> {
    tree: &'a Path,
    branch: String,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = duct::cmd!("git", "-C", self.tree, "checkout", "-q", &self.branch)
            .stderr_null()
            .run();
    }
}

pub fn run(f: CheckSeriesFlags) -> Result<i32> {
    let common = f.boot_flags.common.clone();
    if common.tree.is_some() {
        bail!("check-series checks a series on the pinned tree; it does not take --tree");
    }
    let mut p = Pipeline::new(common)?;
    let tree = p.applied()?;
    let series = Series::load(&p.ctx.repo, &p.ctx.common.series)?;
    let log = duct::cmd!(
        "git",
        "-C",
        &tree.path,
        "rev-list",
        "--reverse",
        "rig-baseline..HEAD"
    )
    .read()
    .context("listing the series commits")?;
    let commits: Vec<&str> = log.lines().collect();
    let names: Vec<String> = series
        .patches
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let series_dir = series.patches.first().and_then(|p| p.parent());
    let exceptions = match series_dir {
        Some(dir) => checkpatch_exceptions::load(dir, &names)?,
        None => Default::default(),
    };
    if commits.len() != series.patches.len() {
        bail!(
            "branch has {} commits but the series lists {} patches",
            commits.len(),
            series.patches.len()
        );
    }
    let _restore = Restore {
        tree: &tree.path,
        branch: format!("rig/{}", series.name),
    };
    p.as_is = true;
    let mut lines = Vec::new();
    let mut bad = 0;
    for (i, (commit, patch)) in commits.iter().zip(&series.patches).enumerate() {
        let started = Instant::now();
        let name = patch.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!("[check] {}/{} {name}", i + 1, commits.len());
        duct::cmd!("git", "-C", &tree.path, "checkout", "-q", "--detach", commit)
            .run()
            .with_context(|| format!("checking out {commit}"))?;
        let ignore = exceptions.get(&name).map(Vec::as_slice).unwrap_or_default();
        for e in ignore {
            eprintln!(
                "[check] checkpatch: {} ignored for {name}: {}",
                e.kind, e.reason
            );
        }
        let (cp, cp_text) = checkpatch(&tree.path, patch, ignore)?;
        let cp_ok = cp.errors == 0 && cp.warnings == 0;
        if !cp_ok {
            eprintln!("{cp_text}");
        }
        let mut ok = cp_ok;
        let build = match p.built() {
            Ok(built) => Some(built),
            Err(e) => {
                crate::sys::signals::check()?;
                eprintln!("{e:#}");
                ok = false;
                None
            }
        };
        let build_word = if build.is_some() { "ok" } else { "FAILED" };
        let mut tests_word = "-".to_string();
        if let (true, Some((tree_now, config, kernel))) = (f.boot, &build) {
            let image = crate::stages::image::build(&p.ctx, tree_now, kernel, p.progs())?;
            let built = Built {
                config,
                kernel,
                image: &image,
            };
            let s = boot_and_judge(&p, &f.boot_flags, built, SnapshotMode::Off, started)?;
            tests_word = if s.passed_but_skips {
                "passed".into()
            } else {
                "FAILED".into()
            };
            ok &= s.passed_but_skips;
        }
        if !ok {
            bad += 1;
        }
        let line = format!(
            "{:>2}/{} {:<62} checkpatch {}E {}W {}C{} | build {build_word} | tests {tests_word} | {}",
            i + 1,
            commits.len(),
            name,
            cp.errors,
            cp.warnings,
            cp.checks,
            if ignore.is_empty() {
                String::new()
            } else {
                format!(" ({} excepted)", ignore.len())
            },
            fmt_secs(started.elapsed())
        );
        eprintln!("[check] {line}");
        lines.push(line);
    }
    // The last commit is still checked out: the series head.
    let sync_failed = match synctypes(&tree.path)? {
        None => {
            eprintln!("[check] {SYNCTYPES}: not in this tree, not run");
            false
        }
        Some((ok, text)) => {
            if !ok {
                eprintln!("{text}");
            }
            lines.push(format!(
                "series head: {SYNCTYPES} {}",
                if ok { "ok" } else { "FAILED" }
            ));
            !ok
        }
    };
    println!();
    for l in &lines {
        println!("{l}");
    }
    println!(
        "check-series: {} passed, {bad} failed{}",
        commits.len() - bad,
        if sync_failed {
            "; bpftool's type lists do not match the UAPI at the series head"
        } else {
            ""
        }
    );
    Ok(if bad == 0 && !sync_failed { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_checkpatch_totals() {
        let out = "WARNING: added, moved or deleted file(s)\n\ntotal: 0 errors, 1 warnings, 2 checks, 120 lines checked\n";
        assert_eq!(
            parse_checkpatch(out),
            Some(Checkpatch {
                errors: 0,
                warnings: 1,
                checks: 2
            })
        );
        let no_checks = "total: 3 errors, 0 warnings, 10 lines checked\n";
        assert_eq!(
            parse_checkpatch(no_checks),
            Some(Checkpatch {
                errors: 3,
                warnings: 0,
                checks: 0
            })
        );
        assert_eq!(parse_checkpatch("garbage"), None);
    }
}
