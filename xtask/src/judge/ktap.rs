//! KTAP / TAP parser for the guest runner's output, in the spirit of the
//! kernel's `tools/testing/kunit/kunit_parser.py`: line by line, one regex per
//! line kind, never panics and never fails. Whatever is odd about the input
//! ends up in [`Report::problems`] instead of an error.
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

use regex::Regex;
use rig_contract::ktap::{classify, directive, Directive, Line};
use serde::Serialize;
use std::collections::HashSet;
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
    let mut parser = Parser::default();
    // The last line is unterminated when the input does not end in a line
    // break: it may have been cut.
    let terminated = input.ends_with(['\n', '\r']);
    let mut lines = input
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .peekable();
    while let Some(line) = lines.next() {
        let last_unterminated = !terminated && lines.peek().is_none();
        parser.line(line, last_unterminated);
    }
    parser.finish()
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

// ---------------------------------------------------------------------------
// The parser: a stack of levels, one per open (nested) block.

#[derive(Default)]
struct Level {
    indent: usize,
    /// From `# Subtest: name`.
    name: Option<String>,
    header: bool,
    planned: Option<usize>,
    plan_names: Option<Vec<String>>,
    /// Finished entries, names relative to this level.
    tests: Vec<TestResult>,
    /// Results at this level, crashed tests included.
    slots: usize,
    numbers: HashSet<usize>,
    last_number: usize,
    /// Names that started or reported at this level.
    seen_names: HashSet<String>,
    running: Option<Running>,
    /// Diagnostics since the last result (or `# start:`).
    pending: Vec<String>,
    duration: Option<u64>,
    /// A closed nested block waiting for this level's next result line.
    child: Option<Block>,
}

struct Running {
    name: String,
    number: Option<usize>,
}

/// A finished nested block, waiting to be attached to its parent's result.
struct Block {
    name: Option<String>,
    tests: Vec<TestResult>,
    /// Diagnostics left over after its last result.
    leftover: Vec<String>,
    /// Closed because the output ended.
    unfinished: bool,
}

/// Why a parent entry is being combined with its child block.
#[derive(Clone, Copy, PartialEq)]
enum Parent {
    /// The parent's result line arrived.
    Reported,
    /// The output ended before the parent reported.
    Unfinished,
    /// The block was followed by something other than its parent's result.
    Missing,
}

impl Level {
    fn label(&self, root: bool) -> String {
        match (&self.name, root) {
            (_, true) => String::new(),
            (Some(name), false) => format!("{name}: "),
            (None, false) => "nested block: ".to_string(),
        }
    }

    fn has_content(&self) -> bool {
        self.slots > 0 || self.running.is_some() || self.child.is_some() || !self.tests.is_empty()
    }

    /// The number a test without one most likely has: its position in the
    /// plan, else the one after the last number.
    fn guess_number(&self, name: &str) -> usize {
        self.plan_names
            .as_ref()
            .and_then(|names| names.iter().position(|n| n == name))
            .map_or(self.last_number + 1, |i| i + 1)
    }

    fn take_number(&mut self, n: usize) {
        self.numbers.insert(n);
        self.last_number = n;
    }

    /// Files `result` (with the child block, if any) as the next result.
    fn add_result(&mut self, mut result: TestResult, kind: Parent) {
        self.slots += 1;
        let Some(block) = self.child.take() else {
            self.tests.push(result);
            return;
        };
        // Lines after the block's last result; the "still running" marker
        // stays last.
        let marker = match kind {
            Parent::Unfinished => result.diagnostics.pop(),
            _ => None,
        };
        result.diagnostics.extend(block.leftover);
        result.diagnostics.extend(marker);
        let children: Vec<TestResult> = block
            .tests
            .into_iter()
            .map(|mut t| {
                t.name = format!("{}.{}", result.name, t.name);
                t
            })
            .collect();
        let failing = |t: &TestResult| matches!(t.status, Status::Failed | Status::Crashed);
        let keep_parent = children.is_empty()
            || match kind {
                Parent::Reported => failing(&result) && !children.iter().any(failing),
                Parent::Unfinished => !children.iter().any(is_running),
                Parent::Missing => false,
            };
        self.tests.extend(children);
        if keep_parent {
            self.tests.push(result);
        }
    }

