//! `cargo xtask bench rig`: the rig's loop against virtme-ng and plain make,
//! measured side by side in one run on the same kernel and machine (these
//! machines are noisy: figures from different runs do not compare).
//!
//! 1. boot: QEMU start to the first KTAP line (ours) against `vng --run
//!    <bzImage> --exec true` from process start to exit, on one kernel built
//!    with `kconfigs/virtme.config` so vng can boot it too;
//! 2. warm: `cargo xtask test` with nothing changed against its boot+tests
//!    part alone (QEMU's run time);
//! 3. rebuild: `cargo xtask test` after an edit of kernel/bpf/memalloc.c
//!    against `make bzImage` alone on the same kind of edit;
//! 4. cold (`--cold`): a run with an empty build dir and ccache against a
//!    plain cold `make bzImage`.
//!
//! The work-dir lock is held for the whole bench (the edit in step 3 must
//! never be seen by another run); the `cargo xtask test` children run under it.
//!
//! `cargo xtask bench alloc` (bench/alloc.rs) measures the allocator itself
//! in guest boots of the series kernel, of the series with its debug mode
//! compiled out, and (the map loop) of the unpatched baseline.

mod alloc;
mod boot;
mod boottime;
mod loops;
mod report;
mod run;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::flags::{BenchRigFlags, BootFlags};
use crate::pipeline::Pipeline;
use crate::stages::image::Image;
use crate::stages::kbuild::Kernel;
use crate::stages::kconfig::Config;
use crate::sys::progress::fmt_secs;
use crate::{report::results, sys::lock, sys::signals};
use report::{Measurement, Pairs, N};

pub use alloc::run as alloc;

/// The config fragment that lets vng boot the kernel (9p root, overlayfs).
const VIRTME_FRAGMENT: &str = "virtme";
/// A filter no selftest matches: the runner prints the KTAP header and ends.
fn no_test() -> String {
    rig_contract::cmdline::Word::Filter("bench-boot-only".into()).word()
}
/// The file the rebuild measurement edits (and always restores).
const EDITED: &str = "kernel/bpf/memalloc.c";
/// Issue 18's goals: one edit to a verdict within 1.5x kbuild's own
/// incremental time for the same edit (`make bzImage`), and a cold run
/// within 1.2x a cold `make bzImage`.
const REBUILD_GOAL: f64 = 1.5;
const COLD_GOAL: f64 = 1.2;
/// How long one `cargo xtask test` child may take.
const CHILD_LIMIT: Duration = Duration::from_secs(3600);

/// Prints progress with the time since the bench started.
struct Log {
    start: Instant,
}

impl Log {
    fn say(&self, what: &str) {
        eprintln!("[bench {:>6}] {what}", fmt_secs(self.start.elapsed()));
    }
}

struct Machine {
    kernel: String,
    cpu: String,
    cores: usize,
    qemu: String,
    accel: String,
    vng: Option<String>,
}

/// The machine's fields of a bench YAML file.
#[derive(Serialize)]
struct MachineYaml<'a> {
    host_kernel: &'a str,
    cpu: &'a str,
    cores: usize,
    qemu: &'a str,
    accelerator: &'a str,
}

impl Machine {
    fn yaml(&self) -> MachineYaml<'_> {
        MachineYaml {
            host_kernel: &self.kernel,
            cpu: &self.cpu,
            cores: self.cores,
            qemu: &self.qemu,
            accelerator: &self.accel,
        }
    }

    fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
        let first_line = |cmd: duct::Expression| {
            cmd.stderr_null()
                .unchecked()
                .read()
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
                .filter(|s| !s.is_empty())
        };
        Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            qemu: first_line(duct::cmd!("qemu-system-x86_64", "--version"))
                .unwrap_or_else(|| "not installed".into()),
            accel: String::new(),
            vng: first_line(duct::cmd!("vng", "--version")),
        }
    }
}

