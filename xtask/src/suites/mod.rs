//! `cargo xtask test --suite kernel [--baseline]`: the kernel's own BPF
//! selftests on the series kernel, judged against the series' denylist, and
//! with `--baseline` on the unpatched tree too, with the same config, so that
//! a test the series breaks is named as a regression.

pub mod build;
pub mod compare;
mod image;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rig_contract::cmdline::{Suite, Word};

use crate::commands::test::{boot, BootRequest, Booted};
use crate::flags::{BootFlags, TestFlags};
use crate::pipeline::Pipeline;
use crate::sys::progress::fmt_secs;
use crate::{report::results, stages::patches};

/// The committed list of what runs (see the file's header).
pub const PLAN: &str = "images/kernel-suites.plan";
/// Next to the series: failures on the baseline too, each with its reason.
pub const DENYLIST: &str = "kernel-suites.denylist";

/// One kernel's run of the suites.
struct Half {
    label: String,
    booted: Booted,
    passed_run: bool,
    wall: std::time::Duration,
}

pub fn run(f: TestFlags) -> Result<i32> {
    let started = Instant::now();
    if f.baseline && f.boot.common.tree.is_some() {
        bail!("--baseline compares the pinned tree with the series; with --tree, run `cargo xtask test --suite kernel --tree <baseline checkout>` yourself");
    }
    let repo = crate::context::repo_root();
    let plan_path = match &f.plan {
        Some(p) => std::path::absolute(p).with_context(|| format!("--plan {}", p.display()))?,
        None => repo.join(PLAN),
    };
    let plan = std::fs::read_to_string(&plan_path)
        .with_context(|| format!("reading the plan {} (--plan)", plan_path.display()))?;
    let deny_path = if f.boot.common.tree.is_some() {
        None
    } else {
        Some(patches::Series::dir(&repo, &f.boot.common.series)?.join(DENYLIST))
    };
    let deny = match &deny_path {
        Some(p) if p.is_file() => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            compare::parse_denylist(&text, &p.display().to_string())?
        }
        _ => Vec::new(),
    };

    let series = half(&f.boot, None, &plan)?;
    let baseline = if f.baseline {
        let p = Pipeline::new(f.boot.common.clone())?;
        let wt = p.baseline_worktree()?;
        drop(p);
        Some(half(&f.boot, Some(wt), &plan)?)
    } else {
        None
    };

    let cmp = compare::compare(
        baseline.as_ref().map(|h| &h.booted.report),
        &series.booted.report,
        &deny,
    );
    let partial = f.boot.filter.is_some() || f.plan.is_some();
    let mut problems = cmp.problems(!partial);
    print!("{}", compare::render(&cmp));
    for h in baseline.iter().chain([&series]) {
        println!(
            "{}: {}, guest {}, build and guest {} (run dir {})",
            h.label,
            if h.passed_run {
                "guest ran clean"
            } else {
                "guest run FAILED"
            },
            fmt_secs(h.booted.out.elapsed),
            fmt_secs(h.wall),
            h.booted.run_dir.display()
        );
        if !h.passed_run {
            problems.push(format!(
                "{}: {}",
                h.label,
                run_failure(&h.booted).unwrap_or_else(|| "run failed".to_string())
            ));
        }
    }
    let out = series.booted.run_dir.join("suites.yaml");
    let yaml = serde_yaml::to_string(&cmp).context("serialising the comparison")?;
    std::fs::write(&out, yaml).with_context(|| format!("writing {}", out.display()))?;
    for p in &problems {
        println!("problem: {p}");
    }
    let total = started.elapsed();
    let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
    println!(
        "kernel suites: {verdict}: {} regression(s), {} failure(s) not in the denylist, {} stale entr(ies), in {} (comparison: {})",
        cmp.regressions.len(),
        cmp.undocumented.len(),
        cmp.stale.len(),
        fmt_secs(total),
        out.display()
    );
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// Builds and boots one kernel (the series, or the baseline worktree as a
/// tree of its own) with the suites.
fn half(f: &BootFlags, tree: Option<PathBuf>, plan: &str) -> Result<Half> {
    let started = Instant::now();
    let mut f = f.clone();
    let is_baseline = tree.is_some();
    let label_kind = if is_baseline { "baseline" } else { "series" };
    if let Some(t) = tree {
        f.common.tree = Some(t);
    }
    eprintln!("[suites] === the {label_kind} kernel ===");
    let p = Pipeline::new(f.common.clone())?;
    let (tree, config, kernel) = p.built()?;
    let suites = build::build(&p.ctx, &tree, &kernel)?;
    let initrd = image::build(&p.ctx, &kernel, &suites, plan)?;
    let name = if is_baseline {
        label_kind.to_string()
    } else {
        p.series_name()
    };
    let label = format!("{name}-kernel-suites");
    let booted = boot(
        &p,
        &f,
        &config,
        &kernel,
        &BootRequest {
            initrd: &initrd,
            cmdline: &[Word::Suite(Suite::Kernel).word()],
            label: &label,
        },
        started,
    )?;
    let passed_run = run_failure(&booted).is_none();
    write_results(&booted, passed_run)?;
    Ok(Half {
        label: format!("{label_kind} ({})", kernel.release),
        booted,
        passed_run,
        wall: started.elapsed(),
    })
}

/// Why a guest run failed as a run (not its tests): a crash, a hang, a
/// splat, no results.
fn run_failure(b: &Booted) -> Option<String> {
    let mut why = Vec::new();
    if !b.clean_exit {
        why.push(b.panic.clone().map_or_else(
            || b.out.ending.describe(&b.limits),
            |p| format!("kernel panic: {p}"),
        ));
    }
    if let Some(s) = b.splats.first() {
        why.push(format!(
            "{} splat(s) in the console, first: {}",
            b.splats.len(),
            s.title
        ));
    }
    why.extend(b.problems.iter().map(ToString::to_string));
    (!why.is_empty()).then(|| why.join("; "))
}

fn write_results(b: &Booted, passed_run: bool) -> Result<()> {
    let c = b.report.counts();
    let verdict = format!(
        "{}: {} passed, {} failed, {} skipped, {} crashed, {} not run",
        if passed_run { "RAN" } else { "FAILED RUN" },
        c.passed,
        c.failed,
        c.skipped,
        c.crashed,
        c.not_run
    );
    results::write_yaml(
        &b.run_dir,
        &results::ResultsFile {
            run: &b.info,
            passed: passed_run && b.report.all_passed(),
            verdict: &verdict,
            counts: c,
            problems: &b.problems,
            tests: &b.report.tests,
            splats: &b.splats,
        },
    )?;
    crate::report::junit::write(&b.run_dir, &b.info, &b.report, &b.splats)
}
