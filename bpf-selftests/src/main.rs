//! Guest-side BPF selftest runner: loads the BPF programs under
//! /lib/bpf-selftests with libbpf-rs and reports KTAP on the `ktap`
//! virtio-serial port. See tests/mod.rs for the test table, sys/mod.rs for
//! the kernel interfaces, and bench/mod.rs for the benchmarks run instead
//! with `rig.bench=NAME`.

mod bench;
mod check;
mod cmdline;
mod kernel_suites;
mod ktap;
mod objects;
mod poll;
mod runner;
mod sys;
mod tests;

use std::process::ExitCode;

use anyhow::Result;

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bpf-selftests: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<bool> {
    let cfg = cmdline::Config::load()?;
    if cfg.list {
        for t in tests::ALL.iter().filter(|t| cfg.selects(t.name)) {
            println!("{}", t.name);
        }
        return Ok(true);
    }
    let ktap = ktap::Ktap::open(cfg.ktap.as_deref())?.install();
    if cfg.kernel_suites {
        return kernel_suites::run(ktap, &cfg);
    }
    sys::bpf::forward_libbpf_log(cfg.libbpf_debug);
    let table = match (&cfg.fault, &cfg.bench) {
        (Some(name), _) => tests::fault(name)?,
        (None, Some(name)) => bench::table(name, &cfg)?,
        (None, None) => {
            // The selftests' alloc/free deltas need the counting on; a
            // failure shows as `counting 0` in the tests that read them.
            if let Err(e) = sys::stats::set_counting(true) {
                eprintln!("bpf-selftests: {e:#}");
            }
            tests::ALL
        }
    };
    Ok(runner::run(ktap, &cfg, table))
}
