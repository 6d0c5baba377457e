//! Instruction counts: the allocator bench and the map loop booted once more
//! per kernel under QEMU TCG with `-icount shift=0` on one vCPU
//! (vm::Accel::TcgIcount). There the guest clock advances exactly 1 ns per
//! executed guest instruction, so the guest's own ns figures (ktime deltas
//! in the kernel's bench file, bpf_ktime_get_ns() in the map loop) are
//! instruction counts: they do not move with the host's load or with the
//! boot's memory layout, which under plain TCG move the time figures of one
//! kernel by up to 1.46x from boot to boot.
//!
//! Each boot runs every measurement twice after its warm-up; the two runs
//! must agree within [`DETERMINISTIC_WITHIN`], or the figure is shown as not
//! deterministic (its goal is still judged, on the lower run, and says so).
//! The goals are the time tables' ratios, judged on instruction counts:
//! global / per-size cache for each debug build (debug_modes.rs), and the
//! map loop series / baseline (versus.rs), from one boot per kernel.
//!
//! The figures are parsed by the time tables' own parsers (figures.rs,
//! maploop.rs): only the clock differs.

use serde::Serialize;

use super::debug_modes::Build;
use super::figures::{Figures, MODES};
use super::maploop;
use super::summary::{mode_title, power, Goal, GLOBAL_VS_CACHE_GOAL};
use super::versus;
use crate::bench::report::{min, nums, opt, render, N};

/// Timed runs per boot: the second checks the first.
pub const REPS: u32 = 2;
/// How far apart (relative to the lower) two runs may be for a figure to
/// count as deterministic.
pub const DETERMINISTIC_WITHIN: f64 = 0.001;
pub const TITLE: &str = "guest instructions per pair (QEMU TCG -icount shift=0, 1 vCPU: the \
                         guest clock advances 1 ns per executed instruction; deterministic)";
/// What QEMU is given for these boots (vm/qemu.rs).
const QEMU: &str = "-accel tcg,thread=single -icount shift=0 -smp 1";

/// One kernel's icount boot.
pub enum Side<T> {
    Measured(T),
    /// Its kernel did not build: that part's own failure says why.
    NotBuilt,
    /// Its boot failed, or its figures were not what was asked for.
    Failed(String),
}

impl<T> Side<T> {
    fn measured(&self) -> Option<&T> {
        match self {
            Side::Measured(x) => Some(x),
            _ => None,
        }
    }

    fn why(&self) -> Option<&str> {
        match self {
            Side::Measured(_) => None,
            Side::NotBuilt => Some("its kernel did not build"),
            Side::Failed(why) => Some(why),
        }
    }

    /// A table cell for a side without figures.
    fn missing_cell(&self) -> String {
        match self {
            Side::Measured(_) => "-".into(),
            Side::NotBuilt => "not measured (not built)".into(),
            Side::Failed(_) => "not measured (boot failed)".into(),
        }
    }
}

/// The runs of one measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Runs {
    /// Instructions per pair, one per run.
    pub per_pair: Vec<f64>,
    /// Pairs per run.
    pub loops: u64,
}

impl Runs {
    /// The figure: the lower run.
    pub fn figure(&self) -> Option<f64> {
        min(&self.per_pair)
    }

    /// (highest - lowest) / lowest.
    pub fn apart(&self) -> Option<f64> {
        let lo = self.figure()?;
        let hi = self.per_pair.iter().copied().reduce(f64::max)?;
        Some((hi - lo) / lo)
    }

    pub fn deterministic(&self) -> bool {
        self.per_pair.len() >= 2 && self.apart().is_some_and(|a| a <= DETERMINISTIC_WITHIN)
    }

    fn cell(&self) -> String {
        match (self.figure(), self.apart()) {
            (Some(x), Some(a)) if !self.deterministic() => {
                format!("{x:.2} (runs {:.2}% apart: not deterministic)", a * 100.0)
            }
            (Some(x), _) => format!("{x:.2}"),
            _ => "-".into(),
        }
    }