pub fn rig(f: BenchRigFlags) -> Result<i32> {
    if f.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Takes the work-dir lock (waiting for it, untimed), held until the end.
    let p = Pipeline::new(f.boot.common.clone())?;
    let log = Log {
        start: Instant::now(),
    };
    // Our own second pipeline (the virtme kernel) and the `cargo xtask test`
    // children run under the lock we hold.
    std::env::set_var(lock::HELD_BY_PARENT, "1");
    let run_dir = results::new_run_dir(&p.ctx.work, "bench-rig")?;
    let mut machine = Machine::probe();
    log.say(&format!(
        "run dir {}; {} run(s) of each measurement{}",
        run_dir.display(),
        f.runs,
        if f.cold { ", plus the cold run" } else { "" }
    ));

    let mut ms = Vec::new();
    let mut breakdown = None;
    let mut kernels = Vec::new();

    // 1. Boot against virtme-ng.
    let mut m = Measurement::new("boot", "boot to first KTAP line vs vng --exec true", 1.0);
    if let Err(e) = boot::run(
        &f,
        &run_dir,
        &log,
        &mut machine,
        &mut m,
        &mut breakdown,
        &mut kernels,
    ) {
        not_measured(&mut m, e, &log)?;
    }
    ms.push(m);

    // 2 and 3 use the user's own kernel (the configs given on the command line).
    let mut warm = Measurement::new(
        "warm",
        "warm `xtask test`, nothing changed vs boot+tests",
        1.5,
    );
    let mut rebuild = Measurement::new(
        "rebuild",
        "edit kernel/bpf: rebuild+boot+test vs make bzImage",
        REBUILD_GOAL,
    );
    match loops::warm_up(&p, &f, &log) {
        Ok((config, kernel, image, accel)) => {
            if machine.accel.is_empty() {
                machine.accel = accel.name();
            }
            kernels.push(kernel_yaml("user", &config, &kernel, &image));
            if let Err(e) = loops::warm(&p, &f, &run_dir, &log, &mut warm) {
                not_measured(&mut warm, e, &log)?;
            }
            if let Err(e) = loops::rebuild(&p, &f, &run_dir, &log, &config, &mut rebuild) {
                not_measured(&mut rebuild, e, &log)?;
            }
            // Leave the build dir built for the unmodified tree, so the next
            // `cargo xtask test` starts warm.
            log.say("rebuilding the unmodified kernel so the next run starts warm");
            if let Err(e) = p.imaged() {
                log.say(&format!("warning: rebuilding the unmodified kernel: {e:#}"));
            }
        }
        Err(e) => {
            signals::check()?;
            let why = format!("building the kernel failed: {e:#}");
            log.say(&why);
            warm.not_measured = Some(why.clone());
            rebuild.not_measured = Some(why);
        }
    }
    ms.push(warm);
    ms.push(rebuild);

    // 4. Cold: the tree is cloned under the lock, which is then released:
    // the two full builds touch nothing in the work dir.
    let mut cold = Measurement::new(
        "cold",
        "cold (empty build dir, ccache) vs cold make",
        COLD_GOAL,
    );
    let cold_dir = if f.cold {
        match loops::cold_prepare(&p, &log) {
            Ok(dir) => Some(dir),
            Err(e) => {
                not_measured(&mut cold, e, &log)?;
                None
            }
        }
    } else {
        cold.not_measured = Some("not asked for (--cold: two full kernel builds)".into());
        None
    };
    drop(p);
    if let Some(dir) = cold_dir {
        log.say("cold: work-dir lock released (the cold run uses its own work dir)");
        if let Err(e) = loops::cold(&f, &dir, &run_dir, &log, &mut cold) {
            not_measured(&mut cold, e, &log)?;
        }
    }
    ms.push(cold);

    let table = report::table(&ms);
    let yaml_path = run_dir.join("bench.yaml");
    report::write_yaml(
        &yaml_path,
        &bench_yaml(&f, &machine, &ms, kernels, breakdown, &log),
    )?;
    std::fs::write(run_dir.join("table.txt"), &table)?;
    point_latest_at(&run_dir);

    println!();
    println!(
        "machine: {} ({} cores), host kernel {}, {}, accelerator {}",
        machine.cpu,
        machine.cores,
        machine.kernel,
        machine.qemu,
        if machine.accel.is_empty() {
            "-"
        } else {
            &machine.accel
        }
    );
    println!("ratio = min(ours) / min(reference) over the repetitions\n");
    print!("{table}");
    for m in &ms {
        if let Some(why) = &m.not_measured {
            println!("{}: not measured: {why}", m.key);
        }
        for n in &m.notes {
            println!("{}: {n}", m.key);
        }
    }
    let missed: Vec<&str> = ms
        .iter()
        .filter(|m| m.met() == Some(false))
        .map(|m| m.key)
        .collect();
    report::print_missed(&missed);
    println!("figures: {}", yaml_path.display());
    log.say("done");
    // A benchmark reports: a missed goal is not a failure, a measurement
    // that could not be taken is.
    let unmeasured = ms
        .iter()
        .any(|m| m.not_measured.is_some() && (m.key != "cold" || f.cold));
    Ok(if unmeasured { 2 } else { 0 })
}

