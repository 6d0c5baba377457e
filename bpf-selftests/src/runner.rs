//! Running the test table: plan, per-test timing, panics caught as failures.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use anyhow::Result;

use crate::cmdline::Config;
use crate::ktap::{self, Ktap, Verdict};

/// What a test reports when it does not fail.
pub enum Outcome {
    Pass,
    Skip(String),
}

/// Handed to every test.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
}

impl Ctx<'_> {
    /// Adds `# ` diagnostic lines to the running test's output.
    pub fn diag(&self, msg: impl AsRef<str>) {
        ktap::diag(msg.as_ref());
    }
}

/// One entry of the test table.
pub struct Test {
    pub name: &'static str,
    pub run: fn(&Ctx<'_>) -> Result<Outcome>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics still print to stderr, and the message with its location is kept
/// for the KTAP failure report of the test that panicked.
fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let msg = format!("panicked: {}", panic_message(info.payload()));
        let msg = match info.location() {
            Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
            None => msg,
        };
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
        default(info);
    }));
}

/// The text of a panic payload (`&str` or `String`, else a placeholder).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs the tests `cfg` selects; returns true when none failed.
pub fn run(ktap: &Ktap, cfg: &Config, table: &[Test]) -> bool {
    install_panic_hook();
    let selected: Vec<&Test> = table.iter().filter(|t| cfg.selects(t.name)).collect();
    let names: Vec<&str> = selected.iter().map(|t| t.name).collect();
    ktap.header(&names);

    let ctx = Ctx { cfg };
    let (mut ran, mut failed, mut skipped) = (0, 0, 0);
    for (i, test) in selected.iter().enumerate() {
        ran += 1;
        ktap.start(test.name);
        let started = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| (test.run)(&ctx)));
        let elapsed = started.elapsed();
        let verdict = match &result {
            Ok(Ok(Outcome::Pass)) => Verdict::Pass,
            Ok(Ok(Outcome::Skip(reason))) => Verdict::Skip(reason),
            Ok(Err(e)) => {
                ktap.diag(&format!("error: {e:#}"));
                Verdict::Fail
            }
            Err(payload) => {
                let msg = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| format!("panicked: {}", panic_message(payload.as_ref())));
                ktap.diag(&msg);
                Verdict::Fail
            }
        };
        match verdict {
            Verdict::Fail => failed += 1,
            Verdict::Skip(_) => skipped += 1,
            Verdict::Pass => {}
        }
        let stop = cfg.fail_fast && matches!(verdict, Verdict::Fail);
        ktap.result(i + 1, test.name, verdict, elapsed);
        if stop {
            eprintln!(
                "bpf-selftests: fail-fast: stopping after {}, {} test(s) not run",
                test.name,
                selected.len() - i - 1
            );
            break;
        }
    }
    let passed = ran - failed - skipped;
    // Not on the KTAP stream: the host's parser expects nothing after the
    // last result line.
    eprintln!("bpf-selftests: pass:{passed} fail:{failed} skip:{skipped}");
    failed == 0
}
