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

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags, Object};

use super::{attach, expect_deltas, finish, open, quiet_stats, trigger, POLL_INTERVAL};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf::{self, Pod};
use crate::sys::caches::{self, Caches};
use crate::sys::cpu::{self, MAX_CPUS};
use crate::sys::fail_page_alloc;
use crate::sys::reserve::{self, errno_name, PrefillAttr, MAX_SIZE, RESERVE_MAX};
use crate::sys::stats::{self, ReserveStats, Stats};

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
/// high watermark) before the test looks.
const IRQ_WORK_GRACE: Duration = Duration::from_millis(50);

/// GMA_PF_* in the BPF program.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
enum Cmd {
    None = 0,
    Alloc = 1,
    Free = 2,
    Hammer = 3,
}

/// `struct gma_pf_ctl`, the value of the `ctl` array (by CPU).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct PfCtl {
    cmd: u32,
    tgid: u32,
    base: u32,
    n: u32,
    runs: u64,
    done: u64,
    fails: u64,
    empty: u64,
    old_found: u64,
    wrong_cpu: u64,
    bad_magic: u64,
    no_elem: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for PfCtl {}

/// Skip on a kernel without the reserves (a patch before 0011, checked by
/// check-series or bisect) or without `object`, probing the command
/// without touching the allocator.
pub(super) fn missing_reserves(ctx: &Ctx<'_>, object: &str) -> Result<Option<Outcome>> {
    if let Some(skip) = super::missing_feature(ctx, object) {
        return Ok(Some(skip));
    }
    if !std::path::Path::new(caches::CACHES_PATH).exists() {
        return Ok(Some(Outcome::Skip(format!(
            "{} missing: this kernel has no per-CPU reserves",
            caches::CACHES_PATH
        ))));
    }
    Ok(reserve::probe()?.map(Outcome::Skip))
}

/// One consistent look at the allocator: counters, reserve fields, caches.
struct Snap {
    stats: Stats,
    res: ReserveStats,
    caches: Caches,
}

fn snap(checks: &mut Checks) -> Result<Snap> {
    let (stats, res) = stats::read_with_reserve()?;
    report_inconsistencies(checks, &stats, &res);
    Ok(Snap {
        stats,
        res,
        caches: Caches::read()?,
    })
}

fn report_inconsistencies(checks: &mut Checks, stats: &Stats, res: &ReserveStats) {
    for bad in stats
        .inconsistencies()
        .into_iter()
        .chain(res.inconsistencies())
    {
        checks.fail(format!("{}: {bad}", stats::STATS_PATH));
    }
}

/// `cpu3 unit 64: free_cnt above high: free_cnt .. high ..`, for every
/// line whose free list is above its high watermark (a trim not run yet).
fn above_high(c: &Caches) -> impl Iterator<Item = String> + '_ {
    c.lines
        .iter()
        .filter(|(_, l)| l.free_cnt > l.high)
        .map(|(k, l)| format!("cpu{} unit {}: free_cnt above high: {l}", k.0, k.1))
}

impl Snap {
    fn cache(&self, cpu: usize, unit: u32) -> Result<caches::Cache> {
        self.caches.get(cpu, unit).with_context(|| {
            format!(
                "{} has no line for cpu{cpu} unit {unit}",
                caches::CACHES_PATH
            )
        })
    }

    /// `cpu3 unit 64 free_cnt .. low .. high .. reserve .. | alloc ..`.
    fn describe(&self, cpu: usize, unit: u32) -> String {
        let c = self
            .caches
            .get(cpu, unit)
            .map_or("no line".to_string(), |c| c.to_string());
        let s = self.stats.cpu(cpu);
        let r = self.res.cpu(cpu);
        format!(
            "cpu{cpu} unit {unit} {c} | alloc {} free {} alloc_fail {} refill_objs {} prefill {} \
             trim_objs {} cached {}",
            s.alloc, s.free, s.alloc_fail, s.refill_objs, r.prefill, r.trim_objs, r.cached
        )
    }
}

/// Per CPU: (cpu, cached delta the counters account for, cached delta).
fn conservation(before: &Snap, after: &Snap) -> Vec<(usize, i64, i64)> {
    after
        .res
        .cpus
        .iter()
        .map(|(&cpu, a)| {
            let b = before.res.cpu(cpu);
            let d = after.stats.cpu(cpu).since(&before.stats.cpu(cpu));
            let came = (a.prefill.wrapping_sub(b.prefill)) as i64 + d.refill_objs + d.free;
            let went = d.alloc + (a.trim_objs.wrapping_sub(b.trim_objs)) as i64;
            (cpu, came - went, a.cached - b.cached)
        })
        .collect()
}

/// Per CPU: the free lists' length moved by exactly what the counters
/// say came in and went out.
fn expect_conservation(checks: &mut Checks, what: &str, before: &Snap, after: &Snap) {
    for (cpu, want, got) in conservation(before, after) {
        checks.eq(
            format!(
                "{what}: cpu{cpu} cached delta = prefill + refill_objs + free - alloc - trim_objs"
            ),
            want,
            got,
        );
    }
}

