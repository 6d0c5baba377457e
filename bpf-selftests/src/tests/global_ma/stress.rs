//! `global_ma_concurrent`: all vCPUs at once allocate, store, take from a
//! peer CPU, delete and overwrite test objects in one hash map for a few
//! seconds (progs/global_ma_stress.bpf.c). Afterwards every counter must
//! agree: the allocator's per-CPU lines, the program's fdinfo, the
//! program's own per-CPU counts, and a census of the objects still in the
//! map; closing the map must bring in_use back to its start.
//!
//! Failed allocations are possible by design: bpf_ma_testobj_new() takes
//! from the current CPU's free list and returns NULL when it is empty (the
//! irq_work refill has not run yet, or its GFP_NOWAIT allocations failed).
//! They are not required to be zero, but every one of them must be
//! counted the same by the program, its fdinfo and the allocator.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{Map, MapCore, MapFlags};

use super::{attach, finish, open, prog_counts, quiet_stats, read_stats, trigger, write_global};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::bpf::{self, Pod};
use crate::sys::cpu::{self, MAX_CPUS};
use crate::sys::fdinfo::ProgGlobalMa;
use crate::tests::pinned;

const OBJECT: &str = "global_ma_stress";
const PROGRAM: &str = "gma_stress";
/// How long every CPU hammers the map (full profile; see
/// Config::stress_duration).
const DURATION: Duration = Duration::from_millis(2500);

/// `struct gma_cpu_counts`, the value of the `cpu_counts` array (by CPU).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct CpuCounts {
    runs: u64,
    allocs: u64,
    nulls: u64,
    releases: u64,
    peer_takes: u64,
    old_found: u64,
    deletes: u64,
    overwrites: u64,
    nomem: u64,
    missing: u64,
    errs: u64,
    last_err: i64,
}

/// `struct gma_stress_state`, the object's `.bss`.
#[derive(Clone, Copy)]
#[repr(C)]
struct StressState {
    tgid: u32,
    census: u32,
    stray: u64,
    cpu_oob: u64,
    census_runs: u64,
    census_elems: u64,
    census_objs: u64,
    census_bad_magic: u64,
}
// SAFETY: repr(C), integers only, same layout as the C structs.
unsafe impl Pod for StressState {}
unsafe impl Pod for CpuCounts {}

/// `struct gma_thread_slot`, the value of the `threads` map.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct ThreadSlot {
    cpu: u32,
    peer: u32,
    seq: u64,
    wrong_cpu: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for ThreadSlot {}

/// What one pinned thread did: getpgid() calls from `first` to `last`.
struct Ran {
    cpu: usize,
    tid: u32,
    calls: u64,
    first: Instant,
    last: Instant,
}

/// One thread per CPU, pinned, registered in `threads` (with the next
/// online CPU as its peer), all calling getpgid() until `duration` has
/// passed. Returns what every thread did.
fn hammer(cpus: &[usize], threads: &Map<'_>, duration: Duration) -> Result<Vec<Ran>> {
    let slot = |cpu: usize| {
        let i = cpus.iter().position(|&c| c == cpu).unwrap_or(0);
        ThreadSlot {
            cpu: cpu as u32,
            peer: cpus[(i + 1) % cpus.len()] as u32,
            ..ThreadSlot::default()
        }
    };
    let ran = pinned::on_every_cpu(
        cpus,
        threads,
        slot,
        || Instant::now() + duration,
        |cpu, deadline| {
            let mut calls = 0u64;
            let first = Instant::now();
            let mut last = first;
            while last < deadline {
                trigger().with_context(|| format!("call {calls} on CPU {cpu}"))?;
                calls += 1;
                last = Instant::now();
            }
            Ok((calls, first, last))
        },
    )?;
    Ok(ran
        .into_iter()
        .map(|r| {
            let (calls, first, last) = r.out;
            Ran {
                cpu: r.cpu,
                tid: r.tid,
                calls,
                first,
                last,
            }
        })
        .collect())
}

