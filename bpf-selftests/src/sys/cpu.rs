//! CPU topology and pinning helpers.

use std::fs;
use std::io;
use std::mem;

use anyhow::{bail, Context, Result};

/// Highest CPU count the BPF programs account for (`RIG_MAX_CPUS` in
/// progs/rig.h).
pub const MAX_CPUS: usize = 64;

const ONLINE: &str = "/sys/devices/system/cpu/online";

/// Parses a kernel CPU list such as `0-3,5,7-8` (trailing newline allowed).
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let s = s.trim();
    let mut cpus = Vec::new();
    if s.is_empty() {
        return Ok(cpus);
    }
    for part in s.split(',') {
        let num = |t: &str| {
            t.parse::<usize>()
                .with_context(|| format!("bad CPU number {t:?} in CPU list {s:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    bail!("bad CPU range {part:?} in CPU list {s:?}");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    Ok(cpus)
}

/// The online CPUs, from /sys/devices/system/cpu/online.
pub fn online_cpus() -> Result<Vec<usize>> {
    let s = fs::read_to_string(ONLINE).with_context(|| format!("reading {ONLINE}"))?;
    parse_cpu_list(&s).with_context(|| format!("parsing {ONLINE}"))
}

/// Pins the calling thread to `cpu` and checks it now runs there.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} does not fit in a cpu_set_t");
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it
    // and sched_setaffinity(0, ...) affects the calling thread only.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("sched_setaffinity to CPU {cpu}"));
    }
    let now = current_cpu()?;
    if now != cpu {
        bail!("pinned to CPU {cpu} but running on CPU {now}");
    }
    Ok(())
}

/// The CPU the calling thread runs on right now.
pub fn current_cpu() -> Result<usize> {
    // SAFETY: no arguments, no memory touched.
    let ret = unsafe { libc::sched_getcpu() };
    if ret < 0 {
        return Err(io::Error::last_os_error()).context("sched_getcpu");
    }
    Ok(ret as usize)
}

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() as u32 }
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-1,4,6-7").unwrap(), vec![0, 1, 4, 6, 7]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
