//! The unpatched baseline as a tree of its own: `<tree>-baseline`, a
//! detached worktree of the managed tree at `rig-baseline`, so that it is
//! built in a build dir of its own and neither kernel's build is ever
//! rebuilt for the other (and the managed tree, with its series branch and
//! whatever is being edited there, is never checked out elsewhere). Used by
//! `test --suite kernel --baseline` and `bench alloc` (Pipeline::baseline).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::tree::BASELINE_TAG;

/// `<managed>-baseline` next to the managed tree, created once and checked
/// to be clean and at `rig-baseline`.
pub fn worktree(managed: &Path) -> Result<PathBuf> {
    let name = managed
        .file_name()
        .context("the managed tree has no name")?
        .to_string_lossy()
        .into_owned();
    let wt = managed.with_file_name(format!("{name}-baseline"));
    let git = |dir: &Path, args: &[&str]| -> Result<String> {
        duct::cmd("git", args)
            .dir(dir)
            .stderr_to_stdout()
            .read()
            .with_context(|| format!("git {} in {}", args.join(" "), dir.display()))
    };
    let want = git(
        managed,
        &["rev-parse", &format!("{BASELINE_TAG}^{{commit}}")],
    )?;
    if !wt.join(".git").exists() {
        eprintln!("[baseline] worktree {} (once)", wt.display());
        git(
            managed,
            &[
                "worktree",
                "add",
                "--detach",
                &wt.display().to_string(),
                BASELINE_TAG,
            ],
        )?;
    }
    let head = git(&wt, &["rev-parse", "HEAD"])?;
    let dirty = git(&wt, &["status", "--porcelain", "--untracked-files=no"])?;
    if !dirty.trim().is_empty() {
        bail!(
            "the baseline worktree {} has changes; it must stay at {BASELINE_TAG}:\n{dirty}\n\
             undo them with `git -C {} checkout -f {BASELINE_TAG}`",
            wt.display(),
            wt.display()
        );
    }
    if head.trim() != want.trim() {
        git(&wt, &["checkout", "--detach", BASELINE_TAG])?;
    }
    Ok(wt)
}
