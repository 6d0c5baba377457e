//! `global_ma_nmi_stress`: NMIs, allocating threads and reservations on
//! every CPU at once.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    expect_clean_nmi_runs, per_sec, preflight, snap, Loaded, OBJ_SIZE, OP_ALLOC, OP_NONE, OP_RING,
};
use crate::check::Checks;
use crate::runner::{panic_message, Ctx, Outcome};
use crate::sys::cpu;
use crate::sys::nmi;
use crate::sys::reserve;
use crate::tests::global_ma::{finish, quiet_stats, trigger};

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
                let fd: OwnedFd = reserve::prefill(size, 64, 0)
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
    let duration = ctx.cfg.stress_duration(DURATION);
    const BASE: u32 = 256;
    let cpus = match preflight(ctx)? {
        Ok(c) => c,
        Err(skip) => return Ok(skip),
    };
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut l = Loaded::new(ctx)?;
    let reservation = reserve::prefill(OBJ_SIZE, BASE, 0).context("prefill")?;
    l.set(|c| {
        c.op = OP_RING;
        c.per_nmi = 4;
        c.slots = BASE;
        c.normal_op = OP_ALLOC;
    })?;

    let s0 = snap(&mut checks)?;
    let h0 = nmi::read()?;
    let run = stress_threads(&cpus, duration)?;
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
        duration.as_secs_f64(),
        per_sec(nmis, run.nmi_time),
        per_sec(nmi_allocs, run.nmi_time),
        run.prefills
    ));

    drop(l.links);
    finish(&mut checks, (l.obj, reservation), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
