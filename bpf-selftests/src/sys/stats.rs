//! The global BPF memory allocator's counters in debugfs
//! (`/sys/kernel/debug/bpf_global_ma/stats`, patches/global-ma 0004):
//!
//! ```text
//! cpu<N> alloc <a> free <f> alloc_fail <x> refill <r> refill_objs <o>
//! ...
//! total alloc <a> free <f> alloc_fail <x> refill <r> refill_objs <o> in_use <u>
//! ```
//!
//! Fields are looked up by name (the kernel may append new ones), and a
//! snapshot can be checked for internal consistency (the total line is the
//! sum of the CPU lines, `in_use` is `alloc - free`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;

use anyhow::{bail, Context, Result};

pub const STATS_PATH: &str = "/sys/kernel/debug/bpf_global_ma/stats";

/// A group of fields of one stats line, read by name: the struct, its
/// `parse` (each field must be there and a number), `add` (field by field,
/// wrapping) and `Display` (`name value ...` in declaration order). With
/// `since -> Delta`, also `Delta` (the same fields as i64, displayed with
/// their sign) and `since` returning it; with `since -> Self`, `since` is
/// the wrapping difference of every field.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($field:ident: $ty:ty),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $(pub $field: $ty,)+
        }

        impl $name {
            /// The field names, as the stats file spells them.
            #[cfg(test)]
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// The group's fields of one line (other fields are ignored).
            fn parse(f: &BTreeMap<&str, &str>, label: &str) -> Result<$name> {
                Ok($name {
                    $($field: num(f, label, stringify!($field))?,)+
                })
            }

            // Not every group is summed.
            #[allow(dead_code)]
            fn add(&mut self, o: &$name) {
                $(self.$field = self.$field.wrapping_add(o.$field);)+
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let words = [$(format!("{} {}", stringify!($field), self.$field)),+];
                f.write_str(&words.join(" "))
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($field:ident: $ty:ty),+ $(,)? }
        since -> Self
    ) => {
        counters! { $(#[$meta])* pub struct $name { $($field: $ty),+ } }

        impl $name {
            /// `self - before`, field by field.
            pub fn since(&self, before: &$name) -> $name {
                $name {
                    $($field: self.$field.wrapping_sub(before.$field),)+
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($field:ident: u64),+ $(,)? }
        since -> $delta:ident
    ) => {
        counters! { $(#[$meta])* pub struct $name { $($field: u64),+ } }

        /// `after - before` of every counter.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $delta {
            $(pub $field: i64,)+
        }

        impl $name {
            /// `self - before`.
            pub fn since(&self, before: &$name) -> $delta {
                $delta {
                    $($field: sub(self.$field, before.$field),)+
                }
            }
        }

        impl fmt::Display for $delta {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let words = [$(format!("{} {:+}", stringify!($field), self.$field)),+];
                f.write_str(&words.join(" "))
            }
        }
    };
}

counters! {
    /// The counters of one line (one CPU, or the total).
    pub struct Counters {
        alloc: u64,
        free: u64,
        alloc_fail: u64,
        refill: u64,
        refill_objs: u64,
    }
    since -> Delta
}

counters! {
    /// The reserve fields of the stats lines (patches/global-ma 0008, 0010):
    /// `prefill trim trim_objs reserved cached`, on every CPU line and the
    /// total line. `reserved` and `cached` are gauges.
    pub struct ReserveCounters {
        prefill: u64,
        trim: u64,
        trim_objs: u64,
        reserved: i64,
        cached: i64,
    }
}

counters! {
    /// The busy-list and NMI fields of the stats lines (patches/global-ma
    /// 0013): `alloc_busy free_busy nmi_alloc nmi_alloc_fail nmi_free`,
    /// subsets of `alloc_fail`, `free`, `alloc`, `alloc_fail` and `free`.
    pub struct NmiCounters {
        alloc_busy: u64,
        free_busy: u64,
        nmi_alloc: u64,
        nmi_alloc_fail: u64,
        nmi_free: u64,
    }
    since -> Self
}

fn sub(after: u64, before: u64) -> i64 {
    after.wrapping_sub(before) as i64
}

/// One reading of the stats file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// By CPU number (every possible CPU has a line).
    pub cpus: BTreeMap<usize, Counters>,
    pub total: Counters,
    pub in_use: i64,
    /// Frees refused by the debug mode, when the kernel has it.
    pub bad_free: Option<u64>,
    /// Whether alloc and free (and their NMI subsets) are being counted:
    /// the kernel counts them only while BPF stats are enabled
    /// (`kernel.bpf_stats_enabled`, see [`set_counting`]). None for a
    /// kernel that always counts.
    pub counting: Option<bool>,
}

/// The sysctl that turns the allocator's alloc/free counting on (with the
/// programs' run-time stats; patches/global-ma 0004).
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the counting that the selftests' alloc/free deltas need on or off.
pub fn set_counting(on: bool) -> Result<()> {
    let v = if on { "1" } else { "0" };
    fs::write(BPF_STATS_SYSCTL, v).with_context(|| format!("writing {v} to {BPF_STATS_SYSCTL}"))
}

/// One group of fields of one reading of the stats file, by CPU and in
/// total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerCpu<C> {
    pub cpus: BTreeMap<usize, C>,
    pub total: C,
}

/// The reserve fields of one reading of the stats file.
pub type ReserveStats = PerCpu<ReserveCounters>;
/// The NMI fields of one reading of the stats file.
pub type NmiStats = PerCpu<NmiCounters>;

/// The `name value` pairs after a line's label.
fn fields<'a>(label: &str, rest: &[&'a str]) -> Result<BTreeMap<&'a str, &'a str>> {
    if !rest.len().is_multiple_of(2) {
        bail!("line {label:?}: odd number of words after the label (not name/value pairs)");
    }
    let mut map = BTreeMap::new();
    for pair in rest.chunks(2) {
        if map.insert(pair[0], pair[1]).is_some() {
            bail!("line {label:?}: field {:?} twice", pair[0]);
        }
    }
    Ok(map)
}

