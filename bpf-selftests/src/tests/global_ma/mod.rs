//! Selftests of the global BPF memory allocator (patches/global-ma): its
//! debugfs counters, per-program fdinfo counters, the test object kfuncs,
//! and maps that free the objects they hold.
//!
//! Every test compares exact counter deltas. Nothing else in the kernel uses
//! the global allocator and the runner runs one test at a time, so a delta
//! is exactly what the test did. Where the kernel defers work (map free runs
//! from a workqueue after the last reference is gone) the tests poll the
//! counters with a bounded timeout instead of sleeping.

mod counts;
mod debug;
mod interface;
mod kptr;
mod nmi;
mod prefill;
mod size_classes;
mod stress;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags, Object, OpenObject, Program};

pub use counts::{
    global_ma_counting_off, global_ma_prog_arg_refused, global_ma_prog_counts, global_ma_zero_size,
};
pub use debug::global_ma_debug_bugs;
pub use interface::{
    global_ma_prefill_token_probe, global_ma_reserve_in_programs, global_ma_reserve_no_elements,
};
pub use kptr::{
    global_ma_cross_cpu, global_ma_debug_owner_gone, global_ma_hash_delete,
    global_ma_hash_overwrite, global_ma_map_free,
};
pub use nmi::{
    global_ma_nmi_busy_free, global_ma_nmi_external, global_ma_nmi_hash_buckets,
    global_ma_nmi_hash_kptr, global_ma_nmi_over_reserve, global_ma_nmi_stress,
    global_ma_nmi_within_reserve,
};
pub use prefill::{
    global_ma_prefill_bad_input, global_ma_prefill_concurrent, global_ma_prefill_enomem,
    global_ma_prefill_prog_lifetime, global_ma_prefill_release, global_ma_prefill_sequence,
    global_ma_prefill_stacking,
};
pub use size_classes::global_ma_size_classes;
pub use stress::global_ma_concurrent;

use crate::check::Checks;
use crate::ktap;
use crate::poll::poll;
use crate::runner::{Ctx, Outcome};
use crate::sys::bpf::{self, Pod};
use crate::sys::btf_tags;
use crate::sys::fdinfo::{self, ProgGlobalMa};
use crate::sys::outstanding::{self, Outstanding};
use crate::sys::stats::{self, Stats};
use rig_contract::lacks::lacks;

/// `GMA_MAGIC` in progs/global_ma.h: struct bpf_ma_testobj's magic.
pub const MAGIC: u64 = 0x7473_6574_6170_6662;
/// Longest wait for deferred frees (map free runs from a workqueue).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling period of the stats file while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// A kernel without the allocator bench (CONFIG_BPF_GLOBAL_MA_TEST_NMI)
/// skips the tests that allocate through it; `what_for` says why they do.
pub fn missing_bench(what_for: &str) -> Option<Outcome> {
    let path = crate::bench::kernel_bench::BENCH_PATH;
    (!std::path::Path::new(path).exists()).then(|| {
        Outcome::Skip(lacks(
            &format!("{path} missing"),
            &format!("CONFIG_BPF_GLOBAL_MA_TEST_NMI (the allocator bench, {what_for})"),
        ))
    })
}

/// A kernel without the global allocator (a `--tree` without the series,
/// or a patch of the series that predates it, checked by check-series or
/// bisect) skips these tests. The object first: the host could not build
/// it against this kernel's BTF when that lacks the series' types, and its
/// reason names the type. A run on a tree with the series fails on any
/// skip.
pub fn missing_feature(ctx: &Ctx<'_>, object: &str) -> Option<Outcome> {
    if let Some(skip) = crate::objects::skip_if_not_built(ctx, object) {
        return Some(skip);
    }
    if !std::path::Path::new(stats::STATS_PATH).exists() {
        return Some(Outcome::Skip(lacks(
            &format!("{} missing", stats::STATS_PATH),
            "the global BPF allocator",
        )));
    }
    None
}

/// Opens `<name>.bpf.o` after checking its `__kptr_ref` fields survived
/// compilation.
pub fn open(ctx: &Ctx<'_>, name: &str) -> Result<OpenObject> {
    btf_tags::require_kptr_ref(&bpf::object_path(&ctx.cfg.bpf_dir, name))?;
    bpf::open_object(&ctx.cfg.bpf_dir, name)
}

/// Calls getpgid() once, which runs the fentry/__x64_sys_getpgid programs.
pub fn trigger() -> Result<()> {
    // SAFETY: getpgid(0) only reads the caller's process group.
    let r = unsafe { libc::syscall(libc::SYS_getpgid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("getpgid");
    }
    Ok(())
}

/// Overwrites a loaded object's global-data map (`.bss`) with `value`.
pub fn write_global<T: Pod>(obj: &Object, section: &str, value: &T) -> Result<()> {
    bpf::map(obj, section)?
        .update(&0u32.to_ne_bytes(), &bpf::pod_bytes(value), MapFlags::ANY)
        .with_context(|| format!("writing {section}"))
}

/// A loaded program by name.
pub fn prog<'o>(obj: &'o Object, name: &str) -> Result<Program<'o>> {
    obj.progs()
        .find(|p| p.name() == name)
        .with_context(|| format!("no program {name} in the object"))
}

