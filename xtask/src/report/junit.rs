//! `junit.xml` of a run, for CI's test reports: one test case per test, and
//! one named `console` for the splats. Serialised by quick-xml from the
//! structs below.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::judge::console::Splat;
use crate::judge::ktap::{Report, Status};
use crate::report::results::RunInfo;

#[derive(Serialize)]
#[serde(rename = "testsuites")]
struct TestSuites {
    testsuite: TestSuite,
}

#[derive(Serialize)]
struct TestSuite {
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@tests")]
    tests: usize,
    #[serde(rename = "@failures")]
    failures: usize,
    #[serde(rename = "@skipped")]
    skipped: usize,
    #[serde(rename = "@time")]
    time: String,
    testcase: Vec<TestCase>,
}

#[derive(Serialize)]
struct TestCase {
    #[serde(rename = "@classname")]
    classname: &'static str,
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@time", skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<Skipped>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
}

#[derive(Serialize)]
struct Skipped {
    #[serde(rename = "@message")]
    message: String,
}

#[derive(Serialize)]
struct Failure {
    #[serde(rename = "@message")]
    message: String,
    #[serde(rename = "$text")]
    text: String,
}

const CLASSNAME: &str = "bpf-selftests";

fn suites(info: &RunInfo, report: &Report, splats: &[Splat]) -> TestSuites {
    let counts = report.counts();
    let mut testcase: Vec<TestCase> = report
        .tests
        .iter()
        .map(|t| {
            let secs = t.duration_ms.unwrap_or(0) as f64 / 1000.0;
            TestCase {
                classname: CLASSNAME,
                name: xml_text(&t.name),
                time: Some(format!("{secs:.3}")),
                skipped: (t.status == Status::Skipped).then(|| Skipped {
                    message: xml_text(t.skip_reason.as_deref().unwrap_or("")),
                }),
                failure: (!matches!(t.status, Status::Passed | Status::Skipped)).then(|| Failure {
                    message: t.status.name().to_string(),
                    text: xml_text(&t.diagnostics.join("\n")),
                }),
            }
        })
        .collect();
    if let Some(first) = splats.first() {
        let text: Vec<String> = splats.iter().map(|s| s.excerpt.join("\n")).collect();
        testcase.push(TestCase {
            classname: CLASSNAME,
            name: "console".to_string(),
            time: None,
            skipped: None,
            failure: Some(Failure {
                message: xml_text(&first.title),
                text: xml_text(&text.join("\n\n")),
            }),
        });
    }
    TestSuites {
        testsuite: TestSuite {
            name: format!("bpf-selftests.{}", xml_text(&info.series)),
            tests: report.tests.len() + usize::from(!splats.is_empty()),
            failures: counts.failed
                + counts.crashed
                + counts.not_run
                + usize::from(!splats.is_empty()),
            skipped: counts.skipped,
            time: format!("{:.3}", info.wall_s),
            testcase,
        },
    }
}

/// The document, with its XML declaration.
fn render(info: &RunInfo, report: &Report, splats: &[Splat]) -> Result<String> {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut ser = quick_xml::se::Serializer::new(&mut x);
    ser.indent(' ', 2);
    suites(info, report, splats)
        .serialize(ser)
        .context("serialising junit.xml")?;
    x.push('\n');
    Ok(x)
}

pub fn write(dir: &Path, info: &RunInfo, report: &Report, splats: &[Splat]) -> Result<()> {
    let path = dir.join("junit.xml");
    std::fs::write(&path, render(info, report, splats)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// XML 1.0 has no place for control characters but line breaks and tabs
/// (a test's log may carry terminal escapes); quick-xml escapes the rest.
fn xml_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_case_per_test_and_one_for_the_console() {
        let report = crate::judge::ktap::parse(
            "KTAP version 1\n1..4\n# start: a<b & \"c\"\u{1b}\n# duration_ms: 1500\nok 1 a<b & \"c\"\u{1b}\n\
             # start: b\n# why <it> failed\nnot ok 2 b\nok 3 c # SKIP no \"BTF\"\n",
        );
        let splats = crate::judge::console::scan(
            "[    1.0] WARNING: CPU: 0 PID: 1 at kernel/bpf/x.c:1 f+0x0/0x1\n[    1.1] ---[ end trace 0 ]---\n",
        );
        assert_eq!(splats.len(), 1);
        let x = render(
            &RunInfo {
                wall_s: 12.3456,
                ..RunInfo::sample()
            },
            &report,
            &splats,
        )
        .unwrap();
        assert!(
            x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n"),
            "{x}"
        );
        assert!(
            x.contains(r#"<testsuite name="bpf-selftests.global-ma" tests="5" failures="3" skipped="1" time="12.346">"#),
            "{x}"
        );
        // Escaped, the terminal escape dropped.
        assert!(
            x.contains(r#"<testcase classname="bpf-selftests" name="a&lt;b &amp; &quot;c&quot;" time="1.500"/>"#),
            "{x}"
        );
        assert!(!x.contains('\u{1b}'));
        assert!(
            x.contains(r#"<failure message="FAILED">why &lt;it&gt; failed</failure>"#),
            "{x}"
        );
        assert!(
            x.contains(r#"<skipped message="no &quot;BTF&quot;"/>"#),
            "{x}"
        );
        assert!(x.contains(r#"<failure message="NOT_RUN"/>"#), "{x}");
        assert!(
            x.contains(r#"<testcase classname="bpf-selftests" name="console">"#),
            "{x}"
        );
        assert!(
            x.contains(
                r#"<failure message="WARNING: CPU: 0 PID: 1 at kernel/bpf/x.c:1 f+0x0/0x1">"#
            ),
            "{x}"
        );
        assert!(x.trim_end().ends_with("</testsuites>"), "{x}");
    }
}
