//! `BPF_MAP_TYPE_GLOBAL_MA_RESERVE` (patches/global-ma 0011): creating a
//! map of this type reserves objects of the global allocator on every
//! possible CPU; freeing the map releases them. libbpf-rs's map creation
//! insists on a key, so this calls bpf(BPF_MAP_CREATE) directly, which also
//! lets the tests send attributes that libbpf would refuse.
//!
//! ```text
//! BPF_MAP_CREATE { map_type 32, key_size 0, value_size = object size,
//!                  max_entries = objects per CPU, map_flags 0, rest 0 }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

use super::fdinfo;
use crate::poll::poll;

/// `BPF_MAP_CREATE` in `enum bpf_cmd`.
pub const BPF_MAP_CREATE: libc::c_long = 0;
/// The map type in the series' `enum bpf_map_type` (after 6.1's
/// BPF_MAP_TYPE_USER_RINGBUF, 31).
pub const BPF_MAP_TYPE_GLOBAL_MA_RESERVE: u32 = 32;
/// `BPF_TOKEN_CREATE` upstream (6.9+), unknown to 6.1 and to the series.
pub const BPF_TOKEN_CREATE: libc::c_long = 36;
/// `BPF_GLOBAL_MA_RESERVE_MAX`: bytes reserved on one CPU, all live
/// reservations together.
pub const RESERVE_MAX: u64 = 16 << 20;
/// Largest object size the allocator serves (4096-byte class minus the
/// 8-byte header).
pub const MAX_SIZE: u32 = 4088;
/// The allocator's size classes, 8-byte header included (memalloc.c).
const UNIT_SIZES: [u32; 11] = [16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096];
/// Bytes of 6.1's BPF_MAP_CREATE attribute, up to and including map_extra.
const CREATE_ATTR_LEN: usize = 72;

/// The reservation's fields of a BPF_MAP_CREATE attribute: `size` is
/// value_size, `count` max_entries, `flags` map_flags; `key_size` and
/// `map_type` let a test send another map type's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub size: u32,
    pub count: u32,
    pub flags: u32,
}

impl PrefillAttr {
    pub const fn new(size: u32, count: u32, flags: u32) -> PrefillAttr {
        PrefillAttr {
            map_type: BPF_MAP_TYPE_GLOBAL_MA_RESERVE,
            key_size: 0,
            size,
            count,
            flags,
        }
    }
}

