//! `cargo xtask test` and the per-stage subcommands: the pipeline in order.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::context::Ctx;
use crate::flags::{BootFlags, Common, TestFlags};
use crate::image::Image;
use crate::kbuild::Kernel;
use crate::ktap::Status;
use crate::patches::Series;
use crate::progress::fmt_secs;
use crate::tree::Tree;
use crate::vm::{Ending, Limits, VmSpec};
use crate::{accel, console, image, kbuild, kconfig, ktap, lock, patches, results, tree};

struct Pipeline {
    ctx: Ctx,
    _lock: lock::WorkLock,
}

impl Pipeline {
    fn new(common: Common) -> Result<Pipeline> {
        let ctx = Ctx::new(common)?;
        let lock = lock::acquire(&ctx.work)?;
        Ok(Pipeline { ctx, _lock: lock })
    }

    /// The series name in reports: `--tree` builds the user's tree as it is.
    fn series_name(&self) -> String {
        if self.ctx.common.tree.is_some() {
            "user-tree".to_string()
        } else {
            patches::series_name(&self.ctx.common.series)
        }
    }

    fn tree(&self) -> Result<Tree> {
        tree::prepare(&self.ctx)
    }

    fn applied(&self) -> Result<Tree> {
        let tree = self.tree()?;
        if tree.managed {
            let series = Series::load(&self.ctx.repo, &self.ctx.common.series)?;
            patches::apply(&tree, &series)?;
        }
        Ok(tree)
    }

    fn configured(&self) -> Result<(Tree, kconfig::Config, String)> {
        let tree = self.applied()?;
        let config = kconfig::configure(&self.ctx, &tree)?;
        let state = kbuild::tree_state(&tree)?;
        Ok((tree, config, state))
    }

    fn built(&self) -> Result<(Tree, kconfig::Config, Kernel)> {
        let (tree, config, state) = self.configured()?;
        let kernel = kbuild::build(&self.ctx, &tree, &config, &state)?;
        Ok((tree, config, kernel))
    }

    fn imaged(&self) -> Result<(kconfig::Config, Kernel, Image)> {
        let (tree, config, kernel) = self.built()?;
        let image = image::build(&self.ctx, &tree, &kernel)?;
        Ok((config, kernel, image))
    }
}

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
    let accept = f.accept;
    run_all(f.boot, Some(accept))
}

/// Everything after the image: boot, judge, report. `snapshot` is
/// `Some(accept)` for `test`, `None` for `boot` (no snapshot comparison).
fn run_all(f: BootFlags, snapshot: Option<bool>) -> Result<i32> {
    let started = Instant::now();
    let p = Pipeline::new(f.common.clone())?;
    let (config, kernel, image) = p.imaged()?;
    let series = p.series_name();
    let accel = accel::choose(&p.ctx, f.accel, &kernel.vmlinux, &image.initramfs)?;
    let run_dir = results::new_run_dir(&p.ctx.work, &series)?;
    let mut cmdline = Vec::new();
    if let Some(filter) = &f.filter {
        cmdline.push(format!("rig.filter={filter}"));
    }
    cmdline.extend(f.append.iter().cloned());
    let spec = VmSpec {
        kernel: kernel.vmlinux.clone(),
        initrd: image.initramfs.clone(),
        cpus: f.cpus,
        memory: f.memory.clone(),
        accel: accel.clone(),
        console_log: run_dir.join("console.log"),
        ktap_log: run_dir.join("ktap.log"),
        cmdline,
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
        f.memory,
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
        series: series.clone(),
        configs: config.names.clone(),
        config_hash: config.hash[..16].to_string(),
        cpus: f.cpus,
        memory: f.memory.clone(),
        accel: accel.name(),
        ending: out.ending.describe(&limits),
        wall_s: started.elapsed().as_secs_f64(),
        boot_to_first_ktap_s: out.first_ktap.map(|d| d.as_secs_f64()),
    };
    // Skipped is not passed: a run with a skip does not exit 0.
    let tests_ok = clean_exit
        && report.all_passed()
        && report.counts().skipped == 0
        && !report.tests.is_empty();
    let snapshot_ok = match snapshot {
        Some(accept) if f.filter.is_none() && f.append.is_empty() => {
            let ok = results::compare_snapshot(
                &p.ctx.repo,
                &series,
                &results::normalized(&report),
                accept,
            )?;
            if !ok {
                problems.push(format!(
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
    let passed = tests_ok && splats.is_empty() && snapshot_ok && problems.is_empty();
    let verdict = verdict_line(
        passed,
        &out.ending,
        &limits,
        &report,
        &splats,
        panic.as_deref(),
    );
    let counts = report.counts();
    results::write_yaml(
        &run_dir,
        &results::ResultsFile {
            run: &info,
            passed,
            verdict: &verdict,
            counts,
            problems: &problems,
            tests: &report.tests,
            splats: &splats,
        },
    )?;
    results::write_junit(&run_dir, &info, &report, &splats)?;
    print_table(&report, &splats, &problems);
    println!("run dir: {}", run_dir.display());
    println!("{verdict}");
    // The closing line CI readers look for: crashed and not-run tests count as
    // failed, and a run that failed with every test passed (a splat, a snapshot
    // mismatch) counts one failure so the line never reads as a pass.
    let c = report.counts();
    let failed = c.failed
        + c.crashed
        + c.not_run
        + usize::from(!passed && c.failed + c.crashed + c.not_run == 0);
    println!(
        "selftests: {} passed, {failed} failed, {} skipped",
        c.passed, c.skipped
    );
    Ok(if passed { 0 } else { 1 })
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
