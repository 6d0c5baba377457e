//! The map loop, series kernel against the unpatched baseline, over
//! interleaved boots (interleave.rs): each boot's figure is the min of its
//! runs (noise on a shared machine only adds time); per kernel, the min and
//! median of its boots' figures; the ratio is median(series) /
//! median(baseline), and its spread the lowest and highest ratio within a
//! pair (the series boot over the baseline boot just before it). The goal
//! (issue 16: the series must not make 6.1's own per-map allocator slower)
//! is judged on the ratio of the medians.

use std::path::PathBuf;

use serde::Serialize;

use super::interleave::{Kernel, Slot};
use super::summary::{power, Goal};
use crate::bench::report::{median, min, nums, opt, render, N};

/// Goal: series / baseline, ratio of the medians of the boots' figures.
pub const GOAL: f64 = 1.03;
pub const GOAL_KEY: &str = "maploop_series_vs_baseline";

/// One boot's map-loop figures.
pub struct BootFigures {
    pub slot: Slot,
    pub run_dir: PathBuf,
    /// ns per update+delete pair, one per run.
    pub ns_per_pair: Vec<f64>,
}

impl BootFigures {
    /// The boot's figure: its fastest run.
    pub fn figure(&self) -> Option<f64> {
        min(&self.ns_per_pair)
    }
}

/// The whole map-loop measurement: the boots done so far, and why it
/// stopped short if it did.
pub struct Versus {
    pub boots: Vec<BootFigures>,
    /// Pairs of boots asked for.
    pub pairs: u32,
    pub runs: u32,
    pub loops: u64,
    pub not_measured: Option<String>,
}

impl Versus {
    /// The boots' figures of one kernel, in boot order.
    pub fn figures(&self, k: Kernel) -> Vec<f64> {
        self.boots
            .iter()
            .filter(|b| b.slot.kernel == k)
            .filter_map(BootFigures::figure)
            .collect()
    }

    fn figure_of(&self, pair: u32, k: Kernel) -> Option<f64> {
        self.boots
            .iter()
            .find(|b| b.slot.pair == pair && b.slot.kernel == k)
            .and_then(BootFigures::figure)
    }

    /// (pair, series / baseline) for every pair with both boots.
    pub fn pair_ratios(&self) -> Vec<(u32, f64)> {
        (1..=self.pairs)
            .filter_map(|p| {
                Some((
                    p,
                    self.figure_of(p, Kernel::Series)? / self.figure_of(p, Kernel::Baseline)?,
                ))
            })
            .collect()
    }

    /// The lowest and highest per-pair ratio.
    pub fn spread(&self) -> Option<(f64, f64)> {
        let r: Vec<f64> = self.pair_ratios().into_iter().map(|(_, r)| r).collect();
        Some((min(&r)?, r.iter().copied().reduce(f64::max)?))
    }

    /// median(series) / median(baseline): only when every boot was measured.
    pub fn ratio(&self) -> Option<f64> {
        if self.not_measured.is_some() {
            return None;
        }
        Some(median(&self.figures(Kernel::Series))? / median(&self.figures(Kernel::Baseline))?)
    }

    /// min(series) / min(baseline), for the record.
    pub fn ratio_of_mins(&self) -> Option<f64> {
        if self.not_measured.is_some() {
            return None;
        }
        Some(min(&self.figures(Kernel::Series))? / min(&self.figures(Kernel::Baseline))?)
    }

    pub fn goal(&self) -> Option<Goal> {
        let r = self.ratio()?;
        Some(Goal {
            key: GOAL_KEY.to_string(),
            what: format!(
                "no-prealloc hash map update+delete, series / baseline kernel (median of {} \
                 boots each, each boot the min of {} runs)",
                self.pairs, self.runs
            ),
            value: r,
            goal: format!("<= {GOAL:.2}x"),
            met: r <= GOAL,
        })
    }

    fn what(&self) -> String {
        format!(
            "no-prealloc hash map update+delete, ns per pair ({} boots each, min of {} runs of {} \
             pairs per boot)",
            self.pairs,
            self.runs,
            power(self.loops)
        )
    }

