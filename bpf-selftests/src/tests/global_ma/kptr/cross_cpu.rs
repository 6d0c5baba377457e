//! `global_ma_cross_cpu`: allocated on one CPU, freed on another.

use anyhow::Result;
use libbpf_rs::MapCore;

use super::{check_new_obj, Kind, KptrObj, Op, OBJECT, STASH, TAKE};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::cpu;
use crate::sys::fdinfo::ProgGlobalMa;
use crate::tests::global_ma::{
    describe_cpu_deltas, expect_deltas, expect_prog_delta, finish, missing_feature, quiet_stats,
    read_stats, MAGIC,
};

/// Allocated on CPU A, freed on CPU B, for every ordered pair (A, B):
/// taken out with bpf_kptr_xchg() and released with the kfunc by a program
/// on B, and deleted by user space on B (the map's destructor). The alloc
/// shows on A's line, the free on B's.
pub fn global_ma_cross_cpu(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let cpus = cpu::online_cpus()?;
    if cpus.len() < 2 {
        return Ok(Outcome::Skip(format!("{} online CPU(s)", cpus.len())));
    }
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let k = KptrObj::load(ctx)?;
    let stash_id = k.id(STASH)?;
    let (fs0, ft0) = (k.counts(STASH)?, k.counts(TAKE)?);
    let kind = Kind::Hash;
    let key = 1;
    let mut pairs = 0u64;

    for &a in &cpus {
        for &b in &cpus {
            if a == b {
                continue;
            }
            pairs += 1;
            let what = format!("CPU {a} -> CPU {b}");

            // Leg 1: the release kfunc on B.
            let s0 = read_stats(&mut checks)?;
            let c = {
                let _pin = affinity::pin(a)?;
                k.run(Op::Stash, kind, key)?
            };
            check_new_obj(&mut checks, &format!("{what}: stash"), &c, a, stash_id);
            let s1 = read_stats(&mut checks)?;
            expect_deltas(
                &mut checks,
                &format!("{what}: stash on {a}"),
                &s0,
                &s1,
                &[(a, 1, 0)],
            );
            let t = {
                let _pin = affinity::pin(b)?;
                k.run(Op::Take, kind, key)?
            };
            checks.eq(format!("{what}: take found the object"), 1, t.found);
            checks.eq(format!("{what}: take ran on"), b as u32, t.cpu);
            checks.eq(format!("{what}: taken object's cpu"), a as u64, t.obj_cpu);
            checks.eq(
                format!("{what}: taken object's prog_id"),
                stash_id,
                t.obj_prog_id,
            );
            checks.eq(format!("{what}: taken object's magic"), MAGIC, t.obj_magic);
            checks.eq(format!("{what}: releases"), 1, t.releases);
            let s2 = read_stats(&mut checks)?;
            expect_deltas(
                &mut checks,
                &format!("{what}: kfunc release on {b}"),
                &s1,
                &s2,
                &[(b, 0, 1)],
            );

            // Leg 2: user space deletes the element on B.
            {
                let _pin = affinity::pin(a)?;
                k.run(Op::Stash, kind, key)?;
            }
            {
                let _pin = affinity::pin(b)?;
                k.map(kind)?.delete(&key.to_ne_bytes())?;
            }
            let s3 = read_stats(&mut checks)?;
            expect_deltas(
                &mut checks,
                &format!("{what}: stash on {a}, delete on {b}"),
                &s2,
                &s3,
                &[(a, 1, 0), (b, 0, 1)],
            );
            checks.eq(
                format!("{what}: in_use back to its start"),
                s0.in_use,
                s3.in_use,
            );
            ctx.diag(format!(
                "{what}: kfunc: {}; delete: {}",
                describe_cpu_deltas(&s0, &s2),
                describe_cpu_deltas(&s2, &s3)
            ));
        }
    }
    let end = read_stats(&mut checks)?;
    let per_cpu: Vec<(usize, i64, i64)> = cpus
        .iter()
        .map(|&c| {
            let n = 2 * (cpus.len() as i64 - 1);
            (c, n, n)
        })
        .collect();
    expect_deltas(&mut checks, "all pairs", &start, &end, &per_cpu);
    expect_prog_delta(
        &mut checks,
        STASH,
        fs0,
        k.counts(STASH)?,
        ProgGlobalMa {
            allocs: 2 * pairs,
            frees: 0,
            alloc_fails: 0,
        },
    );
    expect_prog_delta(
        &mut checks,
        TAKE,
        ft0,
        k.counts(TAKE)?,
        ProgGlobalMa {
            allocs: 0,
            frees: pairs,
            alloc_fails: 0,
        },
    );
    ctx.diag(format!(
        "{pairs} ordered pairs; per CPU: {}; {STASH} fdinfo {}, {TAKE} fdinfo {}",
        describe_cpu_deltas(&start, &end),
        k.counts(STASH)?.map(|c| c.to_string()).unwrap_or_default(),
        k.counts(TAKE)?.map(|c| c.to_string()).unwrap_or_default(),
    ));
    finish(&mut checks, k, &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
