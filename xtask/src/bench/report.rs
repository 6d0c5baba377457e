//! What a benchmark measured, its table, and the helpers of the bench's
//! serde-derived YAML files: three-decimal figures and maps keyed by data
//! (serde_yaml itself stays in report/results.rs).

use std::path::Path;

use anyhow::Context;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::sys::progress::fmt_secs;

/// One row of the table: our side against a reference, side by side.
pub struct Measurement {
    pub key: &'static str,
    pub title: &'static str,
    /// Exactly what the "ours" figures time.
    pub ours_what: String,
    /// Exactly what the reference figures time.
    pub reference_what: String,
    /// Seconds, one per repetition.
    pub ours: Vec<f64>,
    pub reference: Vec<f64>,
    /// Goal for ours / reference (min over min).
    pub goal: f64,
    /// Per repetition of ours, where a `cargo xtask test` child's time went.
    pub ours_stages: Vec<Vec<(String, f64)>>,
    pub notes: Vec<String>,
    /// Why there are no figures (not installed, failed, not asked for).
    pub not_measured: Option<String>,
}

impl Measurement {
    pub fn new(key: &'static str, title: &'static str, goal: f64) -> Measurement {
        Measurement {
            key,
            title,
            ours_what: String::new(),
            reference_what: String::new(),
            ours: Vec::new(),
            reference: Vec::new(),
            goal,
            ours_stages: Vec::new(),
            notes: Vec::new(),
            not_measured: None,
        }
    }

    /// min(ours) / min(reference): noise on a shared machine only ever adds
    /// time, so the minimum is the steadiest estimate of each side's cost.
    pub fn ratio(&self) -> Option<f64> {
        Some(min(&self.ours)? / min(&self.reference)?)
    }

    pub fn median_ratio(&self) -> Option<f64> {
        Some(median(&self.ours)? / median(&self.reference)?)
    }

    /// None when not measured (an error leaves partial figures in the YAML
    /// only).
    pub fn met(&self) -> Option<bool> {
        if self.not_measured.is_some() {
            return None;
        }
        self.ratio().map(|r| r <= self.goal)
    }
}

pub fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::min)
}

/// The middle value; the mean of the two middle ones for an even count.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        fmt_secs(std::time::Duration::from_secs_f64(s))
    }
}

fn min_median(v: &[f64]) -> String {
    match (min(v), median(v)) {
        (Some(a), Some(b)) => format!("{} / {} (n={})", secs(a), secs(b), v.len()),
        _ => "-".to_string(),
    }
}

/// The table, one row per measurement.
pub fn table(ms: &[Measurement]) -> String {
    let head = [
        "measurement",
        "ours (min / median)",
        "reference (min / median)",
        "ratio",
        "goal",
        "ok?",
    ];
    let rows: Vec<Vec<String>> = ms
        .iter()
        .map(|m| {
            let (ratio, ok) = match (m.ratio().filter(|_| m.not_measured.is_none()), m.met()) {
                (Some(r), Some(ok)) => (
                    format!("{r:.2}x"),
                    if ok { "yes" } else { "MISSED" }.to_string(),
                ),
                _ => ("-".to_string(), "not measured".to_string()),
            };
            vec![
                m.title.to_string(),
                min_median(&m.ours),
                min_median(&m.reference),
                ratio,
                format!("<= {:.1}x", m.goal),
                ok,
            ]
        })
        .collect();
    render(&head, &rows)
}

/// A plain-text table: `head`, a rule, then `rows`, columns ` | `-separated
/// and padded to their widest cell (the last column is not padded).
pub fn render(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i > 0 {
                l.push_str(" | ");
            }
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(w - c.chars().count()));
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&line(
        &width.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>(),
    ));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// A figure in a bench YAML file: three decimals are all a measurement
/// on this machine is worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct N(pub f64);

impl Serialize for N {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((self.0 * 1000.0).round() / 1000.0)
    }
}

/// For `#[serde(serialize_with)]`: a plain f64 field as an [`N`].
pub fn three<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    N(*v).serialize(s)
}

/// Figures as [`N`]s.
pub fn nums(v: &[f64]) -> Vec<N> {
    v.iter().copied().map(N).collect()
}

/// A figure that may be missing (`null`).
pub fn opt(v: Option<f64>) -> Option<N> {
    v.map(N)
}

/// A YAML map whose keys are data (stage and milestone names), in the
/// order given.
pub struct Pairs<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Pairs<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Writes `v` as YAML to `path`.
pub fn write_yaml<T: Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let text = crate::report::results::to_yaml(v)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The bench's last lines name the goals it missed (keys), or none.
pub fn print_missed(missed: &[&str]) {
    println!("{}", missed_line("goals missed", missed));
}

/// `<label>: <keys>`, or `<label>: none`.
pub fn missed_line(label: &str, missed: &[&str]) -> String {
    if missed.is_empty() {
        format!("{label}: none")
    } else {
        format!("{label}: {}", missed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_goals_are_listed_under_their_label() {
        assert_eq!(missed_line("goals missed", &[]), "goals missed: none");
        assert_eq!(
            missed_line("instruction-count goals missed", &["a", "b"]),
            "instruction-count goals missed: a, b"
        );
    }

    #[test]
    fn min_and_median() {
        assert_eq!(min(&[3.0, 1.0, 2.0]), Some(1.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratio_is_min_over_min_and_judged_against_the_goal() {
        let mut m = Measurement::new("boot", "boot", 1.0);
        m.ours = vec![3.0, 2.0, 9.0];
        m.reference = vec![4.0, 5.0, 4.5];
        assert_eq!(m.ratio(), Some(0.5));
        assert_eq!(m.met(), Some(true));
        m.reference.clear();
        assert_eq!(m.met(), None);
        assert!(table(&[m]).contains("not measured"));
    }

    #[test]
    fn yaml_keeps_the_order_rounds_figures_and_quotes_strings() {
        #[derive(Serialize)]
        struct M {
            key: &'static str,
            ours_s: Vec<N>,
            ratio: Option<N>,
            notes: Vec<String>,
            stages: Pairs<N>,
        }
        #[derive(Serialize)]
        struct Top {
            machine: Pairs<&'static str>,
            measurements: Vec<M>,
            ok: bool,
        }
        let v = Top {
            machine: Pairs(vec![("cpu".into(), "AMD \"EPYC\": 2")]),
            measurements: vec![M {
                key: "boot",
                ours_s: nums(&[1.0, 2.5, 1.23456]),
                ratio: opt(None),
                notes: vec![],
                stages: Pairs(vec![("tree".into(), N(0.5)), ("build".into(), N(12.3))]),
            }],
            ok: true,
        };
        let text = crate::report::results::to_yaml(&v).unwrap();
        assert_eq!(
            text,
            "machine:\n  cpu: 'AMD \"EPYC\": 2'\nmeasurements:\n- key: boot\n  ours_s:\n  - 1.0\n  - 2.5\n  - 1.235\n  ratio: null\n  notes: []\n  stages:\n    tree: 0.5\n    build: 12.3\nok: true\n"
        );
    }
}