    /// The running test (if any) never reported: it is crashed.
    fn crash_running(&mut self, why: &str) {
        if let Some(r) = self.running.take() {
            let mut diagnostics = std::mem::take(&mut self.pending);
            diagnostics.push(why.to_string());
            let number = r.number.unwrap_or_else(|| self.guess_number(&r.name));
            self.take_number(number);
            let kind = if why == NO_RESULT_EOF {
                Parent::Unfinished
            } else {
                Parent::Reported
            };
            let result = TestResult {
                number: Some(number),
                name: r.name,
                status: Status::Crashed,
                duration_ms: self.duration.take(),
                skip_reason: None,
                diagnostics,
            };
            self.add_result(result, kind);
        }
    }

    /// A child block that no result line claimed.
    fn flush_child(&mut self, problems: &mut Vec<String>, label: &str) {
        let Some(mut block) = self.child.take() else {
            return;
        };
        let number = self.last_number + 1;
        let name = block.name.clone().unwrap_or_else(|| format!("#{number}"));
        let (status, kind, diagnostics) = if block.unfinished {
            let mut d = std::mem::take(&mut self.pending);
            d.append(&mut block.leftover);
            d.push(NO_RESULT_EOF.to_string());
            (Status::Crashed, Parent::Unfinished, d)
        } else {
            problems.push(format!("{label}subtest '{name}' has no result line"));
            (aggregate(&block.tests), Parent::Missing, Vec::new())
        };
        self.child = Some(block);
        self.take_number(number);
        self.seen_names.insert(name.clone());
        let result = TestResult {
            number: Some(number),
            name,
            status,
            duration_ms: None,
            skip_reason: None,
            diagnostics,
        };
        self.add_result(result, kind);
    }
}

/// The status a block's parent would have had.
fn aggregate(tests: &[TestResult]) -> Status {
    let any = |s: Status| tests.iter().any(|t| t.status == s);
    if any(Status::Crashed) {
        Status::Crashed
    } else if any(Status::Failed) || any(Status::NotRun) {
        Status::Failed
    } else if !tests.is_empty() && tests.iter().all(|t| t.status == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Passed
    }
}

#[derive(Default)]
struct Parser {
    levels: Vec<Level>,
    version: Option<String>,
    planned: Option<usize>,
    problems: Vec<String>,
}

impl Parser {
    fn line(&mut self, raw: &str, last_unterminated: bool) {
        let text = match prefix().find(raw) {
            Some(m) => &raw[m.end()..],
            None => raw,
        };
        let indent = indent_of(text);
        let content = text.trim();
        if content.is_empty() {
            return;
        }
        let kind = classify(content);

        if self.levels.is_empty() {
            // Before the stream starts: kernel boot noise, ignored.
            if !kind.is_structural() {
                return;
            }
            if !matches!(kind, Line::Version(_)) {
                self.problems
                    .push("missing KTAP version header".to_string());
            }
            self.levels.push(Level {
                indent,
                ..Level::default()
            });
        }

        if kind.is_structural() {
            while self.levels.len() > 1 && self.top().indent > indent {
                self.close_top(false);
            }
        }

        let deeper = indent > self.top().indent;
        let root = self.levels.len() == 1;
        match kind {
            Line::Version(v) => {
                if deeper {
                    self.open(indent);
                } else if root && self.version.is_none() && !self.top().has_content() {
                    self.version = Some(v.to_string());
                    self.top().header = true;
                } else if !root && !self.top().header && !self.top().has_content() {
                    self.top().header = true;
                } else {
                    let label = self.label();
                    self.problems
                        .push(format!("{label}unexpected '{v}' line ignored"));
                }
            }
            Line::Subtest(name) => {
                if !root && self.top().name.is_none() && !self.top().has_content() {
                    self.top().name = Some(name.to_string());
                } else {
                    let text = format!("Subtest: {name}");
                    self.top().pending.push(text);
                }
            }
            Line::Plan(n) => {
                let top = self.top();
                if top.planned.is_some() {
                    let label = self.label();
                    self.problems
                        .push(format!("{label}second plan line '1..{n}' ignored"));
                } else {
                    top.planned = Some(n);
                    if root {
                        self.planned = Some(n);
                    }
                }
            }
            Line::PlanNames(names) => {
                if self.top().plan_names.is_some() {
                    let label = self.label();
                    self.problems
                        .push(format!("{label}second '# plan:' line ignored"));
                } else {
                    self.top().plan_names = Some(names);
                }
            }
            Line::Start(name) => self.start(name, last_unterminated),
            Line::Duration(ms) => self.top().duration = Some(ms),
            Line::Result {
                ok,
                number,
                name,
                directive,
            } => self.result(ok, number, name, directive, last_unterminated, content),
            Line::BailOut(reason) => {
                let label = self.label();
                self.problems.push(format!("{label}bail out: {reason}"));
            }
            Line::Diagnostic(text) => {
                // The innermost level: KUnit indents a parameterised test's
                // diagnostics less than its results.
                self.top().pending.push(text.to_string());
            }
            Line::Other => {
                // Kernel messages and continuation lines: the innermost level.
                let top = self.top();
                let text = dedent(text, top.indent).to_string();
                top.pending.push(text);
            }
        }
    }

