//! Stage `report`: the run dir and its results.yaml (junit.xml is junit.rs',
//! the snapshot snapshot.rs', the table print.rs').
//! serde_yaml stays in this module (it is archived upstream).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::judge::console::Splat;

#[derive(Serialize)]
pub struct RunInfo {
    pub kernel: String,
    pub series: String,
    pub configs: Vec<String>,
    pub config_hash: String,
    pub cpus: u32,
    pub memory: String,
    pub accel: String,
    /// `quick` or `full`: the stress tests' durations (selftests runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `test --fail-fast`: the guest stopped at the first failing test.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_fast: bool,
    pub ending: String,
    pub wall_s: f64,
    pub boot_to_first_ktap_s: Option<f64>,
    /// Seconds per stage of this run, in order: a stage that was up to date
    /// is 0, `boot` is QEMU's lifetime, `boot_first_ktap` its first KTAP
    /// line. Stages skipped without a word are absent.
    #[serde(serialize_with = "ordered_map")]
    pub stages_s: Vec<(String, f64)>,
}

fn ordered_map<S: serde::Serializer>(pairs: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

/// What a run's results.yaml says about the run itself, for the bench.
#[derive(Debug, PartialEq)]
pub struct RunSummary {
    /// `run.ending`, e.g. `guest shut down cleanly`.
    pub ending: String,
    /// `run.stages_s`, in the file's order.
    pub stages_s: Vec<(String, f64)>,
}

/// Reads `run.ending` and `run.stages_s` from a results.yaml.
pub fn read_run_summary(path: &Path) -> Result<RunSummary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let run = &doc["run"];
    let ending = run["ending"]
        .as_str()
        .with_context(|| format!("{} has no run.ending", path.display()))?
        .to_string();
    let stages = run["stages_s"]
        .as_mapping()
        .with_context(|| format!("{} has no run.stages_s", path.display()))?;
    let stages_s = stages
        .iter()
        .map(|(k, v)| {
            let k = k.as_str().context("a stage name that is not a string")?;
            let v = v
                .as_f64()
                .with_context(|| format!("stage {k}: not a number of seconds"))?;
            Ok((k.to_string(), v))
        })
        .collect::<Result<_>>()
        .with_context(|| format!("run.stages_s in {}", path.display()))?;
    Ok(RunSummary { ending, stages_s })
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

#[cfg(test)]
impl RunInfo {
    /// A run as the tests need one: 4 vCPUs under TCG, a clean shutdown.
    pub fn sample() -> RunInfo {
        RunInfo {
            kernel: "6.1.0".into(),
            series: "global-ma".into(),
            configs: vec!["base".into()],
            config_hash: "0123456789abcdef".into(),
            cpus: 4,
            memory: "1G".into(),
            accel: "tcg".into(),
            profile: Some("full".into()),
            fail_fast: false,
            ending: crate::vm::CLEAN_SHUTDOWN.into(),
            wall_s: 80.0,
            boot_to_first_ktap_s: Some(3.1),
            stages_s: vec![
                ("build".into(), 69.0),
                ("image".into(), 0.9),
                ("boot".into(), 7.0),
                ("boot_first_ktap".into(), 3.1),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::ktap;

    /// What the bench reads back is what a run wrote, stage order kept.
    #[test]
    fn the_run_summary_reads_back_what_write_yaml_wrote() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let info = RunInfo::sample();
        let report = ktap::parse("KTAP version 1\n1..1\nok 1 a\n");
        write_yaml(
            &dir,
            &ResultsFile {
                run: &info,
                passed: true,
                verdict: "PASS",
                counts: report.counts(),
                problems: &[],
                tests: &report.tests,
                splats: &[],
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join("results.yaml")).unwrap();
        assert!(
            text.contains("  boot_to_first_ktap_s: 3.1\n  stages_s:\n    build: 69.0\n"),
            "{text}"
        );
        // The profile is said; fail_fast only when it was asked for.
        assert!(
            text.contains("  accel: tcg\n  profile: full\n  ending: "),
            "{text}"
        );
        let run = read_run_summary(&dir.join("results.yaml")).unwrap();
        assert_eq!(
            run,
            RunSummary {
                ending: "guest shut down cleanly".into(),
                stages_s: info.stages_s.clone(),
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stage_times_are_recorded_in_order_and_taken_once() {
        use crate::sys::progress;
        let _ = progress::take_times();
        progress::record("build", 1.5);
        progress::record("image", 0.5);
        progress::record("build", 1.0);
        assert_eq!(
            progress::take_times(),
            [("build".to_string(), 2.5), ("image".to_string(), 0.5)]
        );
        assert!(progress::take_times().is_empty());
    }
}