    /// The summary row, in the bench tables' style.
    pub fn table(&self) -> String {
        let head = [
            "measurement",
            "series (min / median)",
            "baseline (min / median)",
            "ratio (medians)",
            "spread (per pair)",
            "goal",
            "ok?",
        ];
        let side = |k| {
            let v = self.figures(k);
            match (min(&v), median(&v)) {
                (Some(a), Some(b)) => format!("{a:.1} / {b:.1} ns"),
                _ => "-".into(),
            }
        };
        let ok = match (&self.not_measured, self.goal()) {
            (Some(_), _) | (None, None) => "not measured".to_string(),
            (None, Some(g)) => if g.met { "yes" } else { "MISSED" }.to_string(),
        };
        let row = vec![
            self.what(),
            side(Kernel::Series),
            side(Kernel::Baseline),
            self.ratio().map_or("-".into(), |r| format!("{r:.3}x")),
            self.spread()
                .map_or("-".into(), |(a, b)| format!("{a:.3}x..{b:.3}x")),
            format!("<= {GOAL:.2}x"),
            ok,
        ];
        render(&head, &[row])
    }

    /// One row per map-loop boot, in the order they ran.
    pub fn boots_table(&self) -> String {
        let head = [
            "order",
            "kernel",
            "pair",
            "min",
            "median",
            "runs",
            "series / baseline",
        ];
        let ratios = self.pair_ratios();
        let rows: Vec<Vec<String>> = self
            .boots
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let ns = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.1} ns"));
                let ratio = match b.slot.kernel {
                    Kernel::Series => ratios
                        .iter()
                        .find(|(p, _)| *p == b.slot.pair)
                        .map_or("-".into(), |(_, r)| format!("{r:.3}x")),
                    Kernel::Baseline => "-".into(),
                };
                vec![
                    (i + 1).to_string(),
                    b.slot.kernel.to_string(),
                    b.slot.pair.to_string(),
                    ns(min(&b.ns_per_pair)),
                    ns(median(&b.ns_per_pair)),
                    b.ns_per_pair.len().to_string(),
                    ratio,
                ]
            })
            .collect();
        render(&head, &rows)
    }

    pub fn yaml(&self) -> MaploopYaml<'_> {
        let side = |k| {
            let v = self.figures(k);
            SideYaml {
                boot_figures_ns_per_pair: nums(&v),
                min_ns_per_pair: opt(min(&v)),
                median_ns_per_pair: opt(median(&v)),
            }
        };
        MaploopYaml {
            measures: self.what(),
            loops_per_run: self.loops,
            runs_per_boot: self.runs,
            boot_pairs: self.pairs,
            boot_figure: "min of the boot's runs",
            boots: self
                .boots
                .iter()
                .enumerate()
                .map(|(i, b)| BootYaml {
                    boot: i as u32 + 1,
                    pair: b.slot.pair,
                    kernel: b.slot.kernel.name(),
                    run_dir: b.run_dir.display().to_string(),
                    ns_per_pair: nums(&b.ns_per_pair),
                    min_ns_per_pair: opt(min(&b.ns_per_pair)),
                    median_ns_per_pair: opt(median(&b.ns_per_pair)),
                })
                .collect(),
            series: side(Kernel::Series),
            baseline: side(Kernel::Baseline),
            ratio_of_medians: opt(self.ratio()),
            ratio_of_mins: opt(self.ratio_of_mins()),
            pair_ratios: self.pair_ratios().into_iter().map(|(_, r)| N(r)).collect(),
            spread_min: opt(self.spread().map(|s| s.0)),
            spread_max: opt(self.spread().map(|s| s.1)),
            goal: format!("ratio_of_medians <= {GOAL:.2}"),
            met: self.goal().map(|g| g.met),
            not_measured: self.not_measured.as_deref(),
        }
    }
}

/// bench-alloc.yaml's `maploop`.
#[derive(Serialize)]
pub struct MaploopYaml<'a> {
    measures: String,
    loops_per_run: u64,
    runs_per_boot: u32,
    boot_pairs: u32,
    boot_figure: &'static str,
    boots: Vec<BootYaml>,
    series: SideYaml,
    baseline: SideYaml,
    ratio_of_medians: Option<N>,
    ratio_of_mins: Option<N>,
    pair_ratios: Vec<N>,
    spread_min: Option<N>,
    spread_max: Option<N>,
    goal: String,
    met: Option<bool>,
    not_measured: Option<&'a str>,
}

#[derive(Serialize)]
struct BootYaml {
    boot: u32,
    pair: u32,
    kernel: &'static str,
    run_dir: String,
    ns_per_pair: Vec<N>,
    min_ns_per_pair: Option<N>,
    median_ns_per_pair: Option<N>,
}