fn num<T: std::str::FromStr>(f: &BTreeMap<&str, &str>, label: &str, name: &str) -> Result<T> {
    let v = f
        .get(name)
        .with_context(|| format!("line {label:?}: no field {name:?}"))?;
    v.parse()
        .map_err(|_| anyhow::anyhow!("line {label:?}: field {name} = {v:?} is not a number"))
}

/// A field a kernel may not print yet: None when absent.
fn optional(f: &BTreeMap<&str, &str>, label: &str, name: &str) -> Result<Option<u64>> {
    f.contains_key(name)
        .then(|| num(f, label, name))
        .transpose()
}

/// One line of the stats file: its label, its CPU (None for `total`) and
/// its `name value` pairs.
type Line<'a> = (&'a str, Option<usize>, BTreeMap<&'a str, &'a str>);

/// The non-empty lines of the stats file, labels checked.
fn lines(text: &str) -> Result<Vec<Line<'_>>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&label, rest)) = words.split_first() else {
            continue;
        };
        let cpu = if label == "total" {
            None
        } else if let Some(n) = label.strip_prefix("cpu") {
            Some(
                n.parse()
                    .map_err(|_| anyhow::anyhow!("bad CPU label {label:?}"))?,
            )
        } else {
            bail!("unknown line label {label:?}");
        };
        out.push((label, cpu, fields(label, rest)?));
    }
    Ok(out)
}

/// One group of fields, `group(fields, label)`, of every CPU line and of
/// the (last) total line.
fn by_cpu<T>(
    text: &str,
    group: impl Fn(&BTreeMap<&str, &str>, &str) -> Result<T>,
) -> Result<(BTreeMap<usize, T>, T)> {
    let mut cpus = BTreeMap::new();
    let mut total = None;
    for (label, cpu, f) in lines(text)? {
        let g = group(&f, label)?;
        match cpu {
            Some(c) => {
                cpus.insert(c, g);
            }
            None => total = Some(g),
        }
    }
    let Some(total) = total else {
        bail!("no total line");
    };
    Ok((cpus, total))
}

impl Stats {
    /// Reads and parses the debugfs file.
    pub fn read() -> Result<Stats> {
        let text = fs::read_to_string(STATS_PATH).with_context(|| {
            format!(
                "reading {STATS_PATH} (is debugfs mounted, and the global allocator with \
                 its counters set up?)"
            )
        })?;
        Stats::parse(&text).with_context(|| format!("parsing {STATS_PATH}:\n{text}"))
    }

