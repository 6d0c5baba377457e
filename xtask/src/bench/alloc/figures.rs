//! The guest's figures, read back from ktap.log: the `# bench: <kind>
//! k=v ...` diagnostic lines of the KTAP tests the guest runs with
//! `rig.bench=alloc` (bpf-selftests/src/bench/alloc.rs documents the
//! lines), checked complete: every size, mode and repetition the setup line
//! announces must be there exactly once.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::judge::ktap::{self, Status};

/// The guest's KTAP tests in `rig.bench=alloc` mode.
pub const TESTS: [&str; 3] = ["bench_alloc", "bench_alloc_nmi", "bench_prefill"];
/// Modes of the kernel's bench file, the reference first.
pub const MODES: [&str; 5] = ["kmalloc", "global", "global_counted", "cache", "nmi"];
/// Objects per CPU the guest times the prefill with.
pub const PREFILL_COUNTS: [u32; 2] = [1_000, 100_000];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// The CPU the guest pinned its thread to.
    pub cpu: u32,
    pub online: u32,
    pub sizes: Vec<u32>,
    pub reps: u32,
    pub loops: u64,
    pub batch: u32,
    pub warmup: u32,
}

/// One write to the kernel's bench file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocRun {
    pub mode: String,
    pub size: u32,
    pub rep: u32,
    pub loops: u64,
    pub batch: u32,
    /// Total over the loops.
    pub ns: u64,
    pub fails: u64,
}

impl AllocRun {
    pub fn ns_per_op(&self) -> f64 {
        self.ns as f64 / self.loops as f64
    }
}

/// One timed creation of a BPF_MAP_TYPE_GLOBAL_MA_RESERVE map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefillRun {
    pub size: u32,
    pub count: u32,
    pub rep: u32,
    pub unit_size: u32,
    pub ns: u64,
}

/// A prefill over the per-CPU reserve limit, refused as documented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub size: u32,
    pub count: u32,
    pub unit_size: u32,
    pub errno: String,
    pub limit: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    pub setup: Setup,
    pub allocs: Vec<AllocRun>,
    pub prefills: Vec<PrefillRun>,
    pub refusals: Vec<Refusal>,
}

impl Figures {
    fn allocs_of<'a>(&'a self, mode: &'a str, size: u32) -> impl Iterator<Item = &'a AllocRun> {
        self.allocs
            .iter()
            .filter(move |a| a.mode == mode && a.size == size)
    }

    /// ns per alloc+free, one per repetition.
    pub fn ns_per_op(&self, mode: &str, size: u32) -> Vec<f64> {
        self.allocs_of(mode, size)
            .map(AllocRun::ns_per_op)
            .collect()
    }

    /// Failed allocations, one count per repetition.
    pub fn fails(&self, mode: &str, size: u32) -> Vec<u64> {
        self.allocs_of(mode, size).map(|a| a.fails).collect()
    }

    /// Seconds of each timed prefill of `count` objects of `size`.
    pub fn prefill_secs(&self, size: u32, count: u32) -> Vec<f64> {
        self.prefills
            .iter()
            .filter(|p| p.size == size && p.count == count)
            .map(|p| p.ns as f64 / 1e9)
            .collect()
    }

    pub fn refusal(&self, size: u32, count: u32) -> Option<&Refusal> {
        self.refusals
            .iter()
            .find(|r| r.size == size && r.count == count)
    }

    /// The unit size the kernel reported for `size`, if any line has it.
    pub fn unit_size(&self, size: u32) -> Option<u32> {
        self.prefills
            .iter()
            .filter(|p| p.size == size)
            .map(|p| p.unit_size)
            .chain(
                self.refusals
                    .iter()
                    .filter(|r| r.size == size)
                    .map(|r| r.unit_size),
            )
            .next()
    }
}

/// One `bench: <kind> k=v ...` line.
pub(super) struct Line<'a> {
    text: &'a str,
    pub kind: &'a str,
    pub fields: BTreeMap<&'a str, &'a str>,
}

impl<'a> Line<'a> {
    pub fn parse(text: &'a str) -> Result<Line<'a>> {
        let f = rig_contract::bench::parse(text)?;
        Ok(Line {
            text,
            kind: f.kind,
            fields: f.fields,
        })
    }

    pub fn str(&self, k: &str) -> Result<&'a str> {
        self.fields
            .get(k)
            .copied()
            .with_context(|| format!("no {k}= in `bench: {}`", self.text))
    }

    pub fn num<T: FromStr>(&self, k: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let v = self.str(k)?;
        v.parse()
            .with_context(|| format!("{k}={v} in `bench: {}` is not a number", self.text))
    }
}