/// The kernel's id of a loaded program.
pub fn prog_id(obj: &Object, name: &str) -> Result<u32> {
    let p = prog(obj, name)?;
    Program::id_from_fd(p.as_fd()).with_context(|| format!("id of program {name}"))
}

/// The global allocator counters in a program's fdinfo (None: no lines).
pub fn prog_counts(obj: &Object, name: &str) -> Result<Option<ProgGlobalMa>> {
    let p = prog(obj, name)?;
    fdinfo::read_prog_global_ma(p.as_fd()).with_context(|| format!("fdinfo of program {name}"))
}

/// Attaches every program named in `names`.
pub fn attach(obj: &Object, names: &[&str]) -> Result<Vec<Link>> {
    names
        .iter()
        .map(|&name| {
            let p = obj
                .progs_mut()
                .find(|p| p.name() == name)
                .with_context(|| format!("no program {name} in the object"))?;
            p.attach().with_context(|| format!("attaching {name}"))
        })
        .collect()
}

/// Reads the stats and records a failure for anything that does not add
/// up within the file itself.
pub fn read_stats(checks: &mut Checks) -> Result<Stats> {
    let s = Stats::read()?;
    for bad in s.inconsistencies() {
        checks.fail(format!("{}: {bad}", stats::STATS_PATH));
    }
    Ok(s)
}

/// How long alloc/free must stand still before a test starts, when the
/// allocator has objects out (in_use != 0): one of them may still come back
/// from an earlier test's deferred free, e.g. a map freed from a workqueue
/// after its program's RCU grace period (about 20 ms after the close here).
const STILL: Duration = Duration::from_millis(50);
/// The same with no object out (in_use 0): a deferred free needs an object
/// to free, so none can come; the wait only checks that nothing is
/// allocating (nothing outside the tests uses the global allocator).
const STILL_EMPTY: Duration = Duration::from_millis(5);

/// The stillness quiet_stats() wants after reading `s`: alloc and free
/// only grow, so equal totals at both ends mean nothing happened between,
/// and in_use is the same at both ends.
fn still_for(s: &Stats) -> Duration {
    if s.in_use == 0 {
        STILL_EMPTY
    } else {
        STILL
    }
}

/// The stats once alloc/free have stopped moving, so that a test starts
/// from a quiet allocator even if an earlier test left a deferred free in
/// flight (it would then have failed itself).
pub fn quiet_stats(checks: &mut Checks) -> Result<Stats> {
    let start = Instant::now();
    let mut last = read_stats(checks)?;
    let quiet = loop {
        thread::sleep(still_for(&last));
        let s = read_stats(checks)?;
        let same = s.total.alloc == last.total.alloc && s.total.free == last.total.free;
        if same {
            break s;
        }
        if start.elapsed() > SETTLE_TIMEOUT {
            checks.fail(format!(
                "the global allocator did not go quiet within {SETTLE_TIMEOUT:?} before the test"
            ));
            break s;
        }
        last = s;
    };
    *outstanding_at_start() = outstanding::read()?;
    Ok(quiet)
}

/// `outstanding` when the running test started (its quiet_stats()):
/// finish() blames a test only for the owners that appeared during it, so
/// an earlier test's leak fails that test alone.
fn outstanding_at_start() -> std::sync::MutexGuard<'static, Option<Vec<Outstanding>>> {
    static AT_START: std::sync::Mutex<Option<Vec<Outstanding>>> = std::sync::Mutex::new(None);
    AT_START.lock().unwrap_or_else(|e| e.into_inner())
}

/// Owners listed in `outstanding` now that were not when the running test
/// started (None: no debug mode).
pub fn new_outstanding() -> Result<Option<Vec<Outstanding>>> {
    let Some(now) = outstanding::read()? else {
        return Ok(None);
    };
    let before = outstanding_at_start().clone().unwrap_or_default();
    Ok(Some(
        now.into_iter().filter(|o| !before.contains(o)).collect(),
    ))
}

