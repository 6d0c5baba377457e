//! The global allocator against 6.1's per-size cache (issue 16's goal:
//! global alloc+free at most 1.10x the cache, in the same boot), on the
//! series kernel with the debug mode compiled in but off
//! (`bpf_global_ma_debug=0`) and, when it was built, with the mode compiled
//! out (kconfigs/gma-nodebug.config): the `global` and `cache` rows of both
//! boots side by side, each with its own global / cache ratio (min / min).
//! The first build's goal is the allocator table's own
//! (`global_vs_cache_<size>`, summary.rs); the second adds
//! `global_vs_cache_<size>_nodebug`.

use serde::Serialize;

use super::figures::Figures;
use super::summary::{Goal, GLOBAL_VS_CACHE_GOAL};
use crate::bench::report::{median, min, opt, render, N};

/// The two ways the series kernel's debug mode is out of the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// CONFIG_BPF_GLOBAL_MA_DEBUG=y, booted with bpf_global_ma_debug=0.
    CompiledInOff,
    /// kconfigs/gma-nodebug.config.
    CompiledOut,
}

impl Build {
    pub fn title(self) -> &'static str {
        match self {
            Build::CompiledInOff => "debug compiled in, off (bpf_global_ma_debug=0)",
            Build::CompiledOut => "debug compiled out (gma-nodebug)",
        }
    }

    pub(super) fn key_suffix(self) -> &'static str {
        match self {
            Build::CompiledInOff => "",
            Build::CompiledOut => "_nodebug",
        }
    }

    pub(super) fn yaml_name(self) -> &'static str {
        match self {
            Build::CompiledInOff => "compiled_in_off",
            Build::CompiledOut => "compiled_out",
        }
    }
}

/// What the comparison has of each build.
pub enum Side<'a> {
    Measured(&'a Figures),
    NotMeasured(&'a str),
}

pub struct DebugModes<'a> {
    pub sides: Vec<(Build, Side<'a>)>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

/// Global / cache at `size` in one build's boot, judged (min / min).
fn goal(build: Build, f: &Figures, size: u32) -> Option<Goal> {
    let r = ratio(
        min(&f.ns_per_op("global", size)),
        min(&f.ns_per_op("cache", size)),
    )?;
    Some(Goal {
        key: format!("global_vs_cache_{size}{}", build.key_suffix()),
        what: format!(
            "global / per-size cache alloc+free at {size} bytes, {} (min / min)",
            build.title()
        ),
        value: r,
        goal: format!("<= {GLOBAL_VS_CACHE_GOAL:.2}x"),
        met: r <= GLOBAL_VS_CACHE_GOAL,
    })
}

impl DebugModes<'_> {
    /// The goals this comparison adds: those of the builds other than the
    /// allocator table's own (compiled in, off), per size.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for (build, side) in &self.sides {
            let Side::Measured(f) = side else { continue };
            if *build == Build::CompiledInOff {
                continue;
            }
            goals.extend(f.setup.sizes.iter().filter_map(|&s| goal(*build, f, s)));
        }
        goals
    }

    pub fn table(&self) -> String {
        let head = [
            "series kernel",
            "size",
            "global (min / median)",
            "cache (min / median)",
            "global / cache (min / median)",
            "goal",
            "ok?",
        ];
        let mut rows = Vec::new();
        for (build, side) in &self.sides {
            match side {
                Side::Measured(f) => {
                    for &size in &f.setup.sizes {
                        let g = f.ns_per_op("global", size);
                        let c = f.ns_per_op("cache", size);
                        let goal = goal(*build, f, size);
                        rows.push(vec![
                            build.title().to_string(),
                            format!("{size} B"),
                            pair_ns(min(&g), median(&g)),
                            pair_ns(min(&c), median(&c)),
                            match (ratio(min(&g), min(&c)), ratio(median(&g), median(&c))) {
                                (Some(a), Some(b)) => format!("{a:.2}x / {b:.2}x"),
                                _ => "-".into(),
                            },
                            format!("<= {GLOBAL_VS_CACHE_GOAL:.2}x"),
                            match &goal {
                                Some(x) if x.met => "yes".into(),
                                Some(_) => "MISSED".into(),
                                None => "-".into(),
                            },
                        ]);
                    }
                }
                Side::NotMeasured(why) => rows.push(vec![
                    build.title().to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("<= {GLOBAL_VS_CACHE_GOAL:.2}x"),
                    format!("not measured: {}", first_line(why)),
                ]),
            }
        }
        render(&head, &rows)
    }

    /// bench-alloc.yaml's `global_vs_cache`.
    pub fn yaml(&self) -> Vec<BuildYaml<'_>> {
        self.sides
            .iter()
            .map(|(build, side)| match side {
                Side::Measured(f) => BuildYaml {
                    build: build.yaml_name(),
                    measures: build.title(),
                    sizes: f
                        .setup
                        .sizes
                        .iter()
                        .map(|&size| {
                            let g = f.ns_per_op("global", size);
                            let c = f.ns_per_op("cache", size);
                            SizeYaml {
                                size,
                                global_min_ns: opt(min(&g)),
                                global_median_ns: opt(median(&g)),
                                cache_min_ns: opt(min(&c)),
                                cache_median_ns: opt(median(&c)),
                                ratio_min: opt(ratio(min(&g), min(&c))),
                                ratio_median: opt(ratio(median(&g), median(&c))),
                            }
                        })
                        .collect(),
                    not_measured: None,
                },
                Side::NotMeasured(why) => BuildYaml {
                    build: build.yaml_name(),
                    measures: build.title(),
                    sizes: Vec::new(),
                    not_measured: Some(why),
                },
            })
            .collect()
    }
}

