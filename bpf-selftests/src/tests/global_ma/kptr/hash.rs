//! Deletes and overwrites free the object an element held:
//! `global_ma_hash_delete` and `global_ma_hash_overwrite`.

use std::fmt;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use super::{check_new_obj, peek, Kind, KptrObj, Op, Val, DELETE, OBJECT, OVERWRITE, PEEK, STASH};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf;
use crate::sys::cpu;
use crate::sys::fdinfo::ProgGlobalMa;
use crate::tests::global_ma::{
    describe_cpu_deltas, expect_deltas, expect_prog_delta, finish, missing_feature, quiet_stats,
    read_stats,
};

#[derive(Clone, Copy, Debug)]
enum DeleteVia {
    User,
    UserLookupAndDelete,
    Bpf,
}

impl fmt::Display for DeleteVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteVia::User => "user space delete",
            DeleteVia::UserLookupAndDelete => "user space lookup_and_delete",
            DeleteVia::Bpf => "BPF delete",
        })
    }
}

/// alloc → store in a hash map → delete the element: one alloc, one free
/// on the deleting CPU, in_use back to its start, the free attributed to no
/// program.
pub fn global_ma_hash_delete(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let cpus = cpu::online_cpus()?;
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let k = KptrObj::load(ctx)?;
    let stash_id = k.id(STASH)?;

    let mut case = 0usize;
    for kind in [Kind::Hash, Kind::HashPrealloc, Kind::LruHash] {
        for via in [
            DeleteVia::User,
            DeleteVia::UserLookupAndDelete,
            DeleteVia::Bpf,
        ] {
            let cpu = cpus[case % cpus.len()];
            let key = 100 + case as u32;
            case += 1;
            let what = format!("{kind}, {via}, CPU {cpu}");
            let _pin = affinity::pin(cpu)?;

            let s0 = read_stats(&mut checks)?;
            let f0 = k.counts(STASH)?;
            let c = k.run(Op::Stash, kind, key)?;
            check_new_obj(&mut checks, &format!("{what}: stash"), &c, cpu, stash_id);
            let s1 = read_stats(&mut checks)?;
            expect_deltas(
                &mut checks,
                &format!("{what}: after stash"),
                &s0,
                &s1,
                &[(cpu, 1, 0)],
            );
            let held = peek(&k, kind, key, &mut checks, &what)?;
            checks.eq(
                format!("{what}: object in the map (cpu, prog_id)"),
                Some((cpu as u64, stash_id)),
                held,
            );

            match via {
                DeleteVia::User => k.map(kind)?.delete(&key.to_ne_bytes())?,
                DeleteVia::UserLookupAndDelete => {
                    match k.map(kind)?.lookup_and_delete(&key.to_ne_bytes())? {
                        None => checks.fail(format!("{what}: lookup_and_delete found nothing")),
                        Some(v) => {
                            let v: Val = bpf::read_pod(&v)?;
                            checks.eq(format!("{what}: kptr as user space sees it"), 0, v.obj);
                        }
                    }
                }
                DeleteVia::Bpf => {
                    k.run(Op::Delete, kind, key)?;
                }
            }
            let s2 = read_stats(&mut checks)?;
            expect_deltas(
                &mut checks,
                &format!("{what}: after delete"),
                &s1,
                &s2,
                &[(cpu, 0, 1)],
            );
            checks.eq(
                format!("{what}: in_use back to its start"),
                s0.in_use,
                s2.in_use,
            );
            checks.eq(
                format!("{what}: element still there"),
                false,
                k.has_key(kind, key)?,
            );
            expect_prog_delta(
                &mut checks,
                &format!("{what}: {STASH}"),
                f0,
                k.counts(STASH)?,
                ProgGlobalMa {
                    allocs: 1,
                    frees: 0,
                    alloc_fails: 0,
                },
            );
            ctx.diag(format!(
                "{what}: in_use {} -> {} -> {}; stash {}; delete {}",
                s0.in_use,
                s1.in_use,
                s2.in_use,
                describe_cpu_deltas(&s0, &s1),
                describe_cpu_deltas(&s1, &s2)
            ));
        }
    }
    // The map's destructor frees on nobody's account; programs that call
    // no kfunc have no counters at all.
    for p in [DELETE, PEEK] {
        checks.eq(
            format!("{p}: fdinfo global_ma counters"),
            None,
            k.counts(p)?,
        );
    }
    finish(&mut checks, k, &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// alloc → store → overwrite with a new object: the old one is freed,
/// exactly one remains, then none.
pub fn global_ma_hash_overwrite(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let cpus = cpu::online_cpus()?;
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let k = KptrObj::load(ctx)?;
    let (stash_id, overwrite_id) = (k.id(STASH)?, k.id(OVERWRITE)?);
    let empty = bpf::pod_bytes(&Val::default());

    for (i, kind) in [Kind::Hash, Kind::HashPrealloc, Kind::LruHash, Kind::Array]
        .into_iter()
        .enumerate()
    {
        let cpu = cpus[i % cpus.len()];
        let key = 7 + i as u32;
        let what = format!("{kind}, CPU {cpu}");
        let _pin = affinity::pin(cpu)?;
        let (fs0, fo0) = (k.counts(STASH)?, k.counts(OVERWRITE)?);

        // 1. A into the element.
        let s0 = read_stats(&mut checks)?;
        let c = k.run(Op::Stash, kind, key)?;
        check_new_obj(&mut checks, &format!("{what}: stash"), &c, cpu, stash_id);
        let s1 = read_stats(&mut checks)?;
        expect_deltas(
            &mut checks,
            &format!("{what}: stash A"),
            &s0,
            &s1,
            &[(cpu, 1, 0)],
        );

        // 2. BPF: update(BPF_EXIST, empty value) frees A, B goes into the
        //    new value.
        let c = k.run(Op::Overwrite, kind, key)?;
        check_new_obj(
            &mut checks,
            &format!("{what}: overwrite"),
            &c,
            cpu,
            overwrite_id,
        );
        let s2 = read_stats(&mut checks)?;
        expect_deltas(
            &mut checks,
            &format!("{what}: BPF overwrite A with B"),
            &s1,
            &s2,
            &[(cpu, 1, 1)],
        );
        checks.eq(
            format!("{what}: in_use after BPF overwrite (start + 1)"),
            s0.in_use + 1,
            s2.in_use,
        );
        let held = peek(&k, kind, key, &mut checks, &what)?;
        checks.eq(
            format!("{what}: the object left is B (cpu, prog_id)"),
            Some((cpu as u64, overwrite_id)),
            held,
        );

        // 3. User space: update(BPF_EXIST, empty value) frees B.
        k.map(kind)?
            .update(&key.to_ne_bytes(), &empty, MapFlags::EXIST)?;
        let s3 = read_stats(&mut checks)?;
        expect_deltas(
            &mut checks,
            &format!("{what}: user space overwrite"),
            &s2,
            &s3,
            &[(cpu, 0, 1)],
        );
        let held = peek(&k, kind, key, &mut checks, &what)?;
        checks.eq(format!("{what}: element kept, empty"), None, held);

        // 4. C, then the element goes (arrays: emptied by an update).
        k.run(Op::Stash, kind, key)?;
        if kind == Kind::Array {
            k.map(kind)?
                .update(&key.to_ne_bytes(), &empty, MapFlags::ANY)?;
        } else {
            k.map(kind)?.delete(&key.to_ne_bytes())?;
        }
        let s4 = read_stats(&mut checks)?;
        expect_deltas(
            &mut checks,
            &format!("{what}: stash C, remove"),
            &s3,
            &s4,
            &[(cpu, 1, 1)],
        );
        checks.eq(
            format!("{what}: in_use back to its start"),
            s0.in_use,
            s4.in_use,
        );
        expect_prog_delta(
            &mut checks,
            &format!("{what}: {STASH}"),
            fs0,
            k.counts(STASH)?,
            ProgGlobalMa {
                allocs: 2,
                frees: 0,
                alloc_fails: 0,
            },
        );
        expect_prog_delta(
            &mut checks,
            &format!("{what}: {OVERWRITE}"),
            fo0,
            k.counts(OVERWRITE)?,
            ProgGlobalMa {
                allocs: 1,
                frees: 0,
                alloc_fails: 0,
            },
        );
        ctx.diag(format!(
            "{what}: in_use {} -(stash A)-> {} -(BPF overwrite A->B)-> {} -(user overwrite)-> {} \
             -(stash C, remove)-> {}; total {}",
            s0.in_use,
            s1.in_use,
            s2.in_use,
            s3.in_use,
            s4.in_use,
            s4.total.since(&s0.total)
        ));
    }
    finish(&mut checks, k, &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