/// Records why a measurement has no figures; an interrupt ends the bench.
fn not_measured(m: &mut Measurement, e: anyhow::Error, log: &Log) -> Result<()> {
    signals::check()?;
    log.say(&format!("{}: could not measure: {e:#}", m.key));
    m.not_measured = Some(format!("{e:#}"));
    Ok(())
}

/// `new_run_dir` points `runs/latest` at each new run dir, the `test`
/// children's included; the bench's own dir is the one to look at afterwards.
fn point_latest_at(run_dir: &Path) {
    if let (Some(runs), Some(name)) = (run_dir.parent(), run_dir.file_name()) {
        let latest = runs.join("latest");
        let _ = std::fs::remove_file(&latest);
        let _ = std::os::unix::fs::symlink(name, &latest);
    }
}

/// A kernel a bench booted, in its YAML file.
#[derive(Serialize)]
struct KernelYaml {
    role: String,
    release: String,
    configs: String,
    build_dir: String,
    /// None when the rig did not build one (it boots vmlinux).
    bzimage_bytes: Option<u64>,
    vmlinux_bytes: u64,
    initramfs_bytes: u64,
}

fn kernel_yaml(role: &str, config: &Config, kernel: &Kernel, image: &Image) -> KernelYaml {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    KernelYaml {
        role: role.to_string(),
        release: kernel.release.clone(),
        configs: config.names.join("+"),
        build_dir: kernel.build_dir.display().to_string(),
        bzimage_bytes: kernel.bzimage.as_deref().map(size),
        vmlinux_bytes: size(&kernel.vmlinux),
        initramfs_bytes: size(&image.initramfs),
    }
}

/// bench.yaml.
#[derive(Serialize)]
struct BenchYaml<'a> {
    machine: RigMachineYaml<'a>,
    flags: FlagsYaml,
    kernels: Vec<KernelYaml>,
    measurements: Vec<MeasurementYaml<'a>>,
    boot_breakdown: Option<boot::Breakdown>,
    bench_wall_s: N,
}

#[derive(Serialize)]
struct RigMachineYaml<'a> {
    #[serde(flatten)]
    machine: MachineYaml<'a>,
    virtme_ng: Option<&'a str>,
}

#[derive(Serialize)]
struct FlagsYaml {
    runs: usize,
    cold: bool,
    cpus: u32,
    memory: String,
    jobs: usize,
}

#[derive(Serialize)]
struct MeasurementYaml<'a> {
    key: &'a str,
    title: &'a str,
    ours_measures: &'a str,
    reference_measures: &'a str,
    ours_s: Vec<N>,
    reference_s: Vec<N>,
    ours_min_s: Option<N>,
    ours_median_s: Option<N>,
    reference_min_s: Option<N>,
    reference_median_s: Option<N>,
    ratio_min: Option<N>,
    ratio_median: Option<N>,
    ours_stages_s: Vec<Pairs<N>>,
    goal: N,
    met: Option<bool>,
    not_measured: Option<&'a str>,
    notes: &'a [String],
}

