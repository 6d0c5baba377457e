//! `global_ma_prefill_bad_input`: every refused reservation (EINVAL,
//! E2BIG, EPERM, EMFILE) leaves the allocator as it was.

use std::os::fd::{AsRawFd, OwnedFd};
use std::thread;

use anyhow::{bail, Context, Result};

use super::snap::{release, snap, unreserved_snap};
use super::{begin, checked_unit, missing_reserves, prefill_timed, N, OBJECT, OBJ_SIZE};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::reserve::{self, errno_name, PrefillAttr, MAX_SIZE, RESERVE_MAX};
use crate::tests::global_ma::finish;

/// A request the kernel must refuse: `attr` followed by `tail` (bytes
/// after map_extra) fails with `errno`.
struct Refused {
    what: &'static str,
    attr: PrefillAttr,
    tail: &'static [u8],
    errno: i32,
}

const fn refused(what: &'static str, attr: PrefillAttr, errno: i32) -> Refused {
    Refused {
        what,
        attr,
        tail: &[],
        errno,
    }
}

/// The requests refused on their own, in the order they are sent;
/// `max_n` objects of OBJ_SIZE fill the per-CPU limit.
fn refused_alone(max_n: u32) -> [Refused; 13] {
    [
        refused("size 0", attr(0, 10, 0), libc::EINVAL),
        refused("count 0", attr(OBJ_SIZE, 0, 0), libc::EINVAL),
        refused("size 0 count 0", attr(0, 0, 0), libc::EINVAL),
        refused(
            "size 4089 (> 4096 - 8)",
            attr(MAX_SIZE + 1, 10, 0),
            libc::EINVAL,
        ),
        refused("size 4097", attr(4097, 10, 0), libc::EINVAL),
        refused("size u32::MAX", attr(u32::MAX, 10, 0), libc::EINVAL),
        refused("flags 1", attr(OBJ_SIZE, 10, 1), libc::EINVAL),
        refused(
            "key_size 4",
            PrefillAttr {
                key_size: 4,
                ..attr(OBJ_SIZE, 10, 0)
            },
            libc::EINVAL,
        ),
        refused(
            "flags 0x80000000",
            attr(OBJ_SIZE, 10, 1 << 31),
            libc::EINVAL,
        ),
        Refused {
            tail: &[0, 0, 0, 1],
            ..refused(
                "non-zero byte after map_extra",
                attr(OBJ_SIZE, 10, 0),
                libc::EINVAL,
            )
        },
        refused(
            "16 MiB / unit + 1 objects",
            attr(OBJ_SIZE, max_n + 1, 0),
            libc::E2BIG,
        ),
        refused("count u32::MAX", attr(OBJ_SIZE, u32::MAX, 0), libc::E2BIG),
        refused("size 4088 count 4097", attr(MAX_SIZE, 4097, 0), libc::E2BIG),
    ]
}

/// Refused on top of a live reservation of 3000 x 4088 bytes (3000 units
/// of 4096 bytes).
const REFUSED_STACKED: [Refused; 2] = [
    refused("stacked above 16 MiB", attr(MAX_SIZE, 1097, 0), libc::E2BIG),
    refused(
        "stacked above 16 MiB, other size",
        attr(OBJ_SIZE, 80_000, 0),
        libc::E2BIG,
    ),
];

/// Refused on top of a reservation of exactly the limit.
const REFUSED_AT_LIMIT: Refused =
    refused("one more object at the limit", attr(1, 1, 0), libc::E2BIG);

/// Expects each request of `cases` to fail with its errno and leave the
/// caches' watermarks and reserves and the reserve counters as they were.
fn expect_refused(ctx: &Ctx<'_>, checks: &mut Checks, cases: &[Refused]) -> Result<()> {
    for r in cases {
        expect_err_with(
            ctx,
            checks,
            r.what,
            (r.attr, r.tail),
            r.errno,
            Undone::Refused,
            || reserve::prefill_raw(r.attr, r.tail),
        )?;
    }
    Ok(())
}

/// How far a failing prefill got before it failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undone {
    /// Refused before any object was reserved: not even counted.
    Refused,
    /// Failed after reserving (no fd): the reservation was undone, so the
    /// caches and `reserved` are as before, but the prefill was counted.
    Reservation,
}

