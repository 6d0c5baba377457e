//! Allocation from NMI out of the prefilled reserve (patches/global-ma
//! 0009, 0013, 0014). The kernel's test NMI source sends NMIs to chosen CPUs and
//! calls bpf_ma_test_nmi_hook() in each; progs/global_ma_nmi.bpf.c runs
//! there (and checks it is in NMI), allocating test objects into per-CPU
//! slots of an array map, or moving them through a hash map:
//!
//! - `global_ma_nmi_within_reserve`: prefill N per CPU, K NMIs per CPU of M
//!   allocations each, K * M = N: no failure, exact counts everywhere;
//! - `global_ma_nmi_over_reserve`: K * M > N: at least the reserve
//!   succeeds, every failure is counted the same by the program and the
//!   allocator, the free lists account for every object, and afterwards
//!   refill restores the low watermark so that normal and NMI allocations
//!   succeed again;
//! - `global_ma_nmi_hash_kptr`: an object stored in a hash map in NMI is
//!   taken and freed in normal context on another CPU, and the reverse,
//!   including a hash delete in NMI that frees the object it held;
//! - `global_ma_nmi_hash_buckets`: NMIs on two CPUs update the hash element
//!   the other CPU's program keeps updating: without patch 0001's trylock
//!   in NMI the two CPUs deadlock (ABBA on two bucket locks);
//! - `global_ma_nmi_busy_free`: an NMI that lands inside the allocator
//!   frees a reserved object, which must come back to the free list (patch
//!   0009), and an allocation in such an NMI fails and is counted busy;
//! - `global_ma_nmi_stress`: seconds of NMIs on all CPUs that allocate and
//!   free, while a thread per CPU allocates and frees and another makes and
//!   drops reservations: every counter agrees at the end.

mod busy;
mod hash;
mod storm;
mod stress;

use std::fs;
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags, Object};

use super::{attach, open, quiet_stats, trigger, write_global};
use crate::check::Checks;
use crate::poll::poll;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf::{self, Pod};
use crate::sys::caches::Caches;
use crate::sys::cpu;
use crate::sys::nmi;
use crate::sys::reserve;
use crate::sys::stats::{self, NmiStats, ReserveStats, Stats};

pub use busy::global_ma_nmi_busy_free;
pub use hash::{global_ma_nmi_hash_buckets, global_ma_nmi_hash_kptr};
pub use storm::{global_ma_nmi_external, global_ma_nmi_over_reserve, global_ma_nmi_within_reserve};
pub use stress::global_ma_nmi_stress;

const OBJECT: &str = "global_ma_nmi";
/// NMI_SLOTS, NMI_MAX_CPUS in the BPF program.
const SLOTS: u32 = 4096;
const MAX_CPUS: usize = 8;
/// sizeof(struct bpf_ma_testobj), and its size class (with the header).
const OBJ_SIZE: u32 = 32;
const UNIT: u32 = 64;
/// Longest wait for irq_work to refill the free lists after NMIs.
const REFILL_TIMEOUT: Duration = Duration::from_secs(10);

/// NMI_OP_* and NORMAL_OP_ALLOC in the BPF program.
const OP_NONE: u32 = 0;
const OP_HOLD: u32 = 1;
const OP_RING: u32 = 2;
const OP_HASH_STASH: u32 = 3;
const OP_HASH_TAKE: u32 = 4;
const OP_HASH_DELETE: u32 = 5;
const OP_ALLOC: u32 = 6;
const OP_CROSS_UPDATE: u32 = 7;
const OP_NORMAL_CROSS_UPDATE: u32 = 8;

/// `struct nmi_ctl`, the object's `.bss`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct NmiCtl {
    tgid: u32,
    op: u32,
    normal_op: u32,
    per_nmi: u32,
    slots: u32,
    key: u32,
    cross_key: [u32; 2],
}

/// `struct nmi_counts`, the value of the `counts` array.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Counts {
    nmis: u64,
    in_nmi: u64,
    allocs: u64,
    nulls: u64,
    releases: u64,
    stored: u64,
    taken: u64,
    deletes: u64,
    full: u64,
    errs: u64,
    last_err: i64,
    next_slot: u64,
    normal_runs: u64,
    updates: u64,
    busy: u64,
}
// SAFETY: repr(C), integers only, same layout as the C structs.
unsafe impl Pod for NmiCtl {}
unsafe impl Pod for Counts {}

/// `struct gma_val`: the kptr (written as 0 from user space) and a tag.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct GmaVal {
    obj: u64,
    tag: u64,
}
// SAFETY: repr(C), integers only.
unsafe impl Pod for GmaVal {}

/// Everything a test needs to skip, or the online CPUs.
fn preflight(ctx: &Ctx<'_>) -> Result<std::result::Result<Vec<usize>, Outcome>> {
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
        return Ok(Err(skip));
    }
    if !nmi::available() {
        return Ok(Err(Outcome::Skip(rig_contract::lacks::lacks(
            &format!("{} missing", nmi::NMI_PATH),
            "CONFIG_BPF_GLOBAL_MA_TEST_NMI (the NMI test source)",
        ))));
    }
    let cpus = cpu::online_cpus()?;
    if let Some(&c) = cpus.iter().find(|&&c| c >= MAX_CPUS) {
        bail!("CPU {c} is beyond NMI_MAX_CPUS ({MAX_CPUS}) of the BPF program");
    }
    Ok(Ok(cpus))
}