    fn yaml(&self) -> RunsYaml {
        RunsYaml {
            // Whole runs, exactly as the guest reported them: three
            // decimals per pair would hide how close the runs are.
            instructions_per_run: self
                .per_pair
                .iter()
                .map(|p| (p * self.loops as f64).round() as u64)
                .collect(),
            instructions_per_pair: nums(&self.per_pair),
            figure: opt(self.figure()),
            runs_apart_ppm: opt(self.apart().map(|a| a * 1e6)),
            deterministic: self.deterministic(),
        }
    }
}

/// The map loop under icount: one boot per kernel.
pub struct MapLoop {
    pub baseline: Side<maploop::Boot>,
    pub series: Side<maploop::Boot>,
}

/// Everything measured under icount.
pub struct Icount {
    /// Why nothing was measured (not asked for, or KVM): not a failure.
    pub skipped: Option<String>,
    pub sizes: Vec<u32>,
    pub batch: u32,
    /// Allocator bench: pairs per run.
    pub loops: u64,
    /// Map loop: pairs per run.
    pub maploop_loops: u64,
    /// The allocator bench, per debug build of the series kernel.
    pub alloc: Vec<(Build, Side<Figures>)>,
    /// None with --no-baseline.
    pub maploop: Option<MapLoop>,
}

/// The kernel (bench-alloc.yaml's `kernels` role) a build is.
fn kernel_of(build: Build) -> &'static str {
    match build {
        Build::CompiledInOff => "series",
        Build::CompiledOut => "nodebug",
    }
}

fn alloc_runs(f: &Figures, mode: &str, size: u32) -> Runs {
    Runs {
        per_pair: f.ns_per_op(mode, size),
        loops: f.setup.loops,
    }
}

fn maploop_runs(b: &maploop::Boot) -> Runs {
    Runs {
        per_pair: b.ns_per_pair.clone(),
        loops: b.setup.loops,
    }
}

/// num / den judged against `limit`, marked when either is not
/// deterministic.
fn ratio_goal(key: String, what: String, num: &Runs, den: &Runs, limit: f64) -> Option<Goal> {
    let r = num.figure()? / den.figure()?;
    let what = if num.deterministic() && den.deterministic() {
        what
    } else {
        format!("{what}; NOT deterministic (the runs of a boot disagree)")
    };
    Some(Goal {
        key,
        what,
        value: r,
        goal: format!("<= {limit:.2}x"),
        met: r <= limit,
    })
}

impl Icount {
    /// The boot's figures are what was asked for: two runs of `loops`.
    pub fn check_alloc(f: &Figures, loops: u64) -> anyhow::Result<()> {
        if f.setup.reps != REPS || f.setup.loops != loops {
            anyhow::bail!(
                "the guest ran {:?}, not {REPS} runs of {loops} pairs",
                f.setup
            );
        }
        Ok(())
    }

    pub fn check_maploop(b: &maploop::Boot, loops: u64) -> anyhow::Result<()> {
        if b.setup.reps != REPS || b.setup.loops != loops {
            anyhow::bail!(
                "the guest ran {:?}, not {REPS} runs of {loops} pairs",
                b.setup
            );
        }
        Ok(())
    }

