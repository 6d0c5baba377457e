//! Snapshots of the allocator (counters, reserve fields, caches) and the
//! checks the prefill tests make between two of them, including the waits
//! for a reservation map's deferred release.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::RELEASE_TIMEOUT;
use crate::check::Checks;
use crate::poll::poll;
use crate::runner::Ctx;
use crate::sys::caches::{self, Caches};
use crate::sys::stats::{self, ReserveStats, Stats};
use crate::tests::global_ma::POLL_INTERVAL;

/// One consistent look at the allocator: counters, reserve fields, caches.
pub(super) struct Snap {
    pub(super) stats: Stats,
    pub(super) res: ReserveStats,
    pub(super) caches: Caches,
}

pub(super) fn snap(checks: &mut Checks) -> Result<Snap> {
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
    pub(super) fn cache(&self, cpu: usize, unit: u32) -> Result<caches::Cache> {
        self.caches.get(cpu, unit).with_context(|| {
            format!(
                "{} has no line for cpu{cpu} unit {unit}",
                caches::CACHES_PATH
            )
        })
    }

    /// `cpu3 unit 64 free_cnt .. low .. high .. reserve .. | alloc ..`.
    pub(super) fn describe(&self, cpu: usize, unit: u32) -> String {
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
pub(super) fn expect_conservation(checks: &mut Checks, what: &str, before: &Snap, after: &Snap) {
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
pub(super) fn settled_snap(checks: &mut Checks, before: &Snap) -> Result<Snap> {
    let read = || -> Result<Snap> {
        let caches = Caches::read()?;
        let (stats, res) = stats::read_with_reserve()?;
        Ok(Snap { stats, res, caches })
    };
    let trimmed = |s: &Snap| above_high(&s.caches).next().is_none();
    let (s, _, _) = poll(RELEASE_TIMEOUT, POLL_INTERVAL, read, |s| {
        trimmed(s) && conservation(before, s).iter().all(|&(_, w, g)| w == g)
    })?;
    report_inconsistencies(checks, &s.stats, &s.res);
    if !trimmed(&s) {
        for bad in above_high(&s.caches) {
            checks.fail(format!("not trimmed within {RELEASE_TIMEOUT:?}: {bad}"));
        }
    }
    Ok(s)
}

/// Polls the caches until every line has the watermarks and reserve of
/// `defaults` and no free list is above its high watermark.
pub(super) fn wait_defaults(defaults: &Caches) -> Result<(Caches, bool, Duration)> {
    poll(RELEASE_TIMEOUT, POLL_INTERVAL, Caches::read, |c| {
        c.marks_changed(defaults).is_empty() && above_high(c).next().is_none()
    })
}

/// A snapshot once every CPU's `reserved` is `objects` below `before`'s and
/// the caches' watermarks and reserves are what `before` plus the live
/// reservations make them: after the close of a reservation map, whose
/// unreserve runs from a workqueue. Gives up after RELEASE_TIMEOUT and
/// returns the last reading, which the caller's checks then judge.
pub(super) fn unreserved_snap(checks: &mut Checks, before: &Snap, objects: i64) -> Result<Snap> {
    let reserve = || stats::read_with_reserve().map(|(_, res)| res);
    poll(RELEASE_TIMEOUT, POLL_INTERVAL, reserve, |res| {
        before
            .res
            .cpus
            .iter()
            .all(|(&cpu, b)| res.cpu(cpu).reserved == b.reserved - objects)
    })?;
    snap(checks)
}

/// Closes `fds`, then checks that the caches come back to `defaults`.
pub(super) fn release<T>(
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

/// Checks that a reservation of `count` in `unit` came on top of `before`
/// on every CPU: reserve and high up by `count`, low unchanged, free_cnt
/// up by `count`.
pub(super) fn expect_reserved(
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
