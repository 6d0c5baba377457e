//! `BPF_GLOBAL_MA_PREFILL` (patches/global-ma 0011): the bpf() command that
//! reserves objects of the global allocator on every possible CPU and
//! returns a file descriptor owning the reservation. libbpf-rs has no
//! wrapper for it, so this calls bpf(2) directly.
//!
//! ```text
//! BPF_GLOBAL_MA_PREFILL (36)
//! struct { __u32 size; __u32 count; __u32 flags; } global_ma_prefill;
//! ```

use std::collections::BTreeMap;
use std::io;
use std::mem;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

use crate::fdinfo;

/// The command number in the series' `enum bpf_cmd`.
pub const BPF_GLOBAL_MA_PREFILL: libc::c_long = 36;
/// `BPF_GLOBAL_MA_RESERVE_MAX`: bytes reserved on one CPU, all live
/// reservations together.
pub const RESERVE_MAX: u64 = 16 << 20;
/// Largest object size the allocator serves (4096-byte class minus the
/// 8-byte header).
pub const MAX_SIZE: u32 = 4088;

/// The command's attribute (`global_ma_prefill` of `union bpf_attr`).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct PrefillAttr {
    pub size: u32,
    pub count: u32,
    pub flags: u32,
}

/// bpf(BPF_GLOBAL_MA_PREFILL) with `attr` followed by `tail` (bytes after
/// `flags`, which the kernel requires to be zero). Returns the fd or the
/// errno.
pub fn prefill_raw(attr: PrefillAttr, tail: &[u8]) -> Result<OwnedFd, io::Error> {
    let head = mem::size_of::<PrefillAttr>();
    let mut buf = vec![0u8; head + tail.len()];
    buf[0..4].copy_from_slice(&attr.size.to_ne_bytes());
    buf[4..8].copy_from_slice(&attr.count.to_ne_bytes());
    buf[8..12].copy_from_slice(&attr.flags.to_ne_bytes());
    buf[head..].copy_from_slice(tail);
    // SAFETY: bpf(2) reads at most `buf.len()` bytes from `buf`, which
    // lives until the call returns; on success it returns a new fd that
    // nothing else owns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_GLOBAL_MA_PREFILL,
            buf.as_ptr(),
            buf.len() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a nonnegative return is a new fd owned by the caller.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// Reserves `count` objects of `size` bytes on every possible CPU.
pub fn prefill(size: u32, count: u32, flags: u32) -> Result<OwnedFd, io::Error> {
    prefill_raw(PrefillAttr { size, count, flags }, &[])
}

/// The errno of a failed call, as its name (for diagnostics).
pub fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL".into(),
        libc::EPERM => "EPERM".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EINTR => "EINTR".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EMFILE => "EMFILE".into(),
        0 => "success".into(),
        n => format!("errno {n}"),
    }
}

/// Whether the running kernel has the command, without touching the
/// allocator: a count far above the limit is refused with E2BIG before
/// anything is allocated or locked, while a kernel without the command
/// answers EINVAL (unknown command). Ok(None): the command exists;
/// Ok(Some(reason)): it does not (or the allocator is unavailable).
pub fn probe() -> Result<Option<String>> {
    match prefill(32, u32::MAX, 0) {
        Ok(fd) => {
            drop(fd);
            anyhow::bail!(
                "probe: BPF_GLOBAL_MA_PREFILL(32, {}) succeeded; it must fail with E2BIG",
                u32::MAX
            )
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::E2BIG) => Ok(None),
            Some(libc::EINVAL) => Ok(Some(
                "bpf() has no command 36 (BPF_GLOBAL_MA_PREFILL): this kernel has no prefill"
                    .into(),
            )),
            Some(libc::EOPNOTSUPP) => Ok(Some(
                "BPF_GLOBAL_MA_PREFILL: the global allocator is not available".into(),
            )),
            _ => Err(e).context("probing BPF_GLOBAL_MA_PREFILL"),
        },
    }
}

/// `size`, `unit_size` and `count` from a reservation fd's fdinfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdInfo {
    pub size: u32,
    pub unit_size: u32,
    pub count: u32,
}

pub fn parse_fdinfo(fields: &BTreeMap<String, String>) -> Result<FdInfo> {
    let get = |k: &str| -> Result<u32> {
        fields
            .get(k)
            .with_context(|| format!("no {k:?} in the reservation's fdinfo"))?
            .parse()
            .with_context(|| format!("fdinfo {k} is not a number"))
    };
    Ok(FdInfo {
        size: get("size")?,
        unit_size: get("unit_size")?,
        count: get("count")?,
    })
}

pub fn read_fdinfo(fd: &impl AsFd) -> Result<FdInfo> {
    parse_fdinfo(&fdinfo::read(fd.as_fd())?)
}

/// Page-allocation fault injection (CONFIG_FAIL_PAGE_ALLOC with
/// CONFIG_FAULT_INJECTION_DEBUG_FS), restricted to the calling thread with
/// `task-filter` and `/proc/thread-self/make-it-fail`.
pub const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";

/// Writes `value` to `FAIL_PAGE_ALLOC/<name>`.
pub fn fail_page_alloc_set(name: &str, value: &str) -> Result<()> {
    let path = format!("{FAIL_PAGE_ALLOC}/{name}");
    std::fs::write(&path, value).with_context(|| format!("writing {value:?} to {path}"))
}

/// Reads `FAIL_PAGE_ALLOC/<name>` as a number.
pub fn fail_page_alloc_get(name: &str) -> Result<i64> {
    let path = format!("{FAIL_PAGE_ALLOC}/{name}");
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
        fail_page_alloc_set(name, &value)?;
    }
    let mut me = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/make-it-fail")
        .context("opening /proc/thread-self/make-it-fail")?;
    fail_page_alloc_set("probability", "100")?;
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
    let prob = fail_page_alloc_set("probability", "0");
    armed?;
    off.context("writing 0 to /proc/thread-self/make-it-fail")?;
    prob?;
    let left = fail_page_alloc_get("times")?;
    let injected = u32::try_from(i64::from(times) - left)
        .with_context(|| format!("fail_page_alloc times left {left} > {times}"))?;
    Ok((out.expect("armed"), injected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout() {
        assert_eq!(mem::size_of::<PrefillAttr>(), 12);
    }

    #[test]
    fn fdinfo_fields() {
        let f =
            fdinfo::parse("pos:\t0\nflags:\t02000002\nsize:\t32\nunit_size:\t64\ncount:\t1000\n")
                .unwrap();
        assert_eq!(
            parse_fdinfo(&f).unwrap(),
            FdInfo {
                size: 32,
                unit_size: 64,
                count: 1000
            }
        );
        let f = fdinfo::parse("size:\t32\n").unwrap();
        assert!(parse_fdinfo(&f).is_err());
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::E2BIG), "E2BIG");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}
