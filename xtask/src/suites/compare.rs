//! The verdict of a kernel-suites run: the series' results against the
//! baseline's (when it ran) and against the series' denylist. Pure: reports
//! in, a [`Comparison`] out, unit-tested on small reports.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::judge::ktap::{Report, Status, TestResult};

/// `patches/<series>/kernel-suites.denylist`, in BPF CI's DENYLIST style:
/// one test a line, `name  # reason`. A name covers its own leaves too
/// (`test_progs:bpf_iter` covers `test_progs:bpf_iter.tcp4`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    pub reason: String,
    pub line: usize,
}

/// Accepted format: blank lines and lines starting with `#` are ignored;
/// every other line is a test name, whitespace, `#`, and a reason, which
/// must not be empty: a failure that is accepted says why.
pub fn parse_denylist(text: &str, file: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, reason)) = line.split_once(" #").or_else(|| line.split_once("\t#")) else {
            bail!(
                "{file}:{}: {line:?} has no reason: write `<test name>  # <why it fails on the baseline too>`",
                n + 1
            );
        };
        let (name, reason) = (name.trim(), reason.trim());
        if name.is_empty() || reason.is_empty() {
            bail!(
                "{file}:{}: {line:?}: both a test name and a reason are needed",
                n + 1
            );
        }
        out.push(Entry {
            name: name.to_string(),
            reason: reason.to_string(),
            line: n + 1,
        });
    }
    Ok(out)
}

