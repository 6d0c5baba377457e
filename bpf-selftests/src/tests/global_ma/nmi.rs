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

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags, Object};

use super::{attach, expect_deltas, finish, open, quiet_stats, trigger, write_global};
use crate::affinity;
use crate::bpf::{self, Pod};
use crate::caches::Caches;
use crate::check::Checks;
use crate::cpu;
use crate::nmi;
use crate::prefill;
use crate::runner::{panic_message, Ctx, Outcome};
use crate::stats::{self, NmiStats, ReserveStats, Stats};

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
/// CROSS_LOOPS in the BPF program: updates per run of normal_op.
const CROSS_LOOPS: u64 = 256;
/// `plain`'s buckets (max_entries 64 rounded up to a power of two) and
/// its map_locked slots (HASHTAB_MAP_LOCK_MASK + 1).
const PLAIN_BUCKETS: u32 = 64;
const MAP_LOCKED_SLOTS: u32 = 8;
/// How long the bucket-lock test hammers the two buckets.
const CROSS_DURATION: Duration = Duration::from_millis(1500);
/// NMI rounds of the hash_buckets test after the contention has stopped.
const QUIET_ROUNDS: u64 = 100;

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
        return Ok(Err(Outcome::Skip(format!(
            "{} missing: this kernel has no NMI test source \
             (CONFIG_BPF_GLOBAL_MA_TEST_NMI)",
            nmi::NMI_PATH
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
struct Snap {
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
    let start = Instant::now();
    loop {
        let c = Caches::read()?;
        let ok = cpus.iter().all(|&cpu| {
            c.get(cpu, UNIT)
                .map(|l| l.free_cnt >= l.low)
                .unwrap_or(false)
        });
        if ok || start.elapsed() > REFILL_TIMEOUT {
            return Ok((c, ok, start.elapsed()));
        }
        thread::sleep(Duration::from_millis(2));
    }
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
    let reservation = prefill::prefill(OBJ_SIZE, n, 0).context("prefill")?;
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

pub fn global_ma_nmi_within_reserve(ctx: &Ctx<'_>) -> Result<Outcome> {
    const N: u32 = 512;
    const K: u64 = 16;
    const M: u32 = 32;
    let Storm {
        cpus,
        mut checks,
        start,
        l,
        reservation,
    } = match hold_storm(ctx, N, M)? {
        Ok(s) => s,
        Err(skip) => return Ok(skip),
    };

    let s0 = snap(&mut checks)?;
    let h0 = nmi::read()?;
    let took = nmi::send(&cpus, K)?;
    let s1 = snap(&mut checks)?;
    let h1 = nmi::read()?;

    let want = K * u64::from(M);
    for &c in &cpus {
        let p = l.counts(c, true)?;
        expect_clean_nmi_runs(&mut checks, c, &p, K);
        checks.eq(
            format!("cpu{c}: NMIs handled by the source"),
            K,
            h1[&c].ipi - h0[&c].ipi,
        );
        checks.eq(format!("cpu{c}: allocations in NMI"), want, p.allocs);
        checks.eq(format!("cpu{c}: failed allocations in NMI"), 0, p.nulls);
        checks.eq(format!("cpu{c}: objects stored"), want, p.stored);
        let n = s1.nmi.cpu(c).since(&s0.nmi.cpu(c));
        checks.eq(
            format!("cpu{c}: allocator nmi_alloc delta"),
            want,
            n.nmi_alloc,
        );
        checks.eq(
            format!("cpu{c}: allocator nmi_alloc_fail delta"),
            0,
            n.nmi_alloc_fail,
        );
    }
    let per_cpu: Vec<(usize, i64, i64)> = cpus.iter().map(|&c| (c, want as i64, 0)).collect();
    expect_deltas(&mut checks, "NMI storm", &s0.stats, &s1.stats, &per_cpu);
    let nmis = K * cpus.len() as u64;
    ctx.diag(format!(
        "{nmis} NMIs ({K} per CPU on {} CPUs) in {:.1} ms: {:.0} NMIs/s, {:.0} allocations/s \
         in NMI, 0 failures expected, {} seen",
        cpus.len(),
        took.as_secs_f64() * 1e3,
        per_sec(nmis, took),
        per_sec(want * cpus.len() as u64, took),
        s1.nmi.total.since(&s0.nmi.total).nmi_alloc_fail
    ));

    drop(l.links);
    finish(&mut checks, (l.obj, reservation), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

pub fn global_ma_nmi_over_reserve(ctx: &Ctx<'_>) -> Result<Outcome> {
    const N: u32 = 512;
    const K: u64 = 16;
    const M: u32 = 48;
    let Storm {
        cpus,
        mut checks,
        start,
        mut l,
        reservation,
    } = match hold_storm(ctx, N, M)? {
        Ok(s) => s,
        Err(skip) => return Ok(skip),
    };

    let c0 = Caches::read()?;
    let s0 = snap(&mut checks)?;
    let took = nmi::send(&cpus, K)?;
    let (c1, refilled, refill_took) = wait_low_watermark(&cpus)?;
    let s1 = snap(&mut checks)?;
    if !refilled {
        checks.fail(format!(
            "a free list stayed below its low watermark {REFILL_TIMEOUT:?} after the NMIs"
        ));
    }

    let asked = K * u64::from(M);
    let mut report = Vec::new();
    for &c in &cpus {
        let p = l.counts(c, true)?;
        expect_clean_nmi_runs(&mut checks, c, &p, K);
        checks.eq(
            format!("cpu{c}: allocations + failures"),
            asked,
            p.allocs + p.nulls,
        );
        let f0 = free_cnt(&c0, c)?;
        let f1 = free_cnt(&c1, c)?;
        // The reservation (and the default list on top) is there for NMI.
        if (p.allocs as i64) < f0 {
            checks.fail(format!(
                "cpu{c}: only {} allocations in NMI succeeded, with {f0} objects on the free \
                 list ({N} reserved) before the NMIs",
                p.allocs
            ));
        }
        let d = s1.stats.cpu(c).since(&s0.stats.cpu(c));
        let n = s1.nmi.cpu(c).since(&s0.nmi.cpu(c));
        let r1 = s1.reserve.cpu(c);
        let r0 = s0.reserve.cpu(c);
        checks.eq(
            format!("cpu{c}: allocator alloc delta"),
            p.allocs as i64,
            d.alloc,
        );
        checks.eq(
            format!("cpu{c}: allocator alloc_fail delta"),
            p.nulls as i64,
            d.alloc_fail,
        );
        checks.eq(
            format!("cpu{c}: allocator nmi_alloc delta"),
            p.allocs,
            n.nmi_alloc,
        );
        checks.eq(
            format!("cpu{c}: allocator nmi_alloc_fail delta"),
            p.nulls,
            n.nmi_alloc_fail,
        );
        checks.eq(
            format!("cpu{c}: allocator alloc_busy delta"),
            0,
            n.alloc_busy,
        );
        // Every object on or off the free list is accounted for.
        let trimmed = r1.trim_objs.wrapping_sub(r0.trim_objs) as i64;
        checks.eq(
            format!("cpu{c}: free_cnt change = refill_objs - trim_objs - allocs"),
            d.refill_objs - trimmed - p.allocs as i64,
            f1 - f0,
        );
        report.push(format!(
            "cpu{c} {}/{asked} ok, {} failed (free list {f0}, refilled {} between NMIs)",
            p.allocs, p.nulls, d.refill_objs
        ));
    }
    ctx.diag(format!(
        "{K} NMIs x {M} allocations per CPU, {N} reserved, in {:.1} ms; free lists back at \
         the low watermark {:.1} ms later",
        took.as_secs_f64() * 1e3,
        refill_took.as_secs_f64() * 1e3
    ));
    ctx.diag(report.join("; "));

    // Healthy again: a normal allocation, then an NMI allocation, on every CPU.
    l.set(|c| {
        c.normal_op = OP_ALLOC;
        c.per_nmi = 1;
    })?;
    for &c in &cpus {
        let before = l.counts(c, false)?;
        l.normal_on(c)?;
        let after = l.counts(c, false)?;
        checks.eq(
            format!("cpu{c}: normal allocation after the NMIs succeeded"),
            (1, 0),
            (after.allocs - before.allocs, after.nulls - before.nulls),
        );
    }
    let before: BTreeMap<usize, Counts> = cpus
        .iter()
        .map(|&c| Ok((c, l.counts(c, true)?)))
        .collect::<Result<_>>()?;
    nmi::send(&cpus, 1)?;
    for &c in &cpus {
        let after = l.counts(c, true)?;
        checks.eq(
            format!("cpu{c}: NMI allocation after refill succeeded"),
            (1, 0),
            (
                after.allocs - before[&c].allocs,
                after.nulls - before[&c].nulls,
            ),
        );
    }

    drop(l.links);
    finish(&mut checks, (l.obj, reservation), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

pub fn global_ma_nmi_hash_kptr(ctx: &Ctx<'_>) -> Result<Outcome> {
    let cpus = match preflight_two_cpus(ctx)? {
        Ok(c) => c,
        Err(skip) => return Ok(skip),
    };
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut l = Loaded::new(ctx)?;
    let pairs = [(cpus[0], cpus[1]), (cpus[cpus.len() - 1], cpus[0])];
    {
        let hash = bpf::map(&l.obj, "hash")?;
        for key in 1..=(3 * pairs.len() as u32) {
            hash.update(
                &key.to_ne_bytes(),
                &bpf::pod_bytes(&GmaVal::default()),
                MapFlags::NO_EXIST,
            )
            .with_context(|| format!("inserting hash element {key}"))?;
        }
    }

    for (i, &(a, b)) in pairs.iter().enumerate() {
        let key = 3 * i as u32 + 1;
        // NMI on a stores, normal context on b takes and frees.
        let s0 = snap(&mut checks)?;
        l.set(|c| {
            c.op = OP_HASH_STASH;
            c.normal_op = OP_HASH_TAKE;
            c.key = key;
        })?;
        nmi::send(&[a], 1)?;
        l.normal_on(b)?;
        let s1 = snap(&mut checks)?;
        let what = format!("NMI stash on cpu{a}, take on cpu{b}");
        expect_deltas(
            &mut checks,
            &what,
            &s0.stats,
            &s1.stats,
            &[(a, 1, 0), (b, 0, 1)],
        );
        let n = s1.nmi.total.since(&s0.nmi.total);
        checks.eq(
            format!("{what}: nmi_alloc, nmi_free"),
            (1, 0),
            (s1.nmi.cpu(a).since(&s0.nmi.cpu(a)).nmi_alloc, n.nmi_free),
        );

        // Normal context on b stores, NMI on a takes and frees; then the
        // same with an NMI delete that makes the map free the object.
        for (op, k, how) in [
            (OP_HASH_TAKE, key + 1, "take"),
            (OP_HASH_DELETE, key + 2, "delete"),
        ] {
            let s0 = snap(&mut checks)?;
            l.set(|c| {
                c.op = op;
                c.normal_op = OP_HASH_STASH;
                c.key = k;
            })?;
            l.normal_on(b)?;
            nmi::send(&[a], 1)?;
            let s1 = snap(&mut checks)?;
            let what = format!("stash on cpu{b}, NMI {how} on cpu{a}");
            expect_deltas(
                &mut checks,
                &what,
                &s0.stats,
                &s1.stats,
                &[(b, 1, 0), (a, 0, 1)],
            );
            let n = s1.nmi.total.since(&s0.nmi.total);
            checks.eq(
                format!("{what}: nmi_alloc, nmi_free on cpu{a}"),
                (0, 1),
                (n.nmi_alloc, s1.nmi.cpu(a).since(&s0.nmi.cpu(a)).nmi_free),
            );
        }
        let gone = bpf::map(&l.obj, "hash")?.lookup(&(key + 2).to_ne_bytes(), MapFlags::ANY)?;
        if gone.is_some() {
            checks.fail(format!(
                "hash element {} still there after the NMI delete",
                key + 2
            ));
        }
    }
    for &c in &cpus {
        for nmi_side in [true, false] {
            let p = l.counts(c, nmi_side)?;
            checks.eq(
                format!(
                    "cpu{c}: {} errors (last {})",
                    if nmi_side { "nmi_hook" } else { "normal_op" },
                    p.last_err
                ),
                0,
                p.errs,
            );
            if nmi_side {
                checks.eq(format!("cpu{c}: runs with in_nmi()"), p.nmis, p.in_nmi);
            }
        }
    }
    ctx.diag(format!(
        "{} CPU pairs x 3 hand-overs between NMI and normal context",
        pairs.len()
    ));

    l.set(|c| c.op = OP_NONE)?;
    drop(l.links);
    finish(&mut checks, l.obj, &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// `busy` next to the NMI file: NMIs to the writing CPU while its free list
/// of one size class is busy, as if each NMI had landed in the allocator.
const BUSY_PATH: &str = "/sys/kernel/debug/bpf_global_ma_test/busy";

/// Sends one NMI to `cpu` while its free list of the test objects' class
/// is busy there.
fn busy_nmi_on(cpu: usize) -> Result<()> {
    let _pin = affinity::pin(cpu)?;
    let request = format!("{OBJ_SIZE} 1");
    fs::write(BUSY_PATH, &request).with_context(|| format!("writing {request:?} to {BUSY_PATH}"))
}

/// An NMI that lands inside the allocator (patch 0009): the free it does
/// goes to the busy list's `free_llist_extra`, and irq_work must put the
/// object back on the free list, so that a reserved object freed in NMI
/// stays in the reserve. An allocation in such an NMI fails and is counted
/// as busy: the one case the reserve cannot cover.
pub fn global_ma_nmi_busy_free(ctx: &Ctx<'_>) -> Result<Outcome> {
    let cpus = match preflight(ctx)? {
        Ok(c) => c,
        Err(skip) => return Ok(skip),
    };
    if !std::path::Path::new(BUSY_PATH).exists() {
        return Ok(Outcome::Skip(format!(
            "{BUSY_PATH} missing: this kernel's NMI source cannot make a free list busy"
        )));
    }
    let a = cpus[0];
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut l = Loaded::new(ctx)?;
    // 64 reserved: the list stays between the watermarks (low 32, high
    // 96 + 64), so no refill or trim moves free_cnt during the test.
    let reservation = prefill::prefill(OBJ_SIZE, 64, 0).context("prefill")?;
    let key = 1u32;
    bpf::map(&l.obj, "hash")?
        .update(
            &key.to_ne_bytes(),
            &bpf::pod_bytes(&GmaVal::default()),
            MapFlags::NO_EXIST,
        )
        .context("inserting hash element 1")?;

    let c0 = Caches::read()?;
    l.set(|c| {
        c.normal_op = OP_HASH_STASH;
        c.key = key;
    })?;
    l.normal_on(a)?;
    let c1 = Caches::read()?;
    checks.eq(
        format!("cpu{a}: free_cnt after one allocation"),
        free_cnt(&c0, a)? - 1,
        free_cnt(&c1, a)?,
    );

    // The free in the busy NMI, then the allocation in another one.
    for (op, what) in [(OP_HASH_TAKE, "free"), (OP_HASH_STASH, "alloc")] {
        let s0 = snap(&mut checks)?;
        let p0 = l.counts(a, true)?;
        l.set(|c| c.op = op)?;
        busy_nmi_on(a)?;
        l.set(|c| c.op = OP_NONE)?;
        let s1 = snap(&mut checks)?;
        let p1 = l.counts(a, true)?;
        let n = s1.nmi.cpu(a).since(&s0.nmi.cpu(a));
        let what = format!("cpu{a}: {what} in an NMI inside the allocator");
        checks.eq(format!("{what}: nmi_hook runs"), 1, p1.nmis - p0.nmis);
        if op == OP_HASH_TAKE {
            checks.eq(
                format!("{what}: nmi_free, free_busy"),
                (1, 1),
                (n.nmi_free, n.free_busy),
            );
            expect_deltas(&mut checks, &what, &s0.stats, &s1.stats, &[(a, 0, 1)]);
            // Back on the free list, not left on free_llist_extra.
            let c2 = Caches::read()?;
            checks.eq(
                format!("{what}: free_cnt (the object back in the reserve)"),
                free_cnt(&c0, a)?,
                free_cnt(&c2, a)?,
            );
        } else {
            checks.eq(
                format!("{what}: program's failed allocations"),
                1,
                p1.nulls - p0.nulls,
            );
            checks.eq(
                format!("{what}: alloc_busy, nmi_alloc_fail"),
                (1, 1),
                (n.alloc_busy, n.nmi_alloc_fail),
            );
            let d = s1.stats.total.since(&s0.stats.total);
            checks.eq(
                format!("{what}: total alloc, free, alloc_fail deltas"),
                (0, 0, 1),
                (d.alloc, d.free, d.alloc_fail),
            );
        }
    }
    let p = l.counts(a, true)?;
    checks.eq(format!("cpu{a}: runs with in_nmi()"), p.nmis, p.in_nmi);
    checks.eq(
        format!("cpu{a}: nmi_hook errors (last {})", p.last_err),
        0,
        p.errs,
    );

    drop(l.links);
    finish(&mut checks, (l.obj, reservation), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// Two CPUs update hash elements (a program in normal context, in a loop)
/// while NMIs on both update
/// the element the other CPU updates (patch 0001). A bucket lock held by
/// one CPU when the other's NMI wants it, and the reverse at the same time,
/// is an ABBA deadlock that map_locked does not catch (the two buckets have
/// different slots): without the trylock in NMI the two CPUs hang in their
/// NMIs. With it, every NMI update either succeeds or gets -EBUSY.
/// The kernel's jhash2() of one u32 with seed 0: what a BPF_F_ZERO_SEED
/// hash map hashes a u32 key to (kernel/bpf/hashtab.c, htab_map_hash()).
fn jhash_u32_zero_seed(key: u32) -> u32 {
    let init = 0xdead_beefu32.wrapping_add(4);
    let (mut a, mut b, mut c) = (init.wrapping_add(key), init, init);
    let mix = |x: &mut u32, y: u32, r: u32| {
        *x ^= y;
        *x = x.wrapping_sub(y.rotate_left(r));
    };
    mix(&mut c, b, 14);
    mix(&mut a, c, 11);
    mix(&mut b, a, 25);
    mix(&mut c, b, 16);
    mix(&mut a, c, 4);
    mix(&mut b, a, 14);
    mix(&mut c, b, 24);
    c
}

/// Two keys whose buckets differ and whose map_locked slots differ too, so
/// that map_locked cannot stop the ABBA below.
fn cross_keys() -> [u32; 2] {
    // Different slots imply different buckets: the slot is the low bits
    // of the bucket index (PLAIN_BUCKETS is a multiple of the slots).
    const _: () = assert!(PLAIN_BUCKETS.is_multiple_of(MAP_LOCKED_SLOTS));
    let slot = |k: u32| jhash_u32_zero_seed(k) % MAP_LOCKED_SLOTS;
    let other = (2..).find(|&k| slot(k) != slot(1)).unwrap_or(2);
    [1, other]
}

pub fn global_ma_nmi_hash_buckets(ctx: &Ctx<'_>) -> Result<Outcome> {
    let cpus = match preflight_two_cpus(ctx)? {
        Ok(c) => c,
        Err(skip) => return Ok(skip),
    };
    let (a, b) = (cpus[0], cpus[1]);
    let mut checks = Checks::new();
    let mut l = Loaded::new(ctx)?;
    let keys = cross_keys();
    {
        let plain = bpf::map(&l.obj, "plain")?;
        for key in keys {
            plain
                .update(&key.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::NO_EXIST)
                .with_context(|| format!("inserting plain element {key}"))?;
        }
    }
    let before = [
        (l.counts(a, true)?, l.counts(a, false)?),
        (l.counts(b, true)?, l.counts(b, false)?),
    ];
    l.set(|c| {
        c.op = OP_CROSS_UPDATE;
        c.normal_op = OP_NORMAL_CROSS_UPDATE;
        c.key = a as u32;
        c.cross_key = keys;
    })?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rounds = thread::scope(|s| -> Result<u64> {
        let stop = &stop;
        let workers: Vec<_> = [a, b]
            .into_iter()
            .map(|cpu| {
                s.spawn(move || -> Result<()> {
                    let _pin = affinity::pin(cpu)?;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        trigger()?;
                    }
                    Ok(())
                })
            })
            .collect();
        let start = Instant::now();
        let mut rounds = 0u64;
        let sent = (|| -> Result<()> {
            while start.elapsed() < CROSS_DURATION {
                nmi::send(&[a, b], 100)?;
                rounds += 100;
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            w.join()
                .map_err(|p| anyhow::anyhow!("update thread panicked: {}", panic_message(&*p)))??;
        }
        sent?;
        Ok(rounds)
    })?;
    // With nothing left to contend with, every NMI update must succeed: a
    // trylock that failed above must have unwound map_locked, or that slot
    // stays "locked" on its CPU and refuses every later update with EBUSY.
    l.set(|c| c.normal_op = OP_NONE)?;
    let quiet0 = [l.counts(a, true)?, l.counts(b, true)?];
    nmi::send(&[a, b], QUIET_ROUNDS)?;
    for (&cpu, q0) in [a, b].iter().zip(&quiet0) {
        let q = l.counts(cpu, true)?;
        checks.eq(
            format!("cpu{cpu}: NMI updates after the contention, with none left"),
            (QUIET_ROUNDS, 0, 0),
            (q.updates - q0.updates, q.busy - q0.busy, q.nulls - q0.nulls),
        );
    }
    l.set(|c| {
        c.op = OP_NONE;
        c.normal_op = OP_NONE;
    })?;
    let (mut busy, mut normal_updates) = (0, 0);
    for (&cpu, (nmi0, normal0)) in [a, b].iter().zip(&before) {
        let p = l.counts(cpu, true)?;
        let q = l.counts(cpu, false)?;
        expect_clean_nmi_runs(&mut checks, cpu, &p, p.nmis);
        checks.eq(
            format!("cpu{cpu}: NMIs handled"),
            rounds + QUIET_ROUNDS,
            p.nmis - nmi0.nmis,
        );
        checks.eq(
            format!("cpu{cpu}: NMI updates, ok + EBUSY + ENOMEM"),
            p.nmis - nmi0.nmis,
            (p.updates + p.busy + p.nulls) - (nmi0.updates + nmi0.busy + nmi0.nulls),
        );
        checks.eq(
            format!("cpu{cpu}: normal_op errors (last {})", q.last_err),
            0,
            q.errs,
        );
        checks.eq(
            format!("cpu{cpu}: normal updates, ok + EBUSY + ENOMEM"),
            (q.normal_runs - normal0.normal_runs) * CROSS_LOOPS,
            (q.updates + q.busy + q.nulls) - (normal0.updates + normal0.busy + normal0.nulls),
        );
        // Only NMIs try the lock: normal context spins, and no NMI holds a
        // bucket of the same map_locked slot on the same CPU, so it never
        // sees EBUSY.
        checks.eq(
            format!("cpu{cpu}: normal updates refused with EBUSY"),
            0,
            q.busy - normal0.busy,
        );
        busy += p.busy - nmi0.busy;
        normal_updates += q.updates - normal0.updates;
    }
    ctx.diag(format!(
        "keys {keys:?}: {rounds} NMI rounds on cpu{a}+cpu{b} against {normal_updates} \
         updates in normal context; NMI updates refused with EBUSY: {busy}"
    ));
    drop(l.links);
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// `external` next to the NMI file: claim unknown NMIs for the hook.
const EXTERNAL_PATH: &str = "/sys/kernel/debug/bpf_global_ma_test/external";
/// How long the host gets to answer the request with an NMI.
const EXTERNAL_TIMEOUT: Duration = Duration::from_secs(10);

fn set_external(on: bool) -> Result<()> {
    fs::write(EXTERNAL_PATH, if on { "1" } else { "0" })
        .with_context(|| format!("writing {EXTERNAL_PATH}"))
}

/// An NMI from outside the guest (QMP inject-nmi, which the rig sends when
/// asked with `# rig: inject-nmi`): the NMI_UNKNOWN handler claims it
/// instead of "NMI received for unknown reason" (a console splat), and the
/// program runs in it and allocates from the reserve. QEMU raises it on
/// every vCPU's LINT1, which Linux leaves unmasked on the boot CPU only,
/// as on hardware: exactly one CPU sees it.
pub fn global_ma_nmi_external(ctx: &Ctx<'_>) -> Result<Outcome> {
    let Storm {
        cpus,
        mut checks,
        start,
        l,
        reservation,
    } = match hold_storm(ctx, 64, 1)? {
        Ok(s) => s,
        Err(skip) => return Ok(skip),
    };
    let h0 = nmi::read()?;
    let before: BTreeMap<usize, Counts> = cpus
        .iter()
        .map(|&c| Ok((c, l.counts(c, true)?)))
        .collect::<Result<_>>()?;
    set_external(true)?;
    let asked = Instant::now();
    crate::ktap::diag(rig_contract::request::INJECT_NMI);
    let claimed = |h1: &BTreeMap<usize, nmi::Handled>| -> u64 {
        cpus.iter().map(|c| h1[c].external - h0[c].external).sum()
    };
    while claimed(&nmi::read()?) == 0 && asked.elapsed() < EXTERNAL_TIMEOUT {
        thread::sleep(Duration::from_millis(5));
    }
    let took = asked.elapsed();
    // Let a (wrong) second delivery show up before counting.
    thread::sleep(Duration::from_millis(50));
    set_external(false)?;
    let h1 = nmi::read()?;
    checks.eq(
        "external NMIs claimed, all CPUs (0: the host did not inject one)",
        1,
        claimed(&h1),
    );
    let mut on = Vec::new();
    for &c in &cpus {
        let got = h1[&c].external - h0[&c].external;
        checks.eq(
            format!("cpu{c}: NMIs sent by the source"),
            0,
            h1[&c].ipi - h0[&c].ipi,
        );
        let p = l.counts(c, true)?;
        let b = before[&c];
        checks.eq(
            format!("cpu{c}: nmi_hook runs, in NMI, allocations, failures"),
            (got, got, got, 0),
            (
                p.nmis - b.nmis,
                p.in_nmi - b.in_nmi,
                p.allocs - b.allocs,
                p.nulls - b.nulls,
            ),
        );
        if got > 0 {
            on.push(c);
        }
    }
    ctx.diag(format!(
        "external NMI claimed on CPU {on:?} {:.1} ms after the request; the program \
         allocated in it",
        took.as_secs_f64() * 1e3
    ));

    drop(l.links);
    finish(&mut checks, (l.obj, reservation), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// What the stress threads did.
#[derive(Default)]
struct StressRun {
    rounds: u64,
    nmi_time: Duration,
    calls: BTreeMap<usize, u64>,
    prefills: u64,
}

fn join<T>(r: thread::Result<Result<T>>, what: &str) -> Result<T> {
    r.map_err(|p| anyhow::anyhow!("{what} panicked: {}", panic_message(p.as_ref())))?
        .with_context(|| what.to_string())
}

fn stress_threads(cpus: &[usize], duration: Duration) -> Result<StressRun> {
    const ROUNDS: u64 = 25;
    let deadline = Instant::now() + duration;
    thread::scope(|s| -> Result<StressRun> {
        let sender = s.spawn(move || -> Result<(u64, Duration)> {
            let (mut rounds, mut took) = (0, Duration::ZERO);
            while Instant::now() < deadline {
                took += nmi::send(cpus, ROUNDS)?;
                rounds += ROUNDS;
            }
            Ok((rounds, took))
        });
        let users: Vec<_> = cpus
            .iter()
            .map(|&c| {
                s.spawn(move || -> Result<(usize, u64)> {
                    cpu::pin_current_thread(c)?;
                    let mut calls = 0;
                    while Instant::now() < deadline {
                        trigger()?;
                        calls += 1;
                    }
                    Ok((c, calls))
                })
            })
            .collect();
        let reserver = s.spawn(move || -> Result<u64> {
            let mut n = 0;
            while Instant::now() < deadline {
                // Both the test objects' class and another one.
                let size = if n % 2 == 0 { OBJ_SIZE } else { 100 };
                let fd: OwnedFd = prefill::prefill(size, 64, 0)
                    .with_context(|| format!("prefill({size}, 64) number {n}"))?;
                drop(fd);
                n += 1;
            }
            Ok(n)
        });

        let mut run = StressRun::default();
        (run.rounds, run.nmi_time) = join(sender.join(), "NMI sender")?;
        for u in users {
            let (c, calls) = join(u.join(), "allocating thread")?;
            run.calls.insert(c, calls);
        }
        run.prefills = join(reserver.join(), "reserving thread")?;
        Ok(run)
    })
}

pub fn global_ma_nmi_stress(ctx: &Ctx<'_>) -> Result<Outcome> {
    const DURATION: Duration = Duration::from_secs(3);
    const BASE: u32 = 256;
    let cpus = match preflight(ctx)? {
        Ok(c) => c,
        Err(skip) => return Ok(skip),
    };
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut l = Loaded::new(ctx)?;
    let reservation = prefill::prefill(OBJ_SIZE, BASE, 0).context("prefill")?;
    l.set(|c| {
        c.op = OP_RING;
        c.per_nmi = 4;
        c.slots = BASE;
        c.normal_op = OP_ALLOC;
    })?;

    let s0 = snap(&mut checks)?;
    let h0 = nmi::read()?;
    let run = stress_threads(&cpus, DURATION)?;
    l.set(|c| {
        c.op = OP_NONE;
        c.normal_op = OP_NONE;
    })?;
    let s1 = snap(&mut checks)?;
    let h1 = nmi::read()?;

    let (mut held, mut nmi_allocs, mut nmis, mut nmi_fails, mut busy) = (0i64, 0, 0, 0, 0);
    for &c in &cpus {
        let p = l.counts(c, true)?;
        let q = l.counts(c, false)?;
        let sent = h1[&c].ipi - h0[&c].ipi;
        expect_clean_nmi_runs(&mut checks, c, &p, sent);
        checks.eq(format!("cpu{c}: NMIs per CPU"), run.rounds, sent);
        checks.eq(
            format!("cpu{c}: normal_op runs"),
            run.calls.get(&c).copied().unwrap_or(0),
            q.normal_runs,
        );
        checks.eq(
            format!("cpu{c}: normal_op errors (last {})", q.last_err),
            0,
            q.errs,
        );
        let d = s1.stats.cpu(c).since(&s0.stats.cpu(c));
        let n = s1.nmi.cpu(c).since(&s0.nmi.cpu(c));
        checks.eq(
            format!("cpu{c}: allocator alloc delta = NMI + normal allocations"),
            (p.allocs + q.allocs) as i64,
            d.alloc,
        );
        checks.eq(
            format!("cpu{c}: allocator alloc_fail delta = NMI + normal failures"),
            (p.nulls + q.nulls) as i64,
            d.alloc_fail,
        );
        checks.eq(
            format!("cpu{c}: allocator free delta = NMI + normal releases"),
            (p.releases + q.releases) as i64,
            d.free,
        );
        checks.eq(
            format!("cpu{c}: allocator nmi_alloc, nmi_alloc_fail, nmi_free"),
            (p.allocs, p.nulls, p.releases),
            (n.nmi_alloc, n.nmi_alloc_fail, n.nmi_free),
        );
        // Within the reserve, an NMI allocation only fails when it
        // interrupted the allocator on its CPU.
        if n.nmi_alloc_fail > n.alloc_busy {
            checks.fail(format!(
                "cpu{c}: {} NMI allocations failed but only {} found the free list busy",
                n.nmi_alloc_fail, n.alloc_busy
            ));
        }
        held += p.stored as i64 - p.taken as i64;
        nmi_allocs += p.allocs;
        nmis += sent;
        nmi_fails += p.nulls;
        busy += n.alloc_busy + n.free_busy;
    }
    checks.eq(
        "in_use delta = objects held in the ring",
        held,
        s1.stats.in_use - s0.stats.in_use,
    );
    let calls: u64 = run.calls.values().sum();
    ctx.diag(format!(
        "{:.1} s: {nmis} NMIs ({:.0}/s), {nmi_allocs} allocations in NMI ({:.0}/s), \
         {nmi_fails} failed; {calls} normal alloc+free calls; {} reservations made and \
         dropped; {busy} allocations/frees found the free list busy",
        DURATION.as_secs_f64(),
        per_sec(nmis, run.nmi_time),
        per_sec(nmi_allocs, run.nmi_time),
        run.prefills
    ));

    drop(l.links);
    finish(&mut checks, (l.obj, reservation), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
