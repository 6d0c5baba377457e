//! The KTAP parser's tests: one per rule, snapshots of every recorded
//! stream under test_data/ktap/, and a fuzz run that must never panic.

use super::*;
use std::path::PathBuf;

fn names(r: &Report) -> Vec<(&str, Status)> {
    r.tests
        .iter()
        .map(|t| (t.name.as_str(), t.status))
        .collect()
}

fn test<'a>(r: &'a Report, name: &str) -> &'a TestResult {
    r.tests
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no test {name} in {r:#?}"))
}

#[test]
fn contract_stream_all_passed() {
    let r = parse(
        "KTAP version 1\n1..2\n# plan: a b\n# start: a\n# duration_ms: 5\nok 1 a\n\
         # start: b\nok 2 b\n",
    );
    assert_eq!(r.version.as_deref(), Some("KTAP version 1"));
    assert_eq!(r.planned, Some(2));
    assert_eq!(names(&r), [("a", Status::Passed), ("b", Status::Passed)]);
    assert_eq!(r.tests[0].number, Some(1));
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.all_passed());
    assert_eq!(r.running(), None);
}

/// What the guest runner writes reads back as the tests it wrote: the
/// stream through rig_contract's writers (as bpf-selftests/src/ktap.rs
/// writes it), a nested block in the form kernel_suites/mod.rs writes.
#[test]
fn stream_written_by_the_contract_reads_back() {
    use rig_contract::ktap as w;
    let mut lines: Vec<String> = w::header(&["a", "b", "c", "test_progs:hashmap"]).into();
    lines.push(w::start("a"));
    lines.extend(w::diag("first\n\nthird"));
    lines.push(rig_contract::request::inject_nmi_line());
    lines.push(w::duration(5));
    lines.push(w::result(1, "a", w::Verdict::Pass));
    lines.push(w::start("b"));
    lines.push(w::duration(6));
    lines.push(w::result(2, "b", w::Verdict::Skip("no BTF\nsecond line")));
    lines.push(w::start("c"));
    lines.push(w::result(3, "c", w::Verdict::Fail));
    lines.push(w::start("test_progs:hashmap"));
    lines.extend(w::subtest_header("test_progs:hashmap"));
    lines.push(w::nested(&w::result(1, "generic", w::Verdict::Pass)));
    lines.push(w::nested(&w::result(2, "multimap", w::Verdict::Fail)));
    lines.push(w::duration(7));
    lines.push(w::result(4, "test_progs:hashmap", w::Verdict::Fail));
    let r = parse(&(lines.join("\n") + "\n"));
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.version.as_deref(), Some(w::VERSION));
    assert_eq!(r.planned, Some(4));
    assert_eq!(
        names(&r),
        [
            ("a", Status::Passed),
            ("b", Status::Skipped),
            ("c", Status::Failed),
            ("test_progs:hashmap.generic", Status::Passed),
            ("test_progs:hashmap.multimap", Status::Failed)
        ]
    );
    let a = test(&r, "a");
    assert_eq!(a.diagnostics, ["first", "", "third", "rig: inject-nmi"]);
    assert_eq!(a.duration_ms, Some(5));
    assert_eq!(test(&r, "b").skip_reason.as_deref(), Some("no BTF"));
    assert_eq!(test(&r, "b").duration_ms, Some(6));
    assert_eq!(
        rig_contract::request::count_inject_nmi(&lines.join("\n")),
        1
    );
}

#[test]
fn started_without_result_is_crashed_and_running() {
    let r = parse("KTAP version 1\n1..2\n# plan: a b\n# start: a\nok 1 a\n# start: b\n# doing b\n");
    let b = test(&r, "b");
    assert_eq!(b.status, Status::Crashed);
    assert_eq!(b.number, Some(2));
    assert_eq!(b.diagnostics, ["doing b", NO_RESULT_EOF]);
    assert_eq!(r.running(), Some("b"));
    assert!(!r.all_passed());
    assert_eq!(r.counts().crashed, 1);
}

