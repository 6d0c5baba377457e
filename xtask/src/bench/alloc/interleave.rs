//! The map loop's boot order: `pairs` pairs of boots, each the baseline
//! kernel then the series kernel, one pair after the other (B S B S ...), so
//! that a slow phase of a noisy host hits both kernels of a pair and the
//! per-pair ratios show the spread.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// The unpatched tree at `rig-baseline`.
    Baseline,
    /// The series kernel (debug mode compiled in, booted off).
    Series,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Baseline => "baseline",
            Kernel::Series => "series",
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One boot of the map loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// 1-based.
    pub pair: u32,
    pub kernel: Kernel,
}

/// Every boot in the order they run.
pub fn order(pairs: u32) -> Vec<Slot> {
    (1..=pairs)
        .flat_map(|pair| [Kernel::Baseline, Kernel::Series].map(|kernel| Slot { pair, kernel }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_then_series_pair_by_pair() {
        let o = order(3);
        let names: Vec<String> = o
            .iter()
            .map(|s| format!("{}{}", s.kernel, s.pair))
            .collect();
        assert_eq!(
            names,
            [
                "baseline1",
                "series1",
                "baseline2",
                "series2",
                "baseline3",
                "series3"
            ]
        );
        assert!(order(0).is_empty());
        assert_eq!(order(1).len(), 2);
    }
}