fn bench_yaml<'a>(
    f: &BenchRigFlags,
    machine: &'a Machine,
    ms: &'a [Measurement],
    kernels: Vec<KernelYaml>,
    breakdown: Option<boot::Breakdown>,
    log: &Log,
) -> BenchYaml<'a> {
    let measurements = ms
        .iter()
        .map(|m| MeasurementYaml {
            key: m.key,
            title: m.title,
            ours_measures: &m.ours_what,
            reference_measures: &m.reference_what,
            ours_s: report::nums(&m.ours),
            reference_s: report::nums(&m.reference),
            ours_min_s: report::opt(report::min(&m.ours)),
            ours_median_s: report::opt(report::median(&m.ours)),
            reference_min_s: report::opt(report::min(&m.reference)),
            reference_median_s: report::opt(report::median(&m.reference)),
            ratio_min: report::opt(m.ratio()),
            ratio_median: report::opt(m.median_ratio()),
            ours_stages_s: m
                .ours_stages
                .iter()
                .map(|st| Pairs(st.iter().map(|(k, v)| (k.clone(), N(*v))).collect()))
                .collect(),
            goal: N(m.goal),
            met: m.met(),
            not_measured: m.not_measured.as_deref(),
            notes: &m.notes,
        })
        .collect();
    BenchYaml {
        machine: RigMachineYaml {
            machine: machine.yaml(),
            virtme_ng: machine.vng.as_deref(),
        },
        flags: FlagsYaml {
            runs: f.runs,
            cold: f.cold,
            cpus: f.boot.cpus,
            memory: f.boot.memory(),
            jobs: jobs(&f.boot),
        },
        kernels,
        measurements,
        boot_breakdown: breakdown,
        bench_wall_s: N(log.start.elapsed().as_secs_f64()),
    }
}

fn jobs(f: &BootFlags) -> usize {
    f.common.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() + 1)
            .unwrap_or(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_yaml_flattens_the_machine_and_keeps_the_stage_order() {
        let machine = Machine {
            kernel: "6.1.0-1".into(),
            cpu: "AMD EPYC".into(),
            cores: 2,
            qemu: "QEMU 7.2".into(),
            accel: "tcg".into(),
            vng: None,
        };
        let mut m = Measurement::new("warm", "warm", 1.5);
        m.ours = vec![16.891, 17.07];
        m.ours_stages = vec![vec![("build".into(), 0.0), ("boot".into(), 14.25)]];
        let y = BenchYaml {
            machine: RigMachineYaml {
                machine: machine.yaml(),
                virtme_ng: machine.vng.as_deref(),
            },
            flags: FlagsYaml {
                runs: 3,
                cold: false,
                cpus: 4,
                memory: "1G".into(),
                jobs: 3,
            },
            kernels: vec![],
            measurements: vec![MeasurementYaml {
                key: m.key,
                title: m.title,
                ours_measures: &m.ours_what,
                reference_measures: &m.reference_what,
                ours_s: report::nums(&m.ours),
                reference_s: vec![],
                ours_min_s: report::opt(report::min(&m.ours)),
                ours_median_s: None,
                reference_min_s: None,
                reference_median_s: None,
                ratio_min: report::opt(m.ratio()),
                ratio_median: None,
                ours_stages_s: vec![Pairs(
                    m.ours_stages[0]
                        .iter()
                        .map(|(k, v)| (k.clone(), N(*v)))
                        .collect(),
                )],
                goal: N(m.goal),
                met: m.met(),
                not_measured: None,
                notes: &m.notes,
            }],
            boot_breakdown: None,
            bench_wall_s: N(61.23456),
        };
        let text = crate::report::results::to_yaml(&y).unwrap();
        assert!(
            text.starts_with(
                "machine:\n  host_kernel: 6.1.0-1\n  cpu: AMD EPYC\n  cores: 2\n  qemu: QEMU 7.2\n  \
                 accelerator: tcg\n  virtme_ng: null\nflags:\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  ours_s:\n  - 16.891\n  - 17.07\n"),
            "{text}"
        );
        assert!(
            text.contains("  ours_stages_s:\n  - build: 0.0\n    boot: 14.25\n"),
            "{text}"
        );
        assert!(text.contains("\n  met: null\n"), "{text}");
        assert!(
            text.ends_with("boot_breakdown: null\nbench_wall_s: 61.235\n"),
            "{text}"
        );
    }
}