#[test]
fn started_then_next_started_is_crashed_not_running() {
    let r = parse("KTAP version 1\n1..2\n# plan: a b\n# start: a\n# start: b\nok 2 b\n");
    let a = test(&r, "a");
    assert_eq!(a.status, Status::Crashed);
    assert_eq!(a.diagnostics, [NO_RESULT_NEXT]);
    assert_eq!(test(&r, "b").status, Status::Passed);
    assert_eq!(r.running(), None);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn planned_names_never_started_are_not_run() {
    let r = parse("KTAP version 1\n1..3\n# plan: a b c\n# start: a\nok 1 a\n");
    assert_eq!(
        names(&r),
        [
            ("a", Status::Passed),
            ("b", Status::NotRun),
            ("c", Status::NotRun)
        ]
    );
    assert_eq!(test(&r, "c").number, Some(3));
    assert_eq!(r.problems, ["planned 3 tests, got 1"]);
    assert_eq!(r.counts().not_run, 2);
}

#[test]
fn short_plan_without_names_synthesises_numbered_not_run() {
    let r = parse("KTAP version 1\n1..4\nok 1 a\nok 2 b\n");
    assert_eq!(r.problems, ["planned 4 tests, got 2"]);
    assert_eq!(
        names(&r),
        [
            ("a", Status::Passed),
            ("b", Status::Passed),
            ("#3", Status::NotRun),
            ("#4", Status::NotRun)
        ]
    );
    assert!(!r.all_passed());
}

#[test]
fn more_results_than_planned_is_a_problem() {
    let r = parse("KTAP version 1\n1..1\nok 1 a\nok 2 b\n");
    assert_eq!(r.problems, ["planned 1 tests, got 2"]);
    assert!(!r.all_passed());
}

#[test]
fn duplicate_number_is_a_problem() {
    let r = parse("KTAP version 1\n1..2\nok 1 a\nok 1 b\n");
    assert!(
        r.problems
            .contains(&"duplicate test number 1 ('b')".to_string()),
        "{:?}",
        r.problems
    );
    // Two results for a plan of two: the count matches, the problem
    // is what makes the run fail.
    assert_eq!(names(&r), [("a", Status::Passed), ("b", Status::Passed)]);
    assert!(!r.all_passed());
}

#[test]
fn out_of_order_number_is_a_problem() {
    let r = parse("KTAP version 1\n1..3\nok 1 a\nok 3 c\nok 2 b\n");
    assert_eq!(
        r.problems,
        [
            "test number 3 ('c') out of order, expected 2",
            "test number 2 ('b') out of order, expected 4"
        ]
    );
    assert_eq!(r.tests.len(), 3);
}

#[test]
fn missing_header_is_a_problem() {
    let r = parse("1..1\nok 1 a\n");
    assert_eq!(r.version, None);
    assert_eq!(r.problems, ["missing KTAP version header"]);
    assert_eq!(names(&r), [("a", Status::Passed)]);
    assert!(!r.all_passed());
}

#[test]
fn missing_plan_is_a_problem() {
    let r = parse("KTAP version 1\nok 1 a\n");
    assert_eq!(r.planned, None);
    assert_eq!(r.problems, ["missing plan line (1..N)"]);
    assert!(!r.all_passed());
}

#[test]
fn no_ktap_at_all() {
    for input in ["", "\n\n", "random: crng init done\nreboot: Power down\n"] {
        let r = parse(input);
        assert!(r.tests.is_empty());
        assert_eq!(r.problems, ["no KTAP output (no header, plan or result)"]);
        assert!(!r.all_passed());
        assert_eq!(r.running(), None);
    }
}

#[test]
fn diagnostics_between_start_and_result_belong_to_the_test() {
    let r = parse(
        "KTAP version 1\n1..2\n# start: a\n# one\nkernel noise\n#   indented\nnot ok 1 a\n\
         # between tests\nnoise between\n# start: b\n# two\nok 2 b\n",
    );
    assert_eq!(
        test(&r, "a").diagnostics,
        ["one", "kernel noise", "  indented"]
    );
    assert_eq!(test(&r, "a").status, Status::Failed);
    assert_eq!(test(&r, "b").diagnostics, ["two"]);
}

#[test]
fn duration_fills_duration_ms() {
    let r =
        parse("KTAP version 1\n1..2\n# start: a\n# duration_ms: 123\nok 1 a\n# start: b\nok 2 b\n");
    assert_eq!(test(&r, "a").duration_ms, Some(123));
    assert_eq!(test(&r, "b").duration_ms, None);
    assert!(test(&r, "a").diagnostics.is_empty());
}

#[test]
fn skip_directive() {
    let r = parse(
        "KTAP version 1\n1..3\nok 1 a # SKIP no BTF\nnot ok 2 b # skip\nok 3 c # TODO later\n",
    );
    assert_eq!(
        names(&r),
        [
            ("a", Status::Skipped),
            ("b", Status::Skipped),
            ("c", Status::Skipped)
        ]
    );
    assert_eq!(test(&r, "a").skip_reason.as_deref(), Some("no BTF"));
    assert_eq!(test(&r, "b").skip_reason, None);
    assert_eq!(test(&r, "c").skip_reason.as_deref(), Some("TODO later"));
    assert_eq!(
        r.counts(),
        Counts {
            skipped: 3,
            ..Counts::default()
        }
    );
    // Skipped tests do not make the run fail; counts() reports them.
    assert!(r.all_passed());
}

#[test]
fn other_directives_are_kept_as_diagnostics() {
    let r =
        parse("TAP version 13\n1..1\nnot ok 1 - selftests: bpf: test_maps # TIMEOUT 45 seconds\n");
    let t = test(&r, "selftests: bpf: test_maps");
    assert_eq!(t.status, Status::Failed);
    assert_eq!(t.diagnostics, ["directive: TIMEOUT 45 seconds"]);
}

#[test]
fn tap_13_header_and_hyphens() {
    let r = parse("TAP version 13\n1..2\nok 1 - first test\nnot ok 2 - second\n");
    assert_eq!(r.version.as_deref(), Some("TAP version 13"));
    assert_eq!(
        names(&r),
        [("first test", Status::Passed), ("second", Status::Failed)]
    );
    assert!(r.problems.is_empty());
}

#[test]
fn crlf_and_kernel_timestamps() {
    let r = parse(
        "[    1.000000] KTAP version 1\r\n[    1.000001] 1..1\r\n[    1.0001][    T1] # start: a\r\r\n\
         [    1.000002] # hello\r\n[    1.000003] ok 1 a\r\n",
    );
    assert_eq!(names(&r), [("a", Status::Passed)]);
    assert_eq!(test(&r, "a").diagnostics, ["hello"]);
    assert!(r.all_passed(), "{:?}", r.problems);
}

#[test]
fn garbage_before_header_is_ignored() {
    let r = parse("SeaBIOS (version 1.16.2)\n# not ktap yet\nKTAP version 1\n1..1\nok 1 a\n");
    assert!(r.all_passed(), "{:?}", r.problems);
}

#[test]
fn truncated_final_result_line_is_ignored() {
    let r = parse("KTAP version 1\n1..2\n# plan: alpha beta\n# start: alpha\nok 1 alpha\n# start: beta\nok 2 be");
    assert_eq!(test(&r, "beta").status, Status::Crashed);
    assert_eq!(r.running(), Some("beta"));
    assert_eq!(r.problems, ["ignored truncated final line 'ok 2 be'"]);
}

#[test]
fn unterminated_but_complete_final_result_is_believed() {
    let r = parse("KTAP version 1\n1..1\n# plan: alpha\n# start: alpha\nok 1 alpha");
    assert!(r.all_passed(), "{r:#?}");
}

#[test]
fn truncated_final_start_line_is_ignored() {
    let r =
        parse("KTAP version 1\n1..2\n# plan: alpha beta\n# start: alpha\nok 1 alpha\n# start: be");
    assert_eq!(
        names(&r),
        [("alpha", Status::Passed), ("beta", Status::NotRun)]
    );
    assert_eq!(r.running(), None);
}

#[test]
fn result_for_another_test_than_the_running_one() {
    let r = parse("KTAP version 1\n1..2\n# plan: a b\n# start: a\n# a says\nok 2 b\n");
    assert_eq!(names(&r), [("a", Status::Crashed), ("b", Status::Passed)]);
    assert_eq!(test(&r, "a").diagnostics, ["a says", NO_RESULT_NEXT]);
    assert_eq!(r.problems, ["result for 'b' while 'a' was running"]);
}

#[test]
fn names_outside_the_plan_are_problems() {
    let r = parse("KTAP version 1\n1..1\n# plan: a\n# start: x\nok 1 x\n");
    assert_eq!(
        r.problems,
        [
            "'x' started but is not in the plan",
            "'x' is not in the plan"
        ]
    );
    assert_eq!(names(&r), [("x", Status::Passed), ("a", Status::NotRun)]);
}

#[test]
fn bail_out_is_a_problem() {
    let r = parse("KTAP version 1\n1..2\nok 1 a\nBail out! no BTF\n");
    assert_eq!(r.problems, ["bail out: no BTF", "planned 2 tests, got 1"]);
}

#[test]
fn nested_subtests_are_flattened_to_leaves() {
    let r = parse(
        "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: suite\n    1..2\n\
         \x20   # case_a: hello\n    ok 1 case_a\n    not ok 2 case_b\nnot ok 1 suite\n\
         \x20   KTAP version 1\n    # Subtest: other\n    1..1\n    ok 1 only\nok 2 other\n",
    );
    assert_eq!(
        names(&r),
        [
            ("suite.case_a", Status::Passed),
            ("suite.case_b", Status::Failed),
            ("other.only", Status::Passed)
        ]
    );
    assert_eq!(test(&r, "suite.case_a").diagnostics, ["case_a: hello"]);
    assert_eq!(test(&r, "suite.case_b").number, Some(2));
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.counts().failed, 1);
}

