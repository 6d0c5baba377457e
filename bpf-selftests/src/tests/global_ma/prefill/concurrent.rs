//! `global_ma_prefill_concurrent`: reservations made and dropped while
//! every other CPU allocates and frees.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Result};
use rig_contract::cmdline::Profile;

use super::ctl::{read_ctl, write_ctl, Cmd, PfCtl};
use super::sequence::sequence;
use super::snap::{expect_conservation, release, settled_snap, snap};
use super::{
    begin, checked_unit, load, missing_reserves, online, prefill_timed, HAMMER_MAX, N, OBJECT,
    OBJ_SIZE,
};
use crate::check::Checks;
use crate::poll::poll;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::cpu;
use crate::tests::global_ma::{finish, trigger};

/// Prefill+release cycles during the hammering, and how long the hammering
/// goes on around the last reservation, per profile.
fn race(profile: Profile) -> (usize, Duration) {
    match profile {
        Profile::Full => (20, Duration::from_millis(200)),
        Profile::Quick => (5, Duration::from_millis(50)),
    }
}

/// Longest wait for every hammering thread to have run its program once.
const HAMMER_START_TIMEOUT: Duration = Duration::from_secs(10);

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
    let (cycles, hold) = race(ctx.cfg.profile);

    let stop = AtomicBool::new(false);
    // Hammering threads that have run their program once (or given up).
    let started = AtomicUsize::new(0);
    let obj = &l.obj;
    let (hammered, result) = thread::scope(|s| {
        let workers: Vec<_> = others
            .iter()
            .map(|&cpu| {
                let (stop, started) = (&stop, &started);
                s.spawn(move || -> Result<Hammered> {
                    let r = hammer(obj, cpu, stop, started);
                    if r.is_err() {
                        started.fetch_add(1, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        // Prefill and release while they run, from the home CPU.
        let result = (|| -> Result<(OwnedFd, Vec<Duration>, Duration)> {
            let _pin = affinity::pin(home)?;
            let (_, _, warmup) = poll(
                HAMMER_START_TIMEOUT,
                Duration::from_millis(1),
                || Ok(started.load(Ordering::Relaxed)),
                |&n| n >= others.len(),
            )?;
            let mut times = Vec::new();
            for _ in 0..cycles {
                let (fd, t) = prefill_timed(OBJ_SIZE, N)?;
                times.push(t);
                drop(fd);
            }
            let (fd, t) = prefill_timed(OBJ_SIZE, N)?;
            times.push(t);
            thread::sleep(hold);
            Ok((fd, times, warmup))
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
    let (fd, times, warmup) = result?;
    ctx.diag(format!(
        "{} hammering threads running {:.1} ms after their start; {cycles} cycles, \
         {hold:?} after the last prefill",
        others.len(),
        warmup.as_secs_f64() * 1e3
    ));
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

/// One hammering thread: pinned to `cpu`, running the program until `stop`.
fn hammer(
    obj: &libbpf_rs::Object,
    cpu: usize,
    stop: &AtomicBool,
    started: &AtomicUsize,
) -> Result<Hammered> {
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
    trigger()?;
    started.fetch_add(1, Ordering::Relaxed);
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
}
