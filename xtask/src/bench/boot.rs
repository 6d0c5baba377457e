//! 1. Boot: QEMU start to our first KTAP line against `vng --run <bzImage>
//! --exec true`, on one kernel both can boot, with where our time goes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::report::{self, Measurement, Pairs, N};
use super::run::{spec, tail, timed};
use super::{boottime, kernel_yaml, no_test, KernelYaml, Log, Machine, VIRTME_FRAGMENT};
use crate::flags::BenchRigFlags;
use crate::pipeline::Pipeline;
use crate::stages::image::Image;
use crate::sys::shell::write_cmdline;
use crate::vm::{self, Accel, Limits};
use crate::{sys::signals, vm::accel};

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    f: &BenchRigFlags,
    run_dir: &Path,
    log: &Log,
    machine: &mut Machine,
    m: &mut Measurement,
    breakdown: &mut Option<Breakdown>,
    kernels: &mut Vec<KernelYaml>,
) -> Result<()> {
    // Before the build: without vng there is nothing to compare against,
    // and the virtme kernel is a cold build of its own.
    let Some(vng_version) = machine.vng.clone() else {
        bail!("`vng` is not installed: `pip install virtme-ng` (PyPI)")
    };
    let mut common = f.boot.common.clone();
    if !common.configs.iter().any(|c| c == VIRTME_FRAGMENT) {
        common.configs.push(VIRTME_FRAGMENT.to_string());
    }
    log.say(&format!(
        "boot: building the kernel both sides boot ({})",
        std::iter::once("base")
            .chain(common.configs.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    let pv = Pipeline::new(common)?;
    let (config, kernel, image) = pv.imaged()?;
    let (tree, _, _) = pv.built()?;
    let bzimage = crate::stages::kbuild::bzimage(&pv.ctx, &tree, &kernel)?;
    kernels.push(kernel_yaml("boot (ours and vng)", &config, &kernel, &image));
    let accel = accel::choose(&pv.ctx, f.boot.accel, &kernel.vmlinux, &image.initramfs)?;
    machine.accel = accel.name();

    let mut vng_args: Vec<String> = vec![
        "--run".into(),
        bzimage.display().to_string(),
        "--exec".into(),
        "true".into(),
        "--cpus".into(),
        f.boot.cpus.to_string(),
        "--memory".into(),
        f.boot.memory(),
    ];
    if accel == Accel::Tcg {
        vng_args.push("--disable-kvm".into());
    }
    // Without it vng first waits ~4 s for virtiofsd (not a Debian 12 package
    // the rig needs) before it falls back to 9p: time that is not vng's boot.
    vng_args.push("--force-9p".into());
    m.ours_what = format!(
        "QEMU spawn to the first KTAP line on the virtio-serial port (vm::run's first_ktap): \
         vmlinux via PVH + our initramfs ({} vCPUs, {}, {}), kernel command line + `{}` \
         so no selftest runs after the header",
        f.boot.cpus,
        f.boot.memory(),
        accel.name(),
        no_test()
    );
    m.reference_what = format!(
        "`vng {}` from process spawn to exit (host root over virtio-9p, virtme-ng-init runs \
         `true`, then the guest powers off): vng has no KTAP, and its guest console goes to \
         /dev/null unless --verbose, so `true` having run = vng's exit is its equivalent point",
        vng_args.join(" ")
    );
    m.notes.push(format!(
        "{vng_version}; same kernel for both sides: {} (ours boots its vmlinux)",
        bzimage.display()
    ));

    let lim = f.boot.limits();
    let vng_ok = check_vng(&vng_args, run_dir, &lim, log, m)?;
    let mut phases: Vec<Vec<Option<f64>>> = Vec::new();
    let mut stamps: Vec<Vec<Option<f64>>> = Vec::new();
    let mut console_lines = 0;
    for i in 1..=f.runs {
        signals::check()?;
        // Ours.
        let name = format!("boot-ours-{i}");
        let mut cmdline = vec![no_test()];
        cmdline.extend(f.boot.append.iter().cloned());
        let s = spec(&f.boot, &kernel, &image, &accel, run_dir, &name, cmdline);
        if i == 1 {
            write_cmdline(
                &run_dir.join("boot-ours.qemu.cmdline"),
                "qemu-system-x86_64",
                &vm::qemu::args(&s),
            )?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let watcher = boottime::watch(s.console_log.clone(), start, Arc::clone(&stop));
        let out = vm::run(
            &s,
            &lim,
            &run_dir.join(format!("{name}.qemu.stderr")),
            vm::Live::Quiet,
        );
        stop.store(true, Ordering::SeqCst);
        let seen = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("console watcher panicked"))?;
        let out = out.context("running our guest")?;
        let Some(first) = out.first_ktap else {
            bail!(
                "our guest printed no KTAP ({}); see {}",
                out.ending.describe(&lim),
                s.console_log.display()
            );
        };
        let first = first.as_secs_f64();
        m.ours.push(first);
        let host: Vec<Option<f64>> = seen
            .host
            .iter()
            .map(|d| d.map(|d| d.as_secs_f64()))
            .collect();
        let mut row = host.clone();
        row.push(Some(first));
        phases.push(row);
        stamps.push(
            boottime::MILESTONES
                .iter()
                .map(|(_, marker)| {
                    (!marker.is_empty())
                        .then(|| boottime::kernel_stamp(&out.console, marker))
                        .flatten()
                })
                .collect(),
        );
        console_lines = boottime::lines_before_init(&out.console);

        // virtme-ng.
        signals::check()?;
        let vlog = run_dir.join(format!("boot-vng-{i}.log"));
        if i == 1 {
            write_cmdline(&run_dir.join("boot-vng.cmdline"), "vng", &vng_args)?;
        }
        let (secs, code) = timed(
            duct::cmd("vng", &vng_args).dir(run_dir),
            &vlog,
            lim.boot + Duration::from_secs(60),
        )
        .context("running vng")?;
        if code != vng_ok {
            bail!(
                "`vng {}` exited with {code:?} (the checked run: {vng_ok:?}); {}:\n{}",
                vng_args.join(" "),
                vlog.display(),
                tail(&vlog, 8)
            );
        }
        m.reference.push(secs);
        log.say(&format!(
            "boot run {i}/{}: ours {first:.2}s to the first KTAP line, vng {secs:.2}s to exit",
            f.runs
        ));
    }
    *breakdown = Some(breakdown_yaml(&phases, &stamps, console_lines, &image));
    Ok(())
}

/// One untimed `--verbose` run, to see that vng boots this kernel and runs
/// the command: returns the exit code the timed runs must match. Without
/// udev on the host, virtme-ng-init finds no /dev/virtio-ports/virtme.* and
/// runs the command on its console fallback, and vng, reading no exit status
/// from the guest, exits 255 although the command ran.
fn check_vng(
    vng_args: &[String],
    run_dir: &Path,
    lim: &Limits,
    log: &Log,
    m: &mut Measurement,
) -> Result<Option<i32>> {
    log.say("boot: checking that vng boots this kernel (one untimed --verbose run)");
    let check_log = run_dir.join("boot-vng-check.log");
    let mut args = vng_args.to_vec();
    args.push("--verbose".into());
    let (_, code) = timed(
        duct::cmd("vng", &args).dir(run_dir),
        &check_log,
        lim.boot + Duration::from_secs(60),
    )
    .context("running vng")?;
    let text = std::fs::read_to_string(&check_log).unwrap_or_default();
    let ran = text.contains("script exited with code 0");
    if code == Some(0) {
        return Ok(code);
    }
    if !ran {
        bail!(
            "`vng {}` did not run the command in the guest (exit {code:?}); {}:\n{}",
            args.join(" "),
            check_log.display(),
            tail(&check_log, 12)
        );
    }
    let why = if text.contains("unable to find udevd") {
        "no udevd on the host, so the guest has no /dev/virtio-ports/virtme.* and \
         virtme-ng-init ran the command on its console fallback"
    } else {
        "vng got no exit status from the guest"
    };
    m.notes.push(format!(
        "vng exits {code:?} here although `true` ran (checked in {}): {why}",
        check_log.display()
    ));
    Ok(code)
}

/// bench.yaml's `boot_breakdown`: where our boot's time went.
#[derive(Serialize)]
pub(super) struct Breakdown {
    what: &'static str,
    milestones: Pairs<Milestone>,
    gaps_s: Pairs<N>,
    console_lines_before_init: usize,
    initramfs_bytes: u64,
}

#[derive(Serialize)]
struct Milestone {
    host_s: Option<N>,
    guest_printk_s: Option<N>,
}

/// Median host-clock time of each milestone over the runs, the gaps between
/// them, and the guest kernel's own timestamps for the same lines.
fn breakdown_yaml(
    phases: &[Vec<Option<f64>>],
    stamps: &[Vec<Option<f64>>],
    console_lines: usize,
    image: &Image,
) -> Breakdown {
    let names: Vec<&str> = boottime::MILESTONES
        .iter()
        .map(|(n, _)| *n)
        .chain(std::iter::once("first_ktap_line"))
        .collect();
    let column = |rows: &[Vec<Option<f64>>], i: usize| -> Option<f64> {
        let v: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.get(i).copied().flatten())
            .collect();
        report::median(&v)
    };
    let host: Vec<Option<f64>> = (0..names.len()).map(|i| column(phases, i)).collect();
    let milestones = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let m = Milestone {
                host_s: report::opt(host[i]),
                guest_printk_s: report::opt(column(stamps, i)),
            };
            (n.to_string(), m)
        })
        .collect();
    let mut gaps = Vec::new();
    let mut prev: (&str, f64) = ("qemu_spawn", 0.0);
    for (i, n) in names.iter().enumerate() {
        if let Some(t) = host[i] {
            gaps.push((format!("{}_to_{n}", prev.0), N(t - prev.1)));
            prev = (n, t);
        }
    }
    Breakdown {
        what: "our boot on the virtme kernel: median over the runs of the host time (from QEMU \
               spawn) at which each console milestone first appeared in the console file, \
               polled every 5 ms, and the guest's printk timestamp of the same line",
        milestones: Pairs(milestones),
        gaps_s: Pairs(gaps),
        console_lines_before_init: console_lines,
        initramfs_bytes: std::fs::metadata(&image.initramfs).map_or(0, |m| m.len()),
    }
}