/// `expect_refused` for a prefill made by `call` (which may change the process
/// around the syscall and must undo that before it returns).
fn expect_err_with(
    ctx: &Ctx<'_>,
    checks: &mut Checks,
    what: &str,
    (attr, tail): (PrefillAttr, &[u8]),
    want: i32,
    undone: Undone,
    call: impl FnOnce() -> Result<OwnedFd, std::io::Error>,
) -> Result<()> {
    let before = snap(checks)?;
    let r = call();
    let after = match undone {
        Undone::Refused => snap(checks)?,
        // The map made before the failure is freed from a workqueue.
        Undone::Reservation => unreserved_snap(checks, &before, 0)?,
    };
    let got = match &r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    ctx.diag(format!(
        "{what:<36} size {} count {} flags {}{} -> {} (want {})",
        attr.size,
        attr.count,
        attr.flags,
        if tail.is_empty() {
            String::new()
        } else {
            format!(" tail {tail:?}")
        },
        errno_name(got),
        errno_name(want)
    ));
    checks.eq(format!("{what}: errno"), errno_name(want), errno_name(got));
    drop(r);
    for bad in after.caches.marks_changed(&before.caches) {
        checks.fail(format!("{what}: changed the caches: {bad}"));
    }
    if undone == Undone::Refused {
        checks.eq(
            format!("{what}: prefill counter"),
            before.res.total.prefill,
            after.res.total.prefill,
        );
    }
    checks.eq(
        format!("{what}: reserved"),
        before.res.total.reserved,
        after.res.total.reserved,
    );
    Ok(())
}

/// The fd number the next open would get.
fn lowest_free_fd() -> Result<u64> {
    // SAFETY: dup of stdin and close of the fd it returned, nothing else.
    let fd = unsafe { libc::dup(0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("dup(0)");
    }
    // SAFETY: closes the fd dup just made.
    unsafe { libc::close(fd) };
    Ok(fd as u64)
}

/// Runs `f` with RLIMIT_NOFILE's soft limit at `limit`, so that no new fd
/// can be made, and puts the limit back before returning.
fn with_nofile_limit<T>(
    limit: u64,
    f: impl FnOnce() -> Result<T, std::io::Error>,
) -> Result<T, std::io::Error> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers to rlimit structs.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let low = libc::rlimit {
        rlim_cur: limit,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let r = f();
    // SAFETY: as above; restoring what getrlimit returned.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) } != 0 {
        panic!(
            "could not restore RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
    r
}

/// Objects of 4088 bytes (a 4096-byte unit) per racing prefill: 10 MiB.
const RACE_COUNT: u32 = 2560;

/// BPF_MAP_TYPE_ARRAY in `enum bpf_map_type`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;

const fn attr(size: u32, count: u32, flags: u32) -> PrefillAttr {
    PrefillAttr::new(size, count, flags)
}

/// kernel.unprivileged_bpf_disabled: 2 by default (BPF_UNPRIV_DEFAULT_OFF)
/// turns every bpf() of an unprivileged caller into EPERM before any map
/// type is looked at, so the reservation map's own capability check is
/// only seen with 0.
const UNPRIV_SYSCTL: &str = "/proc/sys/kernel/unprivileged_bpf_disabled";

/// Sets UNPRIV_SYSCTL to 0 and puts the old value back when dropped.
struct UnprivBpfAllowed(String);

impl UnprivBpfAllowed {
    fn new() -> Result<UnprivBpfAllowed> {
        let old = std::fs::read_to_string(UNPRIV_SYSCTL)
            .with_context(|| format!("reading {UNPRIV_SYSCTL}"))?;
        let old = old.trim().to_string();
        if old == "1" {
            bail!("{UNPRIV_SYSCTL} is 1, which cannot be undone until reboot");
        }
        std::fs::write(UNPRIV_SYSCTL, "0")
            .with_context(|| format!("writing 0 to {UNPRIV_SYSCTL}"))?;
        Ok(UnprivBpfAllowed(old))
    }
}

impl Drop for UnprivBpfAllowed {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(UNPRIV_SYSCTL, &self.0) {
            eprintln!("# could not restore {UNPRIV_SYSCTL} to {}: {e}", self.0);
        }
    }
}

/// BPF_MAP_CREATE with `create` from a forked child that dropped to uid/gid
/// 65534 (and with it every capability); returns the child's errno (0:
/// success).
fn unprivileged_errno(create: &[u8]) -> Result<i32> {
    // SAFETY: the child only calls async-signal-safe functions (setresgid,
    // setresuid, syscall, _exit) and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: see above; `create` was built before the fork.
        unsafe {
            if libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                libc::_exit(200);
            }
            let fd = libc::syscall(
                libc::SYS_bpf,
                reserve::BPF_MAP_CREATE,
                create.as_ptr(),
                create.len() as libc::c_uint,
            );
            let e = if fd < 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(e.clamp(0, 199));
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error()).context("waitpid");
    }
    if !libc::WIFEXITED(status) {
        bail!("unprivileged child did not exit normally (status {status:#x})");
    }
    match libc::WEXITSTATUS(status) {
        200 => bail!("the child could not drop to uid 65534"),
        e => Ok(e),
    }
}