/// The diagnostics of bench test `name`, which must have passed (a failed
/// or crashed test has no figures to trust).
pub(super) fn passed_test<'r>(report: &'r ktap::Report, name: &str) -> Result<&'r [String]> {
    let t = report
        .tests
        .iter()
        .find(|t| t.name == name)
        .with_context(|| format!("the guest reported no KTAP test {name}"))?;
    if t.status != Status::Passed {
        let last: Vec<&str> = t
            .diagnostics
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|d| d.as_str())
            .collect();
        bail!("{name} {}: {}", t.status.name(), last.join(" | "));
    }
    Ok(&t.diagnostics)
}

/// The figures in a bench boot's ktap.log. Every bench test must have
/// passed (a failed or crashed test has no figures to trust).
pub fn parse(ktap_log: &str) -> Result<Figures> {
    let report = ktap::parse(ktap_log);
    let mut setups = Vec::new();
    let mut allocs = Vec::new();
    let mut prefills = Vec::new();
    let mut refusals = Vec::new();
    for name in TESTS {
        for d in passed_test(&report, name)? {
            let Some(text) = rig_contract::bench::strip(d) else {
                continue;
            };
            let l = Line::parse(text).with_context(|| format!("{name}: `{d}`"))?;
            match l.kind {
                "setup" => setups.push(Setup {
                    cpu: l.num("cpu")?,
                    online: l.num("online")?,
                    sizes: l
                        .str("sizes")?
                        .split(',')
                        .map(|s| s.parse::<u32>())
                        .collect::<Result<_, _>>()
                        .with_context(|| format!("sizes in `{d}`"))?,
                    reps: l.num("reps")?,
                    loops: l.num("loops")?,
                    batch: l.num("batch")?,
                    warmup: l.num("warmup")?,
                }),
                "alloc" => allocs.push(AllocRun {
                    mode: l.str("mode")?.to_string(),
                    size: l.num("size")?,
                    rep: l.num("rep")?,
                    loops: l.num("loops")?,
                    batch: l.num("batch")?,
                    ns: l.num("ns")?,
                    fails: l.num("fails")?,
                }),
                "prefill" if l.fields.contains_key("refused") => refusals.push(Refusal {
                    size: l.num("size")?,
                    count: l.num("count")?,
                    unit_size: l.num("unit_size")?,
                    errno: l.str("refused")?.to_string(),
                    limit: l.num("limit")?,
                }),
                "prefill" => prefills.push(PrefillRun {
                    size: l.num("size")?,
                    count: l.num("count")?,
                    rep: l.num("rep")?,
                    unit_size: l.num("unit_size")?,
                    ns: l.num("ns")?,
                }),
                other => bail!("{name}: unknown kind {other:?} in `{d}`"),
            }
        }
    }
    let setup = setups
        .first()
        .cloned()
        .context("the guest printed no `bench: setup` line")?;
    if let Some(other) = setups.iter().find(|s| **s != setup) {
        bail!("the bench tests disagree on their setup: {setup:?} vs {other:?}");
    }
    let f = Figures {
        setup,
        allocs,
        prefills,
        refusals,
    };
    check_complete(&f)?;
    Ok(f)
}

