//! Page-allocation fault injection (CONFIG_FAIL_PAGE_ALLOC with
//! CONFIG_FAULT_INJECTION_DEBUG_FS) restricted to the calling thread, for
//! the reservation map's ENOMEM path.

use std::io;

use anyhow::{Context, Result};

/// The knobs' folder; the calling thread is chosen with `task-filter` and
/// `/proc/thread-self/make-it-fail`.
pub const PATH: &str = "/sys/kernel/debug/fail_page_alloc";

/// Writes `value` to `PATH/<name>`.
pub fn set(name: &str, value: &str) -> Result<()> {
    let path = format!("{PATH}/{name}");
    std::fs::write(&path, value).with_context(|| format!("writing {value:?} to {path}"))
}

/// Reads `PATH/<name>` as a number.
pub fn get(name: &str) -> Result<i64> {
    let path = format!("{PATH}/{name}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{path}: {text:?} is not a number"))
}

/// Runs `f` with every page allocation of the calling thread failing once
/// `space_pages` pages have been allocated (at most `times` failures), then
/// disarms. `space` counts pages in this kernel: 6.1.192's
/// __should_fail_alloc_page() takes `1 << order` off it per allocation
/// (older 6.1 releases took `PAGE_SIZE << order` bytes). Every file is opened before arming, so arming and disarming
/// allocate nothing themselves. Returns what `f` returned and how many
/// failures were injected.
pub fn with_failing_pages<T>(
    space_pages: u64,
    times: u32,
    f: impl FnOnce() -> T,
) -> Result<(T, u32)> {
    use std::io::Write;
    // ignore-gfp-wait N: the prefill allocates with GFP_KERNEL (direct
    // reclaim allowed); ignore-gfp-highmem Y: the thread's own user page
    // faults (GFP_HIGHUSER) never fail.
    for (name, value) in [
        ("probability", "0".to_string()),
        ("verbose", "0".to_string()),
        ("task-filter", "Y".to_string()),
        ("ignore-gfp-wait", "N".to_string()),
        ("ignore-gfp-highmem", "Y".to_string()),
        ("min-order", "0".to_string()),
        ("interval", "1".to_string()),
        ("times", times.to_string()),
        ("space", space_pages.to_string()),
    ] {
        set(name, &value)?;
    }
    let mut me = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/make-it-fail")
        .context("opening /proc/thread-self/make-it-fail")?;
    set("probability", "100")?;
    let armed = me
        .write_all(b"1")
        .context("writing 1 to /proc/thread-self/make-it-fail");
    let out = armed.as_ref().ok().map(|_| f());
    // Disarm whatever happened; proc_fault_inject_write() allocates
    // nothing, but retry anyway in case a failure is left.
    let mut off = Err(io::Error::other("not tried"));
    for _ in 0..100 {
        off = me.write_all(b"0");
        if off.is_ok() {
            break;
        }
    }
    let prob = set("probability", "0");
    armed?;
    off.context("writing 0 to /proc/thread-self/make-it-fail")?;
    prob?;
    let left = get("times")?;
    let injected = u32::try_from(i64::from(times) - left)
        .with_context(|| format!("fail_page_alloc times left {left} > {times}"))?;
    Ok((out.expect("armed"), injected))
}
