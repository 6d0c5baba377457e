//! From the figures to what `bench alloc` prints and records: min and
//! median per measurement, ratios against kmalloc, the goals, the table and
//! bench-alloc.yaml.

use super::figures::{Figures, MODES, PREFILL_COUNTS};
use serde::Serialize;

use crate::bench::report::{median, min, nums, opt, render, three, N};

/// Goal: global alloc+free at most this fraction of kmalloc+kfree (min/min).
pub const GLOBAL_VS_KMALLOC_GOAL: f64 = 0.5;
/// Goal (issue 16): global alloc+free at most this multiple of 6.1's
/// per-size cache, in the same boot (min/min).
pub const GLOBAL_VS_CACHE_GOAL: f64 = 1.10;

/// What each mode of the kernel's bench file times, for the table.
pub(super) fn mode_title(mode: &str, batch: u32) -> String {
    match mode {
        "kmalloc" => "kmalloc(GFP_KERNEL)+kfree".into(),
        "global" => "global alloc+free (bpf_global_ma)".into(),
        "global_counted" => "global alloc+free, BPF stats on (counted)".into(),
        "cache" => "6.1 per-map bpf_mem_alloc+free (cache)".into(),
        "nmi" => format!(
            "global alloc+free in NMI ({} per NMI, reserved)",
            power(batch.into())
        ),
        other => other.into(),
    }
}

/// `10^5` for powers of ten from 100 up, else the number.
pub fn power(n: u64) -> String {
    let mut e = 0;
    let mut x = n;
    while x >= 10 && x.is_multiple_of(10) {
        x /= 10;
        e += 1;
    }
    if x == 1 && e >= 2 {
        format!("10^{e}")
    } else {
        n.to_string()
    }
}

/// One goal and whether it was met.
#[derive(Serialize)]
pub struct Goal {
    pub key: String,
    pub what: String,
    #[serde(serialize_with = "three")]
    pub value: f64,
    pub goal: String,
    pub met: bool,
}

pub struct Summary<'a> {
    pub f: &'a Figures,
    pub goals: Vec<Goal>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

