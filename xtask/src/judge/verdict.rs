//! Stage `judge`, as data: [`judge`] turns what the guest did (its
//! [`Outcome`]), what it reported (the parsed KTAP) and what the console
//! showed (the splats) into a [`Verdict`]. No I/O: the snapshot comparison
//! comes in as [`SnapshotCheck`], printing and files are the report's job.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::judge::console::Splat;
use crate::judge::ktap::{Report, Status};
use crate::vm::{Ending, Limits};
use rig_contract::lacks::lacked;

/// Whether a run compares its results with the committed snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// `boot`, check-series, bisect, mutants, bench: no comparison.
    Off,
    /// `test`: compare, and fail on a difference.
    Compare,
    /// `test --accept`: write the results into the snapshot.
    Accept,
}

/// What the snapshot comparison found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotCheck {
    /// Not asked for, or not meaningful (`--filter`, `--append`).
    NotCompared,
    Matched,
    Differs,
}

/// Whether a skipped test can leave a run passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skips {
    /// Any skip fails the run: the pinned tree with the series, and every
    /// tree that has the series.
    Fail,
    /// A `--tree` without the series: a skip whose reason names what this
    /// kernel lacks (`rig_contract::lacks`) is expected, provided some test
    /// passed; any other skip still fails the run.
    ExpectLacking,
}

/// Something wrong with the run itself, besides failed tests and splats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The KTAP stream did not follow the contract (the parser's words).
    Ktap(String),
    /// Not one KTAP result.
    NoResults,
    /// What QEMU wrote on stderr when it did not end cleanly (first lines).
    Qemu(String),
    /// The results are not the committed snapshot of `series`.
    SnapshotDiffers { series: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Ktap(p) => f.write_str(p),
            Problem::NoResults => f.write_str("no KTAP results at all"),
            Problem::Qemu(err) => write!(f, "QEMU said: {err}"),
            Problem::SnapshotDiffers { series } => write!(
                f,
                "results differ from the snapshot bpf-selftests/snapshots/results@{series}.snap \
                 (diff above; `cargo xtask test --accept` or `cargo insta review` to update it)"
            ),
        }
    }
}

/// As the sentence it prints (results.yaml lists problems as text).
impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How the guest run went, apart from its KTAP.
pub struct Outcome<'a> {
    pub ending: &'a Ending,
    pub limits: &'a Limits,
    pub qemu_stderr: &'a str,
    /// The console's `Kernel panic - not syncing:` message.
    pub panic: Option<&'a str>,
    pub snapshot: SnapshotCheck,
    /// Names the snapshot in its problem.
    pub series: &'a str,
    pub skips: Skips,
}

impl Outcome<'_> {
    fn clean_exit(&self) -> bool {
        *self.ending == (Ending::Exited { code: Some(0) })
    }
}

/// The judgement of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Every test passed (none skipped, or with [`Skips::ExpectLacking`]
    /// every skip names what the kernel lacks and some test passed), no
    /// splat, no problem, the snapshot matched or was not compared.
    pub passed: bool,
    /// Passed but for skipped tests or a snapshot difference: what
    /// check-series and bisect ask of a patch whose selftests' feature
    /// arrives in a later patch.
    pub passed_but_skips: bool,
    pub problems: Vec<Problem>,
    /// `PASS: ...` or `FAIL (why): ...`, with the counts.
    pub line: String,
}

/// Problems with the run itself, in the order they are reported: the KTAP
/// parser's, no results at all, QEMU's complaint when it did not end cleanly
/// (a panic says enough).
pub fn run_problems(ending: &Ending, qemu_stderr: &str, report: &Report) -> Vec<Problem> {
    let mut problems: Vec<Problem> = report.problems.iter().cloned().map(Problem::Ktap).collect();
    if report.tests.is_empty() {
        problems.push(Problem::NoResults);
    }
    let clean_exit = *ending == (Ending::Exited { code: Some(0) });
    if !clean_exit && !matches!(ending, Ending::Panicked) {
        let err = qemu_stderr.trim();
        if !err.is_empty() {
            problems.push(Problem::Qemu(
                err.lines().take(5).collect::<Vec<_>>().join(" | "),
            ));
        }
    }
    problems
}