fn pair_ns(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a:.1} / {b:.1} ns"),
        _ => "-".into(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[derive(Serialize)]
pub struct BuildYaml<'a> {
    build: &'static str,
    measures: &'static str,
    sizes: Vec<SizeYaml>,
    not_measured: Option<&'a str>,
}

#[derive(Serialize)]
struct SizeYaml {
    size: u32,
    global_min_ns: Option<N>,
    global_median_ns: Option<N>,
    cache_min_ns: Option<N>,
    cache_median_ns: Option<N>,
    ratio_min: Option<N>,
    ratio_median: Option<N>,
}

#[cfg(test)]
mod tests {
    use super::super::figures;
    use super::*;

    /// A bench_alloc boot with global and cache at `g` and `c` ns per pair.
    fn boot(g: u64, c: u64) -> Figures {
        let text = format!(
            "KTAP version 1\n1..3\n# plan: bench_alloc bench_alloc_nmi bench_prefill\n\
            # start: bench_alloc\n\
            # bench: setup cpu=0 online=2 sizes=32 reps=1 loops=10 batch=5 warmup=1\n\
            # bench: alloc mode=global size=32 rep=1 loops=10 batch=0 ns={} fails=0\n\
            # bench: alloc mode=kmalloc size=32 rep=1 loops=10 batch=0 ns=4000 fails=0\n\
            # bench: alloc mode=cache size=32 rep=1 loops=10 batch=0 ns={} fails=0\n\
            # bench: alloc mode=global_counted size=32 rep=1 loops=10 batch=0 ns=2000 fails=0\n\
            # bench: alloc mode=nmi size=32 rep=1 loops=10 batch=5 ns=3000 fails=0\n\
            ok 1 bench_alloc\n\
            # start: bench_alloc_nmi\nok 2 bench_alloc_nmi\n\
            # start: bench_prefill\n\
            # bench: prefill size=32 count=1000 rep=1 unit_size=64 ns=5000000\n\
            # bench: prefill size=32 count=100000 unit_size=64 refused=E2BIG limit=16777216\n\
            ok 3 bench_prefill\n",
            g * 10,
            c * 10
        );
        figures::parse(&text).unwrap()
    }

    fn cells(t: &str, n: usize) -> Vec<String> {
        t.lines()
            .nth(n)
            .unwrap()
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    }

    #[test]
    fn both_builds_side_by_side_with_their_ratios() {
        let (on, out) = (boot(156, 100), boot(108, 100));
        let d = DebugModes {
            sides: vec![
                (Build::CompiledInOff, Side::Measured(&on)),
                (Build::CompiledOut, Side::Measured(&out)),
            ],
        };
        // The first build's goal is summary.rs's global_vs_cache_32.
        let g = d.goals();
        let keys: Vec<&str> = g.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["global_vs_cache_32_nodebug"]);
        assert!(g[0].met);
        let s = super::super::summary::Summary::new(&on);
        let first = s.goals.iter().find(|g| g.key == "global_vs_cache_32");
        assert!(first.is_some_and(|g| !g.met && g.value == 1.56));
        let t = d.table();
        assert_eq!(
            cells(&t, 2),
            [
                "debug compiled in, off (bpf_global_ma_debug=0)",
                "32 B",
                "156.0 / 156.0 ns",
                "100.0 / 100.0 ns",
                "1.56x / 1.56x",
                "<= 1.10x",
                "MISSED"
            ]
        );
        assert_eq!(cells(&t, 3)[0], "debug compiled out (gma-nodebug)");
        assert_eq!(cells(&t, 3)[4..], ["1.08x / 1.08x", "<= 1.10x", "yes"]);
        let y = crate::report::results::to_yaml(&d.yaml()).unwrap();
        assert!(y.contains("build: compiled_out\n"), "{y}");
        assert!(y.contains("ratio_min: 1.56\n"), "{y}");
    }

    #[test]
    fn a_build_not_measured_says_why() {
        let on = boot(120, 100);
        let d = DebugModes {
            sides: vec![
                (Build::CompiledInOff, Side::Measured(&on)),
                (
                    Build::CompiledOut,
                    Side::NotMeasured("building it failed: olddefconfig\nmore"),
                ),
            ],
        };
        assert!(d.goals().is_empty());
        let t = d.table();
        assert_eq!(
            cells(&t, 3)[6],
            "not measured: building it failed: olddefconfig"
        );
        let y = crate::report::results::to_yaml(&d.yaml()).unwrap();
        assert!(y.contains("not_measured: |-\n"), "{y}");
    }
}