#[test]
fn only_a_header_opens_a_nested_block() {
    let r = parse("KTAP version 1\n1..1\n    1..2\n    # Subtest: x\n# start: a\nok 1 a\n");
    assert_eq!(r.problems, ["second plan line '1..2' ignored"]);
    assert_eq!(names(&r), [("a", Status::Passed)]);
}

#[test]
fn nested_parameterised_test_names() {
    let r = parse(
        "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: suite\n    1..1\n\
         \x20       KTAP version 1\n        # Subtest: param_test\n        ok 1 zero\n\
         \x20       ok 2 one # SKIP unsupported\n    # param_test: pass:1 fail:0 skip:1 total:2\n\
         \x20   ok 1 param_test\nok 1 suite\n",
    );
    assert_eq!(
        names(&r),
        [
            ("suite.param_test.zero", Status::Passed),
            ("suite.param_test.one", Status::Skipped)
        ]
    );
    assert!(r.all_passed(), "{:?}", r.problems);
}

#[test]
fn failed_parent_without_failed_children_is_kept() {
    // e.g. a KUnit suite whose suite_init failed, or a runner test whose
    // cleanup failed after all its subtests passed.
    let r = parse("KTAP version 1\n1..2\n    KTAP version 1\n    1..1\n    ok 1 child\nnot ok 1 parent\n    # failed to initialize (-12)\nnot ok 2 empty\n");
    assert_eq!(
        names(&r),
        [
            ("parent.child", Status::Passed),
            ("parent", Status::Failed),
            ("empty", Status::Failed)
        ]
    );
    assert_eq!(
        test(&r, "empty").diagnostics,
        ["failed to initialize (-12)"]
    );
}

