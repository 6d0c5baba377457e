//! Reserves of the global allocator made with maps of type
//! `BPF_MAP_TYPE_GLOBAL_MA_RESERVE` (patches/global-ma 0010-0014,
//! Documentation/bpf/global_ma.rst), with
//! progs/global_ma_prefill.bpf.c allocating and freeing test objects (32
//! bytes, size class 64) on the CPU a pinned thread triggers it from:
//!
//! - `global_ma_prefill_sequence`: Delyan's "freelist determinism"
//!   sequence with N = 1000 on every CPU: prefill, N allocations (none
//!   fails), N frees (all stay on the CPU's free list: no trim), N
//!   allocations (none fails), one more (may fail, counted);
//! - `global_ma_prefill_release`: the reservation lasts as long as its map
//!   (fd and duplicates); closing the last one brings the watermarks and
//!   reserves back, gives the surplus to the slab (trim_objs = objects
//!   dropped from the free lists), leaves objects in use alone;
//! - `global_ma_prefill_stacking`: reservations add up per size class,
//!   classes do not interfere, closing one leaves the others intact and
//!   counts what it trims;
//! - `global_ma_prefill_bad_input`: EINVAL, E2BIG, EPERM, EMFILE, each
//!   leaving the allocator as it was;
//! - `global_ma_prefill_prog_lifetime`: a program bound to the map
//!   (BPF_PROG_BIND_MAP) keeps the reservation after the map's fd is
//!   closed, until the program goes;
//! - `global_ma_prefill_concurrent`: prefills while every other CPU
//!   allocates and frees; the sequence holds afterwards.
//!
//! Nothing else uses the global allocator while a test runs, so the
//! counters are exact; every test also checks, per CPU, that the free list
//! length (`cached`) moved by exactly prefill + refill_objs + free - alloc -
//! trim_objs: no object appears or disappears unaccounted. A map is freed
//! from a workqueue after its last reference goes, so the watermarks come
//! down shortly after the close, and the unreserve only queues the
//! trims, and a trim shrinks a free list before it adds to trim_objs, so a
//! snapshot after a close (and at the end of a test) waits until every free
//! list is at or under its high watermark and the counters account for it.

mod bad_input;
mod concurrent;
mod ctl;
mod enomem;
mod lifetime;
mod sequence;
mod snap;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, Object};
use rig_contract::cmdline::Profile;

use super::{attach, open, quiet_stats};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::bpf;
use crate::sys::caches;
use crate::sys::cpu::{self, MAX_CPUS};
use crate::sys::reserve;
use crate::sys::stats::Stats;
use rig_contract::lacks::lacks;

use snap::{snap, Snap};

pub use bad_input::global_ma_prefill_bad_input;
pub use concurrent::global_ma_prefill_concurrent;
pub use enomem::global_ma_prefill_enomem;
pub use lifetime::{
    global_ma_prefill_prog_lifetime, global_ma_prefill_release, global_ma_prefill_stacking,
};
pub use sequence::global_ma_prefill_sequence;

const OBJECT: &str = "global_ma_prefill";
const PROGS: [&str; 3] = ["gma_pf_alloc", "gma_pf_free", "gma_pf_hammer"];
/// GMA_PF_SLOTS, GMA_PF_HAMMER_MAX in the BPF program.
const SLOTS: u32 = 1024;
const HAMMER_MAX: u32 = 64;
/// The reservation of the sequence (objects per CPU).
const N: u32 = 1000;
/// sizeof(struct bpf_ma_testobj): what bpf_ma_testobj_new() allocates.
const OBJ_SIZE: u32 = 32;
/// Longest wait for the surplus to leave the free lists after a release.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time irq_work gets to trim a free list (it would, if it were above the
/// high watermark) before the test looks, per profile. irq_work is raised
/// with a self-IPI and runs as soon as the CPU takes interrupts again, and
/// unit_free() raises it with interrupts on: a trim the frees start has
/// run before getpgid() returns. The grace is for a trim put off further:
/// a lazy irq_work runs at the next tick (4 ms at the rig's HZ=250), which
/// the quick profile's 10 ms covers twice; the full profile (mutants,
/// nightly) keeps 50 ms.
fn irq_work_grace(profile: Profile) -> Duration {
    match profile {
        Profile::Full => Duration::from_millis(50),
        Profile::Quick => Duration::from_millis(10),
    }
}

/// Skip on a kernel without the reserves (a patch before 0011, checked by
/// check-series or bisect) or without `object`, probing the command
/// without touching the allocator.
pub(super) fn missing_reserves(ctx: &Ctx<'_>, object: &str) -> Result<Option<Outcome>> {
    if let Some(skip) = super::missing_feature(ctx, object) {
        return Ok(Some(skip));
    }
    if !std::path::Path::new(caches::CACHES_PATH).exists() {
        return Ok(Some(Outcome::Skip(lacks(
            &format!("{} missing", caches::CACHES_PATH),
            "the global allocator's per-CPU reserves",
        ))));
    }
    Ok(reserve::probe()?.map(Outcome::Skip))
}

/// The loaded object with its programs attached.
struct Loaded {
    obj: Object,
    links: Vec<Link>,
}

fn load(ctx: &Ctx<'_>) -> Result<Loaded> {
    let obj = bpf::load(open(ctx, OBJECT)?, OBJECT)?;
    let links = attach(&obj, &PROGS)?;
    Ok(Loaded { obj, links })
}

/// The unit size of the reservation behind `fd`, whose fdinfo must show
/// what it was asked for.
fn checked_unit(checks: &mut Checks, fd: &OwnedFd, size: u32, count: u32) -> Result<u32> {
    let info = reserve::read_fdinfo(fd)?;
    checks.eq(
        format!("fdinfo size of prefill({size}, {count})"),
        size,
        info.size,
    );
    checks.eq(
        format!("fdinfo count of prefill({size}, {count})"),
        count,
        info.count,
    );
    Ok(info.unit_size)
}

fn prefill_timed(size: u32, count: u32) -> Result<(OwnedFd, Duration)> {
    let t = Instant::now();
    let fd = reserve::prefill(size, count, 0)
        .with_context(|| format!("reservation map {size} x {count}"))?;
    Ok((fd, t.elapsed()))
}

/// The start of every test: a quiet allocator with no reservation.
fn begin(checks: &mut Checks) -> Result<(Stats, Snap)> {
    let start = quiet_stats(checks)?;
    let s = snap(checks)?;
    if s.res.total.reserved != 0 {
        checks.fail(format!(
            "{} objects are reserved before the test (an earlier test leaked a reservation)",
            s.res.total.reserved
        ));
    }
    Ok((start, s))
}

fn online(checks: &mut Checks, s: &Snap) -> Result<Vec<usize>> {
    let cpus = cpu::online_cpus()?;
    if let Some(&c) = cpus.iter().find(|&&c| c >= MAX_CPUS) {
        bail!("CPU {c} is beyond RIG_MAX_CPUS ({MAX_CPUS})");
    }
    checks.eq(
        "possible CPUs in the caches file = online CPUs",
        cpus.clone(),
        s.caches.cpus(),
    );
    Ok(cpus)
}
