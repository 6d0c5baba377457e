//! KTAP / TAP parser for the guest runner's output, in the spirit of the
//! kernel's `tools/testing/kunit/kunit_parser.py`: one classifier per line
//! kind (`rig_contract::ktap::classify`), a recursive parse that keeps the
//! test tree (parser.rs), statuses derived from the tree afterwards; never
//! panics and never fails. Whatever is odd about the input ends up in
//! [`Report::problems`] instead of an error.
//!
//! # The contract with the guest runner
//!
//! Each line kind is written and classified by `rig_contract::ktap`; this
//! module builds the tests from those lines.
//!
//! ```text
//! KTAP version 1
//! 1..N
//! # plan: name1 name2 ... nameN
//! # start: name1
//! # <diagnostic lines for this test>
//! # duration_ms: 123
//! ok 1 name1
//! # start: name2
//! not ok 2 name2
//! ok 3 name3 # SKIP <reason>
//! ```
//!
//! Also accepted: `TAP version 13/14` headers, `ok 1 - name` (TAP hyphen),
//! results without `# start:` (KUnit style: the diagnostics since the
//! previous result belong to the next result), CR/LF line endings, a leading
//! kernel timestamp `[   12.345678] ` (optionally followed by a `[  T123]`
//! caller id) on every line, kernel messages that leaked into the stream, and
//! a truncated final line.
//!
//! # Rules
//!
//! * A test with `# start:` and no result is `CRASHED`, with a diagnostic
//!   saying it never reported a result. If the output simply ended while it
//!   was running, that diagnostic is `never reported a result (still running
//!   when the output ended)` and [`Report::running`] names it.
//! * Names in `# plan:` that never started are `NOT_RUN`.
//! * Fewer results than `1..N`: a problem `planned N tests, got M`, and (for
//!   the tests the plan names do not cover) `NOT_RUN` entries named `#k`,
//!   `k` being the missing test numbers.
//! * Duplicate or out-of-order numbers, a missing header or plan, results for
//!   a test other than the running one, a truncated final result line: a
//!   problem each. Problems make [`Report::all_passed`] false.
//! * Diagnostic lines (`# ...`, and any other line while a test runs) between
//!   `# start:` and the result belong to that test; `# duration_ms:` fills
//!   `duration_ms`. Lines between a result and the next `# start:` are
//!   dropped (kernel noise between tests is the console scanner's business).
//!   A diagnostic is stored without its `# `; another line (kernel message,
//!   KUnit's `Expected ...` continuation) without its block's indentation.
//! * A result line that is the unterminated last line of the input is only
//!   believed if its name is the running test's (or a planned name); else it
//!   is taken as truncated and ignored, with a problem.
//!
//! # Nested subtests: flattened
//!
//! The kernel suites' runner writes each binary's subtests as a nested block
//! (`rig_contract::ktap::subtest_header`); KUnit prints the same form. A
//! subtest block is opened by a `KTAP version` header indented deeper than
//! the current level; a `# Subtest: name` line right after it names the
//! block, and a `1..N` plan at the block's own indentation is its plan (a
//! `# Subtest:` or plan indented deeper without a header of its own opens
//! nothing: nothing the rig runs writes them). The block ends at the next
//! structural line (header, plan, result, `# Subtest:`, `# start:`,
//! `# plan:`, `# duration_ms:`) that is indented less, normally the parent's
//! own result line (`ok 1 example`). Diagnostics and kernel messages never
//! close a block (leaked kernel lines are not indented), and a result line
//! indented deeper than its block belongs to that block.
//!
//! The tree is **flattened to its leaves**: the children are reported as
//! `parent.child` (recursively, e.g. `example.example_params_test.param-0`),
//! each keeping its own number within its parent, and the parent itself is
//! not an entry, so [`Report::counts`] counts leaves like `kunit.py` does.
//! The parent is kept as an entry of its own only when it has no child
//! results, or when it failed/crashed while none of its children did (e.g. a
//! suite whose init failed), so that no failure disappears. A block whose
//! parent never reported because the output ended counts as crashed: the
//! innermost unfinished test (a running `# start:` test, or else the
//! unfinished block) is the `CRASHED` entry, missing children are `NOT_RUN`.
//! [`Report::planned`] and the `1..N` check of the top level count top-level
//! tests; nested plans are checked too, their problems prefixed by the
//! subtest's name.

mod parser;
#[cfg(test)]
mod tests;

use regex::Regex;
use serde::Serialize;
use std::sync::OnceLock;

/// The verdict for one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
    Crashed,
    NotRun,
}

impl Status {
    /// As results.yaml, the table and the snapshot write it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Passed => "PASSED",
            Status::Failed => "FAILED",
            Status::Skipped => "SKIPPED",
            Status::Crashed => "CRASHED",
            Status::NotRun => "NOT_RUN",
        }
    }
}

/// One (leaf) test.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub number: Option<usize>,
    pub name: String,
    pub status: Status,
    pub duration_ms: Option<u64>,
    pub skip_reason: Option<String>,
    pub diagnostics: Vec<String>,
}

