//! The KTAP parser, in the style of the kernel's kunit_parser.py: a
//! recursive parse that keeps the test tree (a nested block is parsed by a
//! recursive call and hangs under the test whose result claims it), then the
//! statuses are derived from the tree and its leaves flattened. Problems are
//! counted in the order they are met, never raised. The rules are mod.rs'.

use std::collections::HashSet;

use rig_contract::ktap::{classify, directive, Directive, Line};

use super::{
    dedent, indent_of, is_running, prefix, Report, Status, TestResult, MAX_SYNTHESISED,
    NO_RESULT_EOF, NO_RESULT_NEXT, NO_RESULT_PARENT,
};

/// One non-blank line, classified.
struct Ln<'a> {
    indent: usize,
    /// Without the kernel's console prefix.
    text: &'a str,
    /// `text` trimmed.
    content: &'a str,
    kind: Line<'a>,
    /// The input's last line, with no line break after it: maybe cut.
    last_unterminated: bool,
}

/// Splits `input` into classified lines.
///
/// Accepted format: lines ending in LF, CR or both; blank lines ignored; a
/// kernel console prefix (`<6>`, `[   1.23]`, `[  T12]`) dropped.
fn lines(input: &str) -> Vec<Ln<'_>> {
    let terminated = input.ends_with(['\n', '\r']);
    let raw: Vec<&str> = input
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    let n = raw.len();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = prefix().find(raw).map_or(raw, |m| &raw[m.end()..]);
            let content = text.trim();
            (!content.is_empty()).then(|| Ln {
                indent: indent_of(text),
                text,
                content,
                kind: classify(content),
                last_unterminated: !terminated && i + 1 == n,
            })
        })
        .collect()
}

/// A test as the stream wrote it; its status is derived in [`flatten`].
struct Node {
    number: Option<usize>,
    name: String,
    end: End,
    duration_ms: Option<u64>,
    skip_reason: Option<String>,
    diagnostics: Vec<String>,
    /// The nested block this test claimed, and how.
    block: Option<(Block, Claim)>,
}

/// How a test ended.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Passed,
    Failed,
    Skipped,
    /// Started (or had a block) and never reported.
    NoResult,
    /// Planned and never started.
    NotRun,
    /// Stands for a finished block no result line claimed: its status is
    /// its children's.
    Unclaimed,
}

/// How a test came to own its nested block.
#[derive(Clone, Copy, PartialEq)]
enum Claim {
    /// By its result line (or by crashing when the next test started).
    Reported,
    /// The output ended before it reported.
    Unfinished,
    /// Nothing claimed the block; the node stands for it.
    Missing,
}

struct Running {
    name: String,
    number: Option<usize>,
}

/// One level of the tree: the top-level stream or a nested block.
#[derive(Default)]
struct Block {
    indent: usize,
    /// From `# Subtest: name`.
    name: Option<String>,
    header: bool,
    planned: Option<usize>,
    plan_names: Option<Vec<String>>,
    nodes: Vec<Node>,
    /// Results at this level, crashed tests included.
    slots: usize,
    numbers: HashSet<usize>,
    last_number: usize,
    /// Names that started or reported at this level.
    seen_names: HashSet<String>,
    running: Option<Running>,
    /// Diagnostics since the last result (or `# start:`); once the block is
    /// closed, those after its last result.
    pending: Vec<String>,
    duration: Option<u64>,
    /// A closed nested block waiting for this level's next result line.
    child: Option<Box<Block>>,
    /// Closed because the output ended.
    unfinished: bool,
}

impl Block {
    fn label(&self, root: bool) -> String {
        match (&self.name, root) {
            (_, true) => String::new(),
            (Some(name), false) => format!("{name}: "),
            (None, false) => "nested block: ".to_string(),
        }
    }

    fn has_content(&self) -> bool {
        self.slots > 0 || self.running.is_some() || self.child.is_some() || !self.nodes.is_empty()
    }

    fn take_number(&mut self, n: usize) {
        self.numbers.insert(n);
        self.last_number = n;
    }

    /// Files `node` as the next result, with the waiting child block.
    fn add(&mut self, mut node: Node, claim: Claim) {
        self.slots += 1;
        node.block = self.child.take().map(|b| (*b, claim));
        self.nodes.push(node);
    }

