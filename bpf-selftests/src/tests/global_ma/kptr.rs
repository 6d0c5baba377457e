//! Test objects held by maps as referenced kptrs
//! (progs/global_ma_kptr.bpf.c):
//!
//! - `global_ma_hash_delete`: stash → delete (user space delete, user
//!   space lookup-and-delete, BPF delete) frees the object, on the deleting
//!   CPU, unattributed to any program;
//! - `global_ma_hash_overwrite`: stash → overwrite (BPF update + new object,
//!   then user space update) frees exactly the old object;
//! - `global_ma_map_free`: K objects in a map all come back after the map's
//!   last reference is gone;
//! - `global_ma_cross_cpu`: allocated on CPU A, freed on CPU B (by the
//!   release kfunc, and by a map delete), for every ordered pair.

use std::fmt;

use anyhow::{bail, Result};
use libbpf_rs::{Link, Map, MapCore, MapFlags, Object};

use super::{
    attach, describe_cpu_deltas, drop_and_settle, expect_deltas, expect_prog_delta, finish, open,
    prog_counts, prog_id, quiet_stats, read_stats, trigger, write_global, MAGIC, POLL_INTERVAL,
    SETTLE_TIMEOUT,
};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf::{self, Pod};
use crate::sys::cpu;
use crate::sys::fdinfo::ProgGlobalMa;
use crate::sys::outstanding::{self, Outstanding};

const OBJECT: &str = "global_ma_kptr";
/// Mirrors GMA_MAX_ENTRIES in the BPF program.
const MAX_ENTRIES: u32 = 256;
/// Objects put into each map by `global_ma_map_free`.
const FILL: u32 = 64;

const STASH: &str = "gma_stash";
const OVERWRITE: &str = "gma_overwrite";
const DELETE: &str = "gma_delete";
const TAKE: &str = "gma_take";
const PEEK: &str = "gma_peek";
const PROGS: [&str; 5] = [STASH, OVERWRITE, DELETE, TAKE, PEEK];

/// GMA_OP_* in the BPF program.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
enum Op {
    None = 0,
    Stash = 1,
    Overwrite = 2,
    Delete = 3,
    Take = 4,
    Peek = 5,
}

/// GMA_MAP_* in the BPF program, and the map's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Kind {
    Hash = 0,
    HashPrealloc = 1,
    LruHash = 2,
    Array = 3,
}

impl Kind {
    fn map_name(self) -> &'static str {
        match self {
            Kind::Hash => "hash",
            Kind::HashPrealloc => "hash_prealloc",
            Kind::LruHash => "lru_hash",
            Kind::Array => "array",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Hash => "hash (no prealloc)",
            Kind::HashPrealloc => "hash (prealloc)",
            Kind::LruHash => "LRU hash",
            Kind::Array => "array",
        })
    }
}

/// `struct gma_ctl`, the object's `.bss`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Ctl {
    tgid: u32,
    op: u32,
    map: u32,
    key: u32,
    runs: u32,
    err: i32,
    cpu: u32,
    found: u32,
    allocs: u64,
    nulls: u64,
    releases: u64,
    old_found: u64,
    obj_magic: u64,
    obj_cpu: u64,
    obj_prog_id: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for Ctl {}

/// `struct gma_val`, as user space sees it (the kptr reads as 0).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Val {
    obj: u64,
    tag: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for Val {}

fn describe_err(err: i32) -> String {
    match err {
        1 => "no element after lookup/insert".into(),
        2 => "bpf_ma_testobj_new() returned NULL".into(),
        3 => "unknown map".into(),
        e if e < 0 => format!("{} ({e})", std::io::Error::from_raw_os_error(-e)),
        e => format!("error {e}"),
    }
}

/// The loaded object with all its programs attached (the links go first
/// when it is dropped).
struct KptrObj {
    _links: Vec<Link>,
    obj: Object,
    tgid: u32,
}

impl KptrObj {
    fn load(ctx: &Ctx<'_>) -> Result<KptrObj> {
        let open = open(ctx, OBJECT)?;
        let obj = bpf::load(open, OBJECT)?;
        let links = attach(&obj, &PROGS)?;
        Ok(KptrObj {
            _links: links,
            obj,
            tgid: std::process::id(),
        })
    }

