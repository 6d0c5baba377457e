//! `cargo xtask mutants`: break one claim of the series at a time in the
//! applied tree, rebuild, boot with the selftests failing fast, and expect a
//! named failure. A mutant that survives is a claim no test checks.
//!
//! The mutants live next to the series in `patches/<series>/mutants.yaml`;
//! each replaces one exact text, found exactly once, in one file the named
//! patch touches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::commands::test::{boot_and_judge, Built, Summary};
use crate::flags::{BootFlags, MutantsFlags};
use crate::judge::verdict::SnapshotMode;
use crate::pipeline::Pipeline;
use crate::stages::image::Image;
use crate::stages::kbuild::Kernel;
use crate::stages::kconfig::Config;
use crate::stages::patches::Series;
use crate::sys::progress::fmt_secs;

pub const FILE: &str = "mutants.yaml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    pub name: String,
    /// The patch whose claim this breaks: its number (`0009`) or file name.
    pub patch: String,
    /// The claim, in one line.
    pub claim: String,
    /// A path in the applied tree.
    pub file: String,
    /// Exact text that must occur exactly once in `file`.
    pub find: String,
    pub replace: String,
    /// Config fragments (`kconfigs/NAME.config`) on top of the run's, for a
    /// claim that only shows in such a kernel (e.g. `preempt`).
    #[serde(default)]
    pub config: Vec<String>,
}

/// A mutant with the series patch it names resolved.
struct Declared {
    mutant: Mutant,
    patch_file: String,
}

impl Declared {
    /// The patch's number, as the table shows it (`0009`).
    fn number(&self) -> &str {
        self.patch_file
            .split('-')
            .next()
            .unwrap_or(&self.patch_file)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The selftests failed: the tests that failed, crashed or skipped, and
    /// the first splat or the guest's ending when those say more.
    Killed {
        by: Vec<String>,
    },
    Survived,
    DidNotApply {
        why: String,
    },
    DidNotBuild {
        why: String,
    },
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Killed { .. } => "killed",
            Outcome::Survived => "SURVIVED",
            Outcome::DidNotApply { .. } => "NOT-APPLIED",
            Outcome::DidNotBuild { .. } => "NOT-BUILT",
        }
    }

    fn detail(&self) -> String {
        match self {
            Outcome::Killed { by } => by.join(", "),
            Outcome::Survived => "every selftest passed".to_string(),
            Outcome::DidNotApply { why } | Outcome::DidNotBuild { why } => why.clone(),
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    name: &'a str,
    patch: &'a str,
    claim: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    config: &'a [String],
    #[serde(flatten)]
    outcome: Outcome,
    seconds: f64,
    run_dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct MutantsFile<'a> {
    series: &'a str,
    /// The unmutated series' run, per config set the mutants asked for
    /// (`default`: the run's own configs).
    baseline_run_dirs: BTreeMap<String, &'a Path>,
    total_seconds: f64,
    killed: usize,
    of: usize,
    /// Set when the run stopped before the last mutant.
    interrupted_during: Option<&'a str>,
    mutants: &'a [Record<'a>],
}

/// Reads and checks `patches/<series>/mutants.yaml`.
fn load(series: &Series, dir: &Path) -> Result<Vec<Declared>> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "series `{}` declares no mutants: cannot read {} (see the README's `cargo xtask mutants`)",
            series.name,
            path.display()
        )
    })?;
    let mutants: Vec<Mutant> =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    resolve(series, mutants).with_context(|| format!("in {}", path.display()))
}

fn resolve(series: &Series, mutants: Vec<Mutant>) -> Result<Vec<Declared>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for m in mutants {
        if m.name.is_empty() || m.name.contains(char::is_whitespace) {
            bail!(
                "mutant name {:?}: give a non-empty name without spaces",
                m.name
            );
        }
        if !seen.insert(m.name.clone()) {
            bail!("mutant `{}` is declared twice", m.name);
        }
        if m.find == m.replace {
            bail!(
                "mutant `{}`: `find` and `replace` are the same text",
                m.name
            );
        }
        if m.find.is_empty() {
            bail!("mutant `{}`: `find` is empty", m.name);
        }
        for c in &m.config {
            crate::stages::kconfig::fragment_path(&crate::context::repo_root(), c)
                .with_context(|| format!("mutant `{}`: config `{c}`", m.name))?;
        }
        let matching: Vec<&PathBuf> = series
            .patches
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&m.patch))
            })
            .collect();
        let patch = match matching.as_slice() {
            [one] => *one,
            [] => bail!(
                "mutant `{}`: no patch of series `{}` starts with `{}`",
                m.name,
                series.name,
                m.patch
            ),
            _ => bail!(
                "mutant `{}`: `{}` names {} patches of series `{}`; give more of the file name",
                m.name,
                m.patch,
                matching.len(),
                series.name
            ),
        };
        let text = std::fs::read_to_string(patch)
            .with_context(|| format!("reading {}", patch.display()))?;
        if !patch_touches(&text, &m.file) {
            bail!(
                "mutant `{}`: {} does not touch {}; a mutant breaks a claim in code its patch changed",
                m.name,
                patch.display(),
                m.file
            );
        }
        out.push(Declared {
            patch_file: patch.file_name().unwrap().to_string_lossy().into_owned(),
            mutant: m,
        });
    }
    Ok(out)
}