    pub fn parse(text: &str) -> Result<Stats> {
        let mut cpus = BTreeMap::new();
        let mut total = None;
        for (label, cpu, f) in lines(text)? {
            if total.is_some() {
                bail!("line {label:?} after the total line");
            }
            match cpu {
                None => {
                    total = Some((
                        Counters::parse(&f, label)?,
                        num::<i64>(&f, label, "in_use")?,
                        optional(&f, label, "bad_free")?,
                        optional(&f, label, "counting")?,
                    ));
                }
                Some(cpu) => {
                    if cpus.insert(cpu, Counters::parse(&f, label)?).is_some() {
                        bail!("two lines for CPU {cpu}");
                    }
                }
            }
        }
        let Some((total, in_use, bad_free, counting)) = total else {
            bail!("no total line");
        };
        if cpus.is_empty() {
            bail!("no per-CPU lines");
        }
        Ok(Stats {
            cpus,
            total,
            in_use,
            bad_free,
            counting: counting.map(|c| c != 0),
        })
    }

    /// The counters of `cpu` (all zero for a CPU without a line).
    pub fn cpu(&self, cpu: usize) -> Counters {
        self.cpus.get(&cpu).copied().unwrap_or_default()
    }

    /// The file's own arithmetic: total = sum of the CPU lines, in_use =
    /// alloc - free. Returns what does not add up.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut sum = Counters::default();
        for c in self.cpus.values() {
            sum.add(c);
        }
        let mut bad = Vec::new();
        if self.counting == Some(false) {
            bad.push(format!(
                "counting 0: alloc and free are not counted (is {BPF_STATS_SYSCTL} 1?)"
            ));
        }
        if sum != self.total {
            bad.push(format!(
                "total line ({}) is not the sum of the CPU lines ({sum})",
                self.total
            ));
        }
        let derived = sub(self.total.alloc, self.total.free);
        if derived != self.in_use {
            bad.push(format!(
                "in_use {} is not alloc - free = {derived}",
                self.in_use
            ));
        }
        bad
    }

    /// Per-CPU deltas `self - before` for every CPU either reading has.
    pub fn cpu_deltas(&self, before: &Stats) -> BTreeMap<usize, Delta> {
        self.cpus
            .keys()
            .chain(before.cpus.keys())
            .map(|&c| (c, self.cpu(c).since(&before.cpu(c))))
            .collect()
    }
}

impl<C: Copy + Default> PerCpu<C> {
    /// The group's fields of `cpu` (all zero for a CPU without a line).
    pub fn cpu(&self, cpu: usize) -> C {
        self.cpus.get(&cpu).copied().unwrap_or_default()
    }
}

impl ReserveStats {
    /// Parses the reserve fields of a stats file's text (the other
    /// fields are ignored: see `Stats::parse`).
    pub fn parse(text: &str) -> Result<ReserveStats> {
        let (cpus, total) = by_cpu(text, ReserveCounters::parse)?;
        Ok(PerCpu { cpus, total })
    }

    /// The total line is the sum of the CPU lines.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut sum = ReserveCounters::default();
        for c in self.cpus.values() {
            sum.add(c);
        }
        // cached is read without synchronization, line by line: only the
        // counters that move in process context are compared.
        let mut bad = Vec::new();
        if (sum.prefill, sum.reserved) != (self.total.prefill, self.total.reserved) {
            bad.push(format!(
                "total line ({}) is not the sum of the CPU lines ({sum})",
                self.total
            ));
        }
        bad
    }
}

/// Reads the stats file once and parses both the counters and the
/// reserve fields.
pub fn read_with_reserve() -> Result<(Stats, ReserveStats)> {
    let text = fs::read_to_string(STATS_PATH).with_context(|| format!("reading {STATS_PATH}"))?;
    let s = Stats::parse(&text).with_context(|| format!("parsing {STATS_PATH}:\n{text}"))?;
    let r = ReserveStats::parse(&text)
        .with_context(|| format!("parsing the reserve fields of {STATS_PATH}:\n{text}"))?;
    Ok((s, r))
}

impl NmiStats {
    /// Parses the NMI fields of a stats file's text (other fields are
    /// ignored).
    pub fn parse(text: &str) -> Result<NmiStats> {
        let (cpus, total) = by_cpu(text, NmiCounters::parse)?;
        Ok(PerCpu { cpus, total })
    }
}