    /// The instruction-count goals, keys prefixed `icount_`.
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for (build, side) in &self.alloc {
            let Some(f) = side.measured() else { continue };
            for &size in &f.setup.sizes {
                goals.extend(ratio_goal(
                    format!("icount_global_vs_cache_{size}{}", build.key_suffix()),
                    format!(
                        "global / per-size cache, guest instructions per alloc+free at {size} \
                         bytes, {}",
                        build.title()
                    ),
                    &alloc_runs(f, "global", size),
                    &alloc_runs(f, "cache", size),
                    GLOBAL_VS_CACHE_GOAL,
                ));
            }
        }
        if let Some((s, b)) = self.maploop_pair() {
            goals.extend(ratio_goal(
                format!("icount_{}", versus::GOAL_KEY),
                "no-prealloc hash map update+delete, series / baseline kernel, guest \
                 instructions per pair (one boot each)"
                    .into(),
                &s,
                &b,
                versus::GOAL,
            ));
        }
        goals
    }

    /// Both map-loop boots' runs (series, baseline), when both were measured.
    fn maploop_pair(&self) -> Option<(Runs, Runs)> {
        let m = self.maploop.as_ref()?;
        Some((
            maploop_runs(m.series.measured()?),
            maploop_runs(m.baseline.measured()?),
        ))
    }

    /// "icount <part>: why" for every boot that failed (a kernel that did
    /// not build is its own part's failure already).
    pub fn failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (build, side) in &self.alloc {
            if let Side::Failed(why) = side {
                v.push(format!("icount {}: {why}", kernel_of(*build)));
            }
        }
        if let Some(m) = &self.maploop {
            for (name, side) in [("baseline", &m.baseline), ("series", &m.series)] {
                if let Side::Failed(why) = side {
                    v.push(format!("icount maploop {name}: {why}"));
                }
            }
        }
        v
    }

    /// The title, both tables and their notes.
    pub fn table(&self) -> String {
        let mut t = format!("{TITLE}\n");
        if let Some(why) = &self.skipped {
            t.push_str(&format!("not measured: {why}\n"));
            return t;
        }
        t.push_str(&format!(
            "each figure is the lower of {REPS} runs of {} pairs in one boot per kernel (map \
             loop: {} pairs); the runs agree within {}% unless the cell says otherwise\n\n",
            power(self.loops),
            power(self.maploop_loops),
            DETERMINISTIC_WITHIN * 100.0
        ));
        if !self.alloc.is_empty() {
            t.push_str(&self.figures_table());
            t.push('\n');
        }
        t.push_str(&self.ratios_table());
        t
    }

    fn figures_table(&self) -> String {
        let mut head = vec!["measurement".to_string(), "size".to_string()];
        head.extend(self.alloc.iter().map(|(b, _)| b.title().to_string()));
        let mut rows = Vec::new();
        for &size in &self.sizes {
            for mode in MODES {
                let mut row = vec![mode_title(mode, self.batch), format!("{size} B")];
                for (_, side) in &self.alloc {
                    row.push(match side.measured() {
                        Some(f) => alloc_runs(f, mode, size).cell(),
                        None => side.missing_cell(),
                    });
                }
                rows.push(row);
            }
        }
        let head: Vec<&str> = head.iter().map(String::as_str).collect();
        render(&head, &rows)
    }

    fn ratios_table(&self) -> String {
        let head = [
            "ratio of instruction counts",
            "size",
            "instructions per pair",
            "ratio",
            "goal",
            "ok?",
        ];
        let goals = self.goals();
        let ok = |key: &str| match goals.iter().find(|g| g.key == key) {
            Some(g) => {
                let v = if g.met { "yes" } else { "MISSED" };
                if g.what.contains("NOT deterministic") {
                    format!("{v} (not deterministic)")
                } else {
                    v.to_string()
                }
            }
            None => "not measured".into(),
        };
        let pair = |a: &Runs, b: &Runs| match (a.figure(), b.figure()) {
            (Some(x), Some(y)) => (format!("{x:.2} / {y:.2}"), format!("{:.3}x", x / y)),
            _ => ("-".into(), "-".into()),
        };
        let mut rows = Vec::new();
        for (build, side) in &self.alloc {
            let what = format!("global / per-map cache, {}", build.title());
            let goal = format!("<= {GLOBAL_VS_CACHE_GOAL:.2}x");
            match side.measured() {
                Some(f) => {
                    for &size in &f.setup.sizes {
                        let (figs, r) = pair(
                            &alloc_runs(f, "global", size),
                            &alloc_runs(f, "cache", size),
                        );
                        let key = format!("icount_global_vs_cache_{size}{}", build.key_suffix());
                        rows.push(vec![
                            what.clone(),
                            format!("{size} B"),
                            figs,
                            r,
                            goal.clone(),
                            ok(&key),
                        ]);
                    }
                }
                None => rows.push(vec![
                    what,
                    "-".into(),
                    side.missing_cell(),
                    "-".into(),
                    goal,
                    "not measured".into(),
                ]),
            }
        }
        match &self.maploop {
            None => {}
            Some(m) => {
                let what = format!(
                    "map loop (no-prealloc hash map update+delete), series / baseline, {} pairs",
                    power(self.maploop_loops)
                );
                let (figs, r) = match self.maploop_pair() {
                    Some((s, b)) => pair(&s, &b),
                    None => {
                        let missing = [&m.series, &m.baseline]
                            .iter()
                            .map(|s| s.missing_cell())
                            .collect::<Vec<_>>()
                            .join(" / ");
                        (missing, "-".into())
                    }
                };
                rows.push(vec![
                    what,
                    "-".into(),
                    figs,
                    r,
                    format!("<= {:.2}x", versus::GOAL),
                    ok(&format!("icount_{}", versus::GOAL_KEY)),
                ]);
            }
        }
        let mut t = render(&head, &rows);
        if self.maploop.is_none() {
            t.push_str("(map loop: not asked for, --no-baseline)\n");
        }
        t
    }

    /// bench-alloc.yaml's `icount`.
    pub fn yaml(&self) -> IcountYaml<'_> {
        let builds = self
            .alloc
            .iter()
            .map(|(build, side)| BuildYaml {
                build: build.yaml_name(),
                kernel: kernel_of(*build),
                sizes: side.measured().map_or_else(Vec::new, |f| {
                    f.setup
                        .sizes
                        .iter()
                        .map(|&size| SizeYaml {
                            size,
                            modes: MODES
                                .iter()
                                .map(|&mode| ModeYaml {
                                    mode,
                                    runs: alloc_runs(f, mode, size).yaml(),
                                })
                                .collect(),
                        })
                        .collect()
                }),
                not_measured: side.why(),
            })
            .collect();
        IcountYaml {
            measures: TITLE,
            qemu: QEMU,
            runs_per_boot: REPS,
            deterministic_within: N(DETERMINISTIC_WITHIN),
            loops: self.loops,
            maploop_loops: self.maploop_loops,
            skipped: self.skipped.as_deref(),
            builds,
            maploop: self.maploop.as_ref().map(|m| MaploopYaml {
                series: maploop_side_yaml(&m.series),
                baseline: maploop_side_yaml(&m.baseline),
                ratio: opt(self
                    .maploop_pair()
                    .and_then(|(s, b)| Some(s.figure()? / b.figure()?))),
            }),
            goals: self.goals(),
        }
    }
}

