//! `hash_no_prealloc_all_cpus`: a `BPF_F_NO_PREALLOC` hash map updated and
//! deleted from an fentry program on every vCPU (progs/hash_no_prealloc.bpf.c).
//!
//! One thread per online CPU is pinned there, registered in the `threads` map
//! with that CPU, and calls getpgid() `TRIGGERS` times, all threads at once.
//! Per call the program inserts key (cpu, seq) and, on odd seq, deletes
//! (cpu, seq - 1), so exactly the odd-seq keys of every CPU must remain.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::{Map, MapCore, MapFlags, Object};

use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::bpf::{self, Pod};
use crate::sys::cpu::{self, MAX_CPUS};
use crate::tests::pinned;

const OBJECT: &str = "hash_no_prealloc";
const PROGRAM: &str = "on_getpgid";
/// getpgid() calls per CPU.
const TRIGGERS: u32 = 64;
/// Mirrors of the constants in progs/hash_no_prealloc.bpf.c.
const HASH_MAX_ENTRIES: u32 = 8192;
const HASH_VALUE_MAGIC: u64 = 0x5a5a_0000_a5a5;

/// `struct hash_state`, the object's `.bss`.
#[derive(Clone, Copy)]
#[repr(C)]
struct HashState {
    tgid: u32,
    _pad: u32,
    hits: [u64; MAX_CPUS],
    stray: u64,
    cpu_oob: u64,
    update_err: u64,
    delete_err: u64,
    last_update_err: i64,
    last_delete_err: i64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for HashState {}

/// `struct thread_slot`, the value of the `threads` map.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct ThreadSlot {
    expected_cpu: u32,
    seq: u32,
    hits: u64,
    wrong_cpu: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for ThreadSlot {}

/// `rig_key()` in progs/rig.h.
fn key(cpu: usize, seq: u32) -> u64 {
    ((cpu as u64) << 32) | u64::from(seq)
}

fn describe_key(k: u64) -> String {
    format!("(cpu {}, seq {})", k >> 32, k & 0xffff_ffff)
}

pub fn hash_no_prealloc_all_cpus(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = crate::objects::skip_if_not_built(ctx, OBJECT) {
        return Ok(skip);
    }
    let cpus = cpu::online_cpus()?;
    if let Some(&c) = cpus.iter().find(|&&c| c >= MAX_CPUS) {
        bail!("CPU {c} is beyond RIG_MAX_CPUS ({MAX_CPUS})");
    }
    let expected_elems = cpus.len() * (TRIGGERS as usize / 2);
    if cpus.len() * TRIGGERS as usize > HASH_MAX_ENTRIES as usize {
        bail!(
            "{} CPUs x {TRIGGERS} triggers would overflow the map ({HASH_MAX_ENTRIES})",
            cpus.len()
        );
    }

    let mut open = bpf::open_object(&ctx.cfg.bpf_dir, OBJECT)?;
    // SAFETY: HashState is plain integers; all-zero is its initial value.
    let mut state: HashState = unsafe { std::mem::zeroed() };
    state.tgid = std::process::id();
    bpf::set_global(&mut open, ".bss", &state)?;
    let obj = bpf::load(open, OBJECT)?;

    let stress = bpf::map(&obj, "stress")?;
    let flags = stress.info().context("stress map info")?.info.map_flags;
    if flags & libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC == 0 {
        bail!("stress map flags {flags:#x} lack BPF_F_NO_PREALLOC");
    }

    let prog = obj
        .progs_mut()
        .find(|p| p.name() == PROGRAM)
        .with_context(|| format!("no program {PROGRAM} in {OBJECT}.bpf.o"))?;
    let link = prog
        .attach()
        .with_context(|| format!("attaching {}", prog.section().to_string_lossy()))?;

    let threads = bpf::map(&obj, "threads")?;
    let pinned = trigger_on_all(&cpus, &threads)?;
    drop(link);

    ctx.diag(format!(
        "{} CPUs x {TRIGGERS} triggers, expecting {expected_elems} elements",
        cpus.len()
    ));
    let mut checks = Checks::new();
    check_counters(&mut checks, &obj, &cpus)?;
    check_threads(&mut checks, &threads, &pinned)?;
    check_elements(&mut checks, &stress, &cpus, expected_elems)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// Runs one pinned thread per CPU, all triggering at once. Returns
/// (cpu, tid) for every thread.
fn trigger_on_all(cpus: &[usize], threads: &Map<'_>) -> Result<Vec<(usize, u32)>> {
    let slot = |cpu: usize| ThreadSlot {
        expected_cpu: cpu as u32,
        ..ThreadSlot::default()
    };
    let ran = pinned::on_every_cpu(
        cpus,
        threads,
        slot,
        || (),
        |cpu, ()| {
            for i in 0..TRIGGERS {
                // SAFETY: getpgid(0) only reads the caller's process group.
                let r = unsafe { libc::syscall(libc::SYS_getpgid, 0) };
                if r < 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("getpgid call {i} on CPU {cpu}"));
                }
            }
            Ok(())
        },
    )?;
    Ok(ran.into_iter().map(|r| (r.cpu, r.tid)).collect())
}

