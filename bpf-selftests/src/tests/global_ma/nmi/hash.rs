//! NMIs and hash maps: `global_ma_nmi_hash_kptr` (objects handed over
//! between NMI and normal context) and `global_ma_nmi_hash_buckets` (bucket
//! locks taken in NMI on two CPUs at once).

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::{
    expect_clean_nmi_runs, preflight_two_cpus, snap, GmaVal, Loaded, OP_CROSS_UPDATE,
    OP_HASH_DELETE, OP_HASH_STASH, OP_HASH_TAKE, OP_NONE, OP_NORMAL_CROSS_UPDATE,
};
use crate::check::Checks;
use crate::runner::{panic_message, Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf;
use crate::sys::nmi;
use crate::tests::global_ma::{expect_deltas, finish, quiet_stats, trigger};

/// CROSS_LOOPS in the BPF program: updates per run of normal_op.
const CROSS_LOOPS: u64 = 256;
/// `plain`'s buckets (max_entries 64 rounded up to a power of two) and
/// its map_locked slots (HASHTAB_MAP_LOCK_MASK + 1).
const PLAIN_BUCKETS: u32 = 64;
const MAP_LOCKED_SLOTS: u32 = 8;
/// How long the bucket-lock test hammers the two buckets (full profile).
const CROSS_DURATION: Duration = Duration::from_millis(1500);
/// NMI rounds of the hash_buckets test after the contention has stopped.
const QUIET_ROUNDS: u64 = 100;

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

/// Two CPUs update hash elements (a program in normal context, in a loop)
/// while NMIs on both update
/// the element the other CPU updates (patch 0001). A bucket lock held by
/// one CPU when the other's NMI wants it, and the reverse at the same time,
/// is an ABBA deadlock that map_locked does not catch (the two buckets have
/// different slots): without the trylock in NMI the two CPUs hang in their
/// NMIs. With it, every NMI update either succeeds or gets -EBUSY.
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
        // Quick: 0.5 s still gives a few hundred rounds of NMIs into held
        // buckets (busy refusals in 653 of 700 rounds in full runs).
        let duration = ctx.cfg.stress_duration(CROSS_DURATION);
        let sent = (|| -> Result<()> {
            while start.elapsed() < duration {
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
