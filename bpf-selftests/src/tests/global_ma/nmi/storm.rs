//! NMI storms out of a reservation: `global_ma_nmi_within_reserve`,
//! `global_ma_nmi_over_reserve`, and `global_ma_nmi_external` (one NMI
//! injected by the host).

use std::collections::BTreeMap;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    expect_clean_nmi_runs, free_cnt, hold_storm, per_sec, snap, wait_low_watermark, Counts, Snap,
    Storm, OP_ALLOC, REFILL_TIMEOUT,
};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::caches::Caches;
use crate::sys::nmi;
use crate::tests::global_ma::{expect_deltas, finish};

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
    let (_, refilled, refill_took) = wait_low_watermark(&cpus)?;
    // Back at the low watermark, a refill batch may still be adding its
    // objects one by one (refill_objs grows only at its end): read the
    // lists and the counters once neither moves.
    let (c1, s1, settled) = settled_lists(&cpus, &mut checks)?;
    if !settled {
        checks.fail(format!(
            "the free lists and their refill/trim counters did not stand still within \
             {REFILL_TIMEOUT:?} after the NMIs"
        ));
    }
    if !refilled {
        checks.fail(format!(
            "a free list stayed below its low watermark {REFILL_TIMEOUT:?} after the NMIs"
        ));
    }

    let asked = K * u64::from(M);
    let mut report = Vec::new();
    let mut busy_nmis = Vec::new();
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
        // Past the reserve the NMIs drain the list below its low watermark,
        // and the refill irq_work runs between them; the next NMI can land
        // while it holds the class's `active` counter for one object, and
        // then every allocation of that NMI fails busy (global_ma.rst,
        // section 1). So busy failures come in whole NMIs, and only as
        // failures; the reserve itself is checked above (allocs >= f0).
        if n.alloc_busy % u64::from(M) != 0 || n.alloc_busy > p.nulls {
            checks.fail(format!(
                "cpu{c}: alloc_busy delta {} is not whole NMIs of {M} allocations within the \
                 {} failures",
                n.alloc_busy, p.nulls
            ));
        }
        if n.alloc_busy > 0 {
            busy_nmis.push(format!("cpu{c} {}", n.alloc_busy / u64::from(M)));
        }
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
    if !busy_nmis.is_empty() {
        ctx.diag(format!(
            "NMIs that landed inside the refill irq_work (all their allocations busy): {}",
            busy_nmis.join(", ")
        ));
    }

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

/// The caches file and the stats, read once two readings 2 ms apart agree
/// on every listed CPU's free_cnt (unit UNIT) and refill/trim counters.
fn settled_lists(cpus: &[usize], checks: &mut Checks) -> Result<(Caches, Snap, bool)> {
    let key = |c: &Caches, s: &Snap| -> Result<Vec<(i64, u64, u64)>> {
        cpus.iter()
            .map(|&cpu| {
                let r = s.reserve.cpu(cpu);
                Ok((free_cnt(c, cpu)?, s.stats.cpu(cpu).refill_objs, r.trim_objs))
            })
            .collect()
    };
    let start = Instant::now();
    let mut last = key(&Caches::read()?, &snap(checks)?)?;
    loop {
        thread::sleep(Duration::from_millis(2));
        let (c, s) = (Caches::read()?, snap(checks)?);
        let now = key(&c, &s)?;
        let same = now == last;
        if same || start.elapsed() > REFILL_TIMEOUT {
            return Ok((c, s, same));
        }
        last = now;
    }
}
