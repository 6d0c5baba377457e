//! `global_ma_prefill_sequence`, and Delyan's sequence it runs on every CPU
//! (also run by the stacking and concurrent tests).

use std::thread;

use anyhow::{bail, Result};
use libbpf_rs::Object;

use super::ctl::{run_on, Cmd};
use super::snap::{expect_conservation, expect_reserved, release, settled_snap, snap, Snap};
use super::{
    begin, checked_unit, irq_work_grace, load, missing_reserves, online, prefill_timed, N, OBJECT,
    OBJ_SIZE, SLOTS,
};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::tests::global_ma::{expect_deltas, finish};

/// What the sequence measured on one CPU.
pub(super) struct SeqFigures {
    extra_failed: bool,
    refill_objs: i64,
}

/// Delyan's sequence on `cpu` with `n` objects reserved there (of
/// `reserve` in all) in size class `unit`.
pub(super) fn sequence(
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

    // N allocations (round #1, #2) from slot 0: none fails
    let alloc_round = |checks: &mut Checks, round: u32, before: &Snap| -> Result<Snap> {
        let a = run_on(obj, cpu, Cmd::Alloc, 0, n)?;
        let after = snap(checks)?;
        ctx.diag(format!(
            "  allocs #{round} done {} fails {}: {}",
            a.done,
            a.fails,
            after.describe(cpu, unit)
        ));
        checks.eq(
            format!("cpu{cpu}: allocs #{round} done"),
            u64::from(n),
            a.done,
        );
        checks.eq(format!("cpu{cpu}: allocs #{round} failed"), 0, a.fails);
        expect_deltas(
            checks,
            &format!("cpu{cpu} allocs #{round}"),
            &before.stats,
            &after.stats,
            &[(cpu, ni, 0)],
        );
        Ok(after)
    };
    let s1 = alloc_round(checks, 1, &s0)?;

    // N frees: back to the reserve, not to the slab
    let f = run_on(obj, cpu, Cmd::Free, 0, n)?;
    thread::sleep(irq_work_grace(ctx.cfg.profile));
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
    let s3 = alloc_round(checks, 2, &s2)?;

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