/// The bytes of a BPF_MAP_CREATE attribute with `attr`'s fields, zero
/// elsewhere, followed by `tail`.
pub fn create_attr_bytes(attr: PrefillAttr, tail: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; CREATE_ATTR_LEN + tail.len()];
    // map_type, key_size, value_size, max_entries, map_flags: the first
    // five u32 of union bpf_attr for BPF_MAP_CREATE.
    for (i, v) in [
        attr.map_type,
        attr.key_size,
        attr.size,
        attr.count,
        attr.flags,
    ]
    .into_iter()
    .enumerate()
    {
        buf[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    buf[CREATE_ATTR_LEN..].copy_from_slice(tail);
    buf
}

/// bpf(BPF_MAP_CREATE) with `attr` followed by `tail` (bytes after
/// map_extra, which the kernel requires to be zero). Returns the map fd or
/// the errno.
pub fn prefill_raw(attr: PrefillAttr, tail: &[u8]) -> Result<OwnedFd, io::Error> {
    sys_bpf(BPF_MAP_CREATE, &create_attr_bytes(attr, tail))
}

/// bpf(`cmd`) with the attribute bytes `attr`: its return value, or the
/// errno.
fn sys_bpf_ret(cmd: libc::c_long, attr: &[u8]) -> Result<libc::c_long, io::Error> {
    // SAFETY: bpf(2) reads at most `attr.len()` bytes from `attr`, which
    // lives until the call returns; pointers inside `attr` are the
    // caller's to keep alive.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// bpf(`cmd`) with the attribute bytes `attr`, for a command that returns a
/// new fd.
pub fn sys_bpf(cmd: libc::c_long, attr: &[u8]) -> Result<OwnedFd, io::Error> {
    let fd = sys_bpf_ret(cmd, attr)?;
    // SAFETY: a nonnegative return of an fd-returning command is a new fd
    // owned by the caller.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_PROG_BIND_MAP` in `enum bpf_cmd`.
const BPF_PROG_BIND_MAP: libc::c_long = 35;

/// BPF_PROG_BIND_MAP: `prog` holds `map` (and with it a reservation) until
/// the program is freed.
pub fn prog_bind_map(prog: BorrowedFd<'_>, map: BorrowedFd<'_>) -> Result<(), io::Error> {
    let mut attr = [0u8; 12];
    attr[..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
    sys_bpf_ret(BPF_PROG_BIND_MAP, &attr).map(drop)
}

/// The element commands of `enum bpf_cmd`, by name.
pub const ELEM_CMDS: [(&str, libc::c_long); 4] = [
    ("BPF_MAP_LOOKUP_ELEM", 1),
    ("BPF_MAP_UPDATE_ELEM", 2),
    ("BPF_MAP_DELETE_ELEM", BPF_MAP_DELETE_ELEM),
    ("BPF_MAP_GET_NEXT_KEY", 4),
];

/// `BPF_MAP_DELETE_ELEM`, whose attribute ends at the key.
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// An element command on `map` with no key (a reservation's key_size is 0)
/// and `value` as the value or next-key buffer.
pub fn map_elem_cmd(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    value: &mut [u8],
) -> Result<(), io::Error> {
    // union bpf_attr's element variant: map_fd, pad, key, value, flags.
    let mut attr = [0u8; 32];
    attr[..4].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
    if cmd != BPF_MAP_DELETE_ELEM {
        // A non-zero byte after the key would be EINVAL (CHECK_ATTR).
        attr[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_ne_bytes());
    }
    sys_bpf_ret(cmd, &attr).map(drop)
}

/// Reserves `count` objects of `size` bytes on every possible CPU.
pub fn prefill(size: u32, count: u32, flags: u32) -> Result<OwnedFd, io::Error> {
    prefill_raw(PrefillAttr::new(size, count, flags), &[])
}

/// Total `reserved` objects (all CPUs, all classes) in the allocator's
/// stats.
pub fn reserved_total() -> Result<u64> {
    super::stats::read_total_field("reserved")?
        .context("the allocator's stats have no `reserved` field")
}

/// Closes `fd` and waits until the total `reserved` is `back_to` again: a
/// map is freed from a workqueue after its last reference goes, so the
/// reservation is released shortly after the close, not within it.
pub fn close_and_wait(fd: OwnedFd, back_to: u64) -> Result<std::time::Duration> {
    let start = std::time::Instant::now();
    drop(fd);
    wait_reserved_total(back_to)?;
    Ok(start.elapsed())
}

/// Waits (10 s at most) until the total `reserved` is `want`.
pub fn wait_reserved_total(want: u64) -> Result<()> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);
    let (now, done, _) = poll(TIMEOUT, INTERVAL, reserved_total, |&now| now == want)?;
    anyhow::ensure!(
        done,
        "reserved still {now}, not {want}, {TIMEOUT:?} after the last reservation map \
         was closed"
    );
    Ok(())
}

/// The size class serving `size` bytes (header included), as the kernel's
/// bpf_global_ma_unit_size(); None when no class can.
pub fn unit_size(size: u32) -> Option<u32> {
    if size == 0 {
        return None;
    }
    let need = size.checked_add(8)?;
    UNIT_SIZES.into_iter().find(|&u| u >= need)
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

/// Whether the running kernel has the map type, without touching the
/// allocator: a count far above the limit is refused with E2BIG before
/// anything is allocated or locked, while a kernel without the map type
/// answers EINVAL (unknown type). Ok(None): the map type exists;
/// Ok(Some(reason)): it does not (or the allocator is unavailable).
pub fn probe() -> Result<Option<String>> {
    match prefill(32, u32::MAX, 0) {
        Ok(fd) => {
            drop(fd);
            anyhow::bail!(
                "probe: a reservation of 32 x {} succeeded; it must fail with E2BIG",
                u32::MAX
            )
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::E2BIG) => Ok(None),
            Some(libc::EINVAL) => Ok(Some(rig_contract::lacks::lacks(
                &format!("bpf(BPF_MAP_CREATE) knows no map type {BPF_MAP_TYPE_GLOBAL_MA_RESERVE}"),
                "BPF_MAP_TYPE_GLOBAL_MA_RESERVE (the reserves)",
            ))),
            Some(libc::EOPNOTSUPP) => Ok(Some(
                "BPF_MAP_TYPE_GLOBAL_MA_RESERVE: the global allocator is not available".into(),
            )),
            _ => Err(e).context("probing BPF_MAP_TYPE_GLOBAL_MA_RESERVE"),
        },
    }
}

/// What a reservation map's fdinfo says: `size` is value_size and `count`
/// max_entries; `unit_size` is the class serving `size` (the fdinfo of a
/// map does not show it).
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
            .with_context(|| format!("no {k:?} in the reservation map's fdinfo"))?
            .parse()
            .with_context(|| format!("fdinfo {k} is not a number"))
    };
    let map_type = get("map_type")?;
    anyhow::ensure!(
        map_type == BPF_MAP_TYPE_GLOBAL_MA_RESERVE,
        "fdinfo map_type {map_type}, not BPF_MAP_TYPE_GLOBAL_MA_RESERVE"
    );
    let size = get("value_size")?;
    Ok(FdInfo {
        size,
        unit_size: unit_size(size).with_context(|| format!("no size class serves {size}"))?,
        count: get("max_entries")?,
    })
}