fn patch_touches(patch: &str, file: &str) -> bool {
    let target = format!("+++ b/{file}");
    patch.lines().any(|l| l == target)
}

/// Replaces the one occurrence of `find`; `Err` says why the mutant does not apply.
pub fn mutate(text: &str, find: &str, replace: &str) -> std::result::Result<String, String> {
    match text.matches(find).count() {
        1 => Ok(text.replacen(find, replace, 1)),
        0 => Err("its `find` text is not in the file (the series changed?)".to_string()),
        n => Err(format!(
            "its `find` text occurs {n} times in the file; make it unique"
        )),
    }
}

/// Puts a mutated file's original bytes back, also when a build, a boot or
/// an interrupt unwinds through it. The mtime is left new on purpose: make
/// must rebuild the object the mutant compiled.
struct Restore {
    path: PathBuf,
    original: Vec<u8>,
    mutant: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!(
                "error: could not restore {} after mutant `{}`: {e}",
                self.path.display(),
                self.mutant
            );
        }
    }
}

fn tree_dirt(tree: &Path) -> Result<String> {
    let status = duct::cmd!("git", "-C", tree, "status", "--porcelain")
        .read()
        .context("checking the tree is clean")?;
    // Debian's .gitignore hides the top level; untracked files count too.
    let others = duct::cmd!("git", "-C", tree, "ls-files", "--others")
        .read()
        .context("listing untracked files")?;
    Ok(format!("{status}{others}").trim().to_string())
}