    /// The running test (if any) never reported.
    fn crash_running(&mut self, why: &'static str) {
        let Some(r) = self.running.take() else {
            return;
        };
        let mut diagnostics = std::mem::take(&mut self.pending);
        diagnostics.push(why.to_string());
        // Its position in the plan, else the one after the last number.
        let number = r.number.unwrap_or_else(|| {
            self.plan_names
                .as_ref()
                .and_then(|names| names.iter().position(|n| *n == r.name))
                .map_or(self.last_number + 1, |i| i + 1)
        });
        self.take_number(number);
        let claim = if why == NO_RESULT_EOF {
            Claim::Unfinished
        } else {
            Claim::Reported
        };
        let node = Node {
            number: Some(number),
            name: r.name,
            end: End::NoResult,
            duration_ms: self.duration.take(),
            skip_reason: None,
            diagnostics,
            block: None,
        };
        self.add(node, claim);
    }

    /// A child block that no result line claimed gets a node of its own.
    fn flush_child(&mut self, problems: &mut Vec<String>, label: &str) {
        let Some(block) = &mut self.child else {
            return;
        };
        let number = self.last_number + 1;
        let name = block.name.clone().unwrap_or_else(|| format!("#{number}"));
        let (end, claim, diagnostics) = if block.unfinished {
            let mut d = std::mem::take(&mut self.pending);
            d.append(&mut block.pending);
            d.push(NO_RESULT_EOF.to_string());
            (End::NoResult, Claim::Unfinished, d)
        } else {
            problems.push(format!("{label}subtest '{name}' has no result line"));
            (End::Unclaimed, Claim::Missing, Vec::new())
        };
        self.take_number(number);
        self.seen_names.insert(name.clone());
        let node = Node {
            number: Some(number),
            name,
            end,
            duration_ms: None,
            skip_reason: None,
            diagnostics,
            block: None,
        };
        self.add(node, claim);
    }
}

struct Parser<'l, 'a> {
    lines: &'l [Ln<'a>],
    pos: usize,
    version: Option<String>,
    problems: Vec<String>,
}

/// Parses a KTAP stream into its test tree and derives the report from it.
///
/// Accepted format: see mod.rs; anything before the first structural line
/// (header, plan, result, `# start:`, `# plan:`, ...) is boot noise.
pub(super) fn parse(input: &str) -> Report {
    let lines = lines(input);
    let Some(first) = lines.iter().position(|l| l.kind.is_structural()) else {
        return Report {
            problems: vec!["no KTAP output (no header, plan or result)".to_string()],
            ..Report::default()
        };
    };
    let mut p = Parser {
        lines: &lines[first..],
        pos: 0,
        version: None,
        problems: Vec::new(),
    };
    if !matches!(lines[first].kind, Line::Version(_)) {
        p.problems.push("missing KTAP version header".to_string());
    }
    let mut root = Block {
        indent: lines[first].indent,
        ..Block::default()
    };
    p.block(&mut root, true);
    p.finish(&mut root, true, true);
    Report {
        version: p.version,
        planned: root.planned,
        tests: flatten(root.nodes),
        problems: p.problems,
    }
}

impl Parser<'_, '_> {
    /// Parses the lines of block `b` up to the structural line that closes
    /// it (indented less than the block; it is left for the parent) or the
    /// end of the output. A deeper `KTAP version` line opens a nested block,
    /// parsed by a recursive call.
    ///
    /// Accepted format: the lines of `rig_contract::ktap`, at the block's
    /// indentation; a nested block's header, then its `# Subtest:` name and
    /// plan; diagnostics and kernel messages at any indentation belong to
    /// the innermost open block.
    fn block(&mut self, b: &mut Block, root: bool) {
        let lines = self.lines;
        while let Some(ln) = lines.get(self.pos) {
            if !root && ln.kind.is_structural() && ln.indent < b.indent {
                return;
            }
            self.pos += 1;
            let deeper = ln.indent > b.indent;
            let label = b.label(root);
            match &ln.kind {
                Line::Version(_) if deeper => {
                    let mut child = Block {
                        indent: ln.indent,
                        header: true,
                        ..Block::default()
                    };
                    self.block(&mut child, false);
                    let eof = self.pos >= lines.len();
                    self.finish(&mut child, eof, false);
                    child.unfinished = eof;
                    b.flush_child(&mut self.problems, &label);
                    b.child = Some(Box::new(child));
                }
                Line::Version(v) => {
                    if root && self.version.is_none() && !b.has_content() {
                        self.version = Some(v.to_string());
                        b.header = true;
                    } else if !root && !b.header && !b.has_content() {
                        b.header = true;
                    } else {
                        self.problems
                            .push(format!("{label}unexpected '{v}' line ignored"));
                    }
                }
                Line::Subtest(name) => {
                    if !root && b.name.is_none() && !b.has_content() {
                        b.name = Some(name.to_string());
                    } else {
                        b.pending.push(format!("Subtest: {name}"));
                    }
                }
                Line::Plan(n) => {
                    if b.planned.is_some() {
                        self.problems
                            .push(format!("{label}second plan line '1..{n}' ignored"));
                    } else {
                        b.planned = Some(*n);
                    }
                }
                Line::PlanNames(names) => {
                    if b.plan_names.is_some() {
                        self.problems
                            .push(format!("{label}second '# plan:' line ignored"));
                    } else {
                        b.plan_names = Some(names.clone());
                    }
                }
                Line::Start(name) => self.start(b, &label, name, ln.last_unterminated),
                Line::Duration(ms) => b.duration = Some(*ms),
                Line::Result {
                    ok,
                    number,
                    name,
                    directive,
                } => self.result(b, &label, ln, *ok, *number, name, directive.as_deref()),
                Line::BailOut(reason) => self.problems.push(format!("{label}bail out: {reason}")),
                // KUnit indents a parameterised test's diagnostics less than
                // its results: they belong to the innermost block.
                Line::Diagnostic(text) => b.pending.push(text.to_string()),
                // Kernel messages and continuation lines.
                Line::Other => b.pending.push(dedent(ln.text, b.indent).to_string()),
            }
        }
    }

