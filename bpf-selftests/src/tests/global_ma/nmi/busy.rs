//! `global_ma_nmi_busy_free`: NMIs that land inside the allocator.

use std::fs;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::{
    free_cnt, preflight, snap, GmaVal, Loaded, OBJ_SIZE, OP_HASH_STASH, OP_HASH_TAKE, OP_NONE,
};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf;
use crate::sys::caches::Caches;
use crate::sys::reserve;
use crate::tests::global_ma::{expect_deltas, finish, quiet_stats};

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
        return Ok(Outcome::Skip(rig_contract::lacks::lacks(
            &format!("{BUSY_PATH} missing"),
            "the NMI source's busy free list",
        )));
    }
    let a = cpus[0];
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut l = Loaded::new(ctx)?;
    // 64 reserved: the list stays between the watermarks (low 32, high
    // 96 + 64), so no refill or trim moves free_cnt during the test.
    let reservation = reserve::prefill(OBJ_SIZE, 64, 0).context("prefill")?;
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
