//! The global allocator's debug mode (CONFIG_BPF_GLOBAL_MA_DEBUG,
//! patches/global-ma 0016): refused double and foreign frees (`bad_free`
//! in the stats, a console report) and owners that went away with objects
//! still allocated (`/sys/kernel/debug/bpf_global_ma/outstanding`).
//!
//! `global_ma_debug_bugs` commits each bug on purpose through the test
//! code's `bpf_global_ma_bugs/inject` and checks the debug mode caught it
//! and kept the allocator intact. That a clean run reports nothing is
//! checked by every global_ma test: `finish` requires no new bad_free and
//! no owner in `outstanding` that was not there when the test started,
//! once the test's objects are released (so a leak fails the test that
//! leaked, not every test after it).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::{new_outstanding, quiet_stats, read_stats};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::kmsg::Kmsg;
use crate::sys::outstanding::{self, Outstanding};
use crate::sys::stats;

const INJECT_PATH: &str = "/sys/kernel/debug/bpf_global_ma_bugs/inject";
/// What the kernel prints for a refused free.
const REPORT: &str = "bpf_global_ma: bad free of ";

fn inject(bug: &str) -> Result<()> {
    fs::write(INJECT_PATH, bug).with_context(|| format!("writing {bug:?} to {INJECT_PATH}"))
}

fn bad_free() -> Result<u64> {
    stats::read_total_field("bad_free")?.context("the stats file has no bad_free field")
}

pub fn global_ma_debug_bugs(ctx: &Ctx<'_>) -> Result<Outcome> {
    if !Path::new(INJECT_PATH).exists() || !Path::new(outstanding::PATH).exists() {
        return Ok(Outcome::Skip(rig_contract::lacks::lacks(
            &format!("{INJECT_PATH} or {} missing", outstanding::PATH),
            "CONFIG_BPF_GLOBAL_MA_DEBUG (the global allocator's debug mode)",
        )));
    }
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut kmsg = Kmsg::open()?;
    kmsg.drain()?;

    for (bug, alloc, free) in [("double_free", 1, 1), ("foreign_free", 0, 0)] {
        let b0 = bad_free()?;
        let s0 = read_stats(&mut checks)?;
        inject(bug)?;
        let s1 = read_stats(&mut checks)?;
        let b1 = bad_free()?;
        let d = s1.total.since(&s0.total);
        checks.eq(format!("{bug}: bad_free delta"), 1, b1 - b0);
        checks.eq(
            format!("{bug}: alloc, free deltas (the bad free not carried out)"),
            (alloc, free),
            (d.alloc, d.free),
        );
        let reports: Vec<String> = kmsg
            .drain()?
            .into_iter()
            .filter(|m| m.starts_with(REPORT))
            .collect();
        checks.eq(format!("{bug}: console reports"), 1, reports.len());
        if let Some(r) = reports.first() {
            ctx.diag(format!("{bug}: {r}"));
        }
    }

    // A leak: the owner goes, its object stays.
    let s0 = read_stats(&mut checks)?;
    inject("leak")?;
    let s1 = read_stats(&mut checks)?;
    let listed = new_outstanding()?;
    checks.eq(
        "leak: new outstanding owners",
        Some(vec![Outstanding {
            name: "gma_test_leak".to_string(),
            id: 0,
            live: 1,
        }]),
        listed.clone(),
    );
    checks.eq("leak: in_use delta", 1, s1.in_use - s0.in_use);
    ctx.diag(format!("leak reported: {listed:?}"));
    inject("unleak")?;
    let s2 = read_stats(&mut checks)?;
    checks.eq(
        "after unleak: new outstanding owners",
        Some(vec![]),
        new_outstanding()?,
    );
    checks.eq("after unleak: in_use", start.in_use, s2.in_use);
    checks.eq(
        "reports besides the two bad frees",
        Vec::<String>::new(),
        kmsg.drain()?
            .into_iter()
            .filter(|m| m.starts_with(REPORT))
            .collect(),
    );
    checks.finish()?;
    Ok(Outcome::Pass)
}
