//! Stage `report`: the run dir and its results.yaml (junit.xml is junit.rs',
//! the snapshot snapshot.rs', the table print.rs').
//! serde_yaml stays in this module (it is archived upstream).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::judge::console::Splat;
use crate::judge::ktap::Status;

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
    pub counts: crate::judge::ktap::Counts,
    pub problems: &'a [crate::judge::verdict::Problem],
    pub tests: &'a [crate::judge::ktap::TestResult],
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

/// `v` as YAML. serde_yaml is used here only (it is archived upstream), so
/// the bench's YAML files come through this too.
pub fn to_yaml<T: Serialize>(v: &T) -> Result<String> {
    serde_yaml::to_string(v).context("serialising YAML")
}

pub fn write_yaml(dir: &Path, results: &ResultsFile) -> Result<()> {
    let text = to_yaml(results).context("serialising results.yaml")?;
    let path = dir.join("results.yaml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
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
