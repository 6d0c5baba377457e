//! The global allocator's per-CPU free lists in debugfs
//! (`/sys/kernel/debug/bpf_global_ma/caches`, patches/global-ma 0008 and
//! 0010): one line per possible CPU and size class,
//!
//! ```text
//! cpu<N> unit <bytes> free_cnt <n> low <l> high <h> reserve <r>
//! ```
//!
//! where `high` includes `reserve`. Fields are looked up by name; `reserve`
//! (0010) reads as 0 on a kernel that does not print it yet.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;

use anyhow::{bail, Context, Result};

pub const CACHES_PATH: &str = "/sys/kernel/debug/bpf_global_ma/caches";

/// One CPU's free list of one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    pub free_cnt: i64,
    pub low: i64,
    pub high: i64,
    pub reserve: i64,
}

impl Cache {
    /// The watermarks and the reserve, without the free list length
    /// (which moves with every refill and trim).
    pub fn marks(&self) -> (i64, i64, i64) {
        (self.low, self.high, self.reserve)
    }
}

impl fmt::Display for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "free_cnt {} low {} high {} reserve {}",
            self.free_cnt, self.low, self.high, self.reserve
        )
    }
}

/// One reading of the caches file, by (cpu, unit size).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caches {
    pub lines: BTreeMap<(usize, u32), Cache>,
}

impl Caches {
    pub fn read() -> Result<Caches> {
        let text =
            fs::read_to_string(CACHES_PATH).with_context(|| format!("reading {CACHES_PATH}"))?;
        Caches::parse(&text).with_context(|| format!("parsing {CACHES_PATH}:\n{text}"))
    }

    pub fn parse(text: &str) -> Result<Caches> {
        let mut lines = BTreeMap::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some((&label, rest)) = words.split_first() else {
                continue;
            };
            let Some(cpu) = label
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                bail!("line {line:?}: label {label:?} is not cpu<N>");
            };
            if !rest.len().is_multiple_of(2) {
                bail!("line {line:?}: odd number of words after the label");
            }
            let mut f = BTreeMap::new();
            for pair in rest.chunks(2) {
                let v: i64 = pair[1]
                    .parse()
                    .map_err(|_| anyhow::anyhow!("line {line:?}: {} is not a number", pair[1]))?;
                if f.insert(pair[0], v).is_some() {
                    bail!("line {line:?}: field {} twice", pair[0]);
                }
            }
            let get = |k: &str| {
                f.get(k)
                    .copied()
                    .with_context(|| format!("line {line:?}: no field {k:?}"))
            };
            let unit = u32::try_from(get("unit")?).context("unit out of range")?;
            let c = Cache {
                free_cnt: get("free_cnt")?,
                low: get("low")?,
                high: get("high")?,
                reserve: f.get("reserve").copied().unwrap_or(0),
            };
            if lines.insert((cpu, unit), c).is_some() {
                bail!("two lines for cpu{cpu} unit {unit}");
            }
        }
        if lines.is_empty() {
            bail!("no lines");
        }
        Ok(Caches { lines })
    }

    /// The CPUs that have lines (every possible CPU).
    pub fn cpus(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.lines.keys().map(|&(c, _)| c).collect();
        v.dedup();
        v
    }

    pub fn get(&self, cpu: usize, unit: u32) -> Option<Cache> {
        self.lines.get(&(cpu, unit)).copied()
    }

    /// Lines whose watermarks or reserve differ from `before`'s (free_cnt
    /// ignored), described.
    pub fn marks_changed(&self, before: &Caches) -> Vec<String> {
        let mut out = Vec::new();
        for (k, b) in &before.lines {
            match self.lines.get(k) {
                Some(a) if a.marks() == b.marks() => {}
                Some(a) => out.push(format!("cpu{} unit {}: {b} -> {a}", k.0, k.1)),
                None => out.push(format!("cpu{} unit {}: line gone", k.0, k.1)),
            }
        }
        for k in self.lines.keys().filter(|k| !before.lines.contains_key(k)) {
            out.push(format!("cpu{} unit {}: new line", k.0, k.1));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
cpu0 unit 16 free_cnt 4 low 32 high 96 reserve 0
cpu0 unit 64 free_cnt 1005 low 32 high 1096 reserve 1000
cpu1 unit 16 free_cnt 4 low 32 high 96 reserve 0
cpu1 unit 64 free_cnt 64 low 32 high 96 reserve 0
";

    #[test]
    fn parses_by_name() {
        let c = Caches::parse(SAMPLE).unwrap();
        assert_eq!(c.cpus(), vec![0, 1]);
        assert_eq!(
            c.get(0, 64),
            Some(Cache {
                free_cnt: 1005,
                low: 32,
                high: 1096,
                reserve: 1000
            })
        );
        assert_eq!(c.get(2, 64), None);
    }

    #[test]
    fn reserve_optional_and_order_free() {
        let c = Caches::parse("cpu3 high 96 unit 64 low 32 free_cnt 7\n").unwrap();
        assert_eq!(c.get(3, 64).unwrap().reserve, 0);
        assert_eq!(c.get(3, 64).unwrap().free_cnt, 7);
    }

    #[test]
    fn rejects_malformed() {
        assert!(Caches::parse("").is_err());
        assert!(Caches::parse("total unit 64 free_cnt 1 low 1 high 1\n").is_err());
        assert!(Caches::parse("cpu0 unit 64 free_cnt 1 low 1\n").is_err());
        assert!(Caches::parse("cpu0 unit 64 free_cnt x low 1 high 1\n").is_err());
        assert!(Caches::parse("cpu0 unit 64 free_cnt 1 low 1 high\n").is_err());
        assert!(Caches::parse(
            "cpu0 unit 64 free_cnt 1 low 1 high 1\ncpu0 unit 64 free_cnt 1 low 1 high 1\n"
        )
        .is_err());
    }

    #[test]
    fn marks_changed_ignores_free_cnt() {
        let a = Caches::parse(SAMPLE).unwrap();
        let b = Caches::parse(&SAMPLE.replace("free_cnt 64", "free_cnt 50")).unwrap();
        assert!(b.marks_changed(&a).is_empty());
        let c =
            Caches::parse(&SAMPLE.replace("high 1096 reserve 1000", "high 96 reserve 0")).unwrap();
        assert_eq!(c.marks_changed(&a).len(), 1);
    }
}