fn maploop_side_yaml(s: &Side<maploop::Boot>) -> MaploopSideYaml<'_> {
    MaploopSideYaml {
        runs: s.measured().map(|b| maploop_runs(b).yaml()),
        not_measured: s.why(),
    }
}

/// bench-alloc.yaml's `icount`.
#[derive(Serialize)]
pub struct IcountYaml<'a> {
    measures: &'static str,
    qemu: &'static str,
    runs_per_boot: u32,
    deterministic_within: N,
    loops: u64,
    maploop_loops: u64,
    /// Why nothing was measured (not asked for, KVM).
    skipped: Option<&'a str>,
    builds: Vec<BuildYaml<'a>>,
    maploop: Option<MaploopYaml<'a>>,
    goals: Vec<Goal>,
}

#[derive(Serialize)]
struct BuildYaml<'a> {
    build: &'static str,
    kernel: &'static str,
    sizes: Vec<SizeYaml>,
    not_measured: Option<&'a str>,
}

#[derive(Serialize)]
struct SizeYaml {
    size: u32,
    modes: Vec<ModeYaml>,
}

#[derive(Serialize)]
struct ModeYaml {
    mode: &'static str,
    #[serde(flatten)]
    runs: RunsYaml,
}

#[derive(Serialize)]
struct RunsYaml {
    instructions_per_run: Vec<u64>,
    instructions_per_pair: Vec<N>,
    figure: Option<N>,
    runs_apart_ppm: Option<N>,
    deterministic: bool,
}

#[derive(Serialize)]
struct MaploopYaml<'a> {
    series: MaploopSideYaml<'a>,
    baseline: MaploopSideYaml<'a>,
    ratio: Option<N>,
}