impl Summary<'_> {
    pub fn new(f: &Figures) -> Summary<'_> {
        let mut goals = Vec::new();
        for &size in &f.setup.sizes {
            let global = min(&f.ns_per_op("global", size));
            let kmalloc = min(&f.ns_per_op("kmalloc", size));
            if let Some(r) = ratio(global, kmalloc) {
                goals.push(Goal {
                    key: format!("global_vs_kmalloc_{size}"),
                    what: format!("global / kmalloc alloc+free at {size} bytes (min / min)"),
                    value: r,
                    goal: format!("<= {GLOBAL_VS_KMALLOC_GOAL:.2}x"),
                    met: r <= GLOBAL_VS_KMALLOC_GOAL,
                });
            }
            let cache = min(&f.ns_per_op("cache", size));
            if let Some(r) = ratio(global, cache) {
                goals.push(Goal {
                    key: format!("global_vs_cache_{size}"),
                    what: format!(
                        "global / 6.1 per-map cache alloc+free at {size} bytes (min / min)"
                    ),
                    value: r,
                    goal: format!("<= {GLOBAL_VS_CACHE_GOAL:.2}x"),
                    met: r <= GLOBAL_VS_CACHE_GOAL,
                });
            }
            let fails = f.fails("nmi", size);
            let worst = fails.iter().copied().max().unwrap_or(0);
            goals.push(Goal {
                key: format!("nmi_fails_{size}"),
                what: format!(
                    "failed NMI allocations of {size} bytes in {} allocations within the \
                     reservation (worst of {} runs)",
                    power(f.setup.loops),
                    fails.len()
                ),
                value: worst as f64,
                goal: "0".into(),
                met: worst == 0,
            });
        }
        Summary { f, goals }
    }

    fn goal(&self, key: &str) -> Option<&Goal> {
        self.goals.iter().find(|g| g.key == key)
    }

    /// What the table cannot say in a cell.
    pub fn notes(&self) -> Vec<String> {
        self.f
            .refusals
            .iter()
            .map(|r| {
                format!(
                    "prefill of {} x {} B refused with {} as documented: {} units of {} B \
                     exceed the {} MiB per-CPU reserve limit",
                    power(r.count.into()),
                    r.size,
                    r.errno,
                    power(r.count.into()),
                    r.unit_size,
                    r.limit >> 20
                )
            })
            .collect()
    }

    pub fn table(&self) -> String {
        let f = self.f;
        let head = [
            "measurement",
            "size",
            "min",
            "median",
            "vs kmalloc (min / median)",
            "goal",
            "ok?",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        let ok = |g: Option<&Goal>| match g {
            Some(g) if g.met => "yes".to_string(),
            Some(_) => "MISSED".to_string(),
            None => "-".to_string(),
        };
        for &size in &f.setup.sizes {
            let bytes = format!("{size} B");
            let kmalloc = f.ns_per_op("kmalloc", size);
            for mode in MODES {
                let v = f.ns_per_op(mode, size);
                let vs = match (
                    ratio(min(&v), min(&kmalloc)),
                    ratio(median(&v), median(&kmalloc)),
                ) {
                    (Some(a), Some(b)) => format!("{a:.2}x / {b:.2}x"),
                    _ => "-".into(),
                };
                let (goal, met) = if mode == "global" {
                    let g = self.goal(&format!("global_vs_kmalloc_{size}"));
                    (g.map_or("-".into(), |g| g.goal.clone()), ok(g))
                } else {
                    ("-".into(), "-".into())
                };
                rows.push(vec![
                    mode_title(mode, f.setup.batch),
                    bytes.clone(),
                    ns(min(&v)),
                    ns(median(&v)),
                    vs,
                    goal,
                    met,
                ]);
            }
            let cache = f.ns_per_op("cache", size);
            for mode in ["global", "global_counted"] {
                let v = f.ns_per_op(mode, size);
                let g = (mode == "global")
                    .then(|| self.goal(&format!("global_vs_cache_{size}")))
                    .flatten();
                rows.push(vec![
                    format!("{mode} / per-map cache (min/min, median/median)"),
                    bytes.clone(),
                    times(ratio(min(&v), min(&cache))),
                    times(ratio(median(&v), median(&cache))),
                    "-".into(),
                    g.map_or("-".into(), |g| g.goal.clone()),
                    ok(g),
                ]);
            }
            let fails: Vec<f64> = f.fails("nmi", size).iter().map(|&x| x as f64).collect();
            let g = self.goal(&format!("nmi_fails_{size}"));
            rows.push(vec![
                format!(
                    "NMI allocation failures per {} allocations",
                    power(f.setup.loops)
                ),
                bytes.clone(),
                count(min(&fails)),
                count(median(&fails)),
                "-".into(),
                format!(
                    "{} (max {})",
                    g.map_or("-".into(), |g| g.goal.clone()),
                    count(fails.iter().copied().reduce(f64::max))
                ),
                ok(g),
            ]);
            for n in PREFILL_COUNTS {
                let what = format!("prefill {} objects per CPU", power(n.into()));
                match f.refusal(size, n) {
                    Some(r) => rows.push(vec![
                        what,
                        bytes.clone(),
                        format!("refused: {}", r.errno),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ]),
                    None => {
                        let v = f.prefill_secs(size, n);
                        rows.push(vec![
                            what,
                            bytes.clone(),
                            ms(min(&v)),
                            ms(median(&v)),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                        ]);
                    }
                }
            }
        }
        render(&head, &rows)
    }

    /// bench-alloc.yaml's part for the figures and goals.
    pub fn yaml(&self) -> FiguresYaml<'_> {
        let f = self.f;
        let s = &f.setup;
        let sizes = s
            .sizes
            .iter()
            .map(|&size| {
                let kmalloc = f.ns_per_op("kmalloc", size);
                let alloc_free = MODES
                    .iter()
                    .map(|&mode| {
                        let v = f.ns_per_op(mode, size);
                        ModeYaml {
                            mode,
                            measures: mode_title(mode, s.batch),
                            ns_per_op: nums(&v),
                            min_ns_per_op: opt(min(&v)),
                            median_ns_per_op: opt(median(&v)),
                            vs_kmalloc_min: opt(ratio(min(&v), min(&kmalloc))),
                            vs_kmalloc_median: opt(ratio(median(&v), median(&kmalloc))),
                            fails: f.fails(mode, size),
                        }
                    })
                    .collect();
                let prefill = PREFILL_COUNTS
                    .iter()
                    .map(|&n| PrefillYaml {
                        count_per_cpu: n,
                        outcome: match f.refusal(size, n) {
                            Some(r) => PrefillOutcome::Refused {
                                refused: &r.errno,
                                unit_size: r.unit_size,
                                limit_bytes_per_cpu: r.limit,
                            },
                            None => {
                                // Milliseconds: three decimals of seconds
                                // would round a 10^3-object prefill away.
                                let v: Vec<f64> =
                                    f.prefill_secs(size, n).iter().map(|s| s * 1e3).collect();
                                PrefillOutcome::Timed {
                                    ms: nums(&v),
                                    min_ms: opt(min(&v)),
                                    median_ms: opt(median(&v)),
                                }
                            }
                        },
                    })
                    .collect();
                SizeYaml {
                    size,
                    unit_size: f.unit_size(size),
                    alloc_free,
                    prefill,
                }
            })
            .collect();
        FiguresYaml {
            guest: GuestYaml {
                pinned_cpu: s.cpu,
                online_cpus: s.online,
                loops: s.loops,
                nmi_batch: s.batch,
                repetitions: s.reps,
                warmup_runs: s.warmup,
            },
            sizes,
            goals: &self.goals,
        }
    }
}

/// bench-alloc.yaml's figures and goals.
#[derive(Serialize)]
pub struct FiguresYaml<'a> {
    guest: GuestYaml,
    sizes: Vec<SizeYaml<'a>>,
    goals: &'a [Goal],
}

