//! `rig.bench=maploop`: 6.1's own per-map allocator as a `BPF_F_NO_PREALLOC`
//! hash map uses it: `loops` update+delete pairs of new keys in one BPF
//! program run (progs/bench_maploop.bpf.c, BPF_PROG_RUN of a raw_tracepoint
//! program on the pinned CPU), timed in the program. The object uses
//! nothing of the series, so the host boots this on the unpatched baseline
//! kernel too and compares. One KTAP test, `bench_maploop`: one untimed
//! warm-up run, then `reps` timed runs; figures lines (see bench/mod.rs):
//!
//! ```text
//! bench: setup cpu=<pinned CPU> online=<n> loops=<n> reps=<n> warmup=1 max_entries=<n>
//! bench: maploop rep=<r> loops=<n> ns=<total ns of the loop>
//! ```
//!
//! Any failed update or delete fails the test (a failed pair is not a pair).

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, ProgramInput};

use super::emit;
use crate::check::Checks;
use crate::runner::{Ctx, Outcome, Test};
use crate::sys::bpf::{self, Pod};
use crate::sys::{affinity, cpu};

pub const TESTS: &[Test] = &[Test {
    name: "bench_maploop",
    run: bench_maploop,
}];

const OBJECT: &str = "bench_maploop";
const PROGRAM: &str = "maploop_run";
const MAP: &str = "maploop";
/// Mirror of MAPLOOP_MAX_ENTRIES in progs/bench_maploop.bpf.c.
const MAX_ENTRIES: u32 = 1024;
/// bpf_loop()'s limit on its iterations (BPF_MAX_LOOPS in 6.1).
pub const MAX_LOOPS: u64 = 1 << 23;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// update+delete pairs per run.
    pub loops: u64,
    /// Timed runs after the warm-up.
    pub reps: u32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            loops: 1_000_000,
            reps: 5,
        }
    }
}

impl Params {
    /// The `rig.bench.<param>=VALUE` words over the defaults, checked.
    pub fn parse(words: &[(String, String)]) -> Result<Params> {
        let mut p = Params::default();
        for (k, v) in words {
            let bad = || format!("bad rig.bench.{k}={v}");
            match k.as_str() {
                "loops" => p.loops = v.parse().with_context(bad)?,
                "reps" => p.reps = v.parse().with_context(bad)?,
                other => bail!("unknown parameter rig.bench.{other} (loops, reps)"),
            }
        }
        if p.loops == 0 || p.loops > MAX_LOOPS {
            bail!(
                "loops {} must be 1..={MAX_LOOPS} (bpf_loop's limit)",
                p.loops
            );
        }
        if p.reps == 0 {
            bail!("reps must be at least 1");
        }
        Ok(p)
    }
}

/// `struct maploop_result`, the object's `.bss`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct MaploopResult {
    ns: u64,
    pairs: u64,
    loop_ret: i64,
    update_err: u64,
    delete_err: u64,
    last_update_err: i64,
    last_delete_err: i64,
    cpu_start: u32,
    cpu_end: u32,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for MaploopResult {}

/// The program's context: `args[0]` pairs, `args[1]` the first key.
fn context(loops: u64, first_key: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..8].copy_from_slice(&loops.to_ne_bytes());
    c[8..].copy_from_slice(&first_key.to_ne_bytes());
    c
}

/// What one run must show: every pair done, on the pinned CPU, no error.
fn check_run(checks: &mut Checks, r: &MaploopResult, loops: u64, cpu: usize) {
    let cpu = cpu as u32;
    checks.eq(
        format!(
            "failed updates (last error {}), run stopped there",
            r.last_update_err
        ),
        0,
        r.update_err,
    );
    checks.eq(
        format!(
            "failed deletes (last error {}), run stopped there",
            r.last_delete_err
        ),
        0,
        r.delete_err,
    );
    checks.eq("update+delete pairs done", loops, r.pairs);
    checks.eq("bpf_loop() return value", loops as i64, r.loop_ret);
    checks.eq("CPU the run started on", cpu, r.cpu_start);
    checks.eq("CPU the run ended on", cpu, r.cpu_end);
    if r.ns == 0 {
        checks.fail("the run took 0 ns");
    }
}

