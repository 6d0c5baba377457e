//! What a benchmark measured, its table, and bench.yaml written by a small
//! hand-written emitter (serde_yaml stays in results.rs).

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

/// A YAML value: enough for bench.yaml (maps keep their order).
pub enum Y {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    List(Vec<Y>),
    Map(Vec<(String, Y)>),
}

impl Y {
    pub fn str(s: impl Into<String>) -> Y {
        Y::Str(s.into())
    }

    pub fn opt_num(v: Option<f64>) -> Y {
        v.map_or(Y::Null, Y::Num)
    }

    pub fn nums(v: &[f64]) -> Y {
        Y::List(v.iter().map(|&x| Y::Num(x)).collect())
    }

    fn is_block(&self) -> bool {
        matches!(self, Y::List(l) if !l.is_empty()) || matches!(self, Y::Map(m) if !m.is_empty())
    }
}

/// Serialises `v` (a map at the top) as block-style YAML.
pub fn to_yaml(v: &Y) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

fn emit(v: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Y::Map(entries) if !entries.is_empty() => {
            for (k, val) in entries {
                out.push_str(&format!("{pad}{}:", key(k)));
                if val.is_block() {
                    out.push('\n');
                    emit(val, indent + 2, out);
                } else {
                    out.push_str(&format!(" {}\n", scalar(val)));
                }
            }
        }
        Y::List(items) if !items.is_empty() => {
            for item in items {
                if item.is_block() {
                    // "- " then the item's block, its first line on the dash's line.
                    let mut inner = String::new();
                    emit(item, indent + 2, &mut inner);
                    let trimmed = &inner[indent + 2..];
                    out.push_str(&format!("{pad}- {trimmed}"));
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        k.to_string()
    } else {
        quote(k)
    }
}

fn scalar(v: &Y) -> String {
    match v {
        Y::Null => "null".into(),
        Y::Bool(b) => b.to_string(),
        Y::Int(i) => i.to_string(),
        Y::Num(x) if x.is_finite() => format!("{x:.3}"),
        Y::Num(_) => ".nan".into(),
        Y::Str(s) => quote(s),
        Y::List(_) => "[]".into(),
        Y::Map(_) => "{}".into(),
    }
}

/// A double-quoted YAML string: always valid, whatever the text.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => q.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The bench's last lines name the goals it missed (keys), or none.
pub fn print_missed(missed: &[&str]) {
    if missed.is_empty() {
        println!("goals missed: none");
    } else {
        println!("goals missed: {}", missed.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn yaml_nests_maps_and_lists_and_quotes_strings() {
        let v = Y::Map(vec![
            (
                "machine".into(),
                Y::Map(vec![("cpu".into(), Y::str("AMD \"EPYC\""))]),
            ),
            (
                "measurements".into(),
                Y::List(vec![Y::Map(vec![
                    ("key".into(), Y::str("boot")),
                    ("ours_s".into(), Y::nums(&[1.0, 2.5])),
                    ("ratio".into(), Y::opt_num(None)),
                    ("notes".into(), Y::List(vec![])),
                ])]),
            ),
            ("ok".into(), Y::Bool(true)),
        ]);
        let text = to_yaml(&v);
        assert_eq!(
            text,
            "machine:\n  cpu: \"AMD \\\"EPYC\\\"\"\nmeasurements:\n  - key: \"boot\"\n    ours_s:\n      - 1.000\n      - 2.500\n    ratio: null\n    notes: []\nok: true\n"
        );
    }
}