pub fn run(f: MutantsFlags) -> Result<i32> {
    let started = Instant::now();
    let series = Series::load(&crate::context::repo_root(), &f.boot.common.series)?;
    let dir = Series::dir(&crate::context::repo_root(), &f.boot.common.series)?;
    let declared = load(&series, &dir)?;
    let selected: Vec<&Declared> = declared
        .iter()
        .filter(|d| {
            f.boot.filter.as_deref().is_none_or(|t| {
                d.mutant.name.contains(t)
                    || d.patch_file.starts_with(t)
                    || d.mutant.file.contains(t)
            })
        })
        .collect();
    let width = selected
        .iter()
        .map(|d| d.mutant.name.len())
        .max()
        .unwrap_or(0);
    if f.list {
        for d in &selected {
            println!(
                "{:<width$} {:<5} {}",
                d.mutant.name,
                d.number(),
                d.mutant.claim
            );
        }
        println!("{} of {} mutants", selected.len(), declared.len());
        return Ok(0);
    }
    if selected.is_empty() {
        bail!(
            "--filter {:?} selects none of the {} mutants (see `cargo xtask mutants --list`)",
            f.boot.filter.as_deref().unwrap_or(""),
            declared.len()
        );
    }
    if f.boot.common.tree.is_some() {
        bail!("mutants work on the managed tree with a series applied; --tree is not supported");
    }
    let p = Pipeline::new(f.boot.common.clone())?;
    let tree = p.applied()?;
    let dirt = tree_dirt(&tree.path)?;
    if !dirt.is_empty() {
        bail!(
            "{} is not clean ({}): mutants are applied to the series as committed; \
             stash or drop your edits first",
            tree.path.display(),
            dirt.lines().next().unwrap_or_default()
        );
    }
    let mut boot = f.boot.clone();
    boot.filter = None;
    // The guest stops at the first failing test.
    boot.append
        .push(rig_contract::cmdline::Word::FailFast.word());

    let out_dir =
        crate::report::results::new_stamped_dir(&p.ctx.work.join("mutants"), &series.name)?;
    // One pipeline per `config:` set, each with the unmutated series as its
    // baseline: it must pass, or every mutant is "killed" for nothing.
    let mut baselines: BTreeMap<Vec<String>, (Pipeline, Summary)> = BTreeMap::new();
    let mut records: Vec<Record> = Vec::new();
    let mut interrupted = None;
    for (i, d) in selected.iter().enumerate() {
        let m = &d.mutant;
        if !baselines.contains_key(&m.config) {
            let cp = p.with_configs(&m.config)?;
            eprintln!(
                "[mutants] baseline: the series unmutated{}",
                config_label(&m.config)
            );
            let base = judge(&cp, &boot, cp.imaged()?, Instant::now())?;
            if !base.passed {
                bail!(
                    "the unmutated series fails{} ({}); run dir {}: fix that before testing mutants",
                    config_label(&m.config),
                    base.verdict,
                    base.run_dir.display()
                );
            }
            baselines.insert(m.config.clone(), (cp, base));
        }
        let (cp, _) = &baselines[&m.config];
        eprintln!(
            "[mutants] {}/{}: {}{} ({}: {})",
            i + 1,
            selected.len(),
            m.name,
            config_label(&m.config),
            d.number(),
            m.claim
        );
        let t0 = Instant::now();
        let result = run_one(cp, &boot, &tree.path, m);
        let dirt = tree_dirt(&tree.path)?;
        if !dirt.is_empty() {
            bail!(
                "the tree is not clean after mutant `{}`: {}",
                m.name,
                dirt.lines().next().unwrap_or_default()
            );
        }
        let (outcome, run_dir) = match result {
            Ok(r) => r,
            Err(e) if crate::sys::signals::interrupted().is_some() => {
                interrupted = Some(m.name.as_str());
                eprintln!(
                    "[mutants] interrupted during mutant `{}` ({e:#}); {} restored and clean",
                    m.name,
                    tree.path.display()
                );
                break;
            }
            Err(e) => return Err(e.context(format!("mutant `{}`", m.name))),
        };
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{:<12} {:>7}  {:<width$} {}  {}",
            outcome.word(),
            fmt_secs(Duration::from_secs_f64(secs)),
            m.name,
            d.number(),
            outcome.detail()
        );
        records.push(Record {
            name: &m.name,
            patch: &d.patch_file,
            claim: &m.claim,
            config: &m.config,
            outcome,
            seconds: secs,
            run_dir,
        });
        // After each mutant, so that an interrupted run keeps what it found.
        write_results(&out_dir, &series.name, &baselines, started, None, &records)?;
    }
    write_results(
        &out_dir,
        &series.name,
        &baselines,
        started,
        interrupted,
        &records,
    )?;
    let killed = killed(&records);
    println!(
        "mutants: {killed} of {} killed ({} selected) in {}; results {}",
        records.len(),
        selected.len(),
        fmt_secs(started.elapsed()),
        out_dir.join(FILE).display()
    );
    if interrupted.is_some() {
        return Ok(130);
    }
    Ok(if killed == records.len() { 0 } else { 1 })
}

/// ` (config: preempt)` for a mutant that needs configs, else nothing.
fn config_label(config: &[String]) -> String {
    if config.is_empty() {
        String::new()
    } else {
        format!(" (config: {})", config.join("+"))
    }
}

fn write_results(
    dir: &Path,
    series: &str,
    baselines: &BTreeMap<Vec<String>, (Pipeline, Summary)>,
    started: Instant,
    interrupted_during: Option<&str>,
    records: &[Record],
) -> Result<()> {
    let file = MutantsFile {
        series,
        baseline_run_dirs: baselines
            .iter()
            .map(|(config, (_, base))| {
                let key = if config.is_empty() {
                    "default".to_string()
                } else {
                    config.join("+")
                };
                (key, base.run_dir.as_path())
            })
            .collect(),
        total_seconds: started.elapsed().as_secs_f64(),
        killed: killed(records),
        of: records.len(),
        interrupted_during,
        mutants: records,
    };
    let path = dir.join(FILE);
    std::fs::write(
        &path,
        serde_yaml::to_string(&file).context("serialising mutants.yaml")?,
    )
    .with_context(|| format!("writing {}", path.display()))
}

