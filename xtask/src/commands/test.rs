//! `cargo xtask test` and the per-stage subcommands: the pipeline in order.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::flags::{BootFlags, Common, TestFlags};
use crate::judge::ktap::Status;
use crate::judge::verdict::{self, Problem, Skips, SnapshotCheck, SnapshotMode};
use crate::pipeline::Pipeline;
use crate::stages::image::Image;
use crate::stages::kbuild::Kernel;
use crate::sys::progress::{self, fmt_secs};
use crate::vm::{Ending, Limits, Live, VmSpec};
use crate::{
    judge::console, judge::ktap, report::junit, report::print, report::results, report::snapshot,
    stages::kconfig, vm::accel,
};
use rig_contract::cmdline::{Profile, Word, QUICK_STRESS_MS};

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
    run_all(f, SnapshotMode::Off)
}

pub fn run(f: TestFlags) -> Result<i32> {
    if f.boot.common.suite == crate::flags::Suite::Kernel {
        if f.fail_fast {
            anyhow::bail!("--fail-fast stops the selftests at their first failure; the kernel suites have no such mode");
        }
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
    if f.accept && f.boot.common.tree.is_some() {
        anyhow::bail!(
            "--accept writes the pinned tree's snapshot; a --tree run is not compared with it"
        );
    }
    let snapshot = if f.accept {
        SnapshotMode::Accept
    } else {
        SnapshotMode::Compare
    };
    run_all(f.boot_flags(), snapshot)
}

fn run_all(f: BootFlags, snapshot: SnapshotMode) -> Result<i32> {
    let started = Instant::now();
    let p = Pipeline::new(f.common.clone())?;
    let (config, kernel, image) = p.imaged()?;
    let built = Built {
        config: &config,
        kernel: &kernel,
        image: &image,
    };
    Ok(boot_and_judge(&p, &f, built, snapshot, started)?.exit_code())
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
    /// The accelerator the guest ran under.
    pub accel: crate::vm::Accel,
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
    pub problems: Vec<Problem>,
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
    let mut accel = accel::choose(&p.ctx, f.accel, &kernel.boot_image(), initrd)?;
    if f.icount {
        accel = accel.icount()?;
    }
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
    crate::sys::shell::write_cmdline(
        &run_dir.join("qemu.cmdline"),
        "qemu-system-x86_64",
        &crate::vm::qemu::args(&spec),
    )?;
    let limits = f.limits();
    eprintln!(
        "[boot] {} on {} vCPUs, {} ({}); run dir {}",
        kernel.release,
        spec.vcpus(),
        f.memory(),
        accel.name(),
        run_dir.display()
    );
    let live = if f.fail_fast {
        Live::FirstFailure
    } else {
        Live::Results
    };
    let out = crate::vm::run(&spec, &limits, &run_dir.join("qemu.stderr"), live)
        .context("running the guest")?;
    eprintln!(
        "[boot] {} after {} (first KTAP line at {})",
        out.ending.describe(&limits),
        fmt_secs(out.elapsed),
        out.first_ktap.map_or("-".to_string(), fmt_secs)
    );
    progress::record("boot", out.elapsed.as_secs_f64());
    if let Some(first) = out.first_ktap {
        progress::record("boot_first_ktap", first.as_secs_f64());
    }

    let mut report = ktap::parse(&out.ktap);
    let clean_exit = out.ending == Ending::Exited { code: Some(0) };
    if !clean_exit {
        report.mark_running_crashed(&out.ending.describe(&limits));
    }
    let splats = console::scan(&out.console);
    let panic = console::panic_message(&out.console);
    let problems = verdict::run_problems(&out.ending, &out.qemu_stderr, &report);
    let info = results::RunInfo {
        kernel: kernel.release.clone(),
        series: label.to_string(),
        configs: config.names.clone(),
        config_hash: config.hash[..16].to_string(),
        cpus: spec.vcpus(),
        memory: f.memory(),
        accel: accel.name(),
        profile: None,
        fail_fast: false,
        ending: out.ending.describe(&limits),
        wall_s: started.elapsed().as_secs_f64(),
        boot_to_first_ktap_s: out.first_ktap.map(|d| d.as_secs_f64()),
        stages_s: progress::take_times(),
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

/// Which profile ran, said once before the boot.
pub fn profile_line(profile: Profile) -> String {
    match profile {
        Profile::Quick => format!(
            "[boot] profile: quick (stress tests {} s; --full for the full durations)",
            QUICK_STRESS_MS as f64 / 1000.0
        ),
        Profile::Full => "[boot] profile: full (stress tests at their full durations)".into(),
    }
}

/// The pipeline's artefacts a boot needs.
#[derive(Clone, Copy)]
pub struct Built<'a> {
    pub config: &'a kconfig::Config,
    pub kernel: &'a Kernel,
    pub image: &'a Image,
}

/// Everything after the image: boot, judge, report. `snapshot` says whether
/// the results are compared with (or written into) the committed snapshot.
pub fn boot_and_judge(
    p: &Pipeline,
    f: &BootFlags,
    built: Built<'_>,
    snapshot: SnapshotMode,
    started: Instant,
) -> Result<Summary> {
    let series = p.series_name();
    eprintln!("{}", profile_line(f.profile));
    let mut words = vec![Word::Profile(f.profile).word()];
    if f.fail_fast {
        words.push(Word::FailFast.word());
    }
    let mut b = boot(
        p,
        f,
        built.config,
        built.kernel,
        &BootRequest {
            initrd: &built.image.initramfs,
            cmdline: &words,
            label: &series,
        },
        started,
    )?;
    b.info.profile = Some(f.profile.name().to_string());
    b.info.fail_fast = f.fail_fast;
    let not_run = b.report.counts().not_run;
    let stopped_early = f.fail_fast && b.report.accept_fail_fast_stop();
    let check = match snapshot {
        SnapshotMode::Off => SnapshotCheck::NotCompared,
        // Like mutants' fail-fast boots: the tests never run say nothing
        // about the snapshot, and the failure that stopped the run fails it.
        _ if stopped_early => {
            eprintln!(
                "[report] --fail-fast stopped the run at its first failure ({not_run} test(s) \
                 not run): snapshot not compared"
            );
            SnapshotCheck::NotCompared
        }
        _ if f.filter.is_some() || !f.append.is_empty() => {
            eprintln!("[report] --filter or --append given: snapshot not compared");
            SnapshotCheck::NotCompared
        }
        // The snapshot holds the pinned tree's results with the series.
        _ if p.ctx.common.tree.is_some() => {
            eprintln!("[report] --tree: the snapshot is the pinned tree's; not compared");
            SnapshotCheck::NotCompared
        }
        mode => {
            let same = snapshot::check(
                &p.ctx.repo,
                &series,
                &snapshot::normalized(&b.report),
                mode == SnapshotMode::Accept,
            )?;
            if same {
                SnapshotCheck::Matched
            } else {
                SnapshotCheck::Differs
            }
        }
    };
    let v = verdict::judge(
        &verdict::Outcome {
            ending: &b.out.ending,
            limits: &b.limits,
            qemu_stderr: &b.out.qemu_stderr,
            panic: b.panic.as_deref(),
            snapshot: check,
            series: &series,
            skips: if built.image.tree_lacks_series {
                Skips::ExpectLacking
            } else {
                Skips::Fail
            },
        },
        &b.report,
        &b.splats,
    );
    let counts = b.report.counts();
    results::write_yaml(
        &b.run_dir,
        &results::ResultsFile {
            run: &b.info,
            passed: v.passed,
            verdict: &v.line,
            counts,
            problems: &v.problems,
            tests: &b.report.tests,
            splats: &b.splats,
        },
    )?;
    junit::write(&b.run_dir, &b.info, &b.report, &b.splats)?;
    print::table(&b.report, &b.splats, &v.problems);
    println!("run dir: {}", b.run_dir.display());
    println!("{}", v.line);
    println!("{}", print::closing_line(&b.report, &v));
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
            format!("{} {}: {}", t.name, t.status.name(), why.join(" | "))
        })
        .collect();
    Ok(Summary {
        passed: v.passed,
        passed_but_skips: v.passed_but_skips,
        verdict: v.line,
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
            .map(|t| format!("{} ({})", t.name, t.status.name()))
            .collect(),
        run_dir: b.run_dir,
        accel: b.accel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_said() {
        assert_eq!(
            profile_line(Profile::Quick),
            "[boot] profile: quick (stress tests 0.5 s; --full for the full durations)"
        );
        assert_eq!(
            profile_line(Profile::Full),
            "[boot] profile: full (stress tests at their full durations)"
        );
    }
}