/// Everything [`parse`] learnt from one KTAP stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The top-level header as written, e.g. `KTAP version 1`.
    pub version: Option<String>,
    /// `N` from the top-level `1..N`.
    pub planned: Option<usize>,
    pub tests: Vec<TestResult>,
    pub problems: Vec<String>,
}

/// How many tests ended in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub crashed: usize,
    pub not_run: usize,
}

/// Last diagnostic of the test that was running when the output ended; it is
/// how [`Report::running`] finds that test.
const NO_RESULT_EOF: &str = "never reported a result (still running when the output ended)";
const NO_RESULT_NEXT: &str = "never reported a result (the next test started)";
const NO_RESULT_PARENT: &str = "never reported a result (its enclosing test ended)";
const NO_RESULT: &str = "never reported a result";

/// No more synthesised `NOT_RUN` entries than this for one plan, whatever a
/// (corrupted) `1..N` says.
const MAX_SYNTHESISED: usize = 10_000;

impl Report {
    /// The test that started and has no result yet: the one that was running
    /// when the output ended (for live hang detection).
    pub fn running(&self) -> Option<&str> {
        self.tests
            .iter()
            .rev()
            .find(|t| is_running(t))
            .map(|t| t.name.as_str())
    }

    /// Every planned test is present and none failed, crashed or was not run
    /// (skipped tests are allowed: see [`Report::counts`]), there is a plan,
    /// and the stream had no problems.
    pub fn all_passed(&self) -> bool {
        self.planned.is_some()
            && self.problems.is_empty()
            && self
                .tests
                .iter()
                .all(|t| matches!(t.status, Status::Passed | Status::Skipped))
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tests {
            match t.status {
                Status::Passed => c.passed += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
                Status::Crashed => c.crashed += 1,
                Status::NotRun => c.not_run += 1,
            }
        }
        c
    }

    /// A fail-fast stop (`rig.failfast`): the last reported test failed and
    /// every planned test after it is NOT_RUN. The top-level plan's shortfall
    /// is then what was asked for, not a broken stream, so that problem is
    /// dropped (the NOT_RUN tests still fail the run). True for such a stop.
    pub fn accept_fail_fast_stop(&mut self) -> bool {
        let Some(last) = self.tests.iter().rposition(|t| t.status != Status::NotRun) else {
            return false;
        };
        let stopped = self.tests[last].status == Status::Failed && last + 1 < self.tests.len();
        if stopped {
            let shortfall = format!("planned {} tests, got {}", self.tests.len(), last + 1);
            self.problems.retain(|p| *p != shortfall);
        }
        stopped
    }

    /// The VM died or hung mid-test: the running test (see
    /// [`Report::running`]) becomes `CRASHED` with `reason` as its last
    /// diagnostic, and is no longer running. With no running test the reason
    /// is kept as a problem.
    pub fn mark_running_crashed(&mut self, reason: &str) {
        match self.tests.iter_mut().rev().find(|t| is_running(t)) {
            Some(t) => {
                t.status = Status::Crashed;
                t.diagnostics.pop();
                t.diagnostics.push(NO_RESULT.to_string());
                t.diagnostics.push(reason.to_string());
            }
            None => self
                .problems
                .push(format!("{reason} (while no test was running)")),
        }
    }
}

fn is_running(t: &TestResult) -> bool {
    t.status == Status::Crashed && t.diagnostics.last().map(String::as_str) == Some(NO_RESULT_EOF)
}

/// Parses a KTAP/TAP stream. Never panics, never fails: what is odd is
/// counted in [`Report::problems`].
///
/// Accepted format: the stream of the module doc, line kinds as
/// `rig_contract::ktap::classify` accepts them; lines split at LF, CR or
/// both; a kernel console prefix (`<6>`, `[   1.23]`, `[  T12]`) dropped;
/// anything before the first structural line ignored.
pub fn parse(input: &str) -> Report {
    parser::parse(input)
}

/// `[   12.345678] ` kernel timestamp, optional `[  T123]` caller id: the
/// prefix of lines that went through the kernel's console.
fn prefix() -> &'static Regex {
    static P: OnceLock<Regex> = OnceLock::new();
    P.get_or_init(|| {
        Regex::new(r"^(?:<\d+>)?\[\s*\d+\.\d+\]\s?(?:\[\s*[TC]\d+\]\s?)?").expect("built-in regex")
    })
}

/// Indentation in columns, a tab counting 4 (older KUnit indented with tabs).
fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// `line` without up to `cols` columns of leading whitespace, trailing
/// whitespace trimmed.
fn dedent(line: &str, cols: usize) -> &str {
    let mut seen = 0;
    let mut start = 0;
    for (i, c) in line.char_indices() {
        if seen >= cols || !c.is_whitespace() {
            start = i;
            break;
        }
        seen += if c == '\t' { 4 } else { 1 };
        start = i + c.len_utf8();
    }
    line[start..].trim_end()
}