/// A field of the total line, None when this kernel does not print it
/// (e.g. `bad_free`, patches/global-ma 0016).
pub fn total_field(text: &str, name: &str) -> Result<Option<u64>> {
    let (_, total) = by_cpu(text, |f, label| optional(f, label, name))?;
    Ok(total)
}

/// `total_field` of a fresh reading of the stats file.
pub fn read_total_field(name: &str) -> Result<Option<u64>> {
    let text = fs::read_to_string(STATS_PATH).with_context(|| format!("reading {STATS_PATH}"))?;
    total_field(&text, name).with_context(|| format!("parsing {STATS_PATH}:\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
cpu0 alloc 12 free 10 alloc_fail 0 refill 1 refill_objs 48
cpu1 alloc 3 free 4 alloc_fail 2 refill 0 refill_objs 0
total alloc 15 free 14 alloc_fail 2 refill 1 refill_objs 48 in_use 1
";

    #[test]
    fn parses_by_name() {
        let s = Stats::parse(SAMPLE).unwrap();
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpu(0).alloc, 12);
        assert_eq!(s.cpu(1).alloc_fail, 2);
        assert_eq!(s.cpu(7), Counters::default());
        assert_eq!(s.total.refill_objs, 48);
        assert_eq!(s.in_use, 1);
        assert!(s.inconsistencies().is_empty());
    }

    #[test]
    fn field_order_and_new_fields_do_not_matter() {
        let s = Stats::parse(
            "cpu0 free 1 alloc 2 nmi_alloc 9 alloc_fail 0 refill 0 refill_objs 0\n\
             total in_use 1 alloc 2 free 1 alloc_fail 0 refill 0 refill_objs 0 nmi_alloc 9\n",
        )
        .unwrap();
        assert_eq!(s.cpu(0).alloc, 2);
        assert_eq!(s.cpu(0).free, 1);
        assert_eq!(s.in_use, 1);
    }

    #[test]
    fn negative_in_use_parses() {
        let s = Stats::parse(
            "cpu0 alloc 0 free 1 alloc_fail 0 refill 0 refill_objs 0\n\
             total alloc 0 free 1 alloc_fail 0 refill 0 refill_objs 0 in_use -1\n",
        )
        .unwrap();
        assert_eq!(s.in_use, -1);
        assert!(s.inconsistencies().is_empty());
    }

    #[test]
    fn rejects_malformed() {
        assert!(Stats::parse("").is_err());
        assert!(Stats::parse("cpu0 alloc 1 free 0 alloc_fail 0 refill 0 refill_objs 0\n").is_err());
        assert!(Stats::parse(
            "total alloc 1 free 0 alloc_fail 0 refill 0 refill_objs 0 in_use 1\n"
        )
        .is_err());
        // missing field
        assert!(Stats::parse(
            "cpu0 alloc 1 free 0 alloc_fail 0 refill 0\n\
             total alloc 1 free 0 alloc_fail 0 refill 0 refill_objs 0 in_use 1\n"
        )
        .is_err());
        // odd pairs, bad number, unknown label
        assert!(Stats::parse("cpu0 alloc\n").is_err());
        assert!(Stats::parse(
            "cpu0 alloc x free 0 alloc_fail 0 refill 0 refill_objs 0\n\
             total alloc 1 free 0 alloc_fail 0 refill 0 refill_objs 0 in_use 1\n"
        )
        .is_err());
        assert!(Stats::parse("node0 alloc 1\n").is_err());
    }

    #[test]
    fn inconsistencies_are_named() {
        let s = Stats::parse(
            "cpu0 alloc 2 free 0 alloc_fail 0 refill 0 refill_objs 0\n\
             total alloc 3 free 0 alloc_fail 0 refill 0 refill_objs 0 in_use 2\n",
        )
        .unwrap();
        assert_eq!(s.inconsistencies().len(), 2);
    }

    #[test]
    fn counting_off_is_named() {
        let text = |c: u8| {
            format!(
                "cpu0 alloc 0 free 0 alloc_fail 0 refill 0 refill_objs 0\n\
                 total alloc 0 free 0 alloc_fail 0 refill 0 refill_objs 0 in_use 0 counting {c}\n"
            )
        };
        let off = Stats::parse(&text(0)).unwrap();
        assert_eq!(off.counting, Some(false));
        let bad = off.inconsistencies();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("bpf_stats_enabled"), "{bad:?}");
        let on = Stats::parse(&text(1)).unwrap();
        assert_eq!(on.counting, Some(true));
        assert!(on.inconsistencies().is_empty());
        assert_eq!(Stats::parse(SAMPLE).unwrap().counting, None);
    }

    #[test]
    fn deltas() {
        let a = Stats::parse(SAMPLE).unwrap();
        let b = Stats::parse(
            "cpu0 alloc 13 free 10 alloc_fail 0 refill 1 refill_objs 48\n\
             cpu1 alloc 3 free 5 alloc_fail 2 refill 0 refill_objs 0\n\
             total alloc 16 free 15 alloc_fail 2 refill 1 refill_objs 48 in_use 1\n",
        )
        .unwrap();
        let d = b.cpu_deltas(&a);
        assert_eq!(d[&0].alloc, 1);
        assert_eq!(d[&1].free, 1);
        assert_eq!(b.total.since(&a.total).free, 1);
        assert_eq!(
            d[&0].to_string(),
            "alloc +1 free +0 alloc_fail +0 refill +0 refill_objs +0"
        );
    }

    #[test]
    fn total_fields() {
        let text = "cpu0 alloc 1 bad_free 2\ntotal alloc 1 bad_free 2\n";
        assert_eq!(total_field(text, "bad_free").unwrap(), Some(2));
        assert_eq!(total_field(SAMPLE, "bad_free").unwrap(), None);
        assert!(total_field("cpu0 alloc 1\n", "alloc").is_err());
        assert!(total_field("total bad_free x\n", "bad_free").is_err());
    }

    #[test]
    fn nmi_fields() {
        let text = "\
cpu0 alloc 5 free 5 alloc_fail 2 refill 0 refill_objs 0 alloc_busy 1 free_busy 0 nmi_alloc 4 nmi_alloc_fail 2 nmi_free 3
total alloc 5 free 5 alloc_fail 2 refill 0 refill_objs 0 in_use 0 alloc_busy 1 free_busy 0 nmi_alloc 4 nmi_alloc_fail 2 nmi_free 3
";
        let n = NmiStats::parse(text).unwrap();
        assert_eq!(n.cpu(0).nmi_alloc, 4);
        assert_eq!(n.cpu(0).alloc_busy, 1);
        assert_eq!(n.total.nmi_free, 3);
        assert_eq!(n.cpu(3), NmiCounters::default());
        let later = NmiStats::parse(&text.replace("nmi_alloc 4", "nmi_alloc 10")).unwrap();
        assert_eq!(later.cpu(0).since(&n.cpu(0)).nmi_alloc, 6);
        // a kernel without the NMI fields
        assert!(NmiStats::parse(SAMPLE).is_err());
    }

    #[test]
    fn each_group_parses_its_own_fields_by_name() {
        // Every field of every group, in reverse, each with its own value.
        let names: Vec<&str> = Counters::FIELDS
            .iter()
            .chain(ReserveCounters::FIELDS)
            .chain(NmiCounters::FIELDS)
            .rev()
            .copied()
            .collect();
        let value = |name: &str| names.iter().position(|&n| n == name).unwrap() as u64 + 100;
        let pairs: Vec<String> = names.iter().map(|&n| format!("{n} {}", value(n))).collect();
        let line = pairs.join(" ");
        let words: Vec<&str> = line.split_whitespace().collect();
        let f = fields("cpu0", &words).unwrap();

        let c = Counters::parse(&f, "cpu0").unwrap();
        assert_eq!(
            [c.alloc, c.free, c.alloc_fail, c.refill, c.refill_objs],
            ["alloc", "free", "alloc_fail", "refill", "refill_objs"].map(value)
        );
        let r = ReserveCounters::parse(&f, "cpu0").unwrap();
        assert_eq!(
            [r.prefill, r.trim, r.trim_objs],
            ["prefill", "trim", "trim_objs"].map(value)
        );
        assert_eq!(
            [r.reserved, r.cached],
            ["reserved", "cached"].map(|n| value(n) as i64)
        );
        let m = NmiCounters::parse(&f, "cpu0").unwrap();
        assert_eq!(
            [
                m.alloc_busy,
                m.free_busy,
                m.nmi_alloc,
                m.nmi_alloc_fail,
                m.nmi_free
            ],
            [
                "alloc_busy",
                "free_busy",
                "nmi_alloc",
                "nmi_alloc_fail",
                "nmi_free"
            ]
            .map(value)
        );

        let text = format!("cpu0 {line}\ntotal {line}\n");
        let nmi = NmiStats::parse(&text).unwrap();
        assert_eq!((nmi.cpu(0), nmi.total), (m, m));
        let res = ReserveStats::parse(&text).unwrap();
        assert_eq!((res.cpu(0), res.total), (r, r));
    }

    #[test]
    fn display_is_the_stats_line_format() {
        let c = Counters {
            alloc: 1,
            free: 2,
            alloc_fail: 3,
            refill: 4,
            refill_objs: 5,
        };
        assert_eq!(
            c.to_string(),
            "alloc 1 free 2 alloc_fail 3 refill 4 refill_objs 5"
        );
        let r = ReserveCounters {
            reserved: -3,
            ..ReserveCounters::default()
        };
        assert_eq!(
            r.to_string(),
            "prefill 0 trim 0 trim_objs 0 reserved -3 cached 0"
        );
        // What Display writes parses back to the same counters.
        for text in [c.to_string(), r.to_string()] {
            let words: Vec<&str> = text.split_whitespace().collect();
            let f = fields("cpu0", &words).unwrap();
            if let Ok(back) = Counters::parse(&f, "cpu0") {
                assert_eq!(back, c);
            } else {
                assert_eq!(ReserveCounters::parse(&f, "cpu0").unwrap(), r);
            }
        }
        assert_eq!(
            Counters::default().since(&c).to_string(),
            "alloc -1 free -2 alloc_fail -3 refill -4 refill_objs -5"
        );
    }

    #[test]
    fn a_missing_or_bad_field_is_named() {
        let f = fields("cpu2", &["alloc", "1", "free", "x"]).unwrap();
        let e = format!("{:#}", Counters::parse(&f, "cpu2").unwrap_err());
        assert_eq!(e, "line \"cpu2\": field free = \"x\" is not a number");
        let f = fields("cpu2", &["alloc", "1", "free", "2"]).unwrap();
        let e = format!("{:#}", Counters::parse(&f, "cpu2").unwrap_err());
        assert_eq!(e, "line \"cpu2\": no field \"alloc_fail\"");
        let f = fields("total", &["alloc_busy", "1"]).unwrap();
        let e = format!("{:#}", NmiCounters::parse(&f, "total").unwrap_err());
        assert_eq!(e, "line \"total\": no field \"free_busy\"");
        let f = fields("cpu0", &["reserved", "-1", "prefill", "-1"]).unwrap();
        assert!(
            ReserveCounters::parse(&f, "cpu0").is_err(),
            "prefill is unsigned"
        );
    }

    #[test]
    fn nmi_since_wraps_field_by_field() {
        let a = NmiCounters {
            nmi_alloc: 5,
            ..NmiCounters::default()
        };
        let b = NmiCounters {
            nmi_alloc: 7,
            free_busy: 1,
            ..NmiCounters::default()
        };
        assert_eq!(b.since(&a).nmi_alloc, 2);
        assert_eq!(b.since(&a).free_busy, 1);
        assert_eq!(a.since(&b).nmi_alloc, u64::MAX - 1);
    }

    #[test]
    fn reserve_fields() {
        let text = "\
cpu0 alloc 0 free 0 alloc_fail 0 refill 0 refill_objs 0 prefill 1000 trim 1 trim_objs 7 reserved 1000 cached 1036
cpu1 alloc 0 free 0 alloc_fail 0 refill 0 refill_objs 0 prefill 1000 trim 0 trim_objs 0 reserved 1000 cached 1036
total alloc 0 free 0 alloc_fail 0 refill 0 refill_objs 0 in_use 0 prefill 2000 trim 1 trim_objs 7 reserved 2000 cached 2072
";
        let r = ReserveStats::parse(text).unwrap();
        assert_eq!(r.cpu(0).trim_objs, 7);
        assert_eq!(r.cpu(1).reserved, 1000);
        assert_eq!(r.total.cached, 2072);
        assert!(r.inconsistencies().is_empty());
        // the old counters still parse from the same text
        assert_eq!(Stats::parse(text).unwrap().in_use, 0);
        // a kernel without the reserve fields
        assert!(ReserveStats::parse(SAMPLE).is_err());
        let bad = ReserveStats::parse(&text.replace("prefill 2000", "prefill 2001")).unwrap();
        assert_eq!(bad.inconsistencies().len(), 1);
    }
}