fn run_one(
    p: &Pipeline,
    boot: &BootFlags,
    tree: &Path,
    m: &Mutant,
) -> Result<(Outcome, Option<PathBuf>)> {
    let path = tree.join(&m.file);
    let original =
        std::fs::read(&path).with_context(|| format!("reading {} in the tree", m.file))?;
    let text = String::from_utf8_lossy(&original);
    let mutated = match mutate(&text, &m.find, &m.replace) {
        Ok(t) => t,
        Err(why) => return Ok((Outcome::DidNotApply { why }, None)),
    };
    let _restore = Restore {
        path: path.clone(),
        original: original.clone(),
        mutant: m.name.clone(),
    };
    std::fs::write(&path, mutated).with_context(|| format!("writing {}", path.display()))?;
    let started = Instant::now();
    let imaged = match p.imaged() {
        Ok(imaged) => imaged,
        Err(e) if crate::sys::signals::interrupted().is_none() => {
            let why = format!("{e:#}");
            let first = why
                .lines()
                .find(|l| l.contains("error:"))
                .unwrap_or_else(|| why.lines().next().unwrap_or_default());
            return Ok((
                Outcome::DidNotBuild {
                    why: first.trim().to_string(),
                },
                None,
            ));
        }
        Err(e) => return Err(e),
    };
    let s = judge(p, boot, imaged, started)?;
    let outcome = if s.passed {
        Outcome::Survived
    } else {
        Outcome::Killed { by: killers(&s) }
    };
    Ok((outcome, Some(s.run_dir)))
}

/// Boots what `p.imaged()` built. An interrupted boot ends in a failed
/// verdict, which is neither a kill nor a baseline failure: an error.
fn judge(
    p: &Pipeline,
    boot: &BootFlags,
    (config, kernel, image): (Config, Kernel, Image),
    started: Instant,
) -> Result<Summary> {
    let built = Built {
        config: &config,
        kernel: &kernel,
        image: &image,
    };
    let s = boot_and_judge(p, boot, built, SnapshotMode::Off, started)?;
    crate::sys::signals::check()?;
    Ok(s)
}

fn killed(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Killed { .. }))
        .count()
}

/// What the failure was: the tests, then a splat or the guest's ending.
fn killers(s: &Summary) -> Vec<String> {
    let mut by = s.culprits.clone();
    if let Some(splat) = &s.first_splat_title {
        by.push(format!("splat: {splat}"));
    }
    if by.is_empty() {
        by.push(s.verdict.clone());
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutate_needs_exactly_one_match() {
        assert_eq!(mutate("a b c", "b", "x").unwrap(), "a x c");
        assert!(mutate("a b c", "z", "x")
            .unwrap_err()
            .contains("not in the file"));
        assert!(mutate("b b", "b", "x").unwrap_err().contains("2 times"));
    }

    #[test]
    fn touches_only_the_files_of_its_patch() {
        let patch = "--- a/kernel/bpf/memalloc.c\n+++ b/kernel/bpf/memalloc.c\n@@ -1 +1 @@\n";
        assert!(patch_touches(patch, "kernel/bpf/memalloc.c"));
        assert!(!patch_touches(patch, "kernel/bpf/hashtab.c"));
    }

    fn series_with(dir: &Path, patches: &[(&str, &str)]) -> Series {
        for (name, text) in patches {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Series {
            name: "s".into(),
            patches: patches.iter().map(|(n, _)| dir.join(n)).collect(),
        }
    }

    #[test]
    fn declarations_are_checked() {
        let dir = std::env::temp_dir().join(format!("rig-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let series = series_with(
            &dir,
            &[
                ("0001-a.patch", "+++ b/kernel/a.c\n"),
                ("0002-b.patch", "+++ b/kernel/b.c\n"),
            ],
        );
        let m = |name: &str, patch: &str, file: &str| Mutant {
            name: name.into(),
            patch: patch.into(),
            claim: "c".into(),
            file: file.into(),
            find: "x".into(),
            replace: "y".into(),
            config: vec![],
        };
        let ok = resolve(&series, vec![m("one", "0002", "kernel/b.c")]).unwrap();
        assert_eq!(ok[0].patch_file, "0002-b.patch");
        let err = |ms| format!("{:#}", resolve(&series, ms).err().unwrap());
        assert!(err(vec![m("one", "0003", "kernel/b.c")]).contains("no patch"));
        assert!(err(vec![m("one", "000", "kernel/b.c")]).contains("names 2 patches"));
        assert!(err(vec![m("one", "0001", "kernel/b.c")]).contains("does not touch"));
        assert!(err(vec![
            m("a", "0001", "kernel/a.c"),
            m("a", "0001", "kernel/a.c")
        ])
        .contains("twice"));
        assert!(err(vec![m("has space", "0001", "kernel/a.c")]).contains("without spaces"));
        let mut unknown = m("one", "0001", "kernel/a.c");
        unknown.config = vec!["no-such-fragment".into()];
        assert!(err(vec![unknown]).contains("no kconfigs/no-such-fragment.config"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_series_mutants_are_well_formed() {
        let repo = crate::context::repo_root();
        let series = Series::load(&repo, "global-ma").unwrap();
        let declared = load(&series, &repo.join("patches/global-ma")).unwrap();
        assert!(declared.len() >= 20, "{} mutants", declared.len());
    }
}