    fn top(&mut self) -> &mut Level {
        if self.levels.is_empty() {
            self.levels.push(Level::default());
        }
        let i = self.levels.len() - 1;
        &mut self.levels[i]
    }

    fn label(&mut self) -> String {
        let root = self.levels.len() <= 1;
        self.top().label(root)
    }

    /// A nested block, opened by its `KTAP version` line.
    fn open(&mut self, indent: usize) {
        self.levels.push(Level {
            indent,
            header: true,
            ..Level::default()
        });
    }

    fn start(&mut self, name: &str, last_unterminated: bool) {
        let label = self.label();
        let top = self.top();
        let planned = top
            .plan_names
            .as_ref()
            .map(|names| names.iter().any(|n| n == name));
        if last_unterminated && planned == Some(false) {
            self.problems.push(format!(
                "{label}ignored truncated final line '# start: {name}'"
            ));
            return;
        }
        top.crash_running(NO_RESULT_NEXT);
        let mut problems = Vec::new();
        top.flush_child(&mut problems, &label);
        if planned == Some(false) {
            problems.push(format!("{label}'{name}' started but is not in the plan"));
        }
        if !top.seen_names.insert(name.to_string()) {
            problems.push(format!("{label}'{name}' started again"));
        }
        top.pending.clear();
        top.duration = None;
        let number = top
            .plan_names
            .as_ref()
            .and_then(|names| names.iter().position(|n| n == name))
            .map(|i| i + 1);
        top.running = Some(Running {
            name: name.to_string(),
            number,
        });
        self.problems.extend(problems);
    }

    fn result(
        &mut self,
        ok: bool,
        number: Option<usize>,
        name: String,
        directive: Option<String>,
        last_unterminated: bool,
        content: &str,
    ) {
        let label = self.label();
        let mut problems = Vec::new();
        let top = self.top();
        let name = if name.is_empty() {
            format!("#{}", number.unwrap_or(top.last_number + 1))
        } else {
            name
        };
        if last_unterminated {
            let plausible = match (&top.running, &top.plan_names) {
                (Some(r), _) => r.name == name,
                (None, Some(names)) => names.contains(&name),
                (None, None) => true,
            };
            if !plausible || number.is_none() {
                self.problems
                    .push(format!("{label}ignored truncated final line '{content}'"));
                return;
            }
        }
        if let Some(r) = &top.running {
            if r.name != name {
                problems.push(format!(
                    "{label}result for '{name}' while '{}' was running",
                    r.name
                ));
                top.crash_running(NO_RESULT_NEXT);
            }
        }
        let running = top.running.take();
        if running.is_none() && !top.seen_names.insert(name.clone()) {
            problems.push(format!("{label}second result for '{name}'"));
        }
        if let Some(names) = &top.plan_names {
            if !names.contains(&name) {
                problems.push(format!("{label}'{name}' is not in the plan"));
            }
        }
        match number {
            Some(n) if top.numbers.contains(&n) => {
                problems.push(format!("{label}duplicate test number {n} ('{name}')"));
                top.last_number = n;
            }
            Some(n) => {
                if n != top.last_number + 1 {
                    problems.push(format!(
                        "{label}test number {n} ('{name}') out of order, expected {}",
                        top.last_number + 1
                    ));
                }
                top.take_number(n);
            }
            None => {}
        }

        let mut diagnostics = std::mem::take(&mut top.pending);
        let (status, skip_reason) = match directive.as_deref().map(|d| (d, self::directive(d))) {
            Some((_, Directive::Skip(reason))) => (Status::Skipped, reason),
            Some((d, Directive::Other)) => {
                if !d.is_empty() {
                    diagnostics.push(format!("directive: {d}"));
                }
                (if ok { Status::Passed } else { Status::Failed }, None)
            }
            None => (if ok { Status::Passed } else { Status::Failed }, None),
        };
        let result = TestResult {
            number,
            name,
            status,
            duration_ms: top.duration.take(),
            skip_reason,
            diagnostics,
        };
        top.add_result(result, Parent::Reported);
        self.problems.extend(problems);
    }