    /// Runs `op` on `key` of `kind` once, from the calling thread's CPU.
    fn run(&self, op: Op, kind: Kind, key: u32) -> Result<Ctl> {
        let ctl = Ctl {
            tgid: self.tgid,
            op: op as u32,
            map: kind as u32,
            key,
            ..Ctl::default()
        };
        write_global(&self.obj, ".bss", &ctl)?;
        let fired = trigger();
        let got: Ctl = bpf::read_global(&self.obj, ".bss")?;
        // Nothing runs on later getpgid() calls.
        write_global(
            &self.obj,
            ".bss",
            &Ctl {
                op: Op::None as u32,
                ..got
            },
        )?;
        fired?;
        if got.runs != 1 {
            bail!(
                "{op:?} on {kind} key {key}: {} program runs, expected 1",
                got.runs
            );
        }
        if got.err != 0 {
            bail!(
                "{op:?} on {kind} key {key}: {} (ctl {got:?})",
                describe_err(got.err)
            );
        }
        Ok(got)
    }

    fn map(&self, kind: Kind) -> Result<Map<'_>> {
        bpf::map(&self.obj, kind.map_name())
    }

    fn id(&self, prog: &str) -> Result<u64> {
        prog_id(&self.obj, prog).map(u64::from)
    }

    fn counts(&self, prog: &str) -> Result<Option<ProgGlobalMa>> {
        prog_counts(&self.obj, prog)
    }

    fn has_key(&self, kind: Kind, key: u32) -> Result<bool> {
        Ok(self
            .map(kind)?
            .lookup(&key.to_ne_bytes(), MapFlags::ANY)?
            .is_some())
    }
}

/// A freshly allocated object as the allocating program saw it.
fn check_new_obj(checks: &mut Checks, what: &str, c: &Ctl, cpu: usize, prog_id: u64) {
    checks.eq(format!("{what}: objects allocated"), 1, c.allocs);
    checks.eq(format!("{what}: NULL allocations"), 0, c.nulls);
    checks.eq(format!("{what}: old objects found"), 0, c.old_found);
    checks.eq(format!("{what}: object magic"), MAGIC, c.obj_magic);
    checks.eq(format!("{what}: object's cpu"), cpu as u64, c.obj_cpu);
    checks.eq(format!("{what}: object's prog_id"), prog_id, c.obj_prog_id);
    checks.eq(format!("{what}: program's CPU"), cpu as u32, c.cpu);
}

/// What `gma_peek` finds at `key`: Some((cpu, prog_id)) or None.
fn peek(
    k: &KptrObj,
    kind: Kind,
    key: u32,
    checks: &mut Checks,
    what: &str,
) -> Result<Option<(u64, u64)>> {
    let p = k.run(Op::Peek, kind, key)?;
    if p.found == 0 {
        return Ok(None);
    }
    checks.eq(
        format!("{what}: magic of the object in the map"),
        MAGIC,
        p.obj_magic,
    );
    Ok(Some((p.obj_cpu, p.obj_prog_id)))
}

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
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
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
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
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

/// Fill a map with FILL objects, then drop every reference to it (links,
/// programs, map fds): all FILL objects come back, from the map free
/// workqueue.
pub fn global_ma_map_free(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
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
        let k = KptrObj::load(ctx)?;
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

/// Allocated on CPU A, freed on CPU B, for every ordered pair (A, B):
/// taken out with bpf_kptr_xchg() and released with the kfunc by a program
/// on B, and deleted by user space on B (the map's destructor). The alloc
/// shows on A's line, the free on B's.
pub fn global_ma_cross_cpu(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
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

/// Objects the owner-gone test leaves in the map when its programs go.
const ORPHANS: u32 = 3;

/// Polls `outstanding` until `done` holds (or SETTLE_TIMEOUT); returns the
/// last listing.
fn poll_outstanding(done: impl Fn(&[Outstanding]) -> bool) -> Result<Vec<Outstanding>> {
    let start = std::time::Instant::now();
    loop {
        let listed = outstanding::read()?.unwrap_or_default();
        if done(&listed) || start.elapsed() > SETTLE_TIMEOUT {
            return Ok(listed);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The debug mode's owners (0016): a program that goes away while a map
/// still holds objects it allocated is listed in `outstanding` with its
/// name, id and the number of those objects, and drops off the list once
/// the map has freed them.
pub fn global_ma_debug_owner_gone(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let Some(before) = outstanding::read()? else {
        return Ok(Outcome::Skip(format!(
            "{} missing: no global allocator debug mode \
             (CONFIG_BPF_GLOBAL_MA_DEBUG)",
            outstanding::PATH
        )));
    };
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let cpu = cpu::online_cpus()?[0];
    let _pin = affinity::pin(cpu)?;
    let k = KptrObj::load(ctx)?;
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