fn check_complete(f: &Figures) -> Result<()> {
    let s = &f.setup;
    for &size in &s.sizes {
        for mode in MODES {
            let mut reps: Vec<u32> = f.allocs_of(mode, size).map(|a| a.rep).collect();
            reps.sort_unstable();
            if reps != (1..=s.reps).collect::<Vec<_>>() {
                bail!(
                    "{mode} at {size} bytes: repetitions {reps:?}, want 1..={}",
                    s.reps
                );
            }
        }
        for count in PREFILL_COUNTS {
            let mut reps: Vec<u32> = f
                .prefills
                .iter()
                .filter(|p| p.size == size && p.count == count)
                .map(|p| p.rep)
                .collect();
            reps.sort_unstable();
            let want = match f.refusal(size, count) {
                Some(_) => Vec::new(),
                None => (1..=s.reps).collect(),
            };
            if reps != want {
                bail!("prefill of {count} x {size} bytes: repetitions {reps:?}, want {want:?}");
            }
        }
    }
    for a in &f.allocs {
        if !s.sizes.contains(&a.size) || !MODES.contains(&a.mode.as_str()) {
            bail!("unexpected figures {a:?} (setup {s:?})");
        }
        let batch = if a.mode == "nmi" { s.batch } else { 0 };
        if a.loops != s.loops || a.batch != batch || a.loops == 0 {
            bail!("{a:?} does not match the setup {s:?}");
        }
        // The guest refuses to report these: a failed allocation is not a pair.
        if a.mode != "nmi" && a.fails != 0 {
            bail!("{} allocations failed in process context: {a:?}", a.fails);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sample() -> String {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test_data/bench/alloc-ktap.log");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn reads_the_recorded_sample() {
        let f = parse(&sample()).unwrap();
        assert_eq!(f.setup.sizes, vec![32, 256]);
        assert_eq!(f.setup.reps, 5);
        assert_eq!(f.allocs.len(), 2 * 5 * 5);
        let global = f.ns_per_op("global", 32);
        assert_eq!(global.len(), 5);
        assert!(global.iter().all(|&x| x > 0.0));
        assert_eq!(f.fails("nmi", 32).len(), 5);
        assert_eq!(f.prefill_secs(32, 1_000).len(), 5);
        assert_eq!(f.unit_size(32), Some(64));
        assert_eq!(f.ns_per_op("kmalloc", 32)[0], 458.04212);
        assert_eq!(f.fails("nmi", 256), vec![0; 5]);
        assert_eq!(f.refusal(256, 100_000).map(|r| r.unit_size), Some(512));
        assert_eq!(f.prefill_secs(256, 100_000), Vec::<f64>::new());
    }

    fn lines(body: &[&str]) -> String {
        let mut s = String::from(
            "KTAP version 1\n1..3\n# plan: bench_alloc bench_alloc_nmi bench_prefill\n",
        );
        let setup = "# bench: setup cpu=0 online=2 sizes=32 reps=1 loops=10 batch=5 warmup=1";
        s.push_str(&format!("# start: bench_alloc\n{setup}\n"));
        for b in body {
            s.push_str(b);
            s.push('\n');
        }
        s.push_str("ok 1 bench_alloc\n");
        s.push_str(&format!(
            "# start: bench_alloc_nmi\n{setup}\nok 2 bench_alloc_nmi\n"
        ));
        s.push_str(&format!(
            "# start: bench_prefill\n{setup}\nok 3 bench_prefill\n"
        ));
        s
    }

    const COMPLETE: [&str; 7] = [
        "# bench: alloc mode=global size=32 rep=1 loops=10 batch=0 ns=100 fails=0",
        "# bench: alloc mode=kmalloc size=32 rep=1 loops=10 batch=0 ns=200 fails=0",
        "# bench: alloc mode=cache size=32 rep=1 loops=10 batch=0 ns=150 fails=0",
        "# bench: alloc mode=global_counted size=32 rep=1 loops=10 batch=0 ns=110 fails=0",
        "# bench: alloc mode=nmi size=32 rep=1 loops=10 batch=5 ns=300 fails=2",
        "# bench: prefill size=32 count=1000 rep=1 unit_size=64 ns=5000",
        "# bench: prefill size=32 count=100000 unit_size=64 refused=E2BIG limit=16777216",
    ];

    #[test]
    fn a_complete_small_run() {
        let f = parse(&lines(&COMPLETE)).unwrap();
        assert_eq!(f.ns_per_op("kmalloc", 32), vec![20.0]);
        assert_eq!(f.fails("nmi", 32), vec![2]);
        assert_eq!(f.prefill_secs(32, 1000), vec![5e-6]);
        assert_eq!(f.refusal(32, 100_000).unwrap().errno, "E2BIG");
    }

    #[test]
    fn missing_or_odd_figures_are_errors() {
        for drop in 0..COMPLETE.len() {
            let mut body = COMPLETE.to_vec();
            body.remove(drop);
            assert!(parse(&lines(&body)).is_err(), "without line {drop}");
        }
        let mut body = COMPLETE.to_vec();
        body.push(COMPLETE[0]);
        assert!(parse(&lines(&body)).is_err(), "a repetition twice");
        body = COMPLETE.to_vec();
        body[1] = "# bench: alloc mode=kmalloc size=32 rep=1 loops=10 batch=0 ns=200 fails=1";
        assert!(parse(&lines(&body)).is_err(), "a process-context failure");
        body = COMPLETE.to_vec();
        body.push("# bench: weird x=1");
        assert!(parse(&lines(&body)).is_err(), "an unknown kind");
        body = COMPLETE.to_vec();
        body[0] = "# bench: alloc mode=global size=32 rep=1 loops=ten batch=0 ns=100 fails=0";
        assert!(parse(&lines(&body)).is_err(), "not a number");
    }

    #[test]
    fn a_failed_or_crashed_bench_test_has_no_figures() {
        let text = lines(&COMPLETE).replace("ok 1 bench_alloc\n", "not ok 1 bench_alloc\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("bench_alloc FAILED"), "{e}");
        let cut = lines(&COMPLETE);
        let cut = &cut[..cut.find("ok 1 bench_alloc").unwrap()];
        assert!(parse(cut).is_err());
    }
}
