//! `junit.xml` of a run: one test case per test, and one named `console`
//! for the splats, for CI's test reports.

use std::path::Path;

use anyhow::{Context, Result};

use crate::console::Splat;
use crate::ktap::{Report, Status};
use crate::results::{status_name, RunInfo};

pub fn write(dir: &Path, info: &RunInfo, report: &Report, splats: &[Splat]) -> Result<()> {
    let counts = report.counts();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failures =
        counts.failed + counts.crashed + counts.not_run + usize::from(!splats.is_empty());
    x.push_str(&format!(
        "<testsuites><testsuite name=\"bpf-selftests.{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        esc(&info.series),
        report.tests.len() + usize::from(!splats.is_empty()),
        failures,
        counts.skipped,
        info.wall_s
    ));
    for t in &report.tests {
        let secs = t.duration_ms.unwrap_or(0) as f64 / 1000.0;
        x.push_str(&format!(
            "  <testcase classname=\"bpf-selftests\" name=\"{}\" time=\"{secs:.3}\">",
            esc(&t.name)
        ));
        let body = esc(&t.diagnostics.join("\n"));
        match t.status {
            Status::Passed => {}
            Status::Skipped => x.push_str(&format!(
                "<skipped message=\"{}\"/>",
                esc(t.skip_reason.as_deref().unwrap_or(""))
            )),
            s => x.push_str(&format!(
                "<failure message=\"{}\">{body}</failure>",
                status_name(s)
            )),
        }
        x.push_str("</testcase>\n");
    }
    if !splats.is_empty() {
        let text: Vec<String> = splats.iter().map(|s| s.excerpt.join("\n")).collect();
        x.push_str(&format!(
            "  <testcase classname=\"bpf-selftests\" name=\"console\"><failure message=\"{}\">{}</failure></testcase>\n",
            esc(&splats[0].title),
            esc(&text.join("\n\n"))
        ));
    }
    x.push_str("</testsuite></testsuites>\n");
    let path = dir.join("junit.xml");
    std::fs::write(&path, x).with_context(|| format!("writing {}", path.display()))
}

fn esc(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_xml() {
        assert_eq!(
            super::esc("a<b & \"c\"\u{1b}"),
            "a&lt;b &amp; &quot;c&quot;"
        );
    }
}