fn bench_maploop(ctx: &Ctx<'_>) -> Result<Outcome> {
    let p = Params::parse(&ctx.cfg.bench_params)?;
    let obj = bpf::load(bpf::open_object(&ctx.cfg.bpf_dir, OBJECT)?, OBJECT)?;
    let map = bpf::map(&obj, MAP)?;
    let info = map.info().context("maploop map info")?.info;
    if info.map_flags & libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC == 0 {
        bail!(
            "maploop map flags {:#x} lack BPF_F_NO_PREALLOC",
            info.map_flags
        );
    }
    let prog = obj
        .progs_mut()
        .find(|p| p.name() == PROGRAM)
        .with_context(|| format!("no program {PROGRAM} in {OBJECT}.bpf.o"))?;

    let online = cpu::online_cpus()?;
    let first = *online.first().context("no online CPU")?;
    let _pinned = affinity::pin(first)?;
    emit(
        "setup",
        &[
            ("cpu", first.to_string()),
            ("online", online.len().to_string()),
            ("loops", p.loops.to_string()),
            ("reps", p.reps.to_string()),
            ("warmup", "1".to_string()),
            ("max_entries", info.max_entries.to_string()),
        ],
    );
    if info.max_entries != MAX_ENTRIES {
        bail!(
            "maploop map has {} entries, progs/bench_maploop.bpf.c says {MAX_ENTRIES}",
            info.max_entries
        );
    }
    let mut checks = Checks::new();
    // Repetition 0 is the warm-up. Every run inserts keys no earlier run
    // used.
    for rep in 0..=p.reps {
        let mut c = context(p.loops, u64::from(rep) * p.loops);
        let out = prog
            .test_run(ProgramInput {
                context_in: Some(&mut c),
                ..ProgramInput::default()
            })
            .with_context(|| format!("BPF_PROG_RUN of {PROGRAM} (run {rep})"))?;
        if out.return_value != 0 {
            bail!("{PROGRAM} returned {} (run {rep})", out.return_value);
        }
        let r: MaploopResult = bpf::read_global(&obj, ".bss")?;
        check_run(&mut checks, &r, p.loops, first);
        if rep > 0 {
            emit(
                "maploop",
                &[
                    ("rep", rep.to_string()),
                    ("loops", p.loops.to_string()),
                    ("ns", r.ns.to_string()),
                ],
            );
        }
    }
    let left = map.keys().count();
    checks.eq("elements left in the map", 0, left);
    checks.finish()?;
    Ok(Outcome::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[(&str, &str)]) -> Vec<(String, String)> {
        w.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn params() {
        assert_eq!(Params::parse(&[]).unwrap(), Params::default());
        let p = Params::parse(&words(&[("loops", "8388608"), ("reps", "3")])).unwrap();
        assert_eq!((p.loops, p.reps), (MAX_LOOPS, 3));
        for bad in [
            ("loops", "0"),
            ("loops", "8388609"),
            ("loops", "x"),
            ("reps", "0"),
            ("sizes", "32"),
        ] {
            assert!(Params::parse(&words(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn context_is_two_native_u64() {
        let c = context(1000, 5000);
        assert_eq!(u64::from_ne_bytes(c[..8].try_into().unwrap()), 1000);
        assert_eq!(u64::from_ne_bytes(c[8..].try_into().unwrap()), 5000);
    }

    #[test]
    fn the_result_mirrors_the_c_struct() {
        // 7 x 8 bytes then 2 x 4 bytes, no padding.
        assert_eq!(std::mem::size_of::<MaploopResult>(), 64);
    }
}
