//! Objects left in a map when the programs or the map go:
//! `global_ma_map_free` and `global_ma_debug_owner_gone`.

use anyhow::{bail, Result};
use libbpf_rs::MapCore;

use super::{check_new_obj, Kind, KptrObj, Op, OBJECT, STASH};
use crate::check::Checks;
use crate::poll::poll;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::cpu;
use crate::sys::fdinfo::ProgGlobalMa;
use crate::sys::outstanding::{self, Outstanding};
use crate::tests::global_ma::{
    describe_cpu_deltas, drop_and_settle, expect_deltas, finish, missing_feature, prog_id,
    quiet_stats, read_stats, POLL_INTERVAL, SETTLE_TIMEOUT,
};

/// Mirrors GMA_MAX_ENTRIES in the BPF program.
const MAX_ENTRIES: u32 = 256;
/// Objects put into each map by `global_ma_map_free`.
const FILL: u32 = 64;

/// Fill a map with FILL objects, then drop every reference to it (links,
/// programs, map fds): all FILL objects come back, from the map free
/// workqueue.
pub fn global_ma_map_free(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    if FILL > MAX_ENTRIES {
        bail!("FILL {FILL} > MAX_ENTRIES {MAX_ENTRIES}");
    }
    let cpus = cpu::online_cpus()?;
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    for (i, kind) in [Kind::Hash, Kind::HashPrealloc, Kind::LruHash, Kind::Array]
        .into_iter()
        .enumerate()
    {
        let cpu = cpus[i % cpus.len()];
        let what = format!("{kind}, {FILL} objects, CPU {cpu}");
        let k = KptrObj::load_attaching(ctx, &[STASH])?;
        let stash_id = k.id(STASH)?;
        let s0 = read_stats(&mut checks)?;
        {
            let _pin = affinity::pin(cpu)?;
            for key in 0..FILL {
                let c = k.run(Op::Stash, kind, key)?;
                if key == 0 {
                    check_new_obj(&mut checks, &format!("{what}: key 0"), &c, cpu, stash_id);
                } else if c.allocs != 1 || c.old_found != 0 || c.obj_cpu != cpu as u64 {
                    checks.fail(format!("{what}: key {key}: {c:?}"));
                }
            }
        }
        let s1 = read_stats(&mut checks)?;
        expect_deltas(
            &mut checks,
            &format!("{what}: filled"),
            &s0,
            &s1,
            &[(cpu, i64::from(FILL), 0)],
        );
        let f = k.counts(STASH)?;
        checks.eq(
            format!("{what}: {STASH} fdinfo"),
            Some(ProgGlobalMa {
                allocs: u64::from(FILL),
                frees: 0,
                alloc_fails: 0,
            }),
            f,
        );
        if kind != Kind::Array {
            let n = k.map(kind)?.keys().count();
            checks.eq(format!("{what}: elements in the map"), FILL as usize, n);
        }

        // Links, programs (which hold the maps) and map fds all go.
        let (s2, ok, took) = drop_and_settle(k, s0.in_use)?;
        if !ok {
            checks.fail(format!(
                "{what}: in_use still {} (start {}) {SETTLE_TIMEOUT:?} after closing the object",
                s2.in_use, s0.in_use
            ));
        }
        let d = s2.total.since(&s1.total);
        checks.eq(
            format!("{what}: frees after close"),
            i64::from(FILL),
            d.free,
        );
        checks.eq(format!("{what}: allocs after close"), 0, d.alloc);
        checks.eq(
            format!("{what}: failed allocs after close"),
            0,
            d.alloc_fail,
        );
        ctx.diag(format!(
            "{what}: in_use {} -> {} (filled) -> {} {:.1} ms after close; frees by CPU: {}",
            s0.in_use,
            s1.in_use,
            s2.in_use,
            took.as_secs_f64() * 1e3,
            describe_cpu_deltas(&s1, &s2)
        ));
    }
    let end = read_stats(&mut checks)?;
    let d = end.total.since(&start.total);
    checks.eq("whole test: allocs", 4 * i64::from(FILL), d.alloc);
    checks.eq("whole test: frees", 4 * i64::from(FILL), d.free);
    ctx.diag(format!(
        "whole test: {d}; in_use {} -> {}",
        start.in_use, end.in_use
    ));
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// Objects the owner-gone test leaves in the map when its programs go.
const ORPHANS: u32 = 3;

/// Polls `outstanding` until `done` holds (or SETTLE_TIMEOUT); returns the
/// last listing.
fn poll_outstanding(done: impl Fn(&[Outstanding]) -> bool) -> Result<Vec<Outstanding>> {
    let read = || Ok(outstanding::read()?.unwrap_or_default());
    let (listed, _, _) = poll(SETTLE_TIMEOUT, POLL_INTERVAL, read, |l: &Vec<_>| done(l))?;
    Ok(listed)
}

/// The debug mode's owners (0016): a program that goes away while a map
/// still holds objects it allocated is listed in `outstanding` with its
/// name, id and the number of those objects, and drops off the list once
/// the map has freed them.
pub fn global_ma_debug_owner_gone(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let Some(before) = outstanding::read()? else {
        return Ok(Outcome::Skip(rig_contract::lacks::lacks(
            &format!("{} missing", outstanding::PATH),
            "CONFIG_BPF_GLOBAL_MA_DEBUG (the global allocator's debug mode)",
        )));
    };
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let cpu = cpu::online_cpus()?[0];
    let _pin = affinity::pin(cpu)?;
    let k = KptrObj::load_attaching(ctx, &[STASH])?;
    let stash_id = prog_id(&k.obj, STASH)?;
    for key in 0..ORPHANS {
        k.run(Op::Stash, Kind::Hash, 300 + key)?;
    }
    let map = {
        use std::os::fd::AsFd;
        k.map(Kind::Hash)?.as_fd().try_clone_to_owned()?
    };
    // The programs go; the map stays, held by `map`.
    drop(k);
    let want = Outstanding {
        name: STASH.to_string(),
        id: stash_id,
        live: i64::from(ORPHANS),
    };
    let new = |listed: &[Outstanding]| -> Vec<Outstanding> {
        listed
            .iter()
            .filter(|o| !before.contains(o))
            .cloned()
            .collect()
    };
    let listed = poll_outstanding(|l| new(l).contains(&want))?;
    ctx.diag(format!("programs closed, map kept: outstanding {listed:?}"));
    checks.eq(
        "programs gone, map kept: new outstanding owners",
        vec![want],
        new(&listed),
    );
    drop(map);
    let listed = poll_outstanding(|l| new(l).is_empty())?;
    checks.eq(
        "map gone too: new outstanding owners",
        Vec::<Outstanding>::new(),
        new(&listed),
    );
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