#[derive(Serialize)]
struct GuestYaml {
    pinned_cpu: u32,
    online_cpus: u32,
    loops: u64,
    nmi_batch: u32,
    repetitions: u32,
    warmup_runs: u32,
}

#[derive(Serialize)]
struct SizeYaml<'a> {
    size: u32,
    unit_size: Option<u32>,
    alloc_free: Vec<ModeYaml>,
    prefill: Vec<PrefillYaml<'a>>,
}

#[derive(Serialize)]
struct ModeYaml {
    mode: &'static str,
    measures: String,
    ns_per_op: Vec<N>,
    min_ns_per_op: Option<N>,
    median_ns_per_op: Option<N>,
    vs_kmalloc_min: Option<N>,
    vs_kmalloc_median: Option<N>,
    fails: Vec<u64>,
}

#[derive(Serialize)]
struct PrefillYaml<'a> {
    count_per_cpu: u32,
    #[serde(flatten)]
    outcome: PrefillOutcome<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PrefillOutcome<'a> {
    Refused {
        refused: &'a str,
        unit_size: u32,
        limit_bytes_per_cpu: u64,
    },
    Timed {
        ms: Vec<N>,
        min_ms: Option<N>,
        median_ms: Option<N>,
    },
}

fn ns(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1} ns"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.2} ms", x * 1e3))
}

fn times(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2}x"))
}

fn count(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

#[cfg(test)]
mod tests {
    use super::super::figures;
    use super::*;

    #[test]
    fn powers_of_ten() {
        assert_eq!(power(1_000_000), "10^6");
        assert_eq!(power(100), "10^2");
        assert_eq!(power(10), "10");
        assert_eq!(power(2_000), "2000");
    }

    #[test]
    fn goals_and_table_of_a_small_run() {
        let text = "KTAP version 1\n1..3\n# plan: bench_alloc bench_alloc_nmi bench_prefill\n\
            # start: bench_alloc\n\
            # bench: setup cpu=0 online=2 sizes=32 reps=1 loops=10 batch=5 warmup=1\n\
            # bench: alloc mode=global size=32 rep=1 loops=10 batch=0 ns=100 fails=0\n\
            # bench: alloc mode=kmalloc size=32 rep=1 loops=10 batch=0 ns=400 fails=0\n\
            # bench: alloc mode=cache size=32 rep=1 loops=10 batch=0 ns=80 fails=0\n\
            # bench: alloc mode=global_counted size=32 rep=1 loops=10 batch=0 ns=120 fails=0\n\
            # bench: alloc mode=nmi size=32 rep=1 loops=10 batch=5 ns=300 fails=2\n\
            ok 1 bench_alloc\n\
            # start: bench_alloc_nmi\nok 2 bench_alloc_nmi\n\
            # start: bench_prefill\n\
            # bench: prefill size=32 count=1000 rep=1 unit_size=64 ns=5000000\n\
            # bench: prefill size=32 count=100000 unit_size=64 refused=E2BIG limit=16777216\n\
            ok 3 bench_prefill\n";
        let f = figures::parse(text).unwrap();
        let s = Summary::new(&f);
        assert_eq!(s.goals.len(), 3);
        assert!(s.goals[0].met, "0.25x <= 0.5x");
        assert_eq!(s.goals[0].value, 0.25);
        assert_eq!(s.goals[1].key, "global_vs_cache_32");
        assert!(!s.goals[1].met, "1.25x > 1.10x");
        assert_eq!(s.goals[1].value, 1.25);
        assert!(!s.goals[2].met, "2 NMI failures");
        let t = s.table();
        let row = |start: &str| -> Vec<String> {
            let line = t.lines().find(|l| l.starts_with(start)).unwrap();
            line.split('|').map(|c| c.trim().to_string()).collect()
        };
        assert_eq!(
            row("global alloc+free (bpf"),
            [
                "global alloc+free (bpf_global_ma)",
                "32 B",
                "10.0 ns",
                "10.0 ns",
                "0.25x / 0.25x",
                "<= 0.50x",
                "yes"
            ]
        );
        assert_eq!(
            row("global / per-map cache")[2..],
            ["1.25x", "1.25x", "-", "<= 1.10x", "MISSED"]
        );
        assert_eq!(
            row("global_counted / per-map cache")[2..],
            ["1.50x", "1.50x", "-", "-", "-"]
        );
        assert_eq!(row("NMI allocation failures")[5..], ["0 (max 2)", "MISSED"]);
        assert_eq!(row("prefill 10^3")[2..4], ["5.00 ms", "5.00 ms"]);
        assert_eq!(row("prefill 10^5")[2], "refused: E2BIG");
        assert_eq!(
            s.notes(),
            [
                "prefill of 10^5 x 32 B refused with E2BIG as documented: 10^5 units of 64 B \
              exceed the 16 MiB per-CPU reserve limit"
            ]
        );
        let y = crate::report::results::to_yaml(&s.yaml()).unwrap();
        assert!(y.contains("vs_kmalloc_min: 0.25\n"), "{y}");
        assert!(y.contains("min_ms: 5.0\n"), "{y}");
        assert!(y.contains("refused: E2BIG\n"), "{y}");
    }
}
