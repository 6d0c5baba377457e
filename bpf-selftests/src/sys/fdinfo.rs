//! `/proc/self/fdinfo/<fd>` of BPF objects: `key:\tvalue` lines, and the
//! global allocator counters of a program (patches/global-ma 0004):
//!
//! ```text
//! global_ma_allocs:<TAB>N
//! global_ma_frees:<TAB>N
//! global_ma_alloc_fails:<TAB>N
//! ```
//!
//! present only for programs that call kfuncs using the global allocator.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::{bail, Context, Result};

/// All `key: value` pairs of an fdinfo file, values trimmed.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((k, v)) = line.split_once(':') else {
            bail!("fdinfo line {line:?} has no ':'");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// The fdinfo of one of our own file descriptors.
pub fn read(fd: BorrowedFd<'_>) -> Result<BTreeMap<String, String>> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse(&text).with_context(|| format!("parsing {path}"))
}

/// A program's global allocator counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgGlobalMa {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_fails: u64,
}

impl fmt::Display for ProgGlobalMa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocs {} frees {} alloc_fails {}",
            self.allocs, self.frees, self.alloc_fails
        )
    }
}

const KEYS: [&str; 3] = [
    "global_ma_allocs",
    "global_ma_frees",
    "global_ma_alloc_fails",
];

/// The counters, or None when the program has none (no line at all).
/// Some but not all of the lines is an error.
pub fn prog_global_ma(fields: &BTreeMap<String, String>) -> Result<Option<ProgGlobalMa>> {
    let vals: Vec<Option<&String>> = KEYS.iter().map(|k| fields.get(*k)).collect();
    if vals.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut nums = [0u64; 3];
    for (i, v) in vals.iter().enumerate() {
        let v = v.with_context(|| format!("fdinfo has some global_ma lines but no {}", KEYS[i]))?;
        nums[i] = v
            .parse()
            .with_context(|| format!("fdinfo {}: {v:?} is not a number", KEYS[i]))?;
    }
    Ok(Some(ProgGlobalMa {
        allocs: nums[0],
        frees: nums[1],
        alloc_fails: nums[2],
    }))
}

/// The global allocator counters of the program behind `fd`.
pub fn read_prog_global_ma(fd: BorrowedFd<'_>) -> Result<Option<ProgGlobalMa>> {
    prog_global_ma(&read(fd)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1053\n\
prog_type:\t26\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\n\
prog_id:\t12\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t0\nverified_insns:\t41\n\
global_ma_allocs:\t7\nglobal_ma_frees:\t3\nglobal_ma_alloc_fails:\t0\n";

    #[test]
    fn parses_prog_fdinfo() {
        let f = parse(PROG).unwrap();
        assert_eq!(f["prog_id"], "12");
        assert_eq!(f["prog_tag"], "0123456789abcdef");
        assert_eq!(
            prog_global_ma(&f).unwrap(),
            Some(ProgGlobalMa {
                allocs: 7,
                frees: 3,
                alloc_fails: 0
            })
        );
    }

    #[test]
    fn absent_and_partial() {
        let f = parse("prog_id:\t3\nrun_cnt:\t0\n").unwrap();
        assert_eq!(prog_global_ma(&f).unwrap(), None);
        let f = parse("global_ma_allocs:\t1\nglobal_ma_frees:\t1\n").unwrap();
        assert!(prog_global_ma(&f).is_err());
        let f = parse("global_ma_allocs:\tx\nglobal_ma_frees:\t1\nglobal_ma_alloc_fails:\t0\n")
            .unwrap();
        assert!(prog_global_ma(&f).is_err());
        assert!(parse("no colon here\n").is_err());
    }
}
