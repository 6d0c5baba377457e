//! The KTAP lines the guest runner writes and the host reads, one writer and
//! one line parser ([`classify`]) for each kind. The host's stream parser
//! (xtask's `judge/ktap/`) builds the test tree from these lines.
//!
//! ```text
//! KTAP version 1
//! 1..N
//! # plan: name1 name2 ... nameN
//! # start: name1
//! # <diagnostic lines for this test>
//!     KTAP version 1                 (a nested block: the kernel suites'
//!     # Subtest: name1                subtests, indented by four spaces)
//!     ok 1 subtest
//! # duration_ms: 123
//! ok 1 name1
//! # start: name2
//! not ok 2 name2
//! ok 3 name3 # SKIP <reason>
//! ```

/// The header line this side writes.
pub const VERSION: &str = "KTAP version 1";
/// How much a nested block is indented.
pub const NESTED_INDENT: &str = "    ";

/// How a finished test is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    Pass,
    Fail,
    /// Only the reason's first line is written.
    Skip(&'a str),
}

/// `KTAP version 1`, the test count and the `# plan:` line naming them.
pub fn header(names: &[&str]) -> [String; 3] {
    let plan = format!("# plan: {}", names.join(" "));
    [
        VERSION.to_string(),
        format!("1..{}", names.len()),
        plan.trim_end().to_string(),
    ]
}

/// The line that says test `name` runs from here on.
pub fn start(name: &str) -> String {
    format!("# start: {name}")
}

/// How long the test took, written just before its result line.
pub fn duration(ms: u128) -> String {
    format!("# duration_ms: {ms}")
}

/// The result line of test number `n`.
pub fn result(n: usize, name: &str, verdict: Verdict<'_>) -> String {
    match verdict {
        Verdict::Pass => format!("ok {n} {name}"),
        Verdict::Fail => format!("not ok {n} {name}"),
        Verdict::Skip(reason) => {
            let reason = reason.lines().next().unwrap_or("").trim();
            format!("ok {n} {name} # SKIP {reason}")
                .trim_end()
                .to_string()
        }
    }
}

/// `msg` as diagnostic lines, one per line of `msg` (an empty one is `#`).
pub fn diag(msg: &str) -> Vec<String> {
    msg.lines()
        .map(|l| {
            let l = l.trim_end();
            if l.is_empty() {
                "#".to_string()
            } else {
                format!("# {l}")
            }
        })
        .collect()
}

/// The two lines that open test `parent`'s nested block of subtests.
pub fn subtest_header(parent: &str) -> [String; 2] {
    [nested(VERSION), nested(&format!("# Subtest: {parent}"))]
}

/// `line` inside a nested block.
pub fn nested(line: &str) -> String {
    format!("{NESTED_INDENT}{line}")
}