pub fn read_fdinfo(fd: &impl AsFd) -> Result<FdInfo> {
    parse_fdinfo(&fdinfo::read(fd.as_fd())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_bytes() {
        let b = create_attr_bytes(PrefillAttr::new(32, 1000, 2), &[0, 0, 0, 1]);
        assert_eq!(b.len(), CREATE_ATTR_LEN + 4);
        let word = |i: usize| u32::from_ne_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(
            [word(0), word(1), word(2), word(3), word(4)],
            [BPF_MAP_TYPE_GLOBAL_MA_RESERVE, 0, 32, 1000, 2]
        );
        assert!(b[20..CREATE_ATTR_LEN].iter().all(|&x| x == 0));
        assert_eq!(&b[CREATE_ATTR_LEN..], &[0, 0, 0, 1]);
    }

    #[test]
    fn unit_sizes() {
        assert_eq!(unit_size(0), None);
        assert_eq!(unit_size(1), Some(16));
        assert_eq!(unit_size(8), Some(16));
        assert_eq!(unit_size(9), Some(32));
        assert_eq!(unit_size(32), Some(64));
        assert_eq!(unit_size(40), Some(64));
        assert_eq!(unit_size(200), Some(256));
        assert_eq!(unit_size(MAX_SIZE), Some(4096));
        assert_eq!(unit_size(MAX_SIZE + 1), None);
        assert_eq!(unit_size(u32::MAX), None);
    }

    #[test]
    fn fdinfo_fields() {
        // As bpf_map_show_fdinfo() prints it for a reservation of 32 x 1000.
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1041\nmap_type:\t32\n\
                    key_size:\t0\nvalue_size:\t32\nmax_entries:\t1000\nmap_flags:\t0x0\n\
                    map_extra:\t0x0\nmemlock:\t32768\nmap_id:\t7\nfrozen:\t0\n";
        let f = fdinfo::parse(text).unwrap();
        assert_eq!(
            parse_fdinfo(&f).unwrap(),
            FdInfo {
                size: 32,
                unit_size: 64,
                count: 1000
            }
        );
        let f = fdinfo::parse(&text.replace("map_type:\t32", "map_type:\t1")).unwrap();
        assert!(parse_fdinfo(&f).is_err());
        let f = fdinfo::parse("value_size:\t32\n").unwrap();
        assert!(parse_fdinfo(&f).is_err());
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::E2BIG), "E2BIG");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}
