//! The global allocator's size classes as the production path uses them:
//! the class an allocation looks up from its size, keeps in the object's
//! header, and that the free reads back (patches/global-ma 0003, 0021 and
//! 0022). Every selftest boot has the debug mode on, whose checks replace
//! that header with the owner's tag and put the class back from ksize() on
//! free; so this test takes the kernel bench's `unchecked` mode (0020),
//! which allocates and frees as bpf_global_ma_debug=0 does.

use std::io;

use anyhow::{Context, Result};

use super::{expect_deltas, finish, quiet_stats, read_stats};
use crate::bench::kernel_bench::{self, Mode, Request};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::caches::Caches;
use crate::sys::cpu;
use rig_contract::lacks::lacks;

/// Both ends of every size class's requests (object = request + 8-byte
/// header: 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096 bytes).
const SIZES: &[u32] = &[
    1, 8, 9, 24, 25, 56, 57, 88, 89, 120, 121, 184, 185, 248, 249, 504, 505, 1016, 1017, 2040,
    2041, 4088,
];
/// Requests no class serves: each allocation fails.
const TOO_LARGE: &[u32] = &[4089, 4096];
/// Alloc+free pairs per size.
const PAIRS: u64 = 100;

fn pairs(size: u32, loops: u64) -> Result<kernel_bench::Measured> {
    kernel_bench::run(&Request {
        mode: Mode::Unchecked,
        size,
        loops,
        batch: 0,
    })
    .with_context(|| format!("{loops} unchecked pairs of {size} bytes"))
}

/// Whether `e` is the bench refusing the mode: a kernel before 0020.
fn mode_refused(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.raw_os_error() == Some(libc::EINVAL))
}

/// `global_ma_size_classes`: on one CPU, 100 unchecked alloc+free pairs of
/// each size at both ends of every class leave that CPU's free list of
/// every class as long as it was (a class stored or read back wrong moves
/// objects between lists, a missing one leaks them with a splat), fail
/// none and count each; a zero size gets ZERO_SIZE_PTR, uncounted; sizes
/// above 4088 fail, counted as alloc_fail.
pub fn global_ma_size_classes(_ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_bench("to allocate every size class with") {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let cpu = cpu::online_cpus()?[0];
    let _pin = affinity::pin(cpu)?;

    // One pair of each size first: a list below its low watermark is
    // refilled (from irq_work, on this CPU, before the write returns), so
    // that the counted pairs move no list across a watermark.
    for (i, &size) in SIZES.iter().enumerate() {
        match pairs(size, 1) {
            Err(e) if i == 0 && mode_refused(&e) => {
                return Ok(Outcome::Skip(lacks(
                    &format!("{} refuses mode unchecked: {e:#}", kernel_bench::BENCH_PATH),
                    "the bench's unchecked mode (patches/global-ma 0020)",
                )));
            }
            r => {
                r?;
            }
        }
    }

    let caches_before = Caches::read()?;
    let before = read_stats(&mut checks)?;
    for &size in SIZES {
        let m = pairs(size, PAIRS)?;
        checks.eq(format!("{size} B: failed allocations"), 0, m.fails);
    }
    let m = pairs(0, PAIRS)?;
    checks.eq("0 B: failed allocations (ZERO_SIZE_PTR)", 0, m.fails);
    let after = read_stats(&mut checks)?;
    let caches_after = Caches::read()?;

    let n = i64::try_from(SIZES.len() as u64 * PAIRS)?;
    expect_deltas(
        &mut checks,
        "unchecked pairs of every class",
        &before,
        &after,
        &[(cpu, n, n)],
    );
    for (&(c, unit), b) in caches_before.lines.iter().filter(|(k, _)| k.0 == cpu) {
        let a = caches_after.get(c, unit);
        checks.eq(
            format!("cpu{c} free list of {unit} B after the pairs: free_cnt"),
            Some(b.free_cnt),
            a.map(|a| a.free_cnt),
        );
    }

    for &size in TOO_LARGE {
        let s0 = read_stats(&mut checks)?;
        let m = pairs(size, PAIRS)?;
        let s1 = read_stats(&mut checks)?;
        checks.eq(format!("{size} B: failed allocations"), PAIRS, m.fails);
        let d = s1.cpu(cpu).since(&s0.cpu(cpu));
        checks.eq(
            format!("{size} B: cpu{cpu} alloc, free, alloc_fail deltas"),
            (0, 0, i64::try_from(PAIRS)?),
            (d.alloc, d.free, d.alloc_fail),
        );
    }

    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
