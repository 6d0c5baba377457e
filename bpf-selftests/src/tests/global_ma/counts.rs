//! `global_ma_prog_counts`: every program sees its own use of the global
//! allocator in its fdinfo (progs/global_ma_counts.bpf.c).
//!
//! From one pinned CPU: gma_alloc3 (fentry, 3 allocs + 3 releases per run)
//! runs twice, gma_alloc7 (fentry, 7 allocs kept in an array) runs, the
//! syscall program gma_sys_take7 takes those 7 out and releases them,
//! gma_sys_alloc5 (syscall, 5 + 5) runs, gma_alloc7 runs again and user
//! space empties the array, which frees the last 7 through the map's
//! destructor, on nobody's account. gma_plain calls no kfunc and has no
//! counters.

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, Object, ProgramInput};

use super::{
    attach, describe_cpu_deltas, expect_deltas, finish, open, prog_counts, prog_id, quiet_stats,
    read_stats, trigger, write_global,
};
use crate::bench::kernel_bench;
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::bpf::{self, Pod};
use crate::sys::cpu;
use crate::sys::fdinfo::ProgGlobalMa;
use crate::sys::stats::{self, Stats};
use rig_contract::lacks::lacks;

const OBJECT: &str = "global_ma_counts";
/// GMA_N3, GMA_N5, GMA_N7 in the BPF program.
const N3: u64 = 3;
const N5: u64 = 5;
const N7: u64 = 7;

const ALLOC3: &str = "gma_alloc3";
const ALLOC7: &str = "gma_alloc7";
const SYS_TAKE7: &str = "gma_sys_take7";
const SYS_ALLOC5: &str = "gma_sys_alloc5";
const PLAIN: &str = "gma_plain";

/// GMA_OP_* in the BPF program.
const OP_NONE: u32 = 0;
const OP_ALLOC3: u32 = 1;
const OP_ALLOC7: u32 = 2;
const OP_PLAIN: u32 = 3;

/// `struct gma_counts_ctl`, the object's `.bss`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct CountsCtl {
    tgid: u32,
    op: u32,
    alloc7_id: u64,
    runs: [u64; 4],
    nulls: u64,
    old_found: u64,
    taken: u64,
    foreign: u64,
    bad_magic: u64,
    no_elem: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for CountsCtl {}

/// `struct gma_val` as user space writes it (the kptr part is ignored).
const EMPTY_VAL: [u8; 16] = [0; 16];

fn set_op(obj: &Object, op: u32) -> Result<()> {
    let mut ctl: CountsCtl = bpf::read_global(obj, ".bss")?;
    ctl.op = op;
    write_global(obj, ".bss", &ctl)
}

/// Runs fentry program(s) for `op` `times` times.
fn fire(obj: &Object, op: u32, times: u32) -> Result<()> {
    set_op(obj, op)?;
    let r = (0..times).try_for_each(|_| trigger());
    set_op(obj, OP_NONE)?;
    r
}

/// Runs a syscall program once with BPF_PROG_TEST_RUN.
fn run_syscall(obj: &Object, name: &str) -> Result<()> {
    let p = obj
        .progs_mut()
        .find(|p| p.name() == name)
        .with_context(|| format!("no program {name}"))?;
    let out = p
        .test_run(ProgramInput::default())
        .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
    if out.return_value != 0 {
        bail!("{name} returned {}", out.return_value);
    }
    Ok(())
}

fn pg(allocs: u64, frees: u64) -> Option<ProgGlobalMa> {
    Some(ProgGlobalMa {
        allocs,
        frees,
        alloc_fails: 0,
    })
}