#[derive(Serialize)]
struct SideYaml {
    boot_figures_ns_per_pair: Vec<N>,
    min_ns_per_pair: Option<N>,
    median_ns_per_pair: Option<N>,
}

#[cfg(test)]
mod tests {
    use super::super::interleave::order;
    use super::*;

    /// Three pairs: per-boot mins 100/103, 110/112, 98/101.
    fn three_pairs() -> Versus {
        let runs: [&[f64]; 6] = [
            &[100.0, 105.0],
            &[103.0, 104.0],
            &[111.0, 110.0],
            &[112.0, 120.0],
            &[98.0, 99.0],
            &[101.0, 101.5],
        ];
        Versus {
            boots: order(3)
                .into_iter()
                .zip(runs)
                .map(|(slot, r)| BootFigures {
                    slot,
                    run_dir: PathBuf::from(format!("runs/{}{}", slot.kernel, slot.pair)),
                    ns_per_pair: r.to_vec(),
                })
                .collect(),
            pairs: 3,
            runs: 2,
            loops: 1_000_000,
            not_measured: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn boot_figures_ratio_of_medians_and_spread() {
        let v = three_pairs();
        assert_eq!(v.figures(Kernel::Baseline), vec![100.0, 110.0, 98.0]);
        assert_eq!(v.figures(Kernel::Series), vec![103.0, 112.0, 101.0]);
        // median 103 over median 100.
        assert!(close(v.ratio().unwrap(), 1.03));
        assert!(close(v.ratio_of_mins().unwrap(), 101.0 / 98.0));
        let pairs: Vec<u32> = v.pair_ratios().iter().map(|p| p.0).collect();
        assert_eq!(pairs, [1, 2, 3]);
        let (lo, hi) = v.spread().unwrap();
        assert!(
            close(lo, 112.0 / 110.0) && close(hi, 101.0 / 98.0),
            "{lo} {hi}"
        );
        let g = v.goal().unwrap();
        assert!(g.met, "1.03x is within <= 1.03x");
        assert_eq!(g.key, GOAL_KEY);
    }

    #[test]
    fn the_tables_say_it() {
        let v = three_pairs();
        let t = v.table();
        let row: Vec<&str> = t
            .lines()
            .nth(2)
            .unwrap()
            .split(" | ")
            .map(str::trim)
            .collect();
        assert_eq!(
            row,
            [
                "no-prealloc hash map update+delete, ns per pair (3 boots each, min of 2 runs of \
                 10^6 pairs per boot)",
                "101.0 / 103.0 ns",
                "98.0 / 100.0 ns",
                "1.030x",
                "1.018x..1.031x",
                "<= 1.03x",
                "yes"
            ]
        );
        let b = v.boots_table();
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines.len(), 2 + 6);
        assert!(
            lines[2].starts_with("1     | baseline | 1    | 100.0 ns"),
            "{b}"
        );
        assert!(lines[3].ends_with("| 1.030x"), "{b}");
        assert!(lines[4].ends_with("| -"), "{b}");
        let y = crate::report::results::to_yaml(&v.yaml()).unwrap();
        assert!(y.contains("ratio_of_medians: 1.03\n"), "{y}");
        assert!(y.contains("spread_min: 1.018\n"), "{y}");
        assert!(y.contains("met: true\n"), "{y}");
        assert!(y.contains("run_dir: runs/series2\n"), "{y}");
    }

    #[test]
    fn a_stopped_run_has_no_ratio_but_keeps_its_pairs() {
        let mut v = three_pairs();
        v.boots.truncate(3);
        v.not_measured = Some("boot 4 (series, pair 2) did not pass".into());
        assert_eq!(v.ratio(), None);
        assert!(v.goal().is_none());
        assert_eq!(v.pair_ratios().len(), 1);
        let t = v.table();
        assert!(t.lines().nth(2).unwrap().ends_with("| not measured"), "{t}");
        let y = crate::report::results::to_yaml(&v.yaml()).unwrap();
        assert!(y.contains("met: null\n"), "{y}");
    }

    #[test]
    fn a_missed_goal() {
        let mut v = three_pairs();
        for b in &mut v.boots {
            if b.slot.kernel == Kernel::Series {
                b.ns_per_pair.iter_mut().for_each(|x| *x *= 1.1);
            }
        }
        assert!(!v.goal().unwrap().met);
        assert!(v.table().lines().nth(2).unwrap().ends_with("| MISSED"));
    }
}
