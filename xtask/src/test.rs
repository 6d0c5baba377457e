//! `cargo xtask test` and the per-stage subcommands: the pipeline in order.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::flags::{BootFlags, Common, TestFlags};
use crate::image::Image;
use crate::kbuild::Kernel;
use crate::ktap::Status;
use crate::pipeline::Pipeline;
use crate::progress::fmt_secs;
use crate::vm::{Ending, Limits, VmSpec};
use crate::{accel, console, kconfig, ktap, results};

pub fn stage_tree(c: Common) -> Result<i32> {
    let t = Pipeline::new(c)?.tree()?;
    println!("{}", t.path.display());
    Ok(0)
}

pub fn stage_apply(c: Common) -> Result<i32> {
    let t = Pipeline::new(c)?.applied()?;
    println!("{}", t.path.display());
    Ok(0)
}

pub fn stage_config(c: Common) -> Result<i32> {
    let (_, config, _) = Pipeline::new(c)?.configured()?;
    println!("{}", config.build_dir.join(".config").display());
    Ok(0)
}

pub fn stage_build(c: Common) -> Result<i32> {
    let (_, _, k) = Pipeline::new(c)?.built()?;
    println!("{}", k.vmlinux.display());
    Ok(0)
}

pub fn stage_image(c: Common) -> Result<i32> {
    let (_, _, image) = Pipeline::new(c)?.imaged()?;
    println!("{}", image.initramfs.display());
    Ok(0)
}

pub fn stage_boot(f: BootFlags) -> Result<i32> {
    run_all(f, None)
}

pub fn run(f: TestFlags) -> Result<i32> {
    if f.boot.common.suite == crate::flags::Suite::Kernel {
        if f.accept {
            anyhow::bail!("--accept updates the selftests' snapshot; the kernel suites are judged by patches/<series>/kernel-suites.denylist instead");
        }
        return crate::suites::run(f);
    }
    if f.plan.is_some() {
        anyhow::bail!("--plan needs --suite kernel");
    }
    if f.baseline {
        anyhow::bail!("--baseline needs --suite kernel (the series' own selftests have nothing to run on the baseline)");
    }
    let accept = f.accept;
    run_all(f.boot, Some(accept))
}

fn run_all(f: BootFlags, snapshot: Option<bool>) -> Result<i32> {
    let started = Instant::now();
    let p = Pipeline::new(f.common.clone())?;
    let (config, kernel, image) = p.imaged()?;
    Ok(boot_and_judge(&p, &f, &config, &kernel, &image, snapshot, started)?.exit_code())
}

/// What one boot concluded, for callers that go on (check-series, bisect).
pub struct Summary {
    pub passed: bool,
    /// Passed but for skipped tests: what check-series and bisect ask of a
    /// patch whose selftests' feature arrives in a later patch.
    pub passed_but_skips: bool,
    pub verdict: String,
    /// True when the guest got as far as printing KTAP.
    pub booted: bool,
    /// Tests that did not pass, with their first diagnostic lines.
    pub failing: Vec<String>,
    pub first_splat: Option<String>,
    pub first_splat_title: Option<String>,
    /// Tests that failed, crashed or were skipped (not those never run).
    pub culprits: Vec<String>,
    pub run_dir: std::path::PathBuf,
    /// The accelerator the guest ran under (`Accel::name`).
    pub accel: String,
}

impl Summary {
    pub fn exit_code(&self) -> i32 {
        if self.passed {
            0
        } else {
            1
        }
    }
}

/// One guest run, parsed: what every verdict is built from.
pub struct Booted {
    pub out: crate::vm::Outcome,
    pub limits: Limits,
    pub report: ktap::Report,
    pub clean_exit: bool,
    pub splats: Vec<console::Splat>,
    pub panic: Option<String>,
    /// Problems with the run itself (no KTAP, QEMU errors, parser problems).
    pub problems: Vec<String>,
    pub info: results::RunInfo,
    pub run_dir: std::path::PathBuf,
    pub accel: crate::vm::Accel,
}

/// What to boot besides the kernel.
pub struct BootRequest<'a> {
    pub initrd: &'a std::path::Path,
    /// Words for the guest's command line before the flags' own.
    pub cmdline: &'a [String],
    /// Names the run dir and the run in results.yaml.
    pub label: &'a str,
}