pub fn global_ma_concurrent(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::missing_feature(ctx, OBJECT) {
        return Ok(skip);
    }
    let cpus = cpu::online_cpus()?;
    if let Some(&c) = cpus.iter().find(|&&c| c >= MAX_CPUS) {
        bail!("CPU {c} is beyond RIG_MAX_CPUS ({MAX_CPUS})");
    }
    let duration = ctx.cfg.stress_duration(DURATION);
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;

    let mut open = open(ctx, OBJECT)?;
    // SAFETY: StressState is plain integers; all-zero is its initial value.
    let mut state: StressState = unsafe { std::mem::zeroed() };
    state.tgid = std::process::id();
    bpf::set_global(&mut open, ".bss", &state)?;
    let obj = bpf::load(open, OBJECT)?;
    let links = attach(&obj, &[PROGRAM])?;
    let f0 = prog_counts(&obj, PROGRAM)?;

    let s0 = read_stats(&mut checks)?;
    let ran = hammer(&cpus, &bpf::map(&obj, "threads")?, duration)?;
    let s1 = read_stats(&mut checks)?;

    // The census, from the unregistered main thread.
    let mut st: StressState = bpf::read_global(&obj, ".bss")?;
    st.census = 1;
    write_global(&obj, ".bss", &st)?;
    trigger()?;
    let st: StressState = bpf::read_global(&obj, ".bss")?;
    let f1 = prog_counts(&obj, PROGRAM)?;
    let counts_map = bpf::map(&obj, "cpu_counts")?;
    let counts = |cpu: usize| -> Result<CpuCounts> {
        if cpu >= MAX_CPUS {
            return Ok(CpuCounts::default());
        }
        let bytes = counts_map
            .lookup(&(cpu as u32).to_ne_bytes(), MapFlags::ANY)?
            .with_context(|| format!("cpu_counts has no element {cpu}"))?;
        bpf::read_pod(&bytes)
    };

    // The program saw every call, on the right CPU.
    let threads = bpf::map(&obj, "threads")?;
    let mut calls_total = 0;
    for &Ran {
        cpu, tid, calls, ..
    } in &ran
    {
        calls_total += calls;
        if calls == 0 {
            checks.fail(format!("CPU {cpu}: the thread made no calls"));
        }
        let bytes = threads
            .lookup(&tid.to_ne_bytes(), MapFlags::ANY)?
            .with_context(|| format!("tid {tid} (CPU {cpu}) missing from threads"))?;
        let slot: ThreadSlot = bpf::read_pod(&bytes)?;
        checks.eq(
            format!("CPU {cpu}: program runs seen by the thread slot"),
            calls,
            slot.seq,
        );
        checks.eq(format!("CPU {cpu}: runs on another CPU"), 0, slot.wrong_cpu);
        checks.eq(
            format!("CPU {cpu}: runs counted on the CPU"),
            calls,
            counts(cpu)?.runs,
        );
    }
    // All threads hammered at the same time: one window contains a call
    // of every thread.
    let (Some(latest_first), Some(earliest_last)) = (
        ran.iter().map(|r| r.first).max(),
        ran.iter().map(|r| r.last).min(),
    ) else {
        bail!("no thread ran");
    };
    if latest_first >= earliest_last {
        checks.fail(format!(
            "the threads did not run at the same time (last start {:?} after first end)",
            latest_first - earliest_last
        ));
    } else {
        ctx.diag(format!(
            "all {} threads overlapped for {:.0} ms",
            ran.len(),
            (earliest_last - latest_first).as_secs_f64() * 1e3
        ));
    }
    checks.eq("runs from unregistered runner threads", 0, st.stray);
    checks.eq("runs on CPU ids >= RIG_MAX_CPUS", 0, st.cpu_oob);

    // Allocator, program counters and fdinfo agree, per CPU and in total.
    let mut sum = CpuCounts::default();
    let deltas = s1.cpu_deltas(&s0);
    for (&c, d) in &deltas {
        let p = counts(c)?;
        checks.eq(
            format!("cpu{c}: allocator alloc delta = program's allocs"),
            p.allocs as i64,
            d.alloc,
        );
        checks.eq(
            format!("cpu{c}: allocator alloc_fail delta = program's NULLs"),
            p.nulls as i64,
            d.alloc_fail,
        );
        if d.free < p.releases as i64 {
            checks.fail(format!(
                "cpu{c}: allocator free delta {} < the program's releases on it {}",
                d.free, p.releases
            ));
        }
        checks.eq(
            format!("cpu{c}: failed map operations (last error {})", p.last_err),
            0,
            p.errs,
        );
        if p.nomem == 0 {
            checks.eq(format!("cpu{c}: elements missing in pass 3"), 0, p.missing);
        }
        sum.allocs += p.allocs;
        sum.nulls += p.nulls;
        sum.releases += p.releases;
        sum.peer_takes += p.peer_takes;
        sum.old_found += p.old_found;
        sum.deletes += p.deletes;
        sum.overwrites += p.overwrites;
        sum.nomem += p.nomem;
        sum.missing += p.missing;
        if p.runs > 0 || d.alloc != 0 || d.free != 0 {
            ctx.diag(format!(
                "cpu{c}: runs {} allocs {} NULLs {} releases {} (peer takes {}, old found {}) \
                 deletes {} overwrites {} nomem {}; allocator alloc {:+} free {:+} \
                 alloc_fail {:+} refill {:+} refill_objs {:+}",
                p.runs,
                p.allocs,
                p.nulls,
                p.releases,
                p.peer_takes,
                p.old_found,
                p.deletes,
                p.overwrites,
                p.nomem,
                d.alloc,
                d.free,
                d.alloc_fail,
                d.refill,
                d.refill_objs
            ));
        }
    }
    let total = s1.total.since(&s0.total);
    match (f0, f1) {
        (Some(f0), Some(f1)) => {
            let got = ProgGlobalMa {
                allocs: f1.allocs - f0.allocs,
                frees: f1.frees - f0.frees,
                alloc_fails: f1.alloc_fails - f0.alloc_fails,
            };
            checks.eq(
                "fdinfo = the program's own counts (allocs, releases, NULLs)",
                ProgGlobalMa {
                    allocs: sum.allocs,
                    frees: sum.releases,
                    alloc_fails: sum.nulls,
                },
                got,
            );
        }
        _ => checks.fail(format!("{PROGRAM}: fdinfo has no global_ma counters")),
    }
    let dtor_frees = total.free - sum.releases as i64;
    if dtor_frees < 0 || dtor_frees > (sum.deletes + sum.overwrites) as i64 {
        checks.fail(format!(
            "frees by the map ({dtor_frees} = free delta {} - releases {}) outside 0..={} \
             (deletes + overwrites)",
            total.free,
            sum.releases,
            sum.deletes + sum.overwrites
        ));
    }

    // allocs - frees = in_use = objects still in the map.
    let in_use = s1.in_use - s0.in_use;
    checks.eq("census runs", 1, st.census_runs);
    checks.eq(
        "objects in the map without the magic",
        0,
        st.census_bad_magic,
    );
    checks.eq(
        "allocs - frees = in_use delta",
        total.alloc - total.free,
        in_use,
    );
    checks.eq(
        "in_use delta = objects in the map (census)",
        st.census_objs as i64,
        in_use,
    );
    let keys = bpf::map(&obj, "objs")?.keys().count() as u64;
    checks.eq(
        "elements: census = user space iteration",
        keys,
        st.census_elems,
    );
    ctx.diag(format!(
        "{} CPUs for {duration:?}: {calls_total} calls; allocator {total}; in_use {:+}; \
         program: allocs {} NULLs {} kfunc releases {} (peer takes {}) map frees {dtor_frees} \
         (deletes {} overwrites {}) nomem {}",
        ran.len(),
        in_use,
        sum.allocs,
        sum.nulls,
        sum.releases,
        sum.peer_takes,
        sum.deletes,
        sum.overwrites,
        sum.nomem
    ));
    ctx.diag(format!(
        "left in the map: {} elements, {} objects",
        st.census_elems, st.census_objs
    ));

    let end = finish(&mut checks, (links, obj), &start)?;
    checks.eq(
        "frees when the map went = objects it held",
        st.census_objs as i64,
        end.total.since(&s1.total).free,
    );
    checks.finish()?;
    Ok(Outcome::Pass)
}