impl Entry {
    pub fn covers(&self, test: &str) -> bool {
        test == self.name
            || test
                .strip_prefix(&self.name)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// Passed / failed (crashed and not run included) / skipped, one suite.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// A test that did not pass, with the lines that say why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Named {
    pub name: String,
    pub status: &'static str,
    pub excerpt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denylisted: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Comparison {
    /// Per suite (test_verifier, test_maps, test_progs): baseline, series.
    pub tally: BTreeMap<String, (Option<Tally>, Tally)>,
    /// Passed on the baseline, did not pass on the series.
    pub regressions: Vec<Named>,
    /// Did not pass on the baseline, passed on the series.
    pub fixes: Vec<String>,
    /// Failed on the series, and on the baseline too (or without a baseline
    /// run): each must be in the denylist.
    pub known_failures: Vec<Named>,
    /// Failed on the series, in no denylist entry.
    pub undocumented: Vec<Named>,
    /// Skipped on the series (never counted as passed).
    pub skipped: Vec<String>,
    /// Denylist entries that cover tests that ran, none of them failing.
    pub stale: Vec<Entry>,
}

impl Comparison {
    /// What fails the run, one line each. A partial run (`--filter`,
    /// another plan) cannot say an entry is stale: `stale` false leaves them out.
    pub fn problems(&self, stale: bool) -> Vec<String> {
        let mut v = Vec::new();
        for r in &self.regressions {
            v.push(format!(
                "regression: {} ({} on the series, passed on the baseline)",
                r.name, r.status
            ));
        }
        for u in &self.undocumented {
            v.push(format!(
                "{} {} and is not in the denylist (fix it, or add `{}  # <reason>` if it fails on the baseline too)",
                u.name, u.status, u.name
            ));
        }
        for s in self.stale.iter().filter(|_| stale) {
            v.push(format!(
                "stale denylist entry (line {}): {} no longer fails; remove it",
                s.line, s.name
            ));
        }
        v
    }
}

/// The suite a leaf belongs to: `test_progs:x.y` -> `test_progs`.
pub fn suite_of(name: &str) -> &str {
    name.split([':', '.']).next().unwrap_or(name)
}

/// The guest's top-level test a leaf belongs to: `test_progs:x.y` -> `test_progs:x`.
fn top_level(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn failed(s: Status) -> bool {
    matches!(s, Status::Failed | Status::Crashed | Status::NotRun)
}

fn tally(report: &Report) -> BTreeMap<String, Tally> {
    let mut m: BTreeMap<String, Tally> = BTreeMap::new();
    for t in &report.tests {
        let e = m.entry(suite_of(&t.name).to_string()).or_default();
        match t.status {
            Status::Passed => e.passed += 1,
            Status::Skipped => e.skipped += 1,
            _ => e.failed += 1,
        }
    }
    m
}

/// The lines of a test's log that say why: every line that says FAIL (up
/// to 6; test_progs' failed checks, test_verifier's verdict), the first 2 and
/// the last 4, in their order, with `...` where lines were left out.
fn named(t: &TestResult, denylisted: Option<String>) -> Named {
    let d = &t.diagnostics;
    let mut keep: BTreeSet<usize> = (0..d.len().min(2)).collect();
    keep.extend(d.len().saturating_sub(4)..d.len());
    keep.extend(
        d.iter()
            .enumerate()
            .filter(|(_, l)| l.contains("FAIL"))
            .map(|(i, _)| i)
            .take(6),
    );
    let mut excerpt = Vec::new();
    let mut next = 0;
    for i in keep {
        if i > next {
            excerpt.push(format!("... ({} lines)", i - next));
        }
        excerpt.push(d[i].clone());
        next = i + 1;
    }
    Named {
        name: t.name.clone(),
        status: t.status.name(),
        excerpt,
        denylisted,
    }
}

pub fn compare(baseline: Option<&Report>, series: &Report, deny: &[Entry]) -> Comparison {
    let mut c = Comparison::default();
    let base_tally = baseline.map(tally);
    for (suite, t) in tally(series) {
        let b = base_tally
            .as_ref()
            .map(|m| m.get(&suite).copied().unwrap_or_default());
        c.tally.insert(suite, (b, t));
    }
    if let Some(m) = &base_tally {
        for (suite, t) in m {
            c.tally
                .entry(suite.clone())
                .or_insert((Some(*t), Tally::default()));
        }
    }
    let base: BTreeMap<&str, Status> = baseline
        .map(|r| {
            r.tests
                .iter()
                .map(|t| (t.name.as_str(), t.status))
                .collect()
        })
        .unwrap_or_default();
    let mut covered: BTreeSet<usize> = BTreeSet::new();
    for t in &series.tests {
        let b = base.get(t.name.as_str()).copied();
        match t.status {
            Status::Skipped => c.skipped.push(t.name.clone()),
            Status::Passed if b.is_some_and(failed) => c.fixes.push(t.name.clone()),
            Status::Passed => {}
            s if failed(s) => {
                if b == Some(Status::Passed) {
                    c.regressions.push(named(t, None));
                    continue;
                }
                match deny.iter().position(|e| e.covers(&t.name)) {
                    Some(i) => {
                        covered.insert(i);
                        c.known_failures
                            .push(named(t, Some(deny[i].reason.clone())));
                    }
                    None => c.undocumented.push(named(t, None)),
                }
            }
            _ => {}
        }
    }
    // A leaf that passed on the baseline and is not on the series at all:
    // its binary stopped (test_maps exits at its first failed check) or the
    // guest died before it.
    if let Some(b) = baseline {
        let on_series: BTreeSet<&str> = series.tests.iter().map(|t| t.name.as_str()).collect();
        for t in b.tests.iter().filter(|t| t.status == Status::Passed) {
            if on_series.contains(t.name.as_str()) {
                continue;
            }
            let parent = top_level(&t.name);
            let why = series
                .tests
                .iter()
                .find(|s| top_level(&s.name) == parent && failed(s.status))
                .map_or_else(
                    || vec![format!("{parent} never reported it on the series")],
                    |s| {
                        let mut v = vec![format!(
                            "{parent} stopped at {} ({}):",
                            s.name,
                            s.status.name()
                        )];
                        v.extend(named(s, None).excerpt);
                        v
                    },
                );
            c.regressions.push(Named {
                name: t.name.clone(),
                status: "MISSING",
                excerpt: why,
                denylisted: None,
            });
        }
    }
    // A regression under a denylisted parent still fails the run, and
    // still keeps that entry from being stale.
    for r in &c.regressions {
        if let Some(i) = deny.iter().position(|e| e.covers(&r.name)) {
            covered.insert(i);
        }
    }
    // An entry for a test this plan did not run says nothing either way.
    c.stale = deny
        .iter()
        .enumerate()
        .filter(|(i, e)| !covered.contains(i) && series.tests.iter().any(|t| e.covers(&t.name)))
        .map(|(_, e)| e.clone())
        .collect();
    c
}

/// The table and the lists, for the terminal.
pub fn render(c: &Comparison) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let cell = |t: Option<Tally>| {
        t.map_or(format!("{:>24}", "-"), |t| {
            format!("{:>7} {:>7} {:>8}", t.passed, t.failed, t.skipped)
        })
    };
    let _ = writeln!(
        s,
        "\n{:<16} {:^24}   {:^24}",
        "kernel suites", "baseline", "series"
    );
    let _ = writeln!(
        s,
        "{:<16} {:>7} {:>7} {:>8}   {:>7} {:>7} {:>8}",
        "", "passed", "failed", "skipped", "passed", "failed", "skipped"
    );
    for (suite, (b, t)) in &c.tally {
        let _ = writeln!(s, "{suite:<16} {}   {}", cell(*b), cell(Some(*t)));
    }
    let list = |s: &mut String, title: &str, items: &[Named]| {
        let _ = writeln!(s, "{title}: {}", items.len());
        for n in items {
            let why = n
                .denylisted
                .as_ref()
                .map_or(String::new(), |r| format!("  (denylisted: {r})"));
            let _ = writeln!(s, "  {} {}{why}", n.name, n.status);
            if n.denylisted.is_none() {
                for l in &n.excerpt {
                    let _ = writeln!(s, "    | {l}");
                }
            }
        }
    };
    let _ = writeln!(s);
    list(
        &mut s,
        "regressions (pass on the baseline, fail on the series)",
        &c.regressions,
    );
    let _ = writeln!(
        s,
        "fixes (fail on the baseline, pass on the series): {}",
        c.fixes.len()
    );
    for f in &c.fixes {
        let _ = writeln!(s, "  {f}");
    }
    list(&mut s, "failures not in the denylist", &c.undocumented);
    list(
        &mut s,
        "known failures (in the denylist)",
        &c.known_failures,
    );
    let _ = writeln!(s, "skipped on the series (not passed): {}", c.skipped.len());
    let _ = writeln!(s, "stale denylist entries: {}", c.stale.len());
    for e in &c.stale {
        let _ = writeln!(s, "  line {}: {}", e.line, e.name);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tests: &[(&str, Status)]) -> Report {
        let mut text = String::from("KTAP version 1\n");
        text += &format!("1..{}\n", tests.len());
        for (i, (name, st)) in tests.iter().enumerate() {
            let n = i + 1;
            text += &match st {
                Status::Passed => format!("ok {n} {name}\n"),
                Status::Skipped => format!("ok {n} {name} # SKIP why\n"),
                _ => format!("# {name} broke\nnot ok {n} {name}\n"),
            };
        }
        crate::judge::ktap::parse(&text)
    }

    #[test]
    fn denylist_format() {
        let d = parse_denylist(
            "# header\n\ntest_progs:bpf_iter   # needs tcp iterators\ntest_verifier.foo bar/u\t# no JIT\n",
            "deny",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].name, "test_verifier.foo bar/u");
        assert_eq!(d[1].reason, "no JIT");
        assert!(d[0].covers("test_progs:bpf_iter.tcp4"));
        assert!(d[0].covers("test_progs:bpf_iter"));
        assert!(!d[0].covers("test_progs:bpf_iter_setsockopt"));
        let e = parse_denylist("test_maps\n", "deny")
            .unwrap_err()
            .to_string();
        assert!(e.contains("deny:1") && e.contains("no reason"), "{e}");
        assert!(parse_denylist("test_maps #   \n", "d").is_err());
    }

    #[test]
    fn classifies_against_baseline_and_denylist() {
        use Status::*;
        let base = report(&[
            ("test_maps.a", Passed),
            ("test_maps.b", Failed),
            ("test_progs:x.one", Failed),
            ("test_progs:y", Passed),
            ("test_verifier.v/p", Skipped),
        ]);
        let series = report(&[
            ("test_maps.a", Failed),
            ("test_maps.b", Passed),
            ("test_progs:x.one", Failed),
            ("test_progs:y", Passed),
            ("test_verifier.v/p", Skipped),
            ("test_verifier.new/p", Failed),
        ]);
        let deny = parse_denylist(
            "test_progs:x  # fails on 6.1 too\ntest_progs:y  # was fixed\ntest_progs:elsewhere  # not in this plan\n",
            "d",
        )
        .unwrap();
        let c = compare(Some(&base), &series, &deny);
        let gone = compare(Some(&series), &report(&[("test_maps.zz", Failed)]), &[]);
        let r: Vec<_> = gone
            .regressions
            .iter()
            .map(|n| (n.name.as_str(), n.status))
            .collect();
        assert_eq!(r, [("test_maps.b", "MISSING"), ("test_progs:y", "MISSING")]);
        assert_eq!(
            gone.regressions[0].excerpt[0],
            "test_maps stopped at test_maps.zz (FAILED):"
        );
        assert_eq!(
            gone.regressions[1].excerpt,
            ["test_progs:y never reported it on the series"]
        );
        let names = |v: &[Named]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.regressions), ["test_maps.a"]);
        assert_eq!(c.regressions[0].excerpt, ["test_maps.a broke"]);
        assert_eq!(c.fixes, ["test_maps.b"]);
        assert_eq!(names(&c.known_failures), ["test_progs:x.one"]);
        assert_eq!(names(&c.undocumented), ["test_verifier.new/p"]);
        assert_eq!(c.skipped, ["test_verifier.v/p"]);
        assert_eq!(c.stale.len(), 1);
        assert_eq!(c.stale[0].name, "test_progs:y");
        assert_eq!(c.problems(true).len(), 3);
        assert_eq!(
            c.problems(false).len(),
            2,
            "a partial run leaves the stale entry out"
        );
        let t = c.tally["test_maps"];
        assert_eq!(
            t.0,
            Some(Tally {
                passed: 1,
                failed: 1,
                skipped: 0
            })
        );
        assert_eq!(
            t.1,
            Tally {
                passed: 1,
                failed: 1,
                skipped: 0
            }
        );
        let text = render(&c);
        assert!(
            text.contains("regressions (pass on the baseline, fail on the series): 1"),
            "{text}"
        );
        assert!(text.contains("    | test_maps.a broke"), "{text}");
    }

    /// What the guest runner wrote in a real run (trimmed): nested blocks
    /// per binary, log lines before the leaf they belong to.
    #[test]
    fn recorded_guest_output() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test_data/ktap/kernel_suites.ktap"
        );
        let r = crate::judge::ktap::parse(&std::fs::read_to_string(path).unwrap());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let leaves: Vec<(&str, Status)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.status))
            .collect();
        assert_eq!(leaves.len(), 11, "{leaves:?}");
        assert_eq!(
            leaves[2],
            (
                "test_verifier.check deducing bounds from const, 1/u",
                Status::Failed
            )
        );
        assert_eq!(leaves[7], ("test_progs:hashmap.empty", Status::Passed));
        let failing = &r.tests[2];
        assert_eq!(failing.diagnostics[0], "Unexpected verifier log!");
        let deny = parse_denylist(
            "test_verifier.check deducing bounds from const, 1/u  # 6.1 too\n",
            "d",
        )
        .unwrap();
        let c = compare(None, &r, &deny);
        assert!(c.problems(true).is_empty(), "{:?}", c.problems(true));
        assert_eq!(c.known_failures.len(), 1);
        assert_eq!(c.tally["test_progs"].1.passed, 6);
        assert_eq!(
            c.tally["test_verifier"].1,
            Tally {
                passed: 4,
                failed: 1,
                skipped: 0
            }
        );
    }

    #[test]
    fn excerpt_keeps_the_failed_checks() {
        let mut text = String::from("KTAP version 1\n1..1\n");
        for i in 0..20 {
            text += &format!("# check {i}:PASS\n");
        }
        text += "# elems:FAIL: 2 != 3\n# tail\nnot ok 1 t\n";
        let r = crate::judge::ktap::parse(&text);
        let n = named(&r.tests[0], None);
        assert_eq!(
            n.excerpt,
            [
                "check 0:PASS",
                "check 1:PASS",
                "... (16 lines)",
                "check 18:PASS",
                "check 19:PASS",
                "elems:FAIL: 2 != 3",
                "tail"
            ]
        );
    }

    #[test]
    fn without_a_baseline_every_failure_needs_an_entry() {
        use Status::*;
        let series = report(&[("test_maps", Failed), ("test_progs:y", Passed)]);
        let c = compare(None, &series, &[]);
        assert!(c.regressions.is_empty());
        assert_eq!(c.undocumented.len(), 1);
        assert_eq!(c.tally["test_maps"].0, None);
        let deny = parse_denylist("test_maps  # known\n", "d").unwrap();
        assert!(compare(None, &series, &deny).problems(true).is_empty());
    }
}