pub fn global_ma_prefill_bad_input(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let (start, s0) = begin(&mut checks)?;
    let c = &mut checks;

    // unit of OBJ_SIZE, from a tiny reservation
    let fd = reserve::prefill(OBJ_SIZE, 1, 0).context("prefill(32, 1)")?;
    // SAFETY: F_GETFD on an fd we own reads its flags and nothing else.
    let fd_flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    c.eq(
        "prefill(32, 1): the fd is close-on-exec (F_GETFD & FD_CLOEXEC)",
        libc::FD_CLOEXEC,
        fd_flags & libc::FD_CLOEXEC,
    );
    let unit = checked_unit(c, &fd, OBJ_SIZE, 1)?;
    release(ctx, c, "prefill(32, 1)", vec![fd], &s0.caches)?;
    let max_n = (RESERVE_MAX / u64::from(unit)) as u32;

    expect_refused(ctx, c, &refused_alone(max_n))?;

    // Stacked above the limit: 3000 + 1097 objects of 4096 bytes > 16 MiB.
    let (big, took) = prefill_timed(MAX_SIZE, 3000)?;
    ctx.diag(format!(
        "prefill(4088, 3000): {:.1} ms",
        took.as_secs_f64() * 1e3
    ));
    expect_refused(ctx, c, &REFUSED_STACKED)?;
    release(ctx, c, "close(prefill(4088, 3000))", vec![big], &s0.caches)?;

    // Two requests that each fit under the cap but not together, at once:
    // both pass the early check while the other still allocates (about
    // 300 ms here), so only the re-check under the mutex, against what was
    // committed meanwhile, can refuse the second.
    let barrier = std::sync::Barrier::new(2);
    let raced: Vec<Result<OwnedFd, std::io::Error>> = thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    reserve::prefill(MAX_SIZE, RACE_COUNT, 0)
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("prefill thread panicked"))
            .collect()
    });
    let mut outcomes: Vec<String> = raced
        .iter()
        .map(|r| {
            errno_name(
                r.as_ref()
                    .err()
                    .map_or(0, |e| e.raw_os_error().unwrap_or(-1)),
            )
        })
        .collect();
    outcomes.sort();
    ctx.diag(format!(
        "two prefill(4088, {RACE_COUNT}) at once (2 x 10 MiB > 16 MiB): {outcomes:?}"
    ));
    let mut want = vec![errno_name(libc::E2BIG), errno_name(0)];
    want.sort();
    c.eq(
        "two prefills at once, each under the cap but not both: outcomes",
        want,
        outcomes,
    );
    let fds: Vec<OwnedFd> = raced.into_iter().filter_map(Result::ok).collect();
    release(ctx, c, "close(the racing prefills)", fds, &s0.caches)?;
    let (exact, took) = prefill_timed(MAX_SIZE, 4096)?;
    ctx.diag(format!(
        "prefill(4088, 4096), exactly 16 MiB per CPU: {:.1} ms",
        took.as_secs_f64() * 1e3
    ));
    expect_refused(ctx, c, &[REFUSED_AT_LIMIT])?;
    release(
        ctx,
        c,
        "close(prefill(4088, 4096))",
        vec![exact],
        &s0.caches,
    )?;

    // The objects are reserved before the fd is made: with no fd free, the
    // reservation must be undone.
    let lowest_free = lowest_free_fd()?;
    expect_err_with(
        ctx,
        c,
        "no free fd (RLIMIT_NOFILE)",
        (attr(OBJ_SIZE, 10, 0), &[]),
        libc::EMFILE,
        Undone::Reservation,
        || with_nofile_limit(lowest_free, || reserve::prefill(OBJ_SIZE, 10, 0)),
    )?;

    // No capabilities, with unprivileged bpf() allowed, so that only the
    // map type can refuse; a plain array from the same child is the control.
    let allowed = UnprivBpfAllowed::new()?;
    let array = PrefillAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        size: 8,
        count: 1,
        flags: 0,
    };
    let control = unprivileged_errno(&reserve::create_attr_bytes(array, &[]))?;
    let before = snap(c)?;
    let e = unprivileged_errno(&reserve::create_attr_bytes(attr(OBJ_SIZE, 10, 0), &[]))?;
    let after = snap(c)?;
    drop(allowed);
    c.eq(
        "unprivileged caller, unprivileged_bpf_disabled 0: an array map is created",
        errno_name(0),
        errno_name(control),
    );
    ctx.diag(format!(
        "{:<36} -> {} (want EPERM)",
        "uid 65534, no caps, unpriv bpf allowed",
        errno_name(e)
    ));
    c.eq(
        "unprivileged caller: errno",
        errno_name(libc::EPERM),
        errno_name(e),
    );
    for bad in after.caches.marks_changed(&before.caches) {
        c.fail(format!("unprivileged caller changed the caches: {bad}"));
    }
    ctx.diag("ENOMEM not tested: the rig's kernel has no fail_page_alloc (CONFIG_FAIL_PAGE_ALLOC)");

    // the allocator still works: one reservation, released
    let (fd, _) = prefill_timed(OBJ_SIZE, N)?;
    release(
        ctx,
        c,
        "prefill(32, 1000) after the errors",
        vec![fd],
        &s0.caches,
    )?;
    let end = snap(c)?;
    for bad in end.caches.marks_changed(&s0.caches) {
        c.fail(format!("caches differ from the start: {bad}"));
    }
    checks.eq("reserved at the end", 0, end.res.total.reserved);
    finish(&mut checks, (), &start)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes the request would reserve per CPU, None for a bad shape (the
    /// kernel's EINVAL checks: size, count, flags, key_size, the tail).
    fn bytes(r: &Refused) -> Option<u64> {
        let a = r.attr;
        if a.count == 0 || a.flags != 0 || a.key_size != 0 || r.tail.iter().any(|&b| b != 0) {
            return None;
        }
        let unit = reserve::unit_size(a.size)?;
        Some(u64::from(a.count) * u64::from(unit))
    }

    #[test]
    fn each_case_is_refused_for_the_reason_its_errno_names() {
        let unit = reserve::unit_size(OBJ_SIZE).unwrap();
        let max_n = (RESERVE_MAX / u64::from(unit)) as u32;
        let held = 3000 * u64::from(reserve::unit_size(MAX_SIZE).unwrap());
        let alone = refused_alone(max_n);
        let cases = alone
            .iter()
            .map(|r| (r, 0))
            .chain(REFUSED_STACKED.iter().map(|r| (r, held)))
            .chain([(&REFUSED_AT_LIMIT, RESERVE_MAX)]);
        for (r, live) in cases {
            match bytes(r) {
                None => assert_eq!(r.errno, libc::EINVAL, "{}", r.what),
                Some(b) => {
                    assert_eq!(r.errno, libc::E2BIG, "{}", r.what);
                    assert!(live + b > RESERVE_MAX, "{} fits", r.what);
                }
            }
        }
        let mut names: Vec<&str> = alone.iter().map(|r| r.what).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), alone.len());
    }
}