/// Boots `kernel` with the request's initrd, waits for the guest under the
/// flags' limits and parses what it wrote.
pub fn boot(
    p: &Pipeline,
    f: &BootFlags,
    config: &kconfig::Config,
    kernel: &Kernel,
    req: &BootRequest<'_>,
    started: Instant,
) -> Result<Booted> {
    let BootRequest {
        initrd,
        cmdline: extra_cmdline,
        label,
    } = *req;
    let accel = accel::choose(&p.ctx, f.accel, &kernel.boot_image(), initrd)?;
    let run_dir = results::new_run_dir(&p.ctx.work, label)?;
    let mut cmdline = extra_cmdline.to_vec();
    if let Some(filter) = &f.filter {
        cmdline.push(rig_contract::cmdline::Word::Filter(filter.clone()).word());
    }
    cmdline.extend(f.append.iter().cloned());
    let spec = VmSpec {
        kernel: kernel.boot_image(),
        initrd: initrd.to_path_buf(),
        cpus: f.cpus,
        memory: f.memory(),
        accel: accel.clone(),
        console_log: run_dir.join("console.log"),
        ktap_log: run_dir.join("ktap.log"),
        cmdline,
        qmp: Some(crate::vm::qmp::socket_path()),
    };
    std::fs::write(
        run_dir.join("qemu.cmdline"),
        format!(
            "qemu-system-x86_64 {}\n",
            shell_words(&crate::vm::qemu::args(&spec))
        ),
    )?;
    let limits = Limits {
        boot: Duration::from_secs(f.boot_timeout),
        test: Duration::from_secs(f.test_timeout),
        silence: Duration::from_secs(f.silence_timeout),
    };
    eprintln!(
        "[boot] {} on {} vCPUs, {} ({}); run dir {}",
        kernel.release,
        f.cpus,
        f.memory(),
        accel.name(),
        run_dir.display()
    );
    let out = crate::vm::run(&spec, &limits, &run_dir.join("qemu.stderr"), false)
        .context("running the guest")?;
    eprintln!(
        "[boot] {} after {} (first KTAP line at {})",
        out.ending.describe(&limits),
        fmt_secs(out.elapsed),
        out.first_ktap.map_or("-".to_string(), fmt_secs)
    );

    let mut report = ktap::parse(&out.ktap);
    let clean_exit = out.ending == Ending::Exited { code: Some(0) };
    if !clean_exit {
        report.mark_running_crashed(&out.ending.describe(&limits));
    }
    let splats = console::scan(&out.console);
    let panic = console::panic_message(&out.console);
    let mut problems = report.problems.clone();
    if report.tests.is_empty() {
        problems.push("no KTAP results at all".to_string());
    }
    if !clean_exit && !matches!(out.ending, Ending::Panicked) {
        let err = out.qemu_stderr.trim();
        if !err.is_empty() {
            problems.push(format!(
                "QEMU said: {}",
                err.lines().take(5).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    let info = results::RunInfo {
        kernel: kernel.release.clone(),
        series: label.to_string(),
        configs: config.names.clone(),
        config_hash: config.hash[..16].to_string(),
        cpus: f.cpus,
        memory: f.memory(),
        accel: accel.name(),
        ending: out.ending.describe(&limits),
        wall_s: started.elapsed().as_secs_f64(),
        boot_to_first_ktap_s: out.first_ktap.map(|d| d.as_secs_f64()),
    };
    Ok(Booted {
        out,
        limits,
        report,
        clean_exit,
        splats,
        panic,
        problems,
        info,
        run_dir,
        accel,
    })
}

/// Everything after the image: boot, judge, report. `snapshot` is
/// `Some(accept)` for `test`, `None` for `boot` (no snapshot comparison).
pub fn boot_and_judge(
    p: &Pipeline,
    f: &BootFlags,
    config: &kconfig::Config,
    kernel: &Kernel,
    image: &Image,
    snapshot: Option<bool>,
    started: Instant,
) -> Result<Summary> {
    let series = p.series_name();
    let mut b = boot(
        p,
        f,
        config,
        kernel,
        &BootRequest {
            initrd: &image.initramfs,
            cmdline: &[],
            label: &series,
        },
        started,
    )?;
    // Skipped is not passed: a run with a skip does not exit 0.
    let tests_ok = b.clean_exit
        && b.report.all_passed()
        && b.report.counts().skipped == 0
        && !b.report.tests.is_empty();
    let snapshot_ok = match snapshot {
        Some(accept) if f.filter.is_none() && f.append.is_empty() => {
            let ok = results::compare_snapshot(
                &p.ctx.repo,
                &series,
                &results::normalized(&b.report),
                accept,
            )?;
            if !ok {
                b.problems.push(format!(
                    "results differ from the snapshot bpf-selftests/snapshots/results@{series}.snap \
                     (diff above; `cargo xtask test --accept` or `cargo insta review` to update it)"
                ));
            }
            ok
        }
        Some(_) => {
            eprintln!("[report] --filter or --append given: snapshot not compared");
            true
        }
        None => true,
    };
    let passed = tests_ok && b.splats.is_empty() && snapshot_ok && b.problems.is_empty();
    let verdict = verdict_line(
        passed,
        &b.out.ending,
        &b.limits,
        &b.report,
        &b.splats,
        b.panic.as_deref(),
    );
    let counts = b.report.counts();
    results::write_yaml(
        &b.run_dir,
        &results::ResultsFile {
            run: &b.info,
            passed,
            verdict: &verdict,
            counts,
            problems: &b.problems,
            tests: &b.report.tests,
            splats: &b.splats,
        },
    )?;
    results::write_junit(&b.run_dir, &b.info, &b.report, &b.splats)?;
    print_table(&b.report, &b.splats, &b.problems);
    println!("run dir: {}", b.run_dir.display());
    println!("{verdict}");
    // The closing line CI readers look for: crashed and not-run tests count as
    // failed, and a run that failed with every test passed (a splat, a snapshot
    // mismatch) counts one failure so the line never reads as a pass.
    let c = b.report.counts();
    let failed = c.failed
        + c.crashed
        + c.not_run
        + usize::from(!passed && c.failed + c.crashed + c.not_run == 0);
    println!(
        "selftests: {} passed, {failed} failed, {} skipped",
        c.passed, c.skipped
    );
    let failing = b
        .report
        .tests
        .iter()
        .filter(|t| t.status != Status::Passed)
        .map(|t| {
            let why: Vec<&str> = t
                .diagnostics
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(String::as_str)
                .collect();
            format!(
                "{} {}: {}",
                t.name,
                results::status_name(t.status),
                why.join(" | ")
            )
        })
        .collect();
    let passed_but_skips = b.clean_exit
        && b.report.all_passed()
        && b.splats.is_empty()
        && b.problems
            .iter()
            .all(|p| p.starts_with("results differ from the snapshot"));
    Ok(Summary {
        passed,
        passed_but_skips,
        verdict,
        booted: !b.out.ktap.trim().is_empty(),
        failing,
        first_splat: b.splats.first().map(|s| {
            s.excerpt
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        }),
        first_splat_title: b.splats.first().map(|s| s.title.clone()),
        culprits: b
            .report
            .tests
            .iter()
            .filter(|t| !matches!(t.status, Status::Passed | Status::NotRun))
            .map(|t| format!("{} ({})", t.name, results::status_name(t.status)))
            .collect(),
        run_dir: b.run_dir,
        accel: b.accel.name(),
    })
}

fn verdict_line(
    passed: bool,
    ending: &Ending,
    limits: &Limits,
    report: &ktap::Report,
    splats: &[console::Splat],
    panic: Option<&str>,
) -> String {
    let c = report.counts();
    let counts = format!(
        "{} passed, {} failed, {} skipped, {} crashed, {} not run",
        c.passed, c.failed, c.skipped, c.crashed, c.not_run
    );
    if passed {
        return format!("PASS: {counts}");
    }
    let mut why = Vec::new();
    if let Some(p) = panic {
        why.push(format!("kernel panic: {p}"));
    } else if *ending != (Ending::Exited { code: Some(0) }) {
        why.push(ending.describe(limits));
    }
    if !splats.is_empty() {
        why.push(format!(
            "{} splat(s) in the console, first: {}",
            splats.len(),
            splats[0].title
        ));
    }
    if why.is_empty() {
        why.push("results".to_string());
    }
    format!("FAIL ({}): {counts}", why.join("; "))
}

fn print_table(report: &ktap::Report, splats: &[console::Splat], problems: &[String]) {
    println!();
    println!("{:<40} {:<8} {:>9}", "test", "status", "time");
    for t in &report.tests {
        let time = t
            .duration_ms
            .map_or("-".to_string(), |ms| fmt_secs(Duration::from_millis(ms)));
        println!(
            "{:<40} {:<8} {:>9}",
            t.name,
            results::status_name(t.status),
            time
        );
        if !matches!(t.status, Status::Passed) {
            for d in t.diagnostics.iter().take(10) {
                println!("    # {d}");
            }
        }
    }
    for s in splats {
        println!("\nsplat ({}) at console line {}:", s.kind, s.line);
        for l in s.excerpt.iter().take(20) {
            println!("  | {l}");
        }
    }
    for p in problems {
        println!("problem: {p}");
    }
    println!();
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/@+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
