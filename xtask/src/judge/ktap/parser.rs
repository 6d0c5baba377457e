//! The KTAP parser's machinery: a stack of levels, one per open nested
//! block, fed one classified line at a time (see the rules in mod.rs).

use std::collections::HashSet;

use rig_contract::ktap::{classify, directive, Directive, Line};

use super::{
    dedent, indent_of, is_running, prefix, Report, Status, TestResult, MAX_SYNTHESISED,
    NO_RESULT_EOF, NO_RESULT_NEXT, NO_RESULT_PARENT,
};

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
pub(super) struct Parser {
    levels: Vec<Level>,
    version: Option<String>,
    planned: Option<usize>,
    problems: Vec<String>,
}

impl Parser {
    pub(super) fn line(&mut self, raw: &str, last_unterminated: bool) {
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

    pub(super) fn finish(mut self) -> Report {
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