#[test]
fn nested_plan_short_is_a_prefixed_problem() {
    let r = parse(
        "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: suite\n    1..3\n    ok 1 a\nnot ok 1 suite\n",
    );
    assert_eq!(r.problems, ["suite: planned 3 tests, got 1"]);
    assert_eq!(
        names(&r),
        [
            ("suite.a", Status::Passed),
            ("suite.#2", Status::NotRun),
            ("suite.#3", Status::NotRun),
            // Its own "not ok" is not explained by a failed child.
            ("suite", Status::Failed)
        ]
    );
}

#[test]
fn nested_block_cut_off_by_the_end_of_output_crashes() {
    let r = parse(
        "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: s1\n    1..1\n    ok 1 a\nok 1 s1\n\
         \x20   KTAP version 1\n    # Subtest: s2\n    1..3\n    ok 1 b\nBUG: kernel NULL pointer dereference\n",
    );
    assert_eq!(
        names(&r),
        [
            ("s1.a", Status::Passed),
            ("s2.b", Status::Passed),
            ("s2.#2", Status::NotRun),
            ("s2.#3", Status::NotRun),
            ("s2", Status::Crashed)
        ]
    );
    assert_eq!(
        test(&r, "s2").diagnostics,
        ["BUG: kernel NULL pointer dereference", NO_RESULT_EOF]
    );
    assert_eq!(r.running(), Some("s2"));
    assert_eq!(r.problems, ["s2: planned 3 tests, got 1"]);
}

#[test]
fn running_test_with_nested_output_cut_off() {
    // The innermost unfinished thing is the one crashed entry.
    let r = parse(
        "KTAP version 1\n1..1\n# plan: kunit\n# start: kunit\n    KTAP version 1\n    1..1\n\
         \x20       KTAP version 1\n        # Subtest: suite\n        1..2\n        ok 1 a\n",
    );
    assert_eq!(
        names(&r),
        [
            ("kunit.suite.a", Status::Passed),
            ("kunit.suite.#2", Status::NotRun),
            ("kunit.suite", Status::Crashed)
        ]
    );
    assert_eq!(r.running(), Some("kunit.suite"));
    assert_eq!(r.counts().crashed, 1);
}