/// Checks `after - before`: on every CPU in `per_cpu` (cpu, alloc, free)
/// exactly those numbers, on every other CPU nothing; no failed
/// allocations anywhere; the totals and in_use follow.
pub fn expect_deltas(
    checks: &mut Checks,
    what: &str,
    before: &Stats,
    after: &Stats,
    per_cpu: &[(usize, i64, i64)],
) {
    let mut want: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    for &(cpu, a, f) in per_cpu {
        let e = want.entry(cpu).or_default();
        e.0 += a;
        e.1 += f;
    }
    let (alloc, free): (i64, i64) = want
        .values()
        .fold((0, 0), |(a, f), &(da, df)| (a + da, f + df));
    let total = after.total.since(&before.total);
    checks.eq(format!("{what}: total alloc delta"), alloc, total.alloc);
    checks.eq(format!("{what}: total free delta"), free, total.free);
    checks.eq(
        format!("{what}: total alloc_fail delta"),
        0,
        total.alloc_fail,
    );
    checks.eq(
        format!("{what}: in_use delta"),
        alloc - free,
        after.in_use - before.in_use,
    );
    for (cpu, d) in after.cpu_deltas(before) {
        let (a, f) = want.get(&cpu).copied().unwrap_or_default();
        checks.eq(format!("{what}: cpu{cpu} alloc delta"), a, d.alloc);
        checks.eq(format!("{what}: cpu{cpu} free delta"), f, d.free);
    }
    for cpu in want.keys() {
        if !after.cpus.contains_key(cpu) {
            checks.fail(format!("{what}: no stats line for cpu{cpu}"));
        }
    }
}

/// Checks a program's fdinfo counters moved by exactly `want` since
/// `before` (both must exist).
pub fn expect_prog_delta(
    checks: &mut Checks,
    what: &str,
    before: Option<ProgGlobalMa>,
    after: Option<ProgGlobalMa>,
    want: ProgGlobalMa,
) {
    let (Some(b), Some(a)) = (before, after) else {
        checks.fail(format!(
            "{what}: fdinfo has no global_ma counters (before {before:?}, after {after:?})"
        ));
        return;
    };
    let got = ProgGlobalMa {
        allocs: a.allocs.wrapping_sub(b.allocs),
        frees: a.frees.wrapping_sub(b.frees),
        alloc_fails: a.alloc_fails.wrapping_sub(b.alloc_fails),
    };
    checks.eq(format!("{what}: fdinfo deltas"), want, got);
}

/// Drops `what_to_drop` (an object, its links, any handles), then waits
/// until in_use is back to `in_use`. Returns the last reading, whether it
/// got there, and how long it took.
pub fn drop_and_settle<T>(what_to_drop: T, in_use: i64) -> Result<(Stats, bool, Duration)> {
    drop(what_to_drop);
    poll(SETTLE_TIMEOUT, POLL_INTERVAL, Stats::read, |s| {
        s.in_use == in_use
    })
}

/// The usual end of a test: release everything, wait for in_use to come
/// back to where the test started, and check the test's total allocs and
/// frees balance.
pub fn finish<T>(checks: &mut Checks, what_to_drop: T, start: &Stats) -> Result<Stats> {
    let (end, ok, took) = drop_and_settle(what_to_drop, start.in_use)?;
    let d = end.total.since(&start.total);
    ktap::diag(&format!(
        "whole test: {d}; in_use {} -> {} ({} after release, {:.1} ms)",
        start.in_use,
        end.in_use,
        if ok { "settled" } else { "NOT settled" },
        took.as_secs_f64() * 1e3
    ));
    if !ok {
        checks.fail(format!(
            "in_use did not return to {} within {SETTLE_TIMEOUT:?} after the object was \
             closed: {}",
            start.in_use, end.in_use
        ));
    }
    checks.eq("whole test: allocs - frees", 0, d.alloc - d.free);
    // The debug mode, when the kernel has it, saw nothing wrong.
    if let (Some(b0), Some(b1)) = (start.bad_free, end.bad_free) {
        checks.eq("frees refused by the debug mode", 0, b1.wrapping_sub(b0));
    }
    if let Some(owners) = new_outstanding()? {
        checks.eq(
            "owners gone during the test with objects still allocated",
            Vec::<Outstanding>::new(),
            owners,
        );
    }
    for bad in end.inconsistencies() {
        checks.fail(format!("{}: {bad}", stats::STATS_PATH));
    }
    Ok(end)
}

/// `key: <n> objects` style summary of a per-CPU delta map, only CPUs that
/// moved.
pub fn describe_cpu_deltas(before: &Stats, after: &Stats) -> String {
    let parts: Vec<String> = after
        .cpu_deltas(before)
        .into_iter()
        .filter(|(_, d)| d.alloc != 0 || d.free != 0 || d.alloc_fail != 0)
        .map(|(c, d)| {
            format!(
                "cpu{c} alloc {:+} free {:+} alloc_fail {:+}",
                d.alloc, d.free, d.alloc_fail
            )
        })
        .collect();
    if parts.is_empty() {
        "no CPU moved".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stillness_is_short_only_with_no_object_out() {
        let with = |in_use| Stats {
            in_use,
            ..Stats::default()
        };
        assert_eq!(still_for(&with(0)), STILL_EMPTY);
        assert_eq!(still_for(&with(1)), STILL);
        assert_eq!(still_for(&with(-1)), STILL);
        assert!(STILL_EMPTY < STILL);
    }
}