/// `preflight`, and at least two online CPUs.
fn preflight_two_cpus(ctx: &Ctx<'_>) -> Result<std::result::Result<Vec<usize>, Outcome>> {
    let cpus = preflight(ctx)?;
    if let Ok(c) = &cpus {
        if c.len() < 2 {
            bail!("needs two online CPUs, has {c:?}");
        }
    }
    Ok(cpus)
}

struct Loaded {
    obj: Object,
    links: Vec<Link>,
    ctl: NmiCtl,
}

impl Loaded {
    fn new(ctx: &Ctx<'_>) -> Result<Loaded> {
        let mut open = open(ctx, OBJECT)?;
        let ctl = NmiCtl {
            tgid: std::process::id(),
            ..NmiCtl::default()
        };
        bpf::set_global(&mut open, ".bss", &ctl)?;
        let obj = bpf::load(open, OBJECT)?;
        let links = attach(&obj, &["nmi_hook", "normal_op"])?;
        Ok(Loaded { obj, links, ctl })
    }

    fn set(&mut self, f: impl FnOnce(&mut NmiCtl)) -> Result<()> {
        f(&mut self.ctl);
        write_global(&self.obj, ".bss", &self.ctl)
    }

    /// The program's counters of `cpu`, of nmi_hook or of normal_op.
    fn counts(&self, cpu: usize, in_nmi: bool) -> Result<Counts> {
        let key = (cpu + if in_nmi { 0 } else { MAX_CPUS }) as u32;
        let bytes = bpf::map(&self.obj, "counts")?
            .lookup(&key.to_ne_bytes(), MapFlags::ANY)?
            .with_context(|| format!("counts has no element {key}"))?;
        bpf::read_pod(&bytes)
    }

    /// Runs normal_op once on `cpu` (getpgid from a pinned thread).
    fn normal_on(&self, cpu: usize) -> Result<()> {
        let _pin = affinity::pin(cpu)?;
        trigger()
    }
}

/// One reading of the stats file, all field groups.
pub(super) struct Snap {
    stats: Stats,
    nmi: NmiStats,
    reserve: ReserveStats,
}

fn snap(checks: &mut Checks) -> Result<Snap> {
    let text = fs::read_to_string(stats::STATS_PATH)
        .with_context(|| format!("reading {}", stats::STATS_PATH))?;
    let stats = Stats::parse(&text)?;
    for bad in stats.inconsistencies() {
        checks.fail(format!("{}: {bad}", stats::STATS_PATH));
    }
    Ok(Snap {
        stats,
        nmi: NmiStats::parse(&text)?,
        reserve: ReserveStats::parse(&text)?,
    })
}

/// Checks the program ran in NMI every time, without errors.
fn expect_clean_nmi_runs(checks: &mut Checks, cpu: usize, p: &Counts, nmis: u64) {
    checks.eq(format!("cpu{cpu}: nmi_hook runs"), nmis, p.nmis);
    checks.eq(format!("cpu{cpu}: runs with in_nmi()"), p.nmis, p.in_nmi);
    checks.eq(
        format!("cpu{cpu}: program errors (last {})", p.last_err),
        0,
        p.errs,
    );
}

/// Polls the caches until every CPU's free list of the test objects' class
/// is at its low watermark again.
fn wait_low_watermark(cpus: &[usize]) -> Result<(Caches, bool, Duration)> {
    poll(
        REFILL_TIMEOUT,
        Duration::from_millis(2),
        Caches::read,
        |c| {
            cpus.iter().all(|&cpu| {
                c.get(cpu, UNIT)
                    .map(|l| l.free_cnt >= l.low)
                    .unwrap_or(false)
            })
        },
    )
}

fn free_cnt(c: &Caches, cpu: usize) -> Result<i64> {
    c.get(cpu, UNIT)
        .map(|l| l.free_cnt)
        .with_context(|| format!("no cpu{cpu} unit {UNIT} line in the caches file"))
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// A storm test's start: the object loaded, `n` objects reserved per CPU,
/// nmi_hook set to keep `per_nmi` new objects per NMI.
struct Storm {
    cpus: Vec<usize>,
    checks: Checks,
    start: Stats,
    l: Loaded,
    reservation: OwnedFd,
}

fn hold_storm(ctx: &Ctx<'_>, n: u32, per_nmi: u32) -> Result<std::result::Result<Storm, Outcome>> {
    let cpus = match preflight(ctx)? {
        Ok(c) => c,
        Err(skip) => return Ok(Err(skip)),
    };
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut l = Loaded::new(ctx)?;
    let reservation = reserve::prefill(OBJ_SIZE, n, 0).context("prefill")?;
    l.set(|c| {
        c.op = OP_HOLD;
        c.per_nmi = per_nmi;
        c.slots = SLOTS;
    })?;
    Ok(Ok(Storm {
        cpus,
        checks,
        start,
        l,
        reservation,
    }))
}