/// One line of a KTAP stream, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// `KTAP version N` or `TAP version N`, as written.
    Version(&'a str),
    /// `1..N`.
    Plan(usize),
    Result {
        ok: bool,
        number: Option<usize>,
        name: String,
        /// The text after the first `#`, trimmed.
        directive: Option<String>,
    },
    BailOut(&'a str),
    /// `# Subtest: name`.
    Subtest(&'a str),
    /// `# start: name`.
    Start(&'a str),
    /// `# plan: name1 name2 ...`.
    PlanNames(Vec<String>),
    /// `# duration_ms: N`.
    Duration(u64),
    /// Any other `# ...` line, without its `# `.
    Diagnostic(&'a str),
    /// Anything else: kernel messages, continuation lines.
    Other,
}

impl Line<'_> {
    /// Structural lines close the nested blocks indented deeper than they are.
    pub fn is_structural(&self) -> bool {
        !matches!(self, Line::Diagnostic(_) | Line::Other | Line::BailOut(_))
    }
}

/// Classifies one line. `content` is the line without its indentation,
/// without trailing whitespace, and without any kernel timestamp prefix.
///
/// Accepted format: the lines of the module doc; also `TAP version 13/14`,
/// `ok 1 - name` (the TAP hyphen), results without a number, `1..N # text`
/// and `Bail out! reason`. A result's name runs up to its first `#` (as in
/// the kernel's kunit_parser.py); a number too big for `usize` stays part of
/// the name.
pub fn classify(content: &str) -> Line<'_> {
    if let Some(after_hash) = content.strip_prefix('#') {
        let body = after_hash.trim_start();
        if let Some(name) = body.strip_prefix("Subtest:") {
            return Line::Subtest(name.trim());
        }
        if let Some(name) = body.strip_prefix("start:") {
            let name = name.trim();
            if !name.is_empty() {
                return Line::Start(name);
            }
        }
        if let Some(names) = body.strip_prefix("plan:") {
            return Line::PlanNames(names.split_whitespace().map(String::from).collect());
        }
        if let Some(ms) = body
            .strip_prefix("duration_ms:")
            .and_then(|d| digits(d.trim_start()))
        {
            if let Ok(ms) = ms.parse() {
                return Line::Duration(ms);
            }
        }
        if after_hash.is_empty() {
            return Line::Diagnostic("");
        }
        if let Some(text) = after_hash.strip_prefix([' ', '\t']) {
            return Line::Diagnostic(text.trim_end());
        }
        // e.g. the kernel's "#PF: supervisor read access in kernel mode"
        return Line::Other;
    }
    if let Some(line) = result_line(content) {
        return line;
    }
    if is_version(content) {
        return Line::Version(content);
    }
    if let Some(n) = plan(content) {
        return Line::Plan(n);
    }
    if let Some(reason) = content.strip_prefix("Bail out!") {
        return Line::BailOut(reason.trim());
    }
    Line::Other
}

/// `s` when it is one or more ASCII digits and nothing else.
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

fn is_version(content: &str) -> bool {
    ["KTAP version ", "TAP version "]
        .iter()
        .any(|p| content.strip_prefix(p).and_then(digits).is_some())
}

fn plan(content: &str) -> Option<usize> {
    let rest = content.strip_prefix("1..")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (n, tail) = rest.split_at(end);
    if !(tail.is_empty() || tail.trim_start().starts_with('#')) {
        return None;
    }
    digits(n)?.parse().ok()
}

fn result_line(content: &str) -> Option<Line<'static>> {
    let (ok, after) = if let Some(a) = content.strip_prefix("not ok") {
        (false, a)
    } else {
        (true, content.strip_prefix("ok")?)
    };
    if !(after.is_empty() || after.starts_with(char::is_whitespace)) {
        return None;
    }
    let words = after.trim_start();
    // "ok 12 name": a number is followed by whitespace or the end.
    let end = words
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(words.len());
    let (num, tail) = words.split_at(end);
    let numbered = !num.is_empty() && (tail.is_empty() || tail.starts_with(char::is_whitespace));
    let (num, tail) = if numbered {
        (Some(num), tail)
    } else {
        (None, after)
    };
    // The TAP hyphen: "ok 1 - name", "ok - name".
    let mut text = tail.trim_start();
    if let Some(t) = text.strip_prefix('-') {
        if t.is_empty() || t.starts_with(char::is_whitespace) {
            text = t.trim_start();
        }
    }
    let number = num.and_then(|n| n.parse().ok());
    let mut rest = String::new();
    if let (None, Some(n)) = (number, num) {
        rest.push_str(n);
        rest.push(' ');
    }
    rest.push_str(text);
    let (name, directive) = match rest.split_once('#') {
        Some((n, d)) => (n, Some(d.trim().to_string())),
        None => (rest.as_str(), None),
    };
    Some(Line::Result {
        ok,
        number,
        name: name.trim().to_string(),
        directive,
    })
}

/// What a result line's directive (the text after its `#`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `SKIP reason` or `TODO reason` (any case): the test was skipped. A
    /// TODO's reason keeps its `TODO ` in front.
    Skip(Option<String>),
    /// Anything else, e.g. kselftest's `TIMEOUT 45 seconds`.
    Other,
}