/// What the skipped tests of a report lack, each feature once, in order;
/// None when some skip names no missing kernel feature.
pub fn lacked_features(report: &Report) -> Option<Vec<String>> {
    let mut features: Vec<String> = Vec::new();
    for t in report.tests.iter().filter(|t| t.status == Status::Skipped) {
        let feature = lacked(t.skip_reason.as_deref().unwrap_or(""))?;
        // The feature's name, without the patch that adds it.
        let name = feature.split(" (").next().unwrap_or(feature).to_string();
        if !features.contains(&name) {
            features.push(name);
        }
    }
    Some(features)
}

/// The verdict. Skipped is not passed: a run with a skip does not pass,
/// except on a tree without the series (see [`Skips`]), and then its
/// verdict says `PASS with N skipped`.
pub fn judge(outcome: &Outcome<'_>, report: &Report, splats: &[Splat]) -> Verdict {
    let clean_exit = outcome.clean_exit();
    let mut problems = run_problems(outcome.ending, outcome.qemu_stderr, report);
    if outcome.snapshot == SnapshotCheck::Differs {
        problems.push(Problem::SnapshotDiffers {
            series: outcome.series.to_string(),
        });
    }
    let c = report.counts();
    let skips_ok = c.skipped == 0
        || (outcome.skips == Skips::ExpectLacking
            && c.passed > 0
            && lacked_features(report).is_some());
    let tests_ok = clean_exit && report.all_passed() && skips_ok && !report.tests.is_empty();
    let passed = tests_ok && splats.is_empty() && problems.is_empty();
    let passed_but_skips = clean_exit
        && report.all_passed()
        && splats.is_empty()
        && problems
            .iter()
            .all(|p| matches!(p, Problem::SnapshotDiffers { .. }));
    Verdict {
        passed,
        passed_but_skips,
        line: verdict_line(passed, outcome, report, splats),
        problems,
    }
}