/// The `.bss` counters: per-CPU hits exact, no errors or strays.
fn check_counters(checks: &mut Checks, obj: &Object, cpus: &[usize]) -> Result<()> {
    let st: HashState = bpf::read_global(obj, ".bss")?;
    for c in 0..MAX_CPUS {
        let expected = if cpus.contains(&c) {
            u64::from(TRIGGERS)
        } else {
            0
        };
        checks.eq(format!("program runs on CPU {c}"), expected, st.hits[c]);
    }
    checks.eq("runs from unregistered runner threads", 0, st.stray);
    checks.eq("runs on CPU ids >= RIG_MAX_CPUS", 0, st.cpu_oob);
    checks.eq(
        format!("failed updates (last error {})", st.last_update_err),
        0,
        st.update_err,
    );
    checks.eq(
        format!("failed deletes (last error {})", st.last_delete_err),
        0,
        st.delete_err,
    );
    Ok(())
}

/// Every thread's slot: all triggers seen, all on the pinned CPU.
fn check_threads(checks: &mut Checks, threads: &Map<'_>, pinned: &[(usize, u32)]) -> Result<()> {
    for &(cpu, tid) in pinned {
        let Some(bytes) = threads
            .lookup(&tid.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("looking up tid {tid}"))?
        else {
            checks.fail(format!(
                "thread of CPU {cpu} (tid {tid}) missing from threads map"
            ));
            continue;
        };
        let slot: ThreadSlot = bpf::read_pod(&bytes)?;
        let who = format!("thread pinned to CPU {cpu} (tid {tid})");
        checks.eq(format!("{who}: runs seen"), u64::from(TRIGGERS), slot.hits);
        checks.eq(format!("{who}: sequence numbers used"), TRIGGERS, slot.seq);
        checks.eq(format!("{who}: runs on another CPU"), 0, slot.wrong_cpu);
    }
    Ok(())
}

/// The hash map holds exactly the odd-seq keys of every CPU, with the right
/// values.
fn check_elements(
    checks: &mut Checks,
    stress: &Map<'_>,
    cpus: &[usize],
    expected_elems: usize,
) -> Result<()> {
    let expected: BTreeSet<u64> = cpus
        .iter()
        .flat_map(|&c| (1..TRIGGERS).step_by(2).map(move |s| key(c, s)))
        .collect();
    let mut got = BTreeSet::new();
    for k in stress.keys() {
        let k: [u8; 8] = k
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("stress map key of {} bytes", k.len()))?;
        got.insert(u64::from_ne_bytes(k));
    }
    checks.eq("elements in stress map", expected_elems, got.len());

    const SHOW: usize = 8;
    let missing: Vec<String> = expected
        .difference(&got)
        .map(|&k| describe_key(k))
        .collect();
    if !missing.is_empty() {
        checks.fail(format!(
            "{} expected key(s) missing, first: {}",
            missing.len(),
            missing[..missing.len().min(SHOW)].join(" ")
        ));
    }
    let extra: Vec<String> = got
        .difference(&expected)
        .map(|&k| describe_key(k))
        .collect();
    if !extra.is_empty() {
        checks.fail(format!(
            "{} unexpected key(s), first: {}",
            extra.len(),
            extra[..extra.len().min(SHOW)].join(" ")
        ));
    }

    let mut bad_values = 0;
    for &k in got.intersection(&expected) {
        let want = k ^ HASH_VALUE_MAGIC;
        let got = match stress
            .lookup(&k.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("looking up key {}", describe_key(k)))?
        {
            None => "no element".to_string(),
            Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
                Ok(b) if u64::from_ne_bytes(b) == want => continue,
                Ok(b) => format!("{:#x}", u64::from_ne_bytes(b)),
                Err(_) => format!("a value of {} bytes", v.len()),
            },
        };
        bad_values += 1;
        if bad_values <= SHOW {
            checks.fail(format!(
                "value of key {}: expected {want:#x}, got {got}",
                describe_key(k)
            ));
        }
    }
    if bad_values > SHOW {
        checks.fail(format!("{bad_values} wrong values in total"));
    }
    Ok(())
}
