//! `cargo xtask bisect`: the first bad patch of the series (good = baseline,
//! bad = the whole series), or the first bad commit of a user's range with
//! --tree/--good/--bad, through `git bisect run` with our own step command:
//! a build failure or a kernel that never reaches the selftests is 125
//! (skip), a failing selftest or a splat is 1 (bad).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::commands::test::{boot_and_judge, Built};
use crate::flags::{BisectFlags, BootFlags};
use crate::judge::verdict::SnapshotMode;
use crate::pipeline::Pipeline;
use crate::sys::lock::HELD_BY_PARENT;
use crate::sys::progress::fmt_secs;

const STEP_LOG_DIR: &str = "RIG_BISECT_LOG_DIR";
/// `git bisect run` aborts on exit codes above 127: a rig error is not a verdict.
const ABORT: i32 = 129;
const SKIP: i32 = 125;

struct Reset<'a> {
    tree: &'a Path,
}

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        let _ = duct::cmd!("git", "-C", self.tree, "bisect", "reset")
            .stdout_null()
            .stderr_null()
            .run();
    }
}

pub fn run(f: BisectFlags) -> Result<i32> {
    let started = Instant::now();
    let p = Pipeline::new(f.boot.common.clone())?;
    let (tree, good, bad) = if p.ctx.common.tree.is_some() {
        let good = f
            .good
            .clone()
            .context("bisecting your --tree needs --good <rev> (and --bad, default HEAD)")?;
        (
            p.tree()?,
            good,
            f.bad.clone().unwrap_or_else(|| "HEAD".into()),
        )
    } else {
        if f.good.is_some() || f.bad.is_some() {
            bail!("--good/--bad go with --tree; a series is bisected from its baseline to its last patch");
        }
        let tree = p.applied()?;
        let series = crate::stages::patches::series_name(&p.ctx.common.series);
        (
            tree,
            crate::stages::tree::BASELINE_TAG.to_string(),
            format!("rig/{series}"),
        )
    };
    let status = duct::cmd!(
        "git",
        "-C",
        &tree.path,
        "status",
        "--porcelain",
        "--untracked-files=no"
    )
    .read()
    .context("checking the tree is clean")?;
    if !status.is_empty() {
        bail!(
            "{} has uncommitted changes: commit or stash them before bisecting",
            tree.path.display()
        );
    }
    let logs = p.ctx.dir("bisect")?;
    for e in std::fs::read_dir(&logs)?.flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    // git bisect never tests its endpoints; test `bad` once ourselves, so a
    // bad that passes is an error and its failure is what gets reported.
    eprintln!("[bisect] checking that {bad} is bad");
    let original = duct::cmd!("git", "-C", &tree.path, "rev-parse", "--abbrev-ref", "HEAD")
        .read()
        .context("reading the tree's branch")?;
    duct::cmd!("git", "-C", &tree.path, "checkout", "-q", "--detach", &bad)
        .run()
        .with_context(|| format!("checking out {bad}"))?;
    let verdict = duct::cmd(&exe, step_args(&f.boot))
        .env(HELD_BY_PARENT, "1")
        .env(STEP_LOG_DIR, &logs)
        .unchecked()
        .run()
        .context("testing the bad revision");
    let back = if original == "HEAD" {
        bad.clone()
    } else {
        original
    };
    duct::cmd!("git", "-C", &tree.path, "checkout", "-q", &back)
        .run()
        .with_context(|| format!("checking out {back} again"))?;
    crate::sys::signals::check()?;
    match verdict?.status.code() {
        Some(1) => {}
        Some(0) => bail!("`{bad}` passes: nothing to bisect (use --filter or check the test)"),
        Some(SKIP) => bail!("`{bad}` does not build or boot: it cannot serve as the bad end"),
        other => bail!("testing `{bad}` failed with exit status {other:?}"),
    }
    eprintln!(
        "[bisect] {} between good {good} and bad {bad}",
        tree.path.display()
    );
    let _reset = Reset { tree: &tree.path };
    duct::cmd!("git", "-C", &tree.path, "bisect", "start", &bad, &good)
        .run()
        .context("git bisect start")?;
    let mut args: Vec<String> = vec![
        "-C".into(),
        tree.path.display().to_string(),
        "bisect".into(),
        "run".into(),
    ];
    args.push(exe.display().to_string());
    args.extend(step_args(&f.boot));
    let out = duct::cmd("git", &args)
        .env(HELD_BY_PARENT, "1")
        .env(STEP_LOG_DIR, &logs)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("git bisect run")?;
    crate::sys::signals::check()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let steps = std::fs::read_dir(&logs)?.count();
    let Some(first_bad) = text
        .lines()
        .find_map(|l| l.strip_suffix(" is the first bad commit"))
        .map(str::to_string)
    else {
        println!("{}", tail(&text, 30));
        bail!(
            "git bisect did not name a first bad commit after {steps} step(s) \
             (is `{bad}` really bad and `{good}` good? every candidate skipped?)"
        );
    };
    let subject = duct::cmd!(
        "git",
        "-C",
        &tree.path,
        "log",
        "-1",
        "--format=%s",
        &first_bad
    )
    .read()
    .unwrap_or_default();
    println!(
        "first bad commit: {} {subject}",
        &first_bad[..12.min(first_bad.len())]
    );
    if let Ok(detail) = std::fs::read_to_string(logs.join(&first_bad)) {
        println!("{detail}");
    }
    println!(
        "bisect: {steps} step(s) in {}; skipped (build failed or did not boot): {}",
        fmt_secs(started.elapsed()),
        skipped(&logs)
    );
    Ok(1)
}

