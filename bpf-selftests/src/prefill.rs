//! `BPF_GLOBAL_MA_PREFILL` (patches/global-ma 0008): the bpf() command that
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