/// Reads a directive.
///
/// Accepted format: `SKIP`/`TODO` in any case as a whole word, then an
/// optional reason.
pub fn directive(d: &str) -> Directive {
    let word_end = d
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(d.len());
    let (word, reason) = d.split_at(word_end);
    let reason = reason.trim();
    if word.eq_ignore_ascii_case("skip") {
        Directive::Skip((!reason.is_empty()).then(|| reason.to_string()))
    } else if word.eq_ignore_ascii_case("todo") {
        Directive::Skip(Some(format!("TODO {reason}").trim_end().to_string()))
    } else {
        Directive::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(lines: &[String]) -> Vec<Line<'_>> {
        lines.iter().map(|l| classify(l.trim())).collect()
    }

    #[test]
    fn header_round_trip() {
        let h = header(&["a", "b_c"]);
        assert_eq!(h, ["KTAP version 1", "1..2", "# plan: a b_c"]);
        assert_eq!(
            parsed(&h),
            [
                Line::Version("KTAP version 1"),
                Line::Plan(2),
                Line::PlanNames(vec!["a".into(), "b_c".into()])
            ]
        );
        assert_eq!(header(&[])[2], "# plan:");
        assert_eq!(classify(&header(&[])[2]), Line::PlanNames(vec![]));
    }

    #[test]
    fn test_lines_round_trip() {
        assert_eq!(classify(&start("global_ma_x")), Line::Start("global_ma_x"));
        assert_eq!(
            classify(&start("test_progs:for_each")),
            Line::Start("test_progs:for_each")
        );
        assert_eq!(classify(&duration(123)), Line::Duration(123));
        let r = |ok, n, name: &str, directive: Option<&str>| Line::Result {
            ok,
            number: Some(n),
            name: name.into(),
            directive: directive.map(String::from),
        };
        assert_eq!(
            classify(&result(1, "a", Verdict::Pass)),
            r(true, 1, "a", None)
        );
        assert_eq!(
            classify(&result(2, "b", Verdict::Fail)),
            r(false, 2, "b", None)
        );
        let skip = result(3, "c", Verdict::Skip("no rig.cpus\nmore"));
        assert_eq!(skip, "ok 3 c # SKIP no rig.cpus");
        assert_eq!(classify(&skip), r(true, 3, "c", Some("SKIP no rig.cpus")));
        assert_eq!(
            directive("SKIP no rig.cpus"),
            Directive::Skip(Some("no rig.cpus".into()))
        );
        assert_eq!(result(4, "d", Verdict::Skip("")), "ok 4 d # SKIP");
        assert_eq!(directive("SKIP"), Directive::Skip(None));
    }

    #[test]
    fn diag_round_trip() {
        let d = diag("one\n\n  two  \nrig: inject-nmi");
        assert_eq!(d, ["# one", "#", "#   two", "# rig: inject-nmi"]);
        assert_eq!(
            parsed(&d),
            [
                Line::Diagnostic("one"),
                Line::Diagnostic(""),
                Line::Diagnostic("  two"),
                Line::Diagnostic("rig: inject-nmi")
            ]
        );
    }

    #[test]
    fn nested_block_round_trip() {
        let h = subtest_header("test_progs:hashmap");
        assert_eq!(
            h,
            ["    KTAP version 1", "    # Subtest: test_progs:hashmap"]
        );
        assert_eq!(
            parsed(&h),
            [
                Line::Version("KTAP version 1"),
                Line::Subtest("test_progs:hashmap")
            ]
        );
        let sub = nested(&result(1, "generic", Verdict::Pass));
        assert_eq!(sub, "    ok 1 generic");
        assert!(matches!(
            classify(sub.trim()),
            Line::Result {
                ok: true,
                number: Some(1),
                ..
            }
        ));
    }

    #[test]
    fn other_accepted_forms() {
        let r = |ok, number, name: &str, directive: Option<&str>| Line::Result {
            ok,
            number,
            name: name.into(),
            directive: directive.map(String::from),
        };
        assert_eq!(classify("TAP version 13"), Line::Version("TAP version 13"));
        assert_eq!(classify("KTAP version x"), Line::Other);
        assert_eq!(
            classify("ok 1 - first test"),
            r(true, Some(1), "first test", None)
        );
        assert_eq!(classify("ok - name"), r(true, None, "name", None));
        assert_eq!(classify("ok 1 -name"), r(true, Some(1), "-name", None));
        assert_eq!(classify("ok 1-"), r(true, None, "1-", None));
        assert_eq!(classify("ok"), r(true, None, "", None));
        assert_eq!(classify("okay"), Line::Other);
        assert_eq!(
            classify("ok 99999999999999999999999 big"),
            r(true, None, "99999999999999999999999 big", None)
        );
        assert_eq!(
            classify("not ok 3 - selftests: bpf: test_maps # TIMEOUT 45 seconds"),
            r(
                false,
                Some(3),
                "selftests: bpf: test_maps",
                Some("TIMEOUT 45 seconds")
            )
        );
        assert_eq!(directive("TIMEOUT 45 seconds"), Directive::Other);
        assert_eq!(
            directive("todo later"),
            Directive::Skip(Some("TODO later".into()))
        );
        assert_eq!(directive("TODO"), Directive::Skip(Some("TODO".into())));
        assert_eq!(directive("SKIPPED"), Directive::Other);
        assert_eq!(
            directive("skip: why"),
            Directive::Skip(Some(": why".into()))
        );
        assert_eq!(classify("1..4 # comment"), Line::Plan(4));
        assert_eq!(classify("1..4x"), Line::Other);
        assert_eq!(classify("1..99999999999999999999999"), Line::Other);
        assert_eq!(classify("Bail out! no BTF"), Line::BailOut("no BTF"));
        assert_eq!(classify("#PF: supervisor read"), Line::Other);
        assert_eq!(classify("#  start:   x  "), Line::Start("x"));
        assert_eq!(classify("# start:"), Line::Diagnostic("start:"));
        assert_eq!(
            classify("# duration_ms: 12ms"),
            Line::Diagnostic("duration_ms: 12ms")
        );
        assert_eq!(classify("#\tTab"), Line::Diagnostic("Tab"));
    }
}