pub fn global_ma_prog_counts(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let cpus = cpu::online_cpus()?;
    let cpu = *cpus.last().context("no online CPU")?;
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;

    let obj = bpf::load(open(ctx, OBJECT)?, OBJECT)?;
    let alloc7_id = prog_id(&obj, ALLOC7)?;
    write_global(
        &obj,
        ".bss",
        &CountsCtl {
            tgid: std::process::id(),
            alloc7_id: u64::from(alloc7_id),
            ..CountsCtl::default()
        },
    )?;
    let links = attach(&obj, &[ALLOC3, ALLOC7, PLAIN])?;
    let progs = [ALLOC3, ALLOC7, SYS_TAKE7, SYS_ALLOC5];
    for p in progs {
        checks.eq(
            format!("{p}: fdinfo right after load"),
            pg(0, 0),
            prog_counts(&obj, p)?,
        );
    }

    let pin = affinity::pin(cpu)?;
    let s0 = read_stats(&mut checks)?;
    fire(&obj, OP_ALLOC3, 2)?;
    let s1 = read_stats(&mut checks)?;
    expect_deltas(
        &mut checks,
        "gma_alloc3 x2",
        &s0,
        &s1,
        &[(cpu, 2 * N3 as i64, 2 * N3 as i64)],
    );
    fire(&obj, OP_ALLOC7, 1)?;
    let s2 = read_stats(&mut checks)?;
    expect_deltas(&mut checks, "gma_alloc7", &s1, &s2, &[(cpu, N7 as i64, 0)]);
    run_syscall(&obj, SYS_TAKE7)?;
    let s3 = read_stats(&mut checks)?;
    expect_deltas(
        &mut checks,
        "gma_sys_take7",
        &s2,
        &s3,
        &[(cpu, 0, N7 as i64)],
    );
    run_syscall(&obj, SYS_ALLOC5)?;
    let s4 = read_stats(&mut checks)?;
    expect_deltas(
        &mut checks,
        "gma_sys_alloc5",
        &s3,
        &s4,
        &[(cpu, N5 as i64, N5 as i64)],
    );
    fire(&obj, OP_ALLOC7, 1)?;
    let s5 = read_stats(&mut checks)?;
    expect_deltas(
        &mut checks,
        "gma_alloc7 again",
        &s4,
        &s5,
        &[(cpu, N7 as i64, 0)],
    );
    let stash = bpf::map(&obj, "stash")?;
    for i in 0..N7 as u32 {
        stash.update(&i.to_ne_bytes(), &EMPTY_VAL, MapFlags::EXIST)?;
    }
    let s6 = read_stats(&mut checks)?;
    expect_deltas(
        &mut checks,
        "user space empties the array",
        &s5,
        &s6,
        &[(cpu, 0, N7 as i64)],
    );
    fire(&obj, OP_PLAIN, 1)?;
    drop(pin);

    let want = [
        (ALLOC3, pg(2 * N3, 2 * N3)),
        (ALLOC7, pg(2 * N7, 0)),
        (SYS_TAKE7, pg(0, N7)),
        (SYS_ALLOC5, pg(N5, N5)),
        (PLAIN, None),
    ];
    let mut prog_allocs = 0;
    let mut prog_frees = 0;
    for (p, w) in want {
        let got = prog_counts(&obj, p)?;
        checks.eq(format!("{p}: fdinfo global_ma counters"), w, got);
        if let Some(g) = got {
            prog_allocs += g.allocs;
            prog_frees += g.frees;
        }
        ctx.diag(format!(
            "{p}: {}",
            got.map_or("no global_ma lines".to_string(), |g| g.to_string())
        ));
    }
    let d = s6.total.since(&s0.total);
    checks.eq(
        "allocs: global delta = sum over the programs' fdinfo",
        d.alloc,
        prog_allocs as i64,
    );
    checks.eq(
        "frees: global delta - map destructor frees = sum over the programs' fdinfo",
        d.free - N7 as i64,
        prog_frees as i64,
    );
    ctx.diag(format!(
        "global: {d}; in_use {} -> {}; {}",
        s0.in_use,
        s6.in_use,
        describe_cpu_deltas(&s0, &s6)
    ));

    let ctl: CountsCtl = bpf::read_global(&obj, ".bss")?;
    checks.eq("syscall program runs", 2, ctl.runs[0]);
    checks.eq("gma_alloc3 runs", 2, ctl.runs[OP_ALLOC3 as usize]);
    checks.eq("gma_alloc7 runs", 2, ctl.runs[OP_ALLOC7 as usize]);
    checks.eq("gma_plain runs", 1, ctl.runs[OP_PLAIN as usize]);
    checks.eq("NULL allocations", 0, ctl.nulls);
    checks.eq("gma_alloc7 found old objects", 0, ctl.old_found);
    checks.eq("objects gma_sys_take7 took", N7, ctl.taken);
    checks.eq("... not allocated by gma_alloc7 (prog_id)", 0, ctl.foreign);
    checks.eq("objects without the magic", 0, ctl.bad_magic);
    checks.eq("array lookups that failed", 0, ctl.no_elem);

    finish(&mut checks, (links, obj), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// `global_ma_zero_size`: an allocation of 0 bytes returns ZERO_SIZE_PTR,
/// like kmalloc(0), and freeing it is a no-op (patch 0003 reads a header
/// that ZERO_SIZE_PTR does not have). The kernel's bench does 1000 such
/// pairs on one CPU; the allocator counts none of them.
pub fn global_ma_zero_size(_ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_bench("to allocate 0 bytes with") {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let cpu = cpu::online_cpus()?[0];
    let m = {
        let _pin = affinity::pin(cpu)?;
        kernel_bench::run(&kernel_bench::Request {
            mode: kernel_bench::Mode::Global,
            size: 0,
            loops: 1000,
            batch: 0,
        })
        .context("1000 allocations of 0 bytes and their frees")?
    };
    checks.eq("failed allocations of 0 bytes", 0, m.fails);
    let end = read_stats(&mut checks)?;
    expect_deltas(&mut checks, "0-byte pairs", &start, &end, &[]);
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// Pairs each half of global_ma_counting_off makes.
const COUNTING_PAIRS: u64 = 1000;

/// The fast path counts allocs and frees only while BPF stats are enabled
/// (patch 0004): with kernel.bpf_stats_enabled 0, 1000 alloc+free pairs
/// on one CPU leave its alloc and free where they were and the total line
/// says `counting 0`; turned back on, the same 1000 pairs count exactly.
pub fn global_ma_counting_off(_ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_bench("to allocate with") {
        return Ok(skip);
    }
    if Stats::read()?.counting.is_none() {
        return Ok(Outcome::Skip(lacks(
            &format!("no `counting` field in {}", stats::STATS_PATH),
            "counting gated by BPF stats (patch 0004)",
        )));
    }
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let cpu = cpu::online_cpus()?[0];
    let _pin = affinity::pin(cpu)?;
    let pairs = |checks: &mut Checks, what: &str| -> Result<()> {
        let m = kernel_bench::run(&kernel_bench::Request {
            mode: kernel_bench::Mode::Global,
            size: 32,
            loops: COUNTING_PAIRS,
            batch: 0,
        })
        .with_context(|| format!("{COUNTING_PAIRS} pairs of 32 bytes, {what}"))?;
        checks.eq(format!("failed allocations, {what}"), 0, m.fails);
        Ok(())
    };

    stats::set_counting(false)?;
    let off = (|| -> Result<(Stats, Stats)> {
        let before = Stats::read()?;
        pairs(&mut checks, "BPF stats off")?;
        Ok((before, Stats::read()?))
    })();
    // Back on whatever happened: the other tests need the counts.
    stats::set_counting(true)?;
    let (before, after) = off?;
    checks.eq(
        "the total line's counting with kernel.bpf_stats_enabled 0",
        Some(false),
        after.counting,
    );
    let d = after.cpu(cpu).since(&before.cpu(cpu));
    checks.eq(
        format!("cpu{cpu} alloc, free deltas of {COUNTING_PAIRS} pairs with BPF stats off"),
        (0, 0),
        (d.alloc, d.free),
    );

    let before = read_stats(&mut checks)?;
    pairs(&mut checks, "BPF stats on")?;
    let after = read_stats(&mut checks)?;
    let n = i64::try_from(COUNTING_PAIRS)?;
    expect_deltas(
        &mut checks,
        "pairs with BPF stats on",
        &before,
        &after,
        &[(cpu, n, n)],
    );
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

/// Must not load: see progs/global_ma_bad_prog_arg.bpf.c.
const BAD_PROG_ARG: &str = "global_ma_bad_prog_arg";
/// The kfunc it calls, from patch 0006.
const TESTOBJ_NEW: &str = "bpf_ma_testobj_new";
/// The verifier's words for a pointer in a __prog argument (0005).
const PROG_ARG_REFUSED: &str = "arg#0 is set by the kernel, pass NULL";

/// A kfunc's __prog argument is the verifier's to fill in (0005): a
/// program that passes a pointer there is refused, so a referenced
/// pointer can never be dropped by looking consumed.
pub fn global_ma_prog_arg_refused(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_feature(ctx, BAD_PROG_ARG) {
        return Ok(skip);
    }
    // The object compiles against any vmlinux.h (it only names the struct);
    // without the kfunc its load fails for that reason instead.
    if !crate::sys::btf_tags::kernel_has_func(TESTOBJ_NEW)? {
        return Ok(Outcome::Skip(lacks(
            &format!("no func {TESTOBJ_NEW} in /sys/kernel/btf/vmlinux"),
            &format!("kfunc {TESTOBJ_NEW} (patch 0006)"),
        )));
    }
    let mut checks = Checks::new();
    let open = bpf::open_object(&ctx.cfg.bpf_dir, BAD_PROG_ARG)?;
    let (loaded, log) = bpf::capture_libbpf_log(|| open.load());
    checks.eq(
        "a pointer passed as aux__prog: the object loads",
        false,
        loaded.is_ok(),
    );
    checks.eq(
        format!("the verifier log says {PROG_ARG_REFUSED:?}"),
        true,
        log.contains(PROG_ARG_REFUSED),
    );
    if let Some(line) = log.lines().find(|l| l.contains("is set by the kernel")) {
        ctx.diag(format!("refused: {}", line.trim()));
    }
    checks.finish()?;
    Ok(Outcome::Pass)
}