    /// `# start: name`: the test runs from here on.
    ///
    /// Accepted format: a name from the plan (when there is one); a cut last
    /// line naming no planned test is ignored.
    fn start(&mut self, b: &mut Block, label: &str, name: &str, last_unterminated: bool) {
        let planned = b
            .plan_names
            .as_ref()
            .map(|names| names.iter().any(|n| n == name));
        if last_unterminated && planned == Some(false) {
            self.problems.push(format!(
                "{label}ignored truncated final line '# start: {name}'"
            ));
            return;
        }
        b.crash_running(NO_RESULT_NEXT);
        b.flush_child(&mut self.problems, label);
        if planned == Some(false) {
            self.problems
                .push(format!("{label}'{name}' started but is not in the plan"));
        }
        if !b.seen_names.insert(name.to_string()) {
            self.problems.push(format!("{label}'{name}' started again"));
        }
        b.pending.clear();
        b.duration = None;
        let number = b
            .plan_names
            .as_ref()
            .and_then(|names| names.iter().position(|n| n == name))
            .map(|i| i + 1);
        b.running = Some(Running {
            name: name.to_string(),
            number,
        });
    }

    /// A result line: the running test's, or a test's without `# start:`.
    ///
    /// Accepted format: `ok|not ok [N] [- ]name [# directive]`; numbers in
    /// order from 1; a cut last line is believed only if it names the
    /// running (or a planned) test and has a number.
    #[allow(clippy::too_many_arguments)]
    fn result(
        &mut self,
        b: &mut Block,
        label: &str,
        ln: &Ln<'_>,
        ok: bool,
        number: Option<usize>,
        name: &str,
        directive: Option<&str>,
    ) {
        let name = if name.is_empty() {
            format!("#{}", number.unwrap_or(b.last_number + 1))
        } else {
            name.to_string()
        };
        if ln.last_unterminated {
            let plausible = match (&b.running, &b.plan_names) {
                (Some(r), _) => r.name == name,
                (None, Some(names)) => names.contains(&name),
                (None, None) => true,
            };
            if !plausible || number.is_none() {
                self.problems.push(format!(
                    "{label}ignored truncated final line '{}'",
                    ln.content
                ));
                return;
            }
        }
        let mut problems = Vec::new();
        if let Some(r) = &b.running {
            if r.name != name {
                problems.push(format!(
                    "{label}result for '{name}' while '{}' was running",
                    r.name
                ));
                b.crash_running(NO_RESULT_NEXT);
            }
        }
        if b.running.take().is_none() && !b.seen_names.insert(name.clone()) {
            problems.push(format!("{label}second result for '{name}'"));
        }
        if let Some(names) = &b.plan_names {
            if !names.contains(&name) {
                problems.push(format!("{label}'{name}' is not in the plan"));
            }
        }
        match number {
            Some(n) if b.numbers.contains(&n) => {
                problems.push(format!("{label}duplicate test number {n} ('{name}')"));
                b.last_number = n;
            }
            Some(n) => {
                if n != b.last_number + 1 {
                    problems.push(format!(
                        "{label}test number {n} ('{name}') out of order, expected {}",
                        b.last_number + 1
                    ));
                }
                b.take_number(n);
            }
            None => {}
        }
        let mut diagnostics = std::mem::take(&mut b.pending);
        let plain = if ok { End::Passed } else { End::Failed };
        let (end, skip_reason) = match directive.map(|d| (d, self::directive(d))) {
            Some((_, Directive::Skip(reason))) => (End::Skipped, reason),
            Some((d, Directive::Other)) => {
                if !d.is_empty() {
                    diagnostics.push(format!("directive: {d}"));
                }
                (plain, None)
            }
            None => (plain, None),
        };
        let node = Node {
            number,
            name,
            end,
            duration_ms: b.duration.take(),
            skip_reason,
            diagnostics,
            block: None,
        };
        b.add(node, Claim::Reported);
        self.problems.extend(problems);
    }

