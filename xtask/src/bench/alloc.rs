//! `cargo xtask bench alloc`: the series' global allocator against kmalloc
//! and 6.1's per-map bpf_mem_alloc, in process context and in NMI, and the
//! prefill syscall, measured side by side in one guest boot.
//!
//! The series kernel and image come from the pipeline as for `cargo xtask
//! test`; the guest boots with `rig.bench=alloc` (and `rig.bench.<param>=`
//! words), so its runner runs the benchmark tests of
//! bpf-selftests/src/bench/alloc.rs instead of the selftests. The boot is
//! judged like a test boot (commands::test::boot_and_judge: console splats,
//! panics, timeouts, the run dir): a bench boot that is not a clean pass has
//! no figures. The figures are the guest's `# bench:` lines in ktap.log; the
//! table and bench-alloc.yaml go to the same run dir.

mod figures;
mod summary;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use rig_contract::cmdline::Word;
use serde::Serialize;

use super::report::{self, N};
use super::{kernel_yaml, KernelYaml, Machine, MachineYaml};
use crate::commands::test;
use crate::flags::BenchAllocFlags;
use crate::judge::verdict::SnapshotMode;
use crate::pipeline::Pipeline;
use summary::Summary;

/// The kernel bench file's limits (patches/global-ma 0015).
const MAX_LOOPS: u64 = 100_000_000;
const MAX_BATCH: u32 = 65_536;
const MAX_SIZE: u32 = 4088;

pub fn run(f: BenchAllocFlags) -> Result<i32> {
    check(&f)?;
    let started = Instant::now();
    let p = Pipeline::new(f.boot.common.clone())?;
    let (config, kernel, image) = p.imaged()?;
    let mut boot = f.boot.clone();
    boot.append.extend(cmdline_words(&f));
    eprintln!(
        "[bench] alloc: {} run(s) of {} alloc+free per mode and size ({}), NMI batch {}",
        f.runs,
        f.loops,
        sizes(&f.sizes),
        f.batch
    );
    let built = test::Built {
        config: &config,
        kernel: &kernel,
        image: &image,
    };
    let s = test::boot_and_judge(&p, &boot, built, SnapshotMode::Off, started)?;
    let ktap_path = s.run_dir.join("ktap.log");
    if !s.passed {
        let mut why = vec![s.verdict.clone()];
        why.extend(s.failing.iter().cloned());
        if let Some(splat) = &s.first_splat {
            why.push(format!("first splat:\n{splat}"));
        }
        bail!(
            "the bench boot did not pass, so it has no figures (run dir {}):\n{}",
            s.run_dir.display(),
            why.join("\n")
        );
    }
    let text = std::fs::read_to_string(&ktap_path)
        .with_context(|| format!("reading {}", ktap_path.display()))?;
    let fig =
        figures::parse(&text).with_context(|| format!("the figures in {}", ktap_path.display()))?;
    let sum = Summary::new(&fig);
    let table = sum.table();

    let mut machine = Machine::probe();
    machine.accel = s.accel.clone();
    let yaml_path = s.run_dir.join("bench-alloc.yaml");
    report::write_yaml(
        &yaml_path,
        &AllocYaml {
            machine: AllocMachineYaml {
                machine: machine.yaml(),
                vcpus: f.boot.cpus,
                memory: f.boot.memory(),
            },
            kernel: kernel_yaml("bench", &config, &kernel, &image),
            cmdline: cmdline_words(&f),
            verdict: &s.verdict,
            figures: sum.yaml(),
            bench_wall_s: N(started.elapsed().as_secs_f64()),
        },
    )?;
    let table_path = s.run_dir.join("bench-alloc.txt");
    let mut table_file = table.clone();
    for n in sum.notes() {
        table_file.push_str(&format!("note: {n}\n"));
    }
    std::fs::write(&table_path, &table_file)
        .with_context(|| format!("writing {}", table_path.display()))?;

    println!();
    println!(
        "machine: {} ({} cores), host kernel {}, {}, accelerator {}; guest {} vCPUs, {}",
        machine.cpu,
        machine.cores,
        machine.kernel,
        machine.qemu,
        machine.accel,
        f.boot.cpus,
        f.boot.memory()
    );
    println!(
        "one guest boot ({}), thread pinned to CPU {}; one op = one alloc + its free; \
         {} per figure, {} run(s) after a warm-up; ratio = ours / kmalloc",
        kernel.release, fig.setup.cpu, f.loops, fig.setup.reps
    );
    println!();
    print!("{table}");
    for n in sum.notes() {
        println!("note: {n}");
    }
    let missed: Vec<&str> = sum
        .goals
        .iter()
        .filter(|g| !g.met)
        .map(|g| g.key.as_str())
        .collect();
    report::print_missed(&missed);
    println!("figures: {}", yaml_path.display());
    // A benchmark reports: a missed goal is not a failure.
    Ok(0)
}

