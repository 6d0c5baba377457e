//! Stage `report`: the run dir and its results.yaml, and the comparison of
//! the normalised results with the committed insta snapshot (junit.xml is
//! junit.rs', the table print.rs').
//! serde_yaml stays in this module (it is archived upstream).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::console::Splat;
use crate::ktap::{Report, Status};

#[derive(Serialize)]
pub struct RunInfo {
    pub kernel: String,
    pub series: String,
    pub configs: Vec<String>,
    pub config_hash: String,
    pub cpus: u32,
    pub memory: String,
    pub accel: String,
    pub ending: String,
    pub wall_s: f64,
    pub boot_to_first_ktap_s: Option<f64>,
}

#[derive(Serialize)]
pub struct ResultsFile<'a> {
    pub run: &'a RunInfo,
    pub passed: bool,
    pub verdict: &'a str,
    pub counts: crate::ktap::Counts,
    pub problems: &'a [crate::verdict::Problem],
    pub tests: &'a [crate::ktap::TestResult],
    pub splats: &'a [Splat],
}

/// A fresh `runs/<time>-<series>` dir, with `runs/latest` pointing at it.
pub fn new_run_dir(work: &Path, series: &str) -> Result<PathBuf> {
    new_stamped_dir(&work.join("runs"), series)
}

/// `<parent>/<UTC time>-<name>`, made unique, with `<parent>/latest` pointing at it.
pub fn new_stamped_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let stamp = duct::cmd!("date", "-u", "+%Y%m%d-%H%M%S")
        .read()
        .context("reading the date")?;
    let mut dir = parent.join(format!("{stamp}-{name}"));
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = parent.join(format!("{stamp}-{name}-{n}"));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let latest = parent.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(dir.file_name().unwrap(), &latest);
    Ok(dir)
}

pub fn write_yaml(dir: &Path, results: &ResultsFile) -> Result<()> {
    let text = serde_yaml::to_string(results).context("serialising results.yaml")?;
    let path = dir.join("results.yaml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Names and statuses only: what the committed snapshot pins down.
pub fn normalized(report: &Report) -> String {
    let mut s = String::new();
    for t in &report.tests {
        s.push_str(&format!("{}: {}\n", t.name, status_name(t.status)));
    }
    for p in &report.problems {
        s.push_str(&format!("problem: {p}\n"));
    }
    s
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Passed => "PASSED",
        Status::Failed => "FAILED",
        Status::Skipped => "SKIPPED",
        Status::Crashed => "CRASHED",
        Status::NotRun => "NOT_RUN",
    }
}

/// Compares with `bpf-selftests/snapshots/results@<series>.snap`. With
/// `accept` the snapshot is rewritten; otherwise a mismatch prints insta's
/// diff and leaves a `.snap.new` for `cargo insta review` (outside CI).
pub fn compare_snapshot(repo: &Path, series: &str, content: &str, accept: bool) -> Result<bool> {
    let dir = repo.join("bpf-selftests/snapshots");
    std::fs::create_dir_all(&dir)?;
    std::env::set_var("INSTA_WORKSPACE_ROOT", repo);
    std::env::set_var("INSTA_UPDATE", if accept { "always" } else { "auto" });
    std::env::remove_var("INSTA_FORCE_PASS");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = format!("results@{series}");
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name.clone(), content));
    }));
    std::panic::set_hook(hook);
    Ok(outcome.is_ok())
}