    /// Settles a block's open ends and checks its plan: the running test
    /// crashed, a waiting child gets a node, planned tests that never ran
    /// are `NOT_RUN`.
    fn finish(&mut self, b: &mut Block, eof: bool, root: bool) {
        let label = b.label(root);
        b.crash_running(if eof { NO_RESULT_EOF } else { NO_RESULT_PARENT });
        b.flush_child(&mut self.problems, &label);
        let got = b.slots;
        let mut total = got;
        if let Some(names) = b.plan_names.clone() {
            if let Some(n) = b.planned {
                if names.len() != n {
                    self.problems.push(format!(
                        "{label}'# plan:' names {} tests but the plan is 1..{n}",
                        names.len()
                    ));
                }
            }
            for (i, name) in names.iter().enumerate().take(MAX_SYNTHESISED) {
                if !b.seen_names.contains(name) {
                    b.numbers.insert(i + 1);
                    b.nodes.push(not_run(i + 1, name.clone()));
                    total += 1;
                }
            }
        }
        match b.planned {
            Some(n) => {
                if got != n {
                    self.problems
                        .push(format!("{label}planned {n} tests, got {got}"));
                }
                let mut k = 1;
                let mut synthesised = 0;
                while total < n && synthesised < MAX_SYNTHESISED {
                    if !b.numbers.contains(&k) {
                        b.nodes.push(not_run(k, format!("#{k}")));
                        total += 1;
                        synthesised += 1;
                    }
                    k += 1;
                }
            }
            None if root => self.problems.push("missing plan line (1..N)".to_string()),
            None => {}
        }
    }
}

fn not_run(number: usize, name: String) -> Node {
    Node {
        number: Some(number),
        name,
        end: End::NotRun,
        duration_ms: None,
        skip_reason: None,
        diagnostics: Vec::new(),
        block: None,
    }
}

/// The tree's leaves, named `parent.child`, with their statuses. A parent
/// is an entry of its own only when it has no child results, or when it
/// failed or crashed while none of its children did, so that no failure
/// disappears.
fn flatten(nodes: Vec<Node>) -> Vec<TestResult> {
    let mut out = Vec::new();
    for node in nodes {
        let mut result = TestResult {
            number: node.number,
            status: Status::Passed,
            name: node.name,
            duration_ms: node.duration_ms,
            skip_reason: node.skip_reason,
            diagnostics: node.diagnostics,
        };
        let Some((block, claim)) = node.block else {
            result.status = status(node.end, &[]);
            out.push(result);
            continue;
        };
        let children: Vec<TestResult> = flatten(block.nodes)
            .into_iter()
            .map(|mut t| {
                t.name = format!("{}.{}", result.name, t.name);
                t
            })
            .collect();
        result.status = status(node.end, &children);
        // Lines after the block's last result; the "still running" marker
        // stays last.
        let marker = match claim {
            Claim::Unfinished => result.diagnostics.pop(),
            _ => None,
        };
        result.diagnostics.extend(block.pending);
        result.diagnostics.extend(marker);
        let failing = |t: &TestResult| matches!(t.status, Status::Failed | Status::Crashed);
        let keep_parent = children.is_empty()
            || match claim {
                Claim::Reported => failing(&result) && !children.iter().any(failing),
                Claim::Unfinished => !children.iter().any(is_running),
                Claim::Missing => false,
            };
        out.extend(children);
        if keep_parent {
            out.push(result);
        }
    }
    out
}

/// A test's status from how it ended (an unclaimed block's from its
/// children's).
fn status(end: End, children: &[TestResult]) -> Status {
    match end {
        End::Passed => Status::Passed,
        End::Failed => Status::Failed,
        End::Skipped => Status::Skipped,
        End::NoResult => Status::Crashed,
        End::NotRun => Status::NotRun,
        End::Unclaimed => {
            let any = |s: Status| children.iter().any(|t| t.status == s);
            if any(Status::Crashed) {
                Status::Crashed
            } else if any(Status::Failed) || any(Status::NotRun) {
                Status::Failed
            } else if !children.is_empty() && children.iter().all(|t| t.status == Status::Skipped) {
                Status::Skipped
            } else {
                Status::Passed
            }
        }
    }
}
