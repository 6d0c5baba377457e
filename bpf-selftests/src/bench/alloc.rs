//! `rig.bench=alloc`: the global allocator against kmalloc and a 6.1
//! per-map bpf_mem_alloc, in process context and in NMI, and the prefill
//! syscall, all on one CPU of one boot. Three KTAP tests, each running one
//! untimed warm-up of everything it measures and then `reps` repetitions;
//! figures lines (see bench/mod.rs):
//!
//! ```text
//! bench: setup cpu=<pinned CPU> online=<n> sizes=<s,s> reps=<n> loops=<n> batch=<n> warmup=1
//! bench: alloc mode=<global|kmalloc|cache|nmi> size=<s> rep=<r> loops=<n> batch=<n> ns=<total> fails=<n>
//! bench: prefill size=<s> count=<n per CPU> rep=<r> unit_size=<bytes> ns=<syscall time>
//! bench: prefill size=<s> count=<n per CPU> unit_size=<bytes> refused=E2BIG limit=<bytes per CPU>
//! ```
//!
//! Process-context modes rotate their order from one repetition to the
//! next, so slow phases of a noisy host do not always hit the same mode.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::emit;
use super::kernel_bench::{self, Measured, Mode, Request};
use crate::runner::{Ctx, Outcome, Test};
use crate::sys::{affinity, cpu, reserve};

pub const TESTS: &[Test] = &[
    Test {
        name: "bench_alloc",
        run: bench_alloc,
    },
    Test {
        name: "bench_alloc_nmi",
        run: bench_alloc_nmi,
    },
    Test {
        name: "bench_prefill",
        run: bench_prefill,
    },
];

const PROCESS_MODES: [Mode; 4] = [
    Mode::Global,
    Mode::Kmalloc,
    Mode::Cache,
    Mode::GlobalCounted,
];
/// Objects per CPU the prefill is timed with.
const PREFILL_COUNTS: [u32; 2] = [1_000, 100_000];
/// The kernel's limits on a bench request.
const MAX_LOOPS: u64 = 100_000_000;
const MAX_BATCH: u32 = 65_536;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub sizes: Vec<u32>,
    pub reps: u32,
    /// Allocations (each with its free) per measurement.
    pub loops: u64,
    /// Allocations per NMI, and the reservation made for them.
    pub batch: u32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            sizes: vec![32, 256],
            reps: 5,
            loops: 1_000_000,
            batch: 1_000,
        }
    }
}

impl Params {
    /// The `rig.bench.<param>=VALUE` words over the defaults, checked
    /// against the kernel's limits.
    pub fn parse(words: &[(String, String)]) -> Result<Params> {
        let mut p = Params::default();
        for (k, v) in words {
            let bad = || format!("bad rig.bench.{k}={v}");
            match k.as_str() {
                "sizes" => {
                    p.sizes = v
                        .split(',')
                        .map(|s| s.parse::<u32>())
                        .collect::<Result<_, _>>()
                        .with_context(bad)?
                }
                "reps" => p.reps = v.parse().with_context(bad)?,
                "loops" => p.loops = v.parse().with_context(bad)?,
                "batch" => p.batch = v.parse().with_context(bad)?,
                other => bail!("unknown parameter rig.bench.{other} (sizes, reps, loops, batch)"),
            }
        }
        if p.sizes.is_empty() || p.sizes.iter().any(|&s| s == 0 || s > reserve::MAX_SIZE) {
            bail!(
                "sizes {:?}: each must be 1..={}",
                p.sizes,
                reserve::MAX_SIZE
            );
        }
        if p.reps == 0 {
            bail!("reps must be at least 1");
        }
        if p.loops == 0 || p.loops > MAX_LOOPS {
            bail!("loops {} must be 1..={MAX_LOOPS}", p.loops);
        }
        if p.batch == 0 || p.batch > MAX_BATCH || !p.loops.is_multiple_of(u64::from(p.batch)) {
            bail!(
                "batch {} must be 1..={MAX_BATCH} and divide loops {}",
                p.batch,
                p.loops
            );
        }
        Ok(p)
    }
}

/// Pins the thread to the first online CPU for the whole test.
fn pin(p: &Params) -> Result<affinity::Pinned> {
    let online = cpu::online_cpus()?;
    let first = *online.first().context("no online CPU")?;
    let pinned = affinity::pin(first)?;
    let sizes: Vec<String> = p.sizes.iter().map(u32::to_string).collect();
    emit(
        "setup",
        &[
            ("cpu", first.to_string()),
            ("online", online.len().to_string()),
            ("sizes", sizes.join(",")),
            ("reps", p.reps.to_string()),
            ("loops", p.loops.to_string()),
            ("batch", p.batch.to_string()),
            ("warmup", "1".to_string()),
        ],
    );
    Ok(pinned)
}

fn emit_alloc(m: &Measured, rep: u32) {
    emit(
        "alloc",
        &[
            ("mode", m.mode.clone()),
            ("size", m.size.to_string()),
            ("rep", rep.to_string()),
            ("loops", m.loops.to_string()),
            ("batch", m.batch.to_string()),
            ("ns", m.ns.to_string()),
            ("fails", m.fails.to_string()),
        ],
    );
}