#[derive(Serialize)]
struct MaploopSideYaml<'a> {
    runs: Option<RunsYaml>,
    not_measured: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::super::figures;
    use super::*;

    /// A `rig.bench=alloc` ktap.log of one 32-byte icount boot (1 vCPU,
    /// 10^5 pairs, 2 runs) with these totals per mode (rep 1, rep 2).
    fn alloc_log(totals: &[(&str, [u64; 2])]) -> String {
        let setup = "# bench: setup cpu=0 online=1 sizes=32 reps=2 loops=100000 batch=1000 \
                     warmup=1";
        let mut s = format!(
            "KTAP version 1\n1..3\n# plan: bench_alloc bench_alloc_nmi bench_prefill\n\
             # start: bench_alloc\n{setup}\n"
        );
        for (mode, ns) in totals.iter().filter(|(m, _)| *m != "nmi") {
            for (i, ns) in ns.iter().enumerate() {
                s.push_str(&format!(
                    "# bench: alloc mode={mode} size=32 rep={} loops=100000 batch=0 ns={ns} \
                     fails=0\n",
                    i + 1
                ));
            }
        }
        s.push_str(&format!(
            "ok 1 bench_alloc\n# start: bench_alloc_nmi\n{setup}\n"
        ));
        let (_, nmi) = totals.iter().find(|(m, _)| *m == "nmi").unwrap();
        for (i, ns) in nmi.iter().enumerate() {
            s.push_str(&format!(
                "# bench: alloc mode=nmi size=32 rep={} loops=100000 batch=1000 ns={ns} fails=0\n",
                i + 1
            ));
        }
        s.push_str(&format!(
            "ok 2 bench_alloc_nmi\n# start: bench_prefill\n{setup}\n"
        ));
        // Placeholders: the prefill is not part of the icount tables.
        for count in [1000, 100000] {
            for rep in 1..=2 {
                s.push_str(&format!(
                    "# bench: prefill size=32 count={count} rep={rep} unit_size=64 ns=1000000\n"
                ));
            }
        }
        s.push_str("ok 3 bench_prefill\n");
        s
    }

    /// The series kernel (debug compiled in, off) measured by hand under
    /// `-icount shift=0 -smp 1`, 10^5 pairs: cache's totals are two of the
    /// recorded runs; the others are the recorded per-pair figures (315.3,
    /// 118.16, 134.2, 123.1) times 10^5, the second run 2 instructions
    /// fewer as the recorded cache runs were.
    fn series() -> Figures {
        figures::parse(&alloc_log(&[
            ("kmalloc", [31_530_000, 31_529_998]),
            ("global", [11_816_000, 11_815_998]),
            ("global_counted", [13_420_000, 13_419_998]),
            ("cache", [7_924_477, 7_924_475]),
            ("nmi", [12_310_000, 12_309_998]),
        ]))
        .unwrap()
    }

    /// The nodebug kernel's recorded per-pair figures (cache 79.24, global
    /// 104.16, global_counted 119.17, nmi 108.06) times 10^5; its kmalloc
    /// was not recorded, the series kernel's stands in.
    fn nodebug() -> Figures {
        figures::parse(&alloc_log(&[
            ("kmalloc", [31_530_000, 31_529_998]),
            ("global", [10_416_000, 10_416_000]),
            ("global_counted", [11_917_000, 11_917_000]),
            ("cache", [7_924_000, 7_924_000]),
            ("nmi", [10_806_000, 10_806_000]),
        ]))
        .unwrap()
    }

    /// Map-loop boots: made-up figures (no icount map loop was recorded).
    fn maploop_boot(ns: [u64; 2]) -> maploop::Boot {
        maploop::Boot {
            setup: maploop::Setup {
                cpu: 0,
                online: 1,
                loops: 100_000,
                reps: 2,
                warmup: 1,
                max_entries: 1024,
            },
            ns_per_pair: ns.iter().map(|&n| n as f64 / 1e5).collect(),
        }
    }

    fn measured() -> Icount {
        Icount {
            skipped: None,
            sizes: vec![32],
            batch: 1000,
            loops: 100_000,
            maploop_loops: 100_000,
            alloc: vec![
                (Build::CompiledInOff, Side::Measured(series())),
                (Build::CompiledOut, Side::Measured(nodebug())),
            ],
            maploop: Some(MapLoop {
                baseline: Side::Measured(maploop_boot([100_000_000, 100_000_010])),
                series: Side::Measured(maploop_boot([102_000_000, 102_000_000])),
            }),
        }
    }

    fn cells(line: &str) -> Vec<&str> {
        line.split(" | ").map(str::trim).collect()
    }

    fn row<'t>(t: &'t str, start: &str) -> Vec<&'t str> {
        cells(
            t.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{t}")),
        )
    }

    #[test]
    fn runs_are_deterministic_within_a_thousandth() {
        let runs = |per_pair: &[f64]| Runs {
            per_pair: per_pair.to_vec(),
            loops: 100_000,
        };
        let r = runs(&[79.24477, 79.24475]);
        assert!(r.deterministic());
        assert_eq!(r.figure(), Some(79.24475));
        assert_eq!(r.cell(), "79.24");
        let r = runs(&[100.0, 100.2]);
        assert!(!r.deterministic());
        assert_eq!(r.cell(), "100.00 (runs 0.20% apart: not deterministic)");
        assert!(!runs(&[100.0]).deterministic(), "one run proves nothing");
        assert!(runs(&[100.0, 100.1]).deterministic());
    }

    #[test]
    fn the_recorded_figures_miss_the_cache_goal_on_both_builds() {
        let ic = measured();
        let g = ic.goals();
        let keys: Vec<&str> = g.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "icount_global_vs_cache_32",
                "icount_global_vs_cache_32_nodebug",
                "icount_maploop_series_vs_baseline"
            ]
        );
        assert!((g[0].value - 118.15998 / 79.24475).abs() < 1e-9);
        assert!(!g[0].met && !g[1].met);
        assert!((g[1].value - 104.16 / 79.24).abs() < 1e-9);
        assert!((g[2].value - 1.02).abs() < 1e-9 && g[2].met);
        assert!(g.iter().all(|g| !g.what.contains("NOT")));
        assert!(ic.failures().is_empty());
    }

    #[test]
    fn the_tables_say_what_they_count() {
        let t = measured().table();
        assert!(t.starts_with(&format!("{TITLE}\neach figure is the lower of 2 runs")));
        assert_eq!(
            row(&t, "measurement"),
            [
                "measurement",
                "size",
                "debug compiled in, off (bpf_global_ma_debug=0)",
                "debug compiled out (gma-nodebug)"
            ]
        );
        assert_eq!(
            row(&t, "kmalloc(GFP_KERNEL)+kfree"),
            ["kmalloc(GFP_KERNEL)+kfree", "32 B", "315.30", "315.30"]
        );
        assert_eq!(row(&t, "6.1 per-map")[2..], ["79.24", "79.24"]);
        assert_eq!(
            row(&t, "global alloc+free in NMI")[2..],
            ["123.10", "108.06"]
        );
        assert_eq!(
            row(&t, "global / per-map cache, debug compiled in"),
            [
                "global / per-map cache, debug compiled in, off (bpf_global_ma_debug=0)",
                "32 B",
                "118.16 / 79.24",
                "1.491x",
                "<= 1.10x",
                "MISSED"
            ]
        );
        assert_eq!(
            row(&t, "global / per-map cache, debug compiled out")[2..],
            ["104.16 / 79.24", "1.314x", "<= 1.10x", "MISSED"]
        );
        assert_eq!(
            row(&t, "map loop")[2..],
            ["1020.00 / 1000.00", "1.020x", "<= 1.03x", "yes"]
        );
    }

    #[test]
    fn a_figure_that_is_not_deterministic_is_marked() {
        let mut ic = measured();
        ic.alloc[1].1 = Side::Measured(
            figures::parse(&alloc_log(&[
                ("kmalloc", [31_530_000, 31_530_000]),
                ("global", [10_416_000, 10_520_000]),
                ("global_counted", [11_917_000, 11_917_000]),
                ("cache", [7_924_000, 7_924_000]),
                ("nmi", [10_806_000, 10_806_000]),
            ]))
            .unwrap(),
        );
        let g = ic.goals();
        assert!(g[1]
            .what
            .ends_with("NOT deterministic (the runs of a boot disagree)"));
        let t = ic.table();
        assert_eq!(
            row(&t, "global alloc+free (bpf")[3],
            "104.16 (runs 1.00% apart: not deterministic)"
        );
        assert_eq!(
            row(&t, "global / per-map cache, debug compiled out")[5],
            "MISSED (not deterministic)"
        );
        let y = crate::report::results::to_yaml(&ic.yaml()).unwrap();
        assert!(y.contains("runs_apart_ppm: 9984.639\n"), "{y}");
        assert!(y.contains("deterministic: false\n"), "{y}");
    }

    #[test]
    fn failed_and_unbuilt_kernels_are_not_measured() {
        let mut ic = measured();
        ic.alloc[1].1 = Side::NotBuilt;
        ic.maploop = Some(MapLoop {
            baseline: Side::Failed("boot 9 did not pass".into()),
            series: Side::Measured(maploop_boot([102_000_000, 102_000_000])),
        });
        let keys: Vec<String> = ic.goals().into_iter().map(|g| g.key).collect();
        assert_eq!(keys, ["icount_global_vs_cache_32"]);
        assert_eq!(
            ic.failures(),
            ["icount maploop baseline: boot 9 did not pass"]
        );
        let t = ic.table();
        assert_eq!(row(&t, "kmalloc")[3], "not measured (not built)");
        assert_eq!(
            row(&t, "global / per-map cache, debug compiled out")[5],
            "not measured"
        );
        assert_eq!(
            row(&t, "map loop")[2..],
            [
                "- / not measured (boot failed)",
                "-",
                "<= 1.03x",
                "not measured"
            ]
        );
        let y = crate::report::results::to_yaml(&ic.yaml()).unwrap();
        assert!(
            y.contains("  not_measured: its kernel did not build\n"),
            "{y}"
        );
        assert!(y.contains("    not_measured: boot 9 did not pass\n"), "{y}");
        assert!(y.contains("  ratio: null\n"), "{y}");
    }

    #[test]
    fn skipped_under_kvm_or_when_not_asked_for() {
        let ic = Icount {
            skipped: Some("-icount needs TCG; the boots ran under kvm (-cpu host)".into()),
            alloc: Vec::new(),
            maploop: None,
            ..measured()
        };
        assert!(ic.goals().is_empty() && ic.failures().is_empty());
        assert_eq!(
            ic.table(),
            format!(
                "{TITLE}\nnot measured: -icount needs TCG; the boots ran under kvm (-cpu host)\n"
            )
        );
        let y = crate::report::results::to_yaml(&ic.yaml()).unwrap();
        assert!(y.contains("skipped: -icount needs TCG"), "{y}");
        assert!(y.contains("goals: []\n"), "{y}");
    }

    #[test]
    fn the_yaml_keeps_every_run() {
        let y = crate::report::results::to_yaml(&measured().yaml()).unwrap();
        for key in [
            "measures: 'guest instructions per pair (QEMU TCG -icount shift=0, 1 vCPU: ",
            "qemu: -accel tcg,thread=single -icount shift=0 -smp 1\n",
            "runs_per_boot: 2\n",
            "deterministic_within: 0.001\n",
            "- build: compiled_in_off\n  kernel: series\n",
            "    - mode: cache\n      instructions_per_run:\n      - 7924477\n      - 7924475\n      \
             instructions_per_pair:\n      - 79.245\n      - 79.245\n      figure: 79.245\n      \
             runs_apart_ppm: 0.252\n      deterministic: true\n",
            "maploop:\n  series:\n    runs:\n      instructions_per_run:\n      - 102000000\n",
            "  ratio: 1.02\n",
            "- key: icount_global_vs_cache_32_nodebug\n",
        ] {
            assert!(y.contains(key), "{key:?} in\n{y}");
        }
    }
}