/// bench-alloc.yaml.
#[derive(Serialize)]
struct AllocYaml<'a> {
    machine: AllocMachineYaml<'a>,
    kernel: KernelYaml,
    cmdline: Vec<String>,
    verdict: &'a str,
    #[serde(flatten)]
    figures: summary::FiguresYaml<'a>,
    bench_wall_s: N,
}

#[derive(Serialize)]
struct AllocMachineYaml<'a> {
    #[serde(flatten)]
    machine: MachineYaml<'a>,
    vcpus: u32,
    memory: String,
}

/// The guest's `rig.bench` words for these flags.
fn cmdline_words(f: &BenchAllocFlags) -> Vec<String> {
    vec![
        // The series' test config builds the allocator's debug mode, whose
        // checks would be timed too (patches/global-ma 0016).
        "bpf_global_ma_debug=0".into(),
        Word::Bench("alloc".into()).word(),
        Word::BenchParam("sizes".into(), sizes(&f.sizes)).word(),
        Word::BenchParam("reps".into(), f.runs.to_string()).word(),
        Word::BenchParam("loops".into(), f.loops.to_string()).word(),
        Word::BenchParam("batch".into(), f.batch.to_string()).word(),
    ]
}

fn sizes(s: &[u32]) -> String {
    s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The flags against the kernel bench file's limits, before any build.
fn check(f: &BenchAllocFlags) -> Result<()> {
    if f.boot.filter.is_some() {
        bail!("--filter does not apply to bench alloc (it runs all its parts)");
    }
    if f.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if f.sizes.is_empty() || f.sizes.iter().any(|&s| s == 0 || s > MAX_SIZE) {
        bail!("--sizes: each size must be 1..={MAX_SIZE} bytes");
    }
    if f.loops == 0 || f.loops > MAX_LOOPS {
        bail!("--loops must be 1..={MAX_LOOPS}");
    }
    if f.batch == 0 || f.batch > MAX_BATCH || !f.loops.is_multiple_of(u64::from(f.batch)) {
        bail!("--batch must be 1..={MAX_BATCH} and divide --loops");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> BenchAllocFlags {
        let parsed = crate::flags::Xtask::try_parse_from(
            ["xtask", "bench", "alloc"].iter().chain(args.iter()),
        )
        .unwrap();
        let crate::flags::Cmd::Bench(b) = parsed.cmd else {
            panic!("not bench")
        };
        let crate::flags::BenchWhat::Alloc(a) = b.what else {
            panic!("not bench alloc")
        };
        a
    }

    #[test]
    fn defaults_and_guest_words() {
        let f = flags(&[]);
        assert_eq!(
            cmdline_words(&f),
            vec![
                "bpf_global_ma_debug=0",
                "rig.bench=alloc",
                "rig.bench.sizes=32,256",
                "rig.bench.reps=5",
                "rig.bench.loops=1000000",
                "rig.bench.batch=1000",
            ]
        );
        assert!(check(&f).is_ok());
        let f = flags(&[
            "--sizes", "8,64", "--runs", "3", "--loops", "1000", "--batch", "10",
        ]);
        assert_eq!(cmdline_words(&f)[2], "rig.bench.sizes=8,64");
        assert!(check(&f).is_ok());
    }

    #[test]
    fn rejects_what_the_kernel_would() {
        for bad in [
            &["--runs", "0"][..],
            &["--sizes", "0"],
            &["--sizes", "4089"],
            &["--loops", "100000001"],
            &["--batch", "3"],
            &["--batch", "70000", "--loops", "7000000"],
            &["--filter", "x"],
        ] {
            assert!(check(&flags(bad)).is_err(), "{bad:?}");
        }
    }
}