fn verdict_line(passed: bool, outcome: &Outcome<'_>, report: &Report, splats: &[Splat]) -> String {
    let c = report.counts();
    let counts = format!(
        "{} passed, {} failed, {} skipped, {} crashed, {} not run",
        c.passed, c.failed, c.skipped, c.crashed, c.not_run
    );
    if passed && c.skipped == 0 {
        return format!("PASS: {counts}");
    }
    if passed {
        let lacking = lacked_features(report).unwrap_or_default().join("; ");
        return format!(
            "PASS with {} skipped (a tree without the series; this kernel lacks {lacking}): \
             {counts}",
            c.skipped
        );
    }
    let mut why = Vec::new();
    if let Some(p) = outcome.panic {
        why.push(format!("kernel panic: {p}"));
    } else if !outcome.clean_exit() {
        why.push(outcome.ending.describe(outcome.limits));
    }
    if let Some(first) = splats.first() {
        why.push(format!(
            "{} splat(s) in the console, first: {}",
            splats.len(),
            first.title
        ));
    }
    if outcome.skips == Skips::ExpectLacking && c.skipped > 0 && lacked_features(report).is_none() {
        why.push("a skip that names nothing this kernel lacks".to_string());
    }
    if why.is_empty() {
        why.push("results".to_string());
    }
    format!("FAIL ({}): {counts}", why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::test_data::read;
    use crate::{judge::console, judge::ktap};
    use std::time::Duration;

    const LIMITS: Limits = Limits {
        boot: Duration::from_secs(120),
        test: Duration::from_secs(300),
        silence: Duration::from_secs(60),
    };
    const CLEAN: Ending = Ending::Exited { code: Some(0) };

    /// A recorded KTAP log and console log of a run that shut down cleanly,
    /// not compared with a snapshot, judged.
    fn judged(ktap_file: &str, console_file: &str) -> Verdict {
        judged_with(
            ktap_file,
            console_file,
            &CLEAN,
            SnapshotCheck::NotCompared,
            "",
        )
    }

    /// Judges a recorded KTAP log and console log as the pipeline does:
    /// a run that did not end cleanly crashes its running test.
    fn judged_with(
        ktap_file: &str,
        console_file: &str,
        ending: &Ending,
        snapshot: SnapshotCheck,
        stderr: &str,
    ) -> Verdict {
        let mut report = ktap::parse(&read(ktap_file));
        if *ending != CLEAN {
            report.mark_running_crashed(&ending.describe(&LIMITS));
        }
        let console = read(console_file);
        let panic = console::panic_message(&console);
        let outcome = Outcome {
            ending,
            limits: &LIMITS,
            qemu_stderr: stderr,
            panic: panic.as_deref(),
            snapshot,
            series: "global-ma",
            skips: Skips::Fail,
        };
        judge(&outcome, &report, &console::scan(&console))
    }

    /// `test --fail-fast` (and mutants): the guest stopped after its first
    /// failure and shut down cleanly; the rest are not run, and the snapshot
    /// was not compared. That is a failure of the results, never a PASS.
    #[test]
    fn a_fail_fast_run_that_stopped_early_fails() {
        let ktap = "KTAP version 1\n1..3\n# start: a\nok 1 a\n# start: b\n# why\nnot ok 2 b\n";
        let mut report = ktap::parse(ktap);
        assert_eq!(report.problems, ["planned 3 tests, got 2"]);
        assert!(report.accept_fail_fast_stop());
        let outcome = Outcome {
            ending: &CLEAN,
            limits: &LIMITS,
            qemu_stderr: "",
            panic: None,
            snapshot: SnapshotCheck::NotCompared,
            series: "global-ma",
            skips: Skips::Fail,
        };
        let v = judge(&outcome, &report, &[]);
        assert!(!v.passed && !v.passed_but_skips, "{v:?}");
        assert_eq!(
            v.line,
            "FAIL (results): 1 passed, 1 failed, 0 skipped, 0 crashed, 1 not run"
        );
        assert!(v.problems.is_empty(), "{v:?}");
        // Not a fail-fast stop: the last reported test passed, or nothing
        // is missing.
        let mut cut = ktap::parse("KTAP version 1\n1..2\n# start: a\nok 1 a\n");
        assert!(!cut.accept_fail_fast_stop());
        assert_eq!(cut.problems, ["planned 2 tests, got 1"]);
        let mut whole = ktap::parse("KTAP version 1\n1..1\n# start: a\nnot ok 1 a\n");
        assert!(!whole.accept_fail_fast_stop());
    }

    #[test]
    fn all_passed_on_a_clean_console_passes() {
        let v = judged_with(
            "ktap/all_pass.ktap",
            "console/clean_boot.log",
            &CLEAN,
            SnapshotCheck::Matched,
            "",
        );
        assert!(v.passed && v.passed_but_skips, "{v:?}");
        assert!(v.problems.is_empty());
        assert!(v.line.starts_with("PASS: "), "{}", v.line);
        assert!(
            v.line
                .ends_with(" 0 failed, 0 skipped, 0 crashed, 0 not run"),
            "{}",
            v.line
        );
    }

    #[test]
    fn a_skip_is_not_a_pass_but_passes_but_for_skips() {
        let v = judged("ktap/skip.ktap", "console/clean_boot.log");
        assert!(!v.passed);
        assert!(v.passed_but_skips);
        assert_eq!(
            v.line,
            "FAIL (results): 2 passed, 0 failed, 2 skipped, 0 crashed, 0 not run"
        );
    }

    /// A report judged on a clean console after a clean exit, not compared.
    fn judged_skips(report: &Report, skips: Skips, console_file: &str) -> Verdict {
        let console = read(console_file);
        let outcome = Outcome {
            ending: &CLEAN,
            limits: &LIMITS,
            qemu_stderr: "",
            panic: None,
            snapshot: SnapshotCheck::NotCompared,
            series: "user-tree",
            skips,
        };
        judge(&outcome, report, &console::scan(&console))
    }

    /// `--tree` on a tree without the series: the baseline tests pass and
    /// every series test skips naming what the kernel lacks. That passes,
    /// and says so with the skips; it never reads as a plain PASS.
    #[test]
    fn a_tree_without_the_series_passes_with_its_skips_named() {
        let report = ktap::parse(&read("ktap/plain_tree.ktap"));
        let v = judged_skips(&report, Skips::ExpectLacking, "console/clean_boot.log");
        assert!(v.passed && v.passed_but_skips, "{v:?}");
        assert_eq!(
            v.line,
            "PASS with 27 skipped (a tree without the series; this kernel lacks struct \
             bpf_ma_testobj; CONFIG_BPF_GLOBAL_MA_TEST_NMI; the global BPF allocator; \
             CONFIG_BPF_GLOBAL_MA_DEBUG): 3 passed, 0 failed, 27 skipped, 0 crashed, 0 not run"
        );
        // The same results on a tree with the series fail, as any skip does.
        let strict = judged_skips(&report, Skips::Fail, "console/clean_boot.log");
        assert!(!strict.passed && strict.passed_but_skips, "{strict:?}");
        assert_eq!(
            strict.line,
            "FAIL (results): 3 passed, 0 failed, 27 skipped, 0 crashed, 0 not run"
        );
        // A splat still fails it.
        let splat = judged_skips(&report, Skips::ExpectLacking, "console/warn_on.log");
        assert!(!splat.passed, "{splat:?}");
        assert!(splat.line.starts_with("FAIL (1 splat(s)"), "{}", splat.line);
    }

    #[test]
    fn on_a_tree_without_the_series_only_lacking_skips_are_expected() {
        let other = ktap::parse(
            "KTAP version 1\n1..3\nok 1 a\n\
             ok 2 b # SKIP x missing: this kernel lacks struct y\n\
             ok 3 c # SKIP needs at least 2 online CPUs\n",
        );
        let v = judged_skips(&other, Skips::ExpectLacking, "console/clean_boot.log");
        assert!(!v.passed, "{v:?}");
        assert_eq!(
            v.line,
            "FAIL (a skip that names nothing this kernel lacks): 1 passed, 0 failed, 2 \
             skipped, 0 crashed, 0 not run"
        );
        // Nothing passed: not a verdict on the tree at all.
        let none = ktap::parse("KTAP version 1\n1..1\nok 1 b # SKIP x: this kernel lacks y\n");
        let v = judged_skips(&none, Skips::ExpectLacking, "console/clean_boot.log");
        assert!(!v.passed, "{v:?}");
        // A failure is a failure.
        let failed =
            ktap::parse("KTAP version 1\n1..2\nnot ok 1 a\nok 2 b # SKIP x: this kernel lacks y\n");
        let v = judged_skips(&failed, Skips::ExpectLacking, "console/clean_boot.log");
        assert!(!v.passed && !v.passed_but_skips, "{v:?}");
        // No skip at all: the plain PASS.
        let all = ktap::parse("KTAP version 1\n1..1\nok 1 a\n");
        let v = judged_skips(&all, Skips::ExpectLacking, "console/clean_boot.log");
        assert_eq!(
            v.line,
            "PASS: 1 passed, 0 failed, 0 skipped, 0 crashed, 0 not run"
        );
    }

    #[test]
    fn lacked_features_are_named_once_in_order() {
        let report = ktap::parse(
            "KTAP version 1\n1..4\nok 1 a # SKIP o: this kernel lacks struct x (added by s 1)\n\
             ok 2 b # SKIP p: this kernel lacks CONFIG_Y\n\
             ok 3 c # SKIP q: this kernel lacks struct x (added by s 1)\nok 4 d\n",
        );
        assert_eq!(
            lacked_features(&report),
            Some(vec!["struct x".to_string(), "CONFIG_Y".to_string()])
        );
        let other = ktap::parse("KTAP version 1\n1..1\nok 1 a # SKIP no reason\n");
        assert_eq!(lacked_features(&other), None);
    }

    #[test]
    fn a_snapshot_difference_fails_but_passes_but_for_skips() {
        let v = judged_with(
            "ktap/all_pass.ktap",
            "console/clean_boot.log",
            &CLEAN,
            SnapshotCheck::Differs,
            "",
        );
        assert!(!v.passed);
        assert!(v.passed_but_skips);
        assert_eq!(
            v.problems,
            [Problem::SnapshotDiffers {
                series: "global-ma".into()
            }]
        );
        assert!(v.problems[0].to_string().starts_with(
            "results differ from the snapshot bpf-selftests/snapshots/results@global-ma.snap"
        ));
    }

    #[test]
    fn a_failed_test_fails() {
        let v = judged("ktap/one_fail.ktap", "console/clean_boot.log");
        assert!(!v.passed && !v.passed_but_skips);
        assert!(
            v.line.starts_with("FAIL (results): 3 passed, 1 failed"),
            "{}",
            v.line
        );
    }

    #[test]
    fn a_splat_fails_a_run_whose_tests_all_passed() {
        let v = judged_with(
            "ktap/all_pass.ktap",
            "console/warn_on.log",
            &CLEAN,
            SnapshotCheck::Matched,
            "",
        );
        assert!(!v.passed && !v.passed_but_skips);
        assert!(v.problems.is_empty());
        assert!(
            v.line
                .starts_with("FAIL (1 splat(s) in the console, first: WARNING: CPU: "),
            "{}",
            v.line
        );
    }

    #[test]
    fn a_panic_names_the_panic_and_crashes_the_running_test() {
        let v = judged_with(
            "ktap/crash_truncated.ktap",
            "console/null_deref_panic.log",
            &Ending::Panicked,
            SnapshotCheck::NotCompared,
            "ignored after a panic",
        );
        assert!(!v.passed && !v.passed_but_skips);
        assert!(
            v.line.starts_with("FAIL (kernel panic: Fatal exception; "),
            "{}",
            v.line
        );
        assert!(v.line.contains(" 1 crashed, "), "{}", v.line);
        assert!(
            !v.problems.iter().any(|p| matches!(p, Problem::Qemu(_))),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_hang_names_the_ending_and_quotes_qemu() {
        let ending = Ending::Silence;
        let v = judged_with(
            "ktap/crash_truncated.ktap",
            "console/clean_boot.log",
            &ending,
            SnapshotCheck::NotCompared,
            "qemu: one\nqemu: two\n",
        );
        assert!(
            v.line
                .starts_with("FAIL (guest hung: no console or KTAP output for 60s): "),
            "{}",
            v.line
        );
        assert_eq!(
            v.problems.last(),
            Some(&Problem::Qemu("qemu: one | qemu: two".into()))
        );
        assert_eq!(
            v.problems.last().unwrap().to_string(),
            "QEMU said: qemu: one | qemu: two"
        );
    }

    #[test]
    fn protocol_errors_are_problems_and_no_ktap_is_one_too() {
        let v = judged("ktap/protocol_errors.ktap", "console/clean_boot.log");
        assert!(!v.passed && !v.passed_but_skips);
        assert!(!v.problems.is_empty() && v.problems.iter().all(|p| matches!(p, Problem::Ktap(_))));
        let report = ktap::parse("");
        let problems = run_problems(&CLEAN, "", &report);
        assert_eq!(
            problems.iter().map(Problem::to_string).collect::<Vec<_>>(),
            [
                "no KTAP output (no header, plan or result)",
                "no KTAP results at all"
            ]
        );
    }
}