/// The snapshot after a close and at the end of a test, once the
/// irq_work refills and trims in flight have run and are counted: every
/// free list is at or under its high watermark (a close lowers it at once
/// and only queues the trim) and the counters balance since `before` (a
/// refill or trim changes a free list first and adds to refill_objs /
/// trim_objs after; a trim of 2000 objects takes a while). The caches are
/// read before the counters, so a trim seen done in the caches is in the
/// counters' `cached` too. Gives up after RELEASE_TIMEOUT and returns the
/// last reading, which expect_conservation then reports (free lists still
/// above high are reported here).
fn settled_snap(checks: &mut Checks, before: &Snap) -> Result<Snap> {
    let start = Instant::now();
    loop {
        let caches = Caches::read()?;
        let (stats, res) = stats::read_with_reserve()?;
        let s = Snap { stats, res, caches };
        let trimmed = above_high(&s.caches).next().is_none();
        let balanced = conservation(before, &s).iter().all(|&(_, w, g)| w == g);
        let timed_out = start.elapsed() >= RELEASE_TIMEOUT;
        if (trimmed && balanced) || timed_out {
            report_inconsistencies(checks, &s.stats, &s.res);
            if !trimmed {
                for bad in above_high(&s.caches) {
                    checks.fail(format!("not trimmed within {RELEASE_TIMEOUT:?}: {bad}"));
                }
            }
            return Ok(s);
        }
        thread::sleep(POLL_INTERVAL);
    }
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

fn write_ctl(obj: &Object, cpu: usize, c: &PfCtl) -> Result<()> {
    bpf::map(obj, "ctl")?
        .update(
            &(cpu as u32).to_ne_bytes(),
            &bpf::pod_bytes(c),
            MapFlags::ANY,
        )
        .with_context(|| format!("writing ctl[{cpu}]"))
}

fn read_ctl(obj: &Object, cpu: usize) -> Result<PfCtl> {
    let bytes = bpf::map(obj, "ctl")?
        .lookup(&(cpu as u32).to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading ctl[{cpu}]"))?
        .with_context(|| format!("ctl has no element {cpu}"))?;
    bpf::read_pod(&bytes)
}

/// Runs `cmd` on slots base..base+n of `cpu`, once, from a thread pinned
/// there; returns what the program counted.
fn run_on(obj: &Object, cpu: usize, cmd: Cmd, base: u32, n: u32) -> Result<PfCtl> {
    let pin = affinity::pin(cpu)?;
    write_ctl(
        obj,
        cpu,
        &PfCtl {
            cmd: cmd as u32,
            tgid: std::process::id(),
            base,
            n,
            ..PfCtl::default()
        },
    )?;
    let r = trigger();
    let c = read_ctl(obj, cpu)?;
    write_ctl(
        obj,
        cpu,
        &PfCtl {
            cmd: Cmd::None as u32,
            ..PfCtl::default()
        },
    )?;
    drop(pin);
    r?;
    if c.runs != 1 {
        bail!(
            "{cmd:?} on cpu{cpu}: the program ran {} times, not once",
            c.runs
        );
    }
    if c.no_elem != 0 || c.bad_magic != 0 || c.wrong_cpu != 0 || c.old_found != 0 {
        bail!("{cmd:?} on cpu{cpu}: {c:?}");
    }
    Ok(c)
}

/// What the sequence measured on one CPU.
struct SeqFigures {
    extra_failed: bool,
    refill_objs: i64,
}

/// Delyan's sequence on `cpu` with `n` objects reserved there (of
/// `reserve` in all) in size class `unit`.
fn sequence(
    ctx: &Ctx<'_>,
    checks: &mut Checks,
    obj: &Object,
    cpu: usize,
    n: u32,
    unit: u32,
    reserve: i64,
) -> Result<SeqFigures> {
    if n + 1 > SLOTS {
        bail!(
            "the sequence needs N + 1 = {} slots, the program has {SLOTS}",
            n + 1
        );
    }
    let ni = i64::from(n);
    let s0 = snap(checks)?;
    ctx.diag(format!(
        "sequence N={n}: start    {}",
        s0.describe(cpu, unit)
    ));
    let c0 = s0.cache(cpu, unit)?;
    checks.eq(format!("cpu{cpu}: reserve at start"), reserve, c0.reserve);
    if c0.free_cnt < ni {
        checks.fail(format!(
            "cpu{cpu}: free_cnt {} below the reserve {n} at start",
            c0.free_cnt
        ));
    }

    // N allocations: none fails
    let a1 = run_on(obj, cpu, Cmd::Alloc, 0, n)?;
    let s1 = snap(checks)?;
    ctx.diag(format!(
        "  allocs #1 done {} fails {}: {}",
        a1.done,
        a1.fails,
        s1.describe(cpu, unit)
    ));
    checks.eq(format!("cpu{cpu}: allocs #1 done"), u64::from(n), a1.done);
    checks.eq(format!("cpu{cpu}: allocs #1 failed"), 0, a1.fails);
    expect_deltas(
        checks,
        &format!("cpu{cpu} allocs #1"),
        &s0.stats,
        &s1.stats,
        &[(cpu, ni, 0)],
    );

    // N frees: back to the reserve, not to the slab
    let f = run_on(obj, cpu, Cmd::Free, 0, n)?;
    thread::sleep(IRQ_WORK_GRACE);
    let s2 = snap(checks)?;
    ctx.diag(format!(
        "  frees done {} empty {}: {}",
        f.done,
        f.empty,
        s2.describe(cpu, unit)
    ));
    checks.eq(format!("cpu{cpu}: frees done"), u64::from(n), f.done);
    checks.eq(format!("cpu{cpu}: frees found empty slots"), 0, f.empty);
    expect_deltas(
        checks,
        &format!("cpu{cpu} frees"),
        &s1.stats,
        &s2.stats,
        &[(cpu, 0, ni)],
    );
    checks.eq(
        format!("cpu{cpu}: frees: trim_objs delta (objects given to the slab)"),
        0,
        s2.res
            .cpu(cpu)
            .trim_objs
            .wrapping_sub(s1.res.cpu(cpu).trim_objs),
    );
    let (c1, c2) = (s1.cache(cpu, unit)?, s2.cache(cpu, unit)?);
    let refill = s2.stats.cpu(cpu).since(&s1.stats.cpu(cpu)).refill_objs;
    checks.eq(
        format!("cpu{cpu}: frees: free_cnt delta = N (+ refill_objs {refill})"),
        ni + refill,
        c2.free_cnt - c1.free_cnt,
    );
    if c2.free_cnt < ni {
        checks.fail(format!(
            "cpu{cpu}: free_cnt {} below N after the frees",
            c2.free_cnt
        ));
    }

    // N allocations again: none fails
    let a2 = run_on(obj, cpu, Cmd::Alloc, 0, n)?;
    let s3 = snap(checks)?;
    ctx.diag(format!(
        "  allocs #2 done {} fails {}: {}",
        a2.done,
        a2.fails,
        s3.describe(cpu, unit)
    ));
    checks.eq(format!("cpu{cpu}: allocs #2 done"), u64::from(n), a2.done);
    checks.eq(format!("cpu{cpu}: allocs #2 failed"), 0, a2.fails);
    expect_deltas(
        checks,
        &format!("cpu{cpu} allocs #2"),
        &s2.stats,
        &s3.stats,
        &[(cpu, ni, 0)],
    );

    // one more: may fail, must be counted
    let x = run_on(obj, cpu, Cmd::Alloc, n, 1)?;
    let s4 = snap(checks)?;
    let d = s4.stats.cpu(cpu).since(&s3.stats.cpu(cpu));
    ctx.diag(format!(
        "  alloc N+1: {}: {}",
        if x.done == 1 {
            "succeeded"
        } else {
            "failed (allowed)"
        },
        s4.describe(cpu, unit)
    ));
    checks.eq(
        format!("cpu{cpu}: alloc N+1 done + failed"),
        1,
        x.done + x.fails,
    );
    checks.eq(
        format!("cpu{cpu}: alloc N+1: alloc delta"),
        x.done as i64,
        d.alloc,
    );
    checks.eq(
        format!("cpu{cpu}: alloc N+1: alloc_fail delta"),
        x.fails as i64,
        d.alloc_fail,
    );

    // give everything back (on the same CPU)
    let fin = run_on(obj, cpu, Cmd::Free, 0, n + 1)?;
    let s5 = snap(checks)?;
    checks.eq(
        format!("cpu{cpu}: final frees"),
        u64::from(n) + x.done,
        fin.done,
    );
    let d = s5.stats.total.since(&s4.stats.total);
    checks.eq(
        format!("cpu{cpu}: final frees: free delta"),
        ni + x.done as i64,
        d.free,
    );
    checks.eq(
        format!("cpu{cpu}: in_use after the sequence"),
        s0.stats.in_use,
        s5.stats.in_use,
    );
    expect_conservation(checks, &format!("cpu{cpu} sequence"), &s0, &s5);
    ctx.diag(format!("  end      {}", s5.describe(cpu, unit)));
    Ok(SeqFigures {
        extra_failed: x.fails == 1,
        refill_objs: s5.stats.cpu(cpu).since(&s0.stats.cpu(cpu)).refill_objs,
    })
}

/// Polls the caches until every line has the watermarks and reserve of
/// `defaults` and no free list is above its high watermark.
fn wait_defaults(defaults: &Caches) -> Result<(Caches, bool, Duration)> {
    let start = Instant::now();
    loop {
        let c = Caches::read()?;
        let ok = c.marks_changed(defaults).is_empty() && above_high(&c).next().is_none();
        if ok || start.elapsed() >= RELEASE_TIMEOUT {
            return Ok((c, ok, start.elapsed()));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// A snapshot once every CPU's `reserved` is `objects` below `before`'s and
/// the caches' watermarks and reserves are what `before` plus the live
/// reservations make them: after the close of a reservation map, whose
/// unreserve runs from a workqueue. Gives up after RELEASE_TIMEOUT and
/// returns the last reading, which the caller's checks then judge.
fn unreserved_snap(checks: &mut Checks, before: &Snap, objects: i64) -> Result<Snap> {
    let start = Instant::now();
    loop {
        let (_, res) = stats::read_with_reserve()?;
        let done = before
            .res
            .cpus
            .iter()
            .all(|(&cpu, b)| res.cpu(cpu).reserved == b.reserved - objects);
        if done || start.elapsed() >= RELEASE_TIMEOUT {
            return snap(checks);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Closes `fds`, then checks that the caches come back to `defaults`.
fn release<T>(
    ctx: &Ctx<'_>,
    checks: &mut Checks,
    what: &str,
    fds: T,
    defaults: &Caches,
) -> Result<()> {
    let t = Instant::now();
    drop(fds);
    let closed = t.elapsed();
    let (c, ok, took) = wait_defaults(defaults)?;
    ctx.diag(format!(
        "{what}: close {:.2} ms, caches {} to the defaults after {:.1} ms",
        closed.as_secs_f64() * 1e3,
        if ok { "back" } else { "NOT back" },
        took.as_secs_f64() * 1e3
    ));
    if !ok {
        for bad in c.marks_changed(defaults) {
            checks.fail(format!(
                "{what}: not back within {RELEASE_TIMEOUT:?}: {bad}"
            ));
        }
        for bad in above_high(&c) {
            checks.fail(format!("{what}: {bad}"));
        }
    }
    Ok(())
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

/// Checks that a reservation of `count` in `unit` came on top of `before`
/// on every CPU: reserve and high up by `count`, low unchanged, free_cnt
/// up by `count`.
fn expect_reserved(
    checks: &mut Checks,
    what: &str,
    before: &Snap,
    after: &Snap,
    unit: u32,
    count: i64,
) -> Result<()> {
    for cpu in before.caches.cpus() {
        let (b, a) = (before.cache(cpu, unit)?, after.cache(cpu, unit)?);
        checks.eq(
            format!("{what}: cpu{cpu} unit {unit} reserve"),
            b.reserve + count,
            a.reserve,
        );
        checks.eq(
            format!("{what}: cpu{cpu} unit {unit} high"),
            b.high + count,
            a.high,
        );
        checks.eq(format!("{what}: cpu{cpu} unit {unit} low"), b.low, a.low);
        checks.eq(
            format!("{what}: cpu{cpu} unit {unit} free_cnt"),
            b.free_cnt + count,
            a.free_cnt,
        );
    }
    Ok(())
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

pub fn global_ma_prefill_sequence(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let cpus = online(&mut checks, &s0)?;
    let l = load(ctx)?;

    let (fd, took) = prefill_timed(OBJ_SIZE, N)?;
    let unit = checked_unit(&mut checks, &fd, OBJ_SIZE, N)?;
    let s1 = snap(&mut checks)?;
    ctx.diag(format!(
        "prefill({OBJ_SIZE}, {N}) x {} CPUs (unit {unit}): {:.2} ms",
        s1.caches.cpus().len(),
        took.as_secs_f64() * 1e3
    ));
    expect_reserved(&mut checks, "prefill", &s0, &s1, unit, i64::from(N))?;
    for cpu in s1.caches.cpus() {
        let (b, a) = (s0.res.cpu(cpu), s1.res.cpu(cpu));
        checks.eq(
            format!("cpu{cpu}: prefill counter delta"),
            u64::from(N),
            a.prefill - b.prefill,
        );
        checks.eq(format!("cpu{cpu}: reserved"), i64::from(N), a.reserved);
    }
    expect_deltas(&mut checks, "prefill", &s0.stats, &s1.stats, &[]);

    let mut extra_failed = Vec::new();
    for &cpu in &cpus {
        let f = sequence(ctx, &mut checks, &l.obj, cpu, N, unit, i64::from(N))?;
        if f.extra_failed {
            extra_failed.push(cpu);
        }
        ctx.diag(format!(
            "cpu{cpu}: refill_objs during the sequence {:+}",
            f.refill_objs
        ));
    }
    ctx.diag(format!(
        "alloc N+1 failed on {}",
        if extra_failed.is_empty() {
            "no CPU".to_string()
        } else {
            format!("{extra_failed:?}")
        }
    ));

    release(ctx, &mut checks, "close(fd)", vec![fd], &s0.caches)?;
    let end = settled_snap(&mut checks, &s0)?;
    expect_conservation(&mut checks, "whole test", &s0, &end);
    finish(&mut checks, (l.links, l.obj), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

pub fn global_ma_prefill_release(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let cpus = online(&mut checks, &s0)?;
    let held_cpu = *cpus.last().context("no online CPU")?;
    let l = load(ctx)?;

    let (fd, took) = prefill_timed(OBJ_SIZE, N)?;
    let unit = checked_unit(&mut checks, &fd, OBJ_SIZE, N)?;
    ctx.diag(format!(
        "prefill({OBJ_SIZE}, {N}): {:.2} ms",
        took.as_secs_f64() * 1e3
    ));
    let dup = fd.try_clone().context("dup of the reservation fd")?;
    drop(fd);
    let s1 = snap(&mut checks)?;
    expect_reserved(
        &mut checks,
        "after closing the first of two fds",
        &s0,
        &s1,
        unit,
        i64::from(N),
    )?;

    // Objects in use across the release: N on one CPU, from the reserve.
    let a = run_on(&l.obj, held_cpu, Cmd::Alloc, 0, N)?;
    checks.eq("allocations held across the release", u64::from(N), a.done);
    let s2 = snap(&mut checks)?;
    for &cpu in &cpus {
        ctx.diag(format!("before release: {}", s2.describe(cpu, unit)));
    }

    release(ctx, &mut checks, "close(last fd)", vec![dup], &s0.caches)?;
    let s3 = settled_snap(&mut checks, &s2)?;
    for &cpu in &cpus {
        ctx.diag(format!("released:       {}", s3.describe(cpu, unit)));
        let c = s3.cache(cpu, unit)?;
        let d0 = s0.cache(cpu, unit)?;
        let (r2, r3) = (s2.res.cpu(cpu), s3.res.cpu(cpu));
        checks.eq(format!("cpu{cpu}: reserved after release"), 0, r3.reserved);
        checks.eq(
            format!("cpu{cpu}: trim_objs delta = objects dropped from the free lists"),
            r2.cached - r3.cached,
            r3.trim_objs.wrapping_sub(r2.trim_objs) as i64,
        );
        // free_bulk() trims to the middle of the default watermarks
        let target = (d0.high + d0.low) / 2;
        if s2.cache(cpu, unit)?.free_cnt > d0.high {
            checks.eq(
                format!("cpu{cpu}: free_cnt after the trim"),
                target,
                c.free_cnt,
            );
        }
    }
    checks.eq(
        "in_use with the held objects",
        s0.stats.in_use + i64::from(N),
        s3.stats.in_use,
    );

    // The held objects come back to a free list with default watermarks
    // and the surplus goes to the slab.
    let f = run_on(&l.obj, held_cpu, Cmd::Free, 0, N)?;
    checks.eq("held objects freed", u64::from(N), f.done);
    let (c, ok, took) = wait_defaults(&s0.caches)?;
    let s4 = settled_snap(&mut checks, &s0)?;
    ctx.diag(format!(
        "held objects freed on cpu{held_cpu}: free list {} under high after {:.1} ms: {}",
        if ok { "back" } else { "NOT back" },
        took.as_secs_f64() * 1e3,
        s4.describe(held_cpu, unit)
    ));
    if !ok {
        checks.fail(format!(
            "cpu{held_cpu}: free list not trimmed after the held objects came back: {:?}",
            c.get(held_cpu, unit)
        ));
    }
    checks.eq("in_use back to its start", s0.stats.in_use, s4.stats.in_use);
    checks.eq("reserved back to 0", 0, s4.res.total.reserved);
    expect_conservation(&mut checks, "whole test", &s0, &s4);
    ctx.diag(format!(
        "whole test: prefill {:+} trim_objs {:+} cached {} -> {}",
        s4.res.total.prefill - s0.res.total.prefill,
        s4.res.total.trim_objs - s0.res.total.trim_objs,
        s0.res.total.cached,
        s4.res.total.cached
    ));
    finish(&mut checks, (l.links, l.obj), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// How long a map whose fd is closed must stay reserved while a program
/// holds it: an unheld map is freed within a few ms here (see the
/// `close ... caches back after` figures of `release()`).
const HOLD_WAIT: Duration = Duration::from_millis(500);

pub fn global_ma_prefill_prog_lifetime(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let obj = bpf::load(open(ctx, OBJECT)?, OBJECT)?;
    let prog = obj.progs().next().context("no program in the object")?;

    let (fd, _) = prefill_timed(OBJ_SIZE, N)?;
    let unit = checked_unit(&mut checks, &fd, OBJ_SIZE, N)?;
    reserve::prog_bind_map(prog.as_fd(), fd.as_fd()).context("BPF_PROG_BIND_MAP")?;
    drop(fd);
    thread::sleep(HOLD_WAIT);
    let s1 = snap(&mut checks)?;
    expect_reserved(
        &mut checks,
        &format!("{HOLD_WAIT:?} after closing the map's fd, bound to a program"),
        &s0,
        &s1,
        unit,
        i64::from(N),
    )?;
    ctx.diag(format!(
        "map fd closed, program holds it: reserved {} -> {} after {HOLD_WAIT:?}",
        s0.res.total.reserved, s1.res.total.reserved
    ));

    // The program is the last reference: unloading it releases the
    // reservation (after the program's RCU grace period and the map's
    // deferred free).
    release(ctx, &mut checks, "unload the program", obj, &s0.caches)?;
    let end = settled_snap(&mut checks, &s0)?;
    checks.eq("reserved at the end", 0, end.res.total.reserved);
    expect_conservation(&mut checks, "whole test", &s0, &end);
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

pub fn global_ma_prefill_stacking(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let cpus = online(&mut checks, &s0)?;
    let l = load(ctx)?;

    // 32 and 40 bytes share class 64, 200 bytes is class 256.
    let (fd_a, _) = prefill_timed(OBJ_SIZE, 300)?;
    let (fd_b, _) = prefill_timed(40, 200)?;
    let (fd_c, _) = prefill_timed(200, 300)?;
    let u64_ = checked_unit(&mut checks, &fd_a, OBJ_SIZE, 300)?;
    let u40 = checked_unit(&mut checks, &fd_b, 40, 200)?;
    checks.eq("unit of 40 bytes = unit of 32 bytes", u64_, u40);
    let u256 = checked_unit(&mut checks, &fd_c, 200, 300)?;
    if u256 == u64_ {
        checks.fail("200 bytes served by the class of 32 bytes");
    }
    let s1 = snap(&mut checks)?;
    expect_reserved(&mut checks, "32x300 + 40x200", &s0, &s1, u64_, 500)?;
    expect_reserved(&mut checks, "200x300", &s0, &s1, u256, 300)?;
    for &cpu in &cpus {
        ctx.diag(format!(
            "stacked: {} | {}",
            s1.describe(cpu, u64_),
            s1.describe(cpu, u256)
        ));
        checks.eq(
            format!("cpu{cpu}: reserved (all classes)"),
            800,
            s1.res.cpu(cpu).reserved,
        );
    }

    drop(fd_b);
    unreserved_snap(&mut checks, &s1, 200)?;
    let s2 = settled_snap(&mut checks, &s1)?;
    expect_conservation(&mut checks, "closing 40x200", &s1, &s2);
    for &cpu in &cpus {
        let (b, a) = (s0.cache(cpu, u64_)?, s2.cache(cpu, u64_)?);
        checks.eq(
            format!("cpu{cpu}: unit {u64_} reserve after closing 40x200"),
            300,
            a.reserve,
        );
        checks.eq(
            format!("cpu{cpu}: unit {u64_} high after closing 40x200"),
            b.high + 300,
            a.high,
        );
        let (b, a) = (s1.cache(cpu, u256)?, s2.cache(cpu, u256)?);
        checks.eq(
            format!("cpu{cpu}: unit {u256} untouched by closing 40x200"),
            b,
            a,
        );
    }
    for &cpu in &cpus {
        sequence(ctx, &mut checks, &l.obj, cpu, 300, u64_, 300)?;
    }
    let s3 = snap(&mut checks)?;
    for &cpu in &cpus {
        checks.eq(
            format!("cpu{cpu}: unit {u256} untouched by the sequences"),
            s2.cache(cpu, u256)?.marks(),
            s3.cache(cpu, u256)?.marks(),
        );
    }
    release(ctx, &mut checks, "close(all)", vec![fd_a, fd_c], &s0.caches)?;
    let end = settled_snap(&mut checks, &s0)?;
    expect_conservation(&mut checks, "whole test", &s0, &end);
    finish(&mut checks, (l.links, l.obj), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// Expects `attr` (+ `tail`) to fail with `want` and leave the caches'
/// watermarks and reserves and the reserve counters as they were.
fn expect_err(
    ctx: &Ctx<'_>,
    checks: &mut Checks,
    what: &str,
    attr: PrefillAttr,
    tail: &[u8],
    want: i32,
) -> Result<()> {
    expect_err_with(
        ctx,
        checks,
        what,
        (attr, tail),
        want,
        Undone::Refused,
        || reserve::prefill_raw(attr, tail),
    )
}

/// How far a failing prefill got before it failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undone {
    /// Refused before any object was reserved: not even counted.
    Refused,
    /// Failed after reserving (no fd): the reservation was undone, so the
    /// caches and `reserved` are as before, but the prefill was counted.
    Reservation,
}

/// `expect_err` for a prefill made by `call` (which may change the process
/// around the syscall and must undo that before it returns).
fn expect_err_with(
    ctx: &Ctx<'_>,
    checks: &mut Checks,
    what: &str,
    (attr, tail): (PrefillAttr, &[u8]),
    want: i32,
    undone: Undone,
    call: impl FnOnce() -> Result<OwnedFd, std::io::Error>,
) -> Result<()> {
    let before = snap(checks)?;
    let r = call();
    let after = match undone {
        Undone::Refused => snap(checks)?,
        // The map made before the failure is freed from a workqueue.
        Undone::Reservation => unreserved_snap(checks, &before, 0)?,
    };
    let got = match &r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    ctx.diag(format!(
        "{what:<36} size {} count {} flags {}{} -> {} (want {})",
        attr.size,
        attr.count,
        attr.flags,
        if tail.is_empty() {
            String::new()
        } else {
            format!(" tail {tail:?}")
        },
        errno_name(got),
        errno_name(want)
    ));
    checks.eq(format!("{what}: errno"), errno_name(want), errno_name(got));
    drop(r);
    for bad in after.caches.marks_changed(&before.caches) {
        checks.fail(format!("{what}: changed the caches: {bad}"));
    }
    if undone == Undone::Refused {
        checks.eq(
            format!("{what}: prefill counter"),
            before.res.total.prefill,
            after.res.total.prefill,
        );
    }
    checks.eq(
        format!("{what}: reserved"),
        before.res.total.reserved,
        after.res.total.reserved,
    );
    Ok(())
}

/// The fd number the next open would get.
fn lowest_free_fd() -> Result<u64> {
    // SAFETY: dup of stdin and close of the fd it returned, nothing else.
    let fd = unsafe { libc::dup(0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("dup(0)");
    }
    // SAFETY: closes the fd dup just made.
    unsafe { libc::close(fd) };
    Ok(fd as u64)
}

/// Runs `f` with RLIMIT_NOFILE's soft limit at `limit`, so that no new fd
/// can be made, and puts the limit back before returning.
fn with_nofile_limit<T>(
    limit: u64,
    f: impl FnOnce() -> Result<T, std::io::Error>,
) -> Result<T, std::io::Error> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers to rlimit structs.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let low = libc::rlimit {
        rlim_cur: limit,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let r = f();
    // SAFETY: as above; restoring what getrlimit returned.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) } != 0 {
        panic!(
            "could not restore RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
    r
}

/// Objects of 4088 bytes (a 4096-byte unit) per racing prefill: 10 MiB.
const RACE_COUNT: u32 = 2560;

/// BPF_MAP_TYPE_ARRAY in `enum bpf_map_type`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;

fn attr(size: u32, count: u32, flags: u32) -> PrefillAttr {
    PrefillAttr::new(size, count, flags)
}

/// kernel.unprivileged_bpf_disabled: 2 by default (BPF_UNPRIV_DEFAULT_OFF)
/// turns every bpf() of an unprivileged caller into EPERM before any map
/// type is looked at, so the reservation map's own capability check is
/// only seen with 0.
const UNPRIV_SYSCTL: &str = "/proc/sys/kernel/unprivileged_bpf_disabled";

/// Sets UNPRIV_SYSCTL to 0 and puts the old value back when dropped.
struct UnprivBpfAllowed(String);

impl UnprivBpfAllowed {
    fn new() -> Result<UnprivBpfAllowed> {
        let old = std::fs::read_to_string(UNPRIV_SYSCTL)
            .with_context(|| format!("reading {UNPRIV_SYSCTL}"))?;
        let old = old.trim().to_string();
        if old == "1" {
            bail!("{UNPRIV_SYSCTL} is 1, which cannot be undone until reboot");
        }
        std::fs::write(UNPRIV_SYSCTL, "0")
            .with_context(|| format!("writing 0 to {UNPRIV_SYSCTL}"))?;
        Ok(UnprivBpfAllowed(old))
    }
}

impl Drop for UnprivBpfAllowed {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(UNPRIV_SYSCTL, &self.0) {
            eprintln!("# could not restore {UNPRIV_SYSCTL} to {}: {e}", self.0);
        }
    }
}

/// BPF_MAP_CREATE with `create` from a forked child that dropped to uid/gid
/// 65534 (and with it every capability); returns the child's errno (0:
/// success).
fn unprivileged_errno(create: &[u8]) -> Result<i32> {
    // SAFETY: the child only calls async-signal-safe functions (setresgid,
    // setresuid, syscall, _exit) and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: see above; `create` was built before the fork.
        unsafe {
            if libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                libc::_exit(200);
            }
            let fd = libc::syscall(
                libc::SYS_bpf,
                reserve::BPF_MAP_CREATE,
                create.as_ptr(),
                create.len() as libc::c_uint,
            );
            let e = if fd < 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(e.clamp(0, 199));
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error()).context("waitpid");
    }
    if !libc::WIFEXITED(status) {
        bail!("unprivileged child did not exit normally (status {status:#x})");
    }
    match libc::WEXITSTATUS(status) {
        200 => bail!("the child could not drop to uid 65534"),
        e => Ok(e),
    }
}

pub fn global_ma_prefill_bad_input(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let c = &mut checks;

    // unit of OBJ_SIZE, from a tiny reservation
    let fd = reserve::prefill(OBJ_SIZE, 1, 0).context("prefill(32, 1)")?;
    // SAFETY: F_GETFD on an fd we own reads its flags and nothing else.
    let fd_flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    c.eq(
        "prefill(32, 1): the fd is close-on-exec (F_GETFD & FD_CLOEXEC)",
        libc::FD_CLOEXEC,
        fd_flags & libc::FD_CLOEXEC,
    );
    let unit = checked_unit(c, &fd, OBJ_SIZE, 1)?;
    release(ctx, c, "prefill(32, 1)", vec![fd], &s0.caches)?;
    let max_n = (RESERVE_MAX / u64::from(unit)) as u32;

    expect_err(ctx, c, "size 0", attr(0, 10, 0), &[], libc::EINVAL)?;
    expect_err(ctx, c, "count 0", attr(OBJ_SIZE, 0, 0), &[], libc::EINVAL)?;
    expect_err(ctx, c, "size 0 count 0", attr(0, 0, 0), &[], libc::EINVAL)?;
    expect_err(
        ctx,
        c,
        "size 4089 (> 4096 - 8)",
        attr(MAX_SIZE + 1, 10, 0),
        &[],
        libc::EINVAL,
    )?;
    expect_err(ctx, c, "size 4097", attr(4097, 10, 0), &[], libc::EINVAL)?;
    expect_err(
        ctx,
        c,
        "size u32::MAX",
        attr(u32::MAX, 10, 0),
        &[],
        libc::EINVAL,
    )?;
    expect_err(ctx, c, "flags 1", attr(OBJ_SIZE, 10, 1), &[], libc::EINVAL)?;
    expect_err(
        ctx,
        c,
        "key_size 4",
        PrefillAttr {
            key_size: 4,
            ..attr(OBJ_SIZE, 10, 0)
        },
        &[],
        libc::EINVAL,
    )?;
    expect_err(
        ctx,
        c,
        "flags 0x80000000",
        attr(OBJ_SIZE, 10, 1 << 31),
        &[],
        libc::EINVAL,
    )?;
    expect_err(
        ctx,
        c,
        "non-zero byte after map_extra",
        attr(OBJ_SIZE, 10, 0),
        &[0, 0, 0, 1],
        libc::EINVAL,
    )?;
    expect_err(
        ctx,
        c,
        "16 MiB / unit + 1 objects",
        attr(OBJ_SIZE, max_n + 1, 0),
        &[],
        libc::E2BIG,
    )?;
    expect_err(
        ctx,
        c,
        "count u32::MAX",
        attr(OBJ_SIZE, u32::MAX, 0),
        &[],
        libc::E2BIG,
    )?;
    expect_err(
        ctx,
        c,
        "size 4088 count 4097",
        attr(MAX_SIZE, 4097, 0),
        &[],
        libc::E2BIG,
    )?;

    // Stacked above the limit: 3000 + 1097 objects of 4096 bytes > 16 MiB.
    let (big, took) = prefill_timed(MAX_SIZE, 3000)?;
    ctx.diag(format!(
        "prefill(4088, 3000): {:.1} ms",
        took.as_secs_f64() * 1e3
    ));
    expect_err(
        ctx,
        c,
        "stacked above 16 MiB",
        attr(MAX_SIZE, 1097, 0),
        &[],
        libc::E2BIG,
    )?;
    expect_err(
        ctx,
        c,
        "stacked above 16 MiB, other size",
        attr(OBJ_SIZE, 80_000, 0),
        &[],
        libc::E2BIG,
    )?;
    release(ctx, c, "close(prefill(4088, 3000))", vec![big], &s0.caches)?;

    // Two requests that each fit under the cap but not together, at once:
    // both pass the early check while the other still allocates (about
    // 300 ms here), so only the re-check under the mutex, against what was
    // committed meanwhile, can refuse the second.
    let barrier = std::sync::Barrier::new(2);
    let raced: Vec<Result<OwnedFd, std::io::Error>> = thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    reserve::prefill(MAX_SIZE, RACE_COUNT, 0)
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("prefill thread panicked"))
            .collect()
    });
    let mut outcomes: Vec<String> = raced
        .iter()
        .map(|r| {
            errno_name(
                r.as_ref()
                    .err()
                    .map_or(0, |e| e.raw_os_error().unwrap_or(-1)),
            )
        })
        .collect();
    outcomes.sort();
    ctx.diag(format!(
        "two prefill(4088, {RACE_COUNT}) at once (2 x 10 MiB > 16 MiB): {outcomes:?}"
    ));
    let mut want = vec![errno_name(libc::E2BIG), errno_name(0)];
    want.sort();
    c.eq(
        "two prefills at once, each under the cap but not both: outcomes",
        want,
        outcomes,
    );
    let fds: Vec<OwnedFd> = raced.into_iter().filter_map(Result::ok).collect();
    release(ctx, c, "close(the racing prefills)", fds, &s0.caches)?;
    let (exact, took) = prefill_timed(MAX_SIZE, 4096)?;
    ctx.diag(format!(
        "prefill(4088, 4096), exactly 16 MiB per CPU: {:.1} ms",
        took.as_secs_f64() * 1e3
    ));
    expect_err(
        ctx,
        c,
        "one more object at the limit",
        attr(1, 1, 0),
        &[],
        libc::E2BIG,
    )?;
    release(
        ctx,
        c,
        "close(prefill(4088, 4096))",
        vec![exact],
        &s0.caches,
    )?;

    // The objects are reserved before the fd is made: with no fd free, the
    // reservation must be undone.
    let lowest_free = lowest_free_fd()?;
    expect_err_with(
        ctx,
        c,
        "no free fd (RLIMIT_NOFILE)",
        (attr(OBJ_SIZE, 10, 0), &[]),
        libc::EMFILE,
        Undone::Reservation,
        || with_nofile_limit(lowest_free, || reserve::prefill(OBJ_SIZE, 10, 0)),
    )?;

    // No capabilities, with unprivileged bpf() allowed, so that only the
    // map type can refuse; a plain array from the same child is the control.
    let allowed = UnprivBpfAllowed::new()?;
    let array = PrefillAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        size: 8,
        count: 1,
        flags: 0,
    };
    let control = unprivileged_errno(&reserve::create_attr_bytes(array, &[]))?;
    let before = snap(c)?;
    let e = unprivileged_errno(&reserve::create_attr_bytes(attr(OBJ_SIZE, 10, 0), &[]))?;
    let after = snap(c)?;
    drop(allowed);
    c.eq(
        "unprivileged caller, unprivileged_bpf_disabled 0: an array map is created",
        errno_name(0),
        errno_name(control),
    );
    ctx.diag(format!(
        "{:<36} -> {} (want EPERM)",
        "uid 65534, no caps, unpriv bpf allowed",
        errno_name(e)
    ));
    c.eq(
        "unprivileged caller: errno",
        errno_name(libc::EPERM),
        errno_name(e),
    );
    for bad in after.caches.marks_changed(&before.caches) {
        c.fail(format!("unprivileged caller changed the caches: {bad}"));
    }
    ctx.diag("ENOMEM not tested: the rig's kernel has no fail_page_alloc (CONFIG_FAIL_PAGE_ALLOC)");

    // the allocator still works: one reservation, released
    let (fd, _) = prefill_timed(OBJ_SIZE, N)?;
    release(
        ctx,
        c,
        "prefill(32, 1000) after the errors",
        vec![fd],
        &s0.caches,
    )?;
    let end = snap(c)?;
    for bad in end.caches.marks_changed(&s0.caches) {
        c.fail(format!("caches differ from the start: {bad}"));
    }
    checks.eq("reserved at the end", 0, end.res.total.reserved);
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// What a hammering thread did.
struct Hammered {
    cpu: usize,
    runs: u64,
    done: u64,
    fails: u64,
}

pub fn global_ma_prefill_concurrent(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let cpus = online(&mut checks, &s0)?;
    let Some((&home, others)) = cpus.split_first() else {
        bail!("no online CPU");
    };
    if others.is_empty() {
        return Ok(Outcome::Skip("needs at least 2 online CPUs".into()));
    }
    let l = load(ctx)?;
    const CYCLES: usize = 20;

    let stop = AtomicBool::new(false);
    let obj = &l.obj;
    let (hammered, result) = thread::scope(|s| {
        let workers: Vec<_> = others
            .iter()
            .map(|&cpu| {
                let stop = &stop;
                s.spawn(move || -> Result<Hammered> {
                    cpu::pin_current_thread(cpu)?;
                    write_ctl(
                        obj,
                        cpu,
                        &PfCtl {
                            cmd: Cmd::Hammer as u32,
                            tgid: std::process::id(),
                            n: HAMMER_MAX,
                            ..PfCtl::default()
                        },
                    )?;
                    while !stop.load(Ordering::Relaxed) {
                        trigger()?;
                    }
                    let c = read_ctl(obj, cpu)?;
                    write_ctl(obj, cpu, &PfCtl::default())?;
                    Ok(Hammered {
                        cpu,
                        runs: c.runs,
                        done: c.done,
                        fails: c.fails,
                    })
                })
            })
            .collect();
        // Prefill and release while they run, from the home CPU.
        let result = (|| -> Result<(OwnedFd, Vec<Duration>)> {
            let _pin = affinity::pin(home)?;
            thread::sleep(Duration::from_millis(200));
            let mut times = Vec::new();
            for _ in 0..CYCLES {
                let (fd, t) = prefill_timed(OBJ_SIZE, N)?;
                times.push(t);
                drop(fd);
            }
            let (fd, t) = prefill_timed(OBJ_SIZE, N)?;
            times.push(t);
            thread::sleep(Duration::from_millis(200));
            Ok((fd, times))
        })();
        stop.store(true, Ordering::Relaxed);
        let hammered: Vec<Result<Hammered>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("hammer thread panicked")))
            })
            .collect();
        (hammered, result)
    });
    let (fd, times) = result?;
    for h in hammered {
        let h = h?;
        ctx.diag(format!(
            "hammer cpu{}: runs {} allocs {} fails {}",
            h.cpu, h.runs, h.done, h.fails
        ));
        if h.runs == 0 {
            checks.fail(format!("hammer thread on cpu{} never ran", h.cpu));
        }
    }
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.1}", t.as_secs_f64() * 1e3))
        .collect();
    ctx.diag(format!(
        "{} prefills of ({OBJ_SIZE}, {N}) during the hammering, ms: {}",
        times.len(),
        ms.join(" ")
    ));

    let unit = checked_unit(&mut checks, &fd, OBJ_SIZE, N)?;
    let s1 = snap(&mut checks)?;
    for &cpu in &cpus {
        let c = s1.cache(cpu, unit)?;
        let d = s0.cache(cpu, unit)?;
        ctx.diag(format!("after the race: {}", s1.describe(cpu, unit)));
        checks.eq(
            format!("cpu{cpu}: reserve after the race"),
            i64::from(N),
            c.reserve,
        );
        checks.eq(
            format!("cpu{cpu}: high after the race"),
            d.high + i64::from(N),
            c.high,
        );
        if c.free_cnt < i64::from(N) {
            checks.fail(format!(
                "cpu{cpu}: free_cnt {} below the reserve after the race",
                c.free_cnt
            ));
        }
    }
    checks.eq(
        "reserved after the race",
        i64::from(N) * cpus.len() as i64,
        s1.res.total.reserved,
    );
    expect_conservation(&mut checks, "race", &s0, &s1);
    for &cpu in &cpus {
        sequence(ctx, &mut checks, &l.obj, cpu, N, unit, i64::from(N))?;
    }
    release(ctx, &mut checks, "close(fd)", vec![fd], &s0.caches)?;
    let end = settled_snap(&mut checks, &s0)?;
    expect_conservation(&mut checks, "whole test", &s0, &end);
    finish(&mut checks, (l.links, l.obj), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// The reservation `global_ma_prefill_enomem` asks for: 4088-byte objects
/// (unit 4096) each take a page of their own with SLOB (kmalloc of a page
/// or more goes straight to the page allocator), so page-allocation fault
/// injection fails exactly the prefill's kmalloc_node().
const ENOMEM_SIZE: u32 = MAX_SIZE;
const ENOMEM_COUNT: u32 = 2000;

/// ENOMEM with fail_page_alloc: page allocations of the test's own thread
/// start failing after 5/8 of the pages the reservation needs, midway
/// through the CPUs' chains. The call must return ENOMEM with everything
/// it took given back: the caches file and the reserve counters exactly as
/// before, in_use where it was. The same prefill then succeeds.
pub fn global_ma_prefill_enomem(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    if !std::path::Path::new(fail_page_alloc::PATH).exists() {
        return Ok(Outcome::Skip(format!(
            "{} missing: this kernel has no page-allocation fault injection \
             (CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_DEBUG_FS)",
            fail_page_alloc::PATH
        )));
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let cpus = online(&mut checks, &s0)?;
    let pages = u64::from(ENOMEM_COUNT) * s0.caches.cpus().len() as u64;
    let space_pages = pages * 5 / 8;
    const TIMES: u32 = 10;

    let before = snap(&mut checks)?;
    let ((r, took), injected) = {
        let _pin = affinity::pin(cpus[0])?;
        fail_page_alloc::with_failing_pages(space_pages, TIMES, || {
            let t = Instant::now();
            let r = reserve::prefill(ENOMEM_SIZE, ENOMEM_COUNT, 0);
            (r, t.elapsed())
        })?
    };
    let errno = match &r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    ctx.diag(format!(
        "prefill({ENOMEM_SIZE}, {ENOMEM_COUNT}) on {} CPUs ({pages} pages) with page \
         allocations failing after {space_pages}: {} after {:.1} ms, {injected} failure(s) \
         injected",
        cpus.len(),
        errno_name(errno),
        took.as_secs_f64() * 1e3
    ));
    drop(r);
    checks.eq(
        "prefill under fail_page_alloc: errno",
        errno_name(libc::ENOMEM),
        errno_name(errno),
    );
    if injected == 0 {
        checks.fail("fail_page_alloc injected no failure");
    }

    let after = snap(&mut checks)?;
    if after.caches != before.caches {
        for (k, b) in &before.caches.lines {
            let a = after.caches.lines.get(k);
            if a != Some(b) {
                checks.fail(format!(
                    "ENOMEM changed cpu{} unit {}: {b} -> {}",
                    k.0,
                    k.1,
                    a.map_or("no line".to_string(), |a| a.to_string())
                ));
            }
        }
        for k in after.caches.lines.keys() {
            if !before.caches.lines.contains_key(k) {
                checks.fail(format!("ENOMEM added a line cpu{} unit {}", k.0, k.1));
            }
        }
    }
    checks.eq(
        "ENOMEM: total reserved",
        before.res.total.reserved,
        after.res.total.reserved,
    );
    checks.eq(
        "ENOMEM: total prefill",
        before.res.total.prefill,
        after.res.total.prefill,
    );
    for &cpu in &cpus {
        let (b, a) = (before.res.cpu(cpu), after.res.cpu(cpu));
        checks.eq(format!("ENOMEM: cpu{cpu} prefill"), b.prefill, a.prefill);
        checks.eq(format!("ENOMEM: cpu{cpu} reserved"), b.reserved, a.reserved);
    }
    let (st, ok, waited) =
        stats::poll(RELEASE_TIMEOUT, POLL_INTERVAL, |s| s.in_use == start.in_use)?;
    ctx.diag(format!(
        "after ENOMEM: reserved {} -> {}, prefill {} -> {}, in_use {} -> {} ({:.1} ms)",
        before.res.total.reserved,
        after.res.total.reserved,
        before.res.total.prefill,
        after.res.total.prefill,
        start.in_use,
        st.in_use,
        waited.as_secs_f64() * 1e3
    ));
    if !ok {
        checks.fail(format!(
            "in_use did not return to {} within {RELEASE_TIMEOUT:?}: {}",
            start.in_use, st.in_use
        ));
    }

    // Everything came back: the same reservation now fits.
    let (fd, t) = prefill_timed(ENOMEM_SIZE, ENOMEM_COUNT)?;
    ctx.diag(format!(
        "prefill({ENOMEM_SIZE}, {ENOMEM_COUNT}) without fault injection: {:.1} ms",
        t.as_secs_f64() * 1e3
    ));
    let unit = checked_unit(&mut checks, &fd, ENOMEM_SIZE, ENOMEM_COUNT)?;
    let s1 = snap(&mut checks)?;
    expect_reserved(
        &mut checks,
        "prefill after ENOMEM",
        &before,
        &s1,
        unit,
        i64::from(ENOMEM_COUNT),
    )?;
    release(ctx, &mut checks, "close(fd)", vec![fd], &s0.caches)?;
    let end = settled_snap(&mut checks, &s0)?;
    expect_conservation(&mut checks, "whole test", &s0, &end);
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