#[test]
fn mark_running_crashed_marks_and_stops_running() {
    let mut r = parse("KTAP version 1\n1..2\n# plan: a b\n# start: a\n# working\n");
    assert_eq!(r.running(), Some("a"));
    r.mark_running_crashed("no output for 300 s");
    assert_eq!(r.running(), None);
    let a = test(&r, "a");
    assert_eq!(a.status, Status::Crashed);
    assert_eq!(a.diagnostics, ["working", NO_RESULT, "no output for 300 s"]);
    assert_eq!(test(&r, "b").status, Status::NotRun);
}

#[test]
fn mark_running_crashed_with_nothing_running_is_a_problem() {
    let mut r = parse("KTAP version 1\n1..1\nok 1 a\n");
    r.mark_running_crashed("QEMU exited with status 1");
    assert_eq!(
        r.problems,
        ["QEMU exited with status 1 (while no test was running)"]
    );
    assert!(!r.all_passed());
}

#[test]
fn absurd_plan_does_not_allocate_forever() {
    let r = parse("KTAP version 1\n1..99999999999\nok 1 a\n");
    assert_eq!(r.tests.len(), 1 + MAX_SYNTHESISED);
    let r = parse("KTAP version 1\n1..999999999999999999999999999\nok 1 a\n");
    assert_eq!(r.planned, None);
}

fn data_files() -> Vec<PathBuf> {
    crate::judge::test_data::files("ktap")
}

/// The parse of every file in test_data/ktap/, with the helpers' view.
#[derive(Serialize)]
struct Snapshot<'a> {
    running: Option<&'a str>,
    all_passed: bool,
    counts: Counts,
    report: &'a Report,
}

#[test]
fn snapshots_of_test_data() {
    for path in data_files() {
        let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
        let report = parse(&text);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .replace('.', "_");
        let description = format!(
            "parse(test_data/ktap/{})",
            path.file_name().expect("name").to_string_lossy()
        );
        insta::with_settings!({ description => description, omit_expression => true }, {
            insta::assert_yaml_snapshot!(
                name,
                Snapshot {
                    running: report.running(),
                    all_passed: report.all_passed(),
                    counts: report.counts(),
                    report: &report,
                }
            );
        });
    }
}

/// A deterministic pseudo-random generator (Knuth's MMIX LCG).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn exercise(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut r = parse(&text);
    let _ = (r.running(), r.all_passed(), r.counts());
    r.mark_running_crashed("fuzz");
    assert_eq!(r.running(), None);
}

#[test]
fn never_panics_on_prefixes_and_mutations() {
    let mut rng = Lcg(0x5eed);
    for path in data_files() {
        let bytes = std::fs::read(&path).expect("read");
        for end in 0..=bytes.len() {
            exercise(&bytes[..end]);
        }
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(b.len());
                match rng.below(6) {
                    0 => {
                        let at = at.min(b.len().saturating_sub(1));
                        b[at] = rng.next() as u8;
                    }
                    1 => b.insert(at, b"\n #\t-.:0123456789okKTAP\r"[rng.below(24)]),
                    2 if !b.is_empty() => {
                        b.remove(at.min(b.len() - 1));
                    }
                    3 => {
                        // duplicate a chunk (e.g. a line) elsewhere
                        let from = rng.below(b.len());
                        let len = rng.below(40).min(b.len() - from.min(b.len()));
                        let chunk = b[from..from + len].to_vec();
                        let at = rng.below(b.len());
                        b.splice(at..at, chunk);
                    }
                    4 => b.insert(at, b' '),
                    _ => b.truncate(at),
                }
                if b.is_empty() {
                    b.push(b'#');
                }
            }
            exercise(&b);
        }
    }
}

#[test]
fn status_names_are_the_serialised_names() {
    for s in [
        Status::Passed,
        Status::Failed,
        Status::Skipped,
        Status::Crashed,
        Status::NotRun,
    ] {
        let yaml = crate::report::results::to_yaml(&s).expect("yaml");
        assert_eq!(yaml.trim_end(), s.name());
    }
}