fn step_args(b: &BootFlags) -> Vec<String> {
    let c = &b.common;
    let mut a = vec![
        "bisect-step".to_string(),
        "--series".into(),
        c.series.clone(),
    ];
    if let Some(t) = &c.tree {
        a.extend(["--tree".into(), t.display().to_string()]);
    }
    for cfg in &c.configs {
        a.extend(["--config".into(), cfg.clone()]);
    }
    if let Some(w) = &c.work_dir {
        a.extend(["--work-dir".into(), w.display().to_string()]);
    }
    if let Some(j) = c.jobs {
        a.extend(["-j".into(), j.to_string()]);
    }
    a.extend([
        "--cpus".into(),
        b.cpus.to_string(),
        "--memory".into(),
        b.memory(),
        "--accel".into(),
        format!("{:?}", b.accel).to_lowercase(),
        "--boot-timeout".into(),
        b.boot_timeout.to_string(),
        "--test-timeout".into(),
        b.test_timeout().to_string(),
        "--silence-timeout".into(),
        b.silence_timeout().to_string(),
    ]);
    if let Some(filter) = &b.filter {
        a.extend(["--filter".into(), filter.clone()]);
    }
    for w in &b.append {
        a.extend(["--append".into(), w.clone()]);
    }
    a
}

fn skipped(logs: &Path) -> usize {
    std::fs::read_dir(logs)
        .map(|rd| {
            rd.flatten()
                .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.starts_with("skip")))
                .count()
        })
        .unwrap_or(0)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One bisect step on whatever the tree has checked out.
pub fn step(f: BootFlags) -> Result<i32> {
    let started = Instant::now();
    let mut p = match Pipeline::new(f.common.clone()) {
        Ok(p) => p,
        Err(e) => return Ok(abort(&e)),
    };
    p.as_is = true;
    let tree = match p.tree() {
        Ok(t) => t,
        Err(e) => return Ok(abort(&e)),
    };
    let commit = duct::cmd!("git", "-C", &tree.path, "rev-parse", "HEAD")
        .read()
        .unwrap_or_default();
    let record = |verdict: &str| {
        if let Some(dir) = std::env::var_os(STEP_LOG_DIR) {
            let _ = std::fs::write(PathBuf::from(dir).join(&commit), verdict);
        }
    };
    let built = match p.built() {
        Ok(b) => b,
        Err(e) => {
            if crate::sys::signals::interrupted().is_some() {
                return Ok(abort(&e));
            }
            eprintln!("[bisect] {commit}: build failed, skipping: {e:#}");
            record(&format!("skip: build failed\n{e:#}"));
            return Ok(SKIP);
        }
    };
    let (tree, config, kernel) = built;
    let image = match crate::stages::image::build(&p.ctx, &tree, &kernel, p.progs()) {
        Ok(i) => i,
        Err(e) => return Ok(abort(&e)),
    };
    let built = Built {
        config: &config,
        kernel: &kernel,
        image: &image,
    };
    let s = match boot_and_judge(&p, &f, built, SnapshotMode::Off, started) {
        Ok(s) => s,
        Err(e) => return Ok(abort(&e)),
    };
    if !s.booted {
        record(&format!(
            "skip: did not boot to the selftests\n{}",
            s.verdict
        ));
        return Ok(SKIP);
    }
    if s.passed_but_skips {
        record(&format!("good\n{}", s.verdict));
        return Ok(0);
    }
    let mut detail = format!("bad\n{}\n", s.verdict);
    for t in &s.failing {
        detail.push_str(&format!("failing: {t}\n"));
    }
    if let Some(splat) = &s.first_splat {
        detail.push_str(&format!("splat:\n{splat}\n"));
    }
    detail.push_str(&format!("run dir: {}", s.run_dir.display()));
    record(&detail);
    Ok(1)
}

fn abort(e: &anyhow::Error) -> i32 {
    eprintln!("[bisect] rig error, aborting the bisect: {e:#}");
    ABORT
}
