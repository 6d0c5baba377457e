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

mod cross_cpu;
mod hash;
mod map_free;

use std::fmt;

use anyhow::{bail, Result};
use libbpf_rs::{Link, Map, MapCore, MapFlags, Object};

use super::{attach, open, prog_counts, prog_id, trigger, write_global, MAGIC};
use crate::check::Checks;
use crate::runner::Ctx;
use crate::sys::bpf::{self, Pod};
use crate::sys::fdinfo::ProgGlobalMa;

pub use cross_cpu::global_ma_cross_cpu;
pub use hash::{global_ma_hash_delete, global_ma_hash_overwrite};
pub use map_free::{global_ma_debug_owner_gone, global_ma_map_free};

const OBJECT: &str = "global_ma_kptr";

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
        Self::load_attaching(ctx, &PROGS)
    }

    /// Loads every program but attaches only `progs` (each attach and
    /// detach rewrites getpgid()'s trampoline, a few ms under TCG); the
    /// others still hold the maps.
    fn load_attaching(ctx: &Ctx<'_>, progs: &[&str]) -> Result<KptrObj> {
        let open = open(ctx, OBJECT)?;
        let obj = bpf::load(open, OBJECT)?;
        let links = attach(&obj, progs)?;
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