/// Process context: global, kmalloc and cache alloc+free pairs.
fn bench_alloc(ctx: &Ctx<'_>) -> Result<Outcome> {
    let p = Params::parse(&ctx.cfg.bench_params)?;
    let _pinned = pin(&p)?;
    // Repetition 0 is the warm-up.
    for rep in 0..=p.reps {
        for &size in &p.sizes {
            for i in 0..PROCESS_MODES.len() {
                let mode = PROCESS_MODES[(i + rep as usize) % PROCESS_MODES.len()];
                let req = Request {
                    mode,
                    size,
                    loops: p.loops,
                    batch: 0,
                };
                let m = kernel_bench::run(&req)?;
                // A failed allocation is not an alloc+free pair: the time
                // would not be what the figure claims.
                if m.fails != 0 {
                    bail!(
                        "{}: {} of {} allocations of {size} bytes failed in process context",
                        mode.name(),
                        m.fails,
                        m.loops
                    );
                }
                if rep > 0 {
                    emit_alloc(&m, rep);
                }
            }
        }
    }
    Ok(Outcome::Pass)
}

/// NMI context: `batch` allocations then their frees per NMI, out of a
/// reservation of `batch` objects held for the run. Failed allocations are
/// the figure (goal: none), not an error.
fn bench_alloc_nmi(ctx: &Ctx<'_>) -> Result<Outcome> {
    let p = Params::parse(&ctx.cfg.bench_params)?;
    let _pinned = pin(&p)?;
    for rep in 0..=p.reps {
        for &size in &p.sizes {
            let base = reserve::reserved_total()?;
            let reservation = reserve::prefill(size, p.batch, 0)
                .with_context(|| format!("reservation map ({size}, {})", p.batch))?;
            let m = kernel_bench::run(&Request {
                mode: Mode::Nmi,
                size,
                loops: p.loops,
                batch: p.batch,
            });
            reserve::close_and_wait(reservation, base)?;
            let m = m?;
            if rep > 0 {
                emit_alloc(&m, rep);
            }
        }
    }
    Ok(Outcome::Pass)
}

/// A reservation map (size, count) created, timed around the syscall, and
/// closed after each, waiting until the reservation is given back. A count whose units do
/// not fit the per-CPU reserve limit must be refused with E2BIG, which is
/// checked and reported instead of a time.
fn bench_prefill(ctx: &Ctx<'_>) -> Result<Outcome> {
    let p = Params::parse(&ctx.cfg.bench_params)?;
    let _pinned = pin(&p)?;
    let mut cases = Vec::new();
    for &size in &p.sizes {
        let base = reserve::reserved_total()?;
        let probe =
            reserve::prefill(size, 1, 0).with_context(|| format!("reservation map ({size}, 1)"))?;
        let unit = reserve::read_fdinfo(&probe)?.unit_size;
        reserve::close_and_wait(probe, base)?;
        for count in PREFILL_COUNTS {
            let over = u64::from(count) * u64::from(unit) > reserve::RESERVE_MAX;
            if over {
                refused(size, count, unit)?;
            } else {
                cases.push((size, count, unit));
            }
        }
    }
    for rep in 0..=p.reps {
        for &(size, count, unit) in &cases {
            let base = reserve::reserved_total()?;
            let start = Instant::now();
            let fd = reserve::prefill(size, count, 0);
            let ns = start.elapsed().as_nanos();
            let fd = fd.with_context(|| format!("reservation map ({size}, {count})"))?;
            let info = reserve::read_fdinfo(&fd)?;
            reserve::close_and_wait(fd, base)?;
            if info.count != count || info.unit_size != unit {
                bail!("reservation map ({size}, {count}) reserved {info:?}");
            }
            if rep > 0 {
                emit(
                    "prefill",
                    &[
                        ("size", size.to_string()),
                        ("count", count.to_string()),
                        ("rep", rep.to_string()),
                        ("unit_size", unit.to_string()),
                        ("ns", ns.to_string()),
                    ],
                );
            }
        }
    }
    Ok(Outcome::Pass)
}

/// Checks that a reservation over the limit is refused with E2BIG.
fn refused(size: u32, count: u32, unit: u32) -> Result<()> {
    match reserve::prefill(size, count, 0) {
        Ok(fd) => {
            drop(fd);
            bail!(
                "reservation map ({size}, {count}) succeeded although {count} units of \
                 {unit} bytes exceed the {} bytes per CPU limit",
                reserve::RESERVE_MAX
            )
        }
        Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
            emit(
                "prefill",
                &[
                    ("size", size.to_string()),
                    ("count", count.to_string()),
                    ("unit_size", unit.to_string()),
                    ("refused", "E2BIG".to_string()),
                    ("limit", reserve::RESERVE_MAX.to_string()),
                ],
            );
            Ok(())
        }
        Err(e) => Err(e).with_context(|| {
            format!("reservation map ({size}, {count}): want E2BIG (over the limit)")
        }),
    }
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
        let p = Params::parse(&words(&[
            ("sizes", "8,4088"),
            ("reps", "3"),
            ("loops", "1000"),
            ("batch", "10"),
        ]))
        .unwrap();
        assert_eq!(p.sizes, vec![8, 4088]);
        assert_eq!((p.reps, p.loops, p.batch), (3, 1000, 10));
        for bad in [
            ("sizes", "0"),
            ("sizes", "4089"),
            ("sizes", "32,x"),
            ("reps", "0"),
            ("loops", "100000001"),
            ("batch", "3"),
            ("batch", "65537"),
            ("color", "blue"),
        ] {
            assert!(Params::parse(&words(&[bad])).is_err(), "{bad:?}");
        }
    }
}
