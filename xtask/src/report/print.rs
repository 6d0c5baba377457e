//! What a judged run prints: the table of tests (with the diagnostics of
//! those that did not pass), the splats, the problems, and the closing line.

use std::time::Duration;

use crate::judge::console::Splat;
use crate::judge::ktap::{Report, Status};
use crate::judge::verdict::{Problem, Verdict};
use crate::sys::progress::fmt_secs;

pub fn table(report: &Report, splats: &[Splat], problems: &[Problem]) {
    println!();
    println!("{:<40} {:<8} {:>9}", "test", "status", "time");
    for t in &report.tests {
        let time = t
            .duration_ms
            .map_or("-".to_string(), |ms| fmt_secs(Duration::from_millis(ms)));
        println!("{:<40} {:<8} {:>9}", t.name, t.status.name(), time);
        if let Some(why) = &t.skip_reason {
            println!("    SKIP {why}");
        }
        if !matches!(t.status, Status::Passed) {
            for d in t.diagnostics.iter().take(10) {
                println!("    # {d}");
            }
        }
    }
    for s in splats {
        println!("\nsplat ({}) at console line {}:", s.kind, s.line);
        for l in s.excerpt.iter().take(20) {
            println!("  | {l}");
        }
    }
    for p in problems {
        println!("problem: {p}");
    }
    println!();
}

/// The closing line CI readers look for: crashed and not-run tests count as
/// failed, and a run that failed with every test passed (a splat, a snapshot
/// mismatch) counts one failure so the line never reads as a pass.
pub fn closing_line(report: &Report, v: &Verdict) -> String {
    let c = report.counts();
    let failed = c.failed
        + c.crashed
        + c.not_run
        + usize::from(!v.passed && c.failed + c.crashed + c.not_run == 0);
    format!(
        "selftests: {} passed, {failed} failed, {} skipped",
        c.passed, c.skipped
    )
}