    /// Pops the innermost level and hands it to its parent as a child block.
    fn close_top(&mut self, eof: bool) {
        let Some(mut level) = self.levels.pop() else {
            return;
        };
        let root = self.levels.is_empty();
        let tests = self.finish_level(&mut level, eof, root);
        if root {
            self.levels.push(Level {
                tests,
                ..Level::default()
            });
            return;
        }
        let block = Block {
            name: level.name,
            tests,
            leftover: level.pending,
            unfinished: eof,
        };
        let label = self.label();
        let mut problems = Vec::new();
        let parent = self.top();
        parent.flush_child(&mut problems, &label);
        parent.child = Some(block);
        self.problems.extend(problems);
    }

    /// Settles a level's open ends and checks its plan.
    fn finish_level(&mut self, level: &mut Level, eof: bool, root: bool) -> Vec<TestResult> {
        let label = level.label(root);
        level.crash_running(if eof { NO_RESULT_EOF } else { NO_RESULT_PARENT });
        level.flush_child(&mut self.problems, &label);

        let got = level.slots;
        let mut total = got;
        if let Some(names) = level.plan_names.clone() {
            if let Some(n) = level.planned {
                if names.len() != n {
                    self.problems.push(format!(
                        "{label}'# plan:' names {} tests but the plan is 1..{n}",
                        names.len()
                    ));
                }
            }
            for (i, name) in names.iter().enumerate().take(MAX_SYNTHESISED) {
                if !level.seen_names.contains(name) {
                    level.numbers.insert(i + 1);
                    level.tests.push(not_run(i + 1, name.clone()));
                    total += 1;
                }
            }
        }
        match level.planned {
            Some(n) => {
                if got != n {
                    self.problems
                        .push(format!("{label}planned {n} tests, got {got}"));
                }
                let mut k = 1;
                let mut synthesised = 0;
                while total < n && synthesised < MAX_SYNTHESISED {
                    if !level.numbers.contains(&k) {
                        level.tests.push(not_run(k, format!("#{k}")));
                        total += 1;
                        synthesised += 1;
                    }
                    k += 1;
                }
            }
            None if root => self.problems.push("missing plan line (1..N)".to_string()),
            None => {}
        }
        std::mem::take(&mut level.tests)
    }

    fn finish(mut self) -> Report {
        if self.levels.is_empty() {
            self.problems
                .push("no KTAP output (no header, plan or result)".to_string());
            return Report {
                problems: self.problems,
                ..Report::default()
            };
        }
        while !self.levels.is_empty() {
            let root = self.levels.len() == 1;
            self.close_top(true);
            if root {
                break;
            }
        }
        let tests = self.levels.pop().map(|l| l.tests).unwrap_or_default();
        Report {
            version: self.version,
            planned: self.planned,
            tests,
            problems: self.problems,
        }
    }
}

fn not_run(number: usize, name: String) -> TestResult {
    TestResult {
        number: Some(number),
        name,
        status: Status::NotRun,
        duration_ms: None,
        skip_reason: None,
        diagnostics: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
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

    /// What the guest runner writes (through rig_contract's writers, as
    /// bpf-selftests/src/ktap.rs and kernel_suites/mod.rs do) reads back as
    /// the tests it wrote.
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
        let r =
            parse("KTAP version 1\n1..2\n# plan: a b\n# start: a\nok 1 a\n# start: b\n# doing b\n");
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
        let r = parse(
            "KTAP version 1\n1..2\n# start: a\n# duration_ms: 123\nok 1 a\n# start: b\nok 2 b\n",
        );
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
        let r = parse(
            "TAP version 13\n1..1\nnot ok 1 - selftests: bpf: test_maps # TIMEOUT 45 seconds\n",
        );
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
        let r = parse(
            "KTAP version 1\n1..2\n# plan: alpha beta\n# start: alpha\nok 1 alpha\n# start: be",
        );
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
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test_data/ktap");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no files in {}", dir.display());
        files
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
}
