//! `global_ma_prefill_enomem`: a reservation that runs out of pages
//! half-way gives everything back.

use std::time::Instant;

use anyhow::Result;

use super::snap::{expect_conservation, expect_reserved, release, settled_snap, snap};
use super::{
    begin, checked_unit, missing_reserves, online, prefill_timed, OBJECT, RELEASE_TIMEOUT,
};
use crate::check::Checks;
use crate::poll::poll;
use crate::runner::{Ctx, Outcome};
use crate::sys::affinity;
use crate::sys::fail_page_alloc;
use crate::sys::reserve::{self, errno_name, MAX_SIZE};
use crate::sys::stats::Stats;
use crate::tests::global_ma::{finish, POLL_INTERVAL};

/// The reservation `global_ma_prefill_enomem` asks for: 4088-byte objects
/// (unit 4096) each take a page of their own with SLOB (kmalloc of a page
/// or more goes straight to the page allocator), so page-allocation fault
/// injection fails exactly the prefill's kmalloc_node().
const ENOMEM_SIZE: u32 = MAX_SIZE;
const ENOMEM_COUNT: u32 = 2000;

/// ENOMEM with fail_page_alloc: page allocations of the test's own thread
/// start failing after 5/8 of the pages the reservation needs, midway
/// through the CPUs' chains. The call must return ENOMEM with everything
/// it took given back: the caches file and the reserve counters exactly as
/// before, in_use where it was. The same prefill then succeeds.
pub fn global_ma_prefill_enomem(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    if !std::path::Path::new(fail_page_alloc::PATH).exists() {
        return Ok(Outcome::Skip(rig_contract::lacks::lacks(
            &format!("{} missing", fail_page_alloc::PATH),
            "CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_DEBUG_FS (page-allocation fault \
             injection)",
        )));
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let cpus = online(&mut checks, &s0)?;
    let pages = u64::from(ENOMEM_COUNT) * s0.caches.cpus().len() as u64;
    let space_pages = pages * 5 / 8;
    const TIMES: u32 = 10;

    let before = snap(&mut checks)?;
    let ((r, took), injected) = {
        let _pin = affinity::pin(cpus[0])?;
        fail_page_alloc::with_failing_pages(space_pages, TIMES, || {
            let t = Instant::now();
            let r = reserve::prefill(ENOMEM_SIZE, ENOMEM_COUNT, 0);
            (r, t.elapsed())
        })?
    };
    let errno = match &r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    ctx.diag(format!(
        "prefill({ENOMEM_SIZE}, {ENOMEM_COUNT}) on {} CPUs ({pages} pages) with page \
         allocations failing after {space_pages}: {} after {:.1} ms, {injected} failure(s) \
         injected",
        cpus.len(),
        errno_name(errno),
        took.as_secs_f64() * 1e3
    ));
    drop(r);
    checks.eq(
        "prefill under fail_page_alloc: errno",
        errno_name(libc::ENOMEM),
        errno_name(errno),
    );
    if injected == 0 {
        checks.fail("fail_page_alloc injected no failure");
    }

    let after = snap(&mut checks)?;
    if after.caches != before.caches {
        for (k, b) in &before.caches.lines {
            let a = after.caches.lines.get(k);
            if a != Some(b) {
                checks.fail(format!(
                    "ENOMEM changed cpu{} unit {}: {b} -> {}",
                    k.0,
                    k.1,
                    a.map_or("no line".to_string(), |a| a.to_string())
                ));
            }
        }
        for k in after.caches.lines.keys() {
            if !before.caches.lines.contains_key(k) {
                checks.fail(format!("ENOMEM added a line cpu{} unit {}", k.0, k.1));
            }
        }
    }
    checks.eq(
        "ENOMEM: total reserved",
        before.res.total.reserved,
        after.res.total.reserved,
    );
    checks.eq(
        "ENOMEM: total prefill",
        before.res.total.prefill,
        after.res.total.prefill,
    );
    for &cpu in &cpus {
        let (b, a) = (before.res.cpu(cpu), after.res.cpu(cpu));
        checks.eq(format!("ENOMEM: cpu{cpu} prefill"), b.prefill, a.prefill);
        checks.eq(format!("ENOMEM: cpu{cpu} reserved"), b.reserved, a.reserved);
    }
    let (st, ok, waited) = poll(RELEASE_TIMEOUT, POLL_INTERVAL, Stats::read, |s| {
        s.in_use == start.in_use
    })?;
    ctx.diag(format!(
        "after ENOMEM: reserved {} -> {}, prefill {} -> {}, in_use {} -> {} ({:.1} ms)",
        before.res.total.reserved,
        after.res.total.reserved,
        before.res.total.prefill,
        after.res.total.prefill,
        start.in_use,
        st.in_use,
        waited.as_secs_f64() * 1e3
    ));
    if !ok {
        checks.fail(format!(
            "in_use did not return to {} within {RELEASE_TIMEOUT:?}: {}",
            start.in_use, st.in_use
        ));
    }

    // Everything came back: the same reservation now fits.
    let (fd, t) = prefill_timed(ENOMEM_SIZE, ENOMEM_COUNT)?;
    ctx.diag(format!(
        "prefill({ENOMEM_SIZE}, {ENOMEM_COUNT}) without fault injection: {:.1} ms",
        t.as_secs_f64() * 1e3
    ));
    let unit = checked_unit(&mut checks, &fd, ENOMEM_SIZE, ENOMEM_COUNT)?;
    let s1 = snap(&mut checks)?;
    expect_reserved(
        &mut checks,
        "prefill after ENOMEM",
        &before,
        &s1,
        unit,
        i64::from(ENOMEM_COUNT),
    )?;
    release(ctx, &mut checks, "close(fd)", vec![fd], &s0.caches)?;
    let end = settled_snap(&mut checks, &s0)?;
    expect_conservation(&mut checks, "whole test", &s0, &end);
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}
