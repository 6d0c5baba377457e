//! Stage `boot`: run QEMU in its own process group, follow the console and
//! the KTAP channel live, and end it on panic, hang, timeout or Ctrl-C.

pub mod accel;
pub mod qemu;
pub mod qmp;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::sys::pgroup::{own_group, Group};
use crate::{judge::ktap, sys::signals};
pub use qemu::{Accel, VmSpec};

/// What the host shows while the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Nothing (probes, benchmarks).
    Quiet,
    /// Each KTAP result line.
    Results,
    /// Each result line, and the first failure's diagnostics as soon as its
    /// result arrives (`test --fail-fast`).
    FirstFailure,
}

pub struct Limits {
    pub boot: Duration,
    pub test: Duration,
    pub silence: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest rebooted (our init's `reboot -f`) and QEMU exited by itself.
    Exited {
        code: Option<i32>,
    },
    /// The console shows a kernel panic.
    Panicked,
    BootTimeout,
    /// The guest runner found no `ktap` port and fell back to the console.
    NoKtapPort,
    Silence,
    TestTimeout {
        test: String,
    },
    Interrupted {
        signal: String,
    },
}

pub struct Outcome {
    pub ending: Ending,
    pub console: String,
    pub ktap: String,
    pub qemu_stderr: String,
    pub elapsed: Duration,
    /// From QEMU start to the first KTAP line.
    pub first_ktap: Option<Duration>,
}

impl Ending {
    pub fn describe(&self, limits: &Limits) -> String {
        match self {
            Ending::Exited { code: Some(0) } => CLEAN_SHUTDOWN.into(),
            Ending::Exited { code } => format!("QEMU exited with status {code:?}"),
            Ending::Panicked => "kernel panic".into(),
            Ending::BootTimeout => format!(
                "boot timeout: no KTAP output within {}s",
                limits.boot.as_secs()
            ),
            Ending::NoKtapPort => format!(
                "the guest runner found no virtio port named `ktap` and wrote KTAP to the \
                 console instead (see console.log: a virtio device left without an IRQ, e.g. \
                 `{NO_GSI}` after an ACPI AML loop timeout on a very slow debug kernel)"
            ),
            Ending::Silence => format!(
                "guest hung: no console or KTAP output for {}s",
                limits.silence.as_secs()
            ),
            Ending::TestTimeout { test } => format!(
                "test `{test}` still running after {}s",
                limits.test.as_secs()
            ),
            Ending::Interrupted { signal } => format!("interrupted by {signal}"),
        }
    }
}

/// How a guest that shut down by itself is described (results.yaml's
/// `run.ending`).
pub const CLEAN_SHUTDOWN: &str = "guest shut down cleanly";
/// The kernel's line for a PCI device without an interrupt.
const NO_GSI: &str = "PCI INT A: no GSI";

/// Follows a file another process appends to.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    text: String,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            text: String::new(),
        }
    }

    /// Reads what was appended; true when something was.
    fn poll(&mut self) -> bool {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return false;
        }
        self.text.push_str(&String::from_utf8_lossy(&buf));
        true
    }
}

pub fn run(spec: &VmSpec, limits: &Limits, stderr_log: &Path, live: Live) -> Result<Outcome> {
    let quiet = live == Live::Quiet;
    crate::context::require_tool("qemu-system-x86_64", "qemu-system-x86")?;
    for p in [&spec.console_log, &spec.ktap_log] {
        File::create(p).with_context(|| format!("creating {}", p.display()))?;
    }
    let args = qemu::args(spec);
    let stderr_file =
        File::create(stderr_log).with_context(|| format!("creating {}", stderr_log.display()))?;
    let handle = own_group(duct::cmd("qemu-system-x86_64", &args))
        .stdin_null()
        .stdout_file(stderr_file.try_clone()?)
        .stderr_file(stderr_file)
        .unchecked()
        .start()
        .context("starting qemu-system-x86_64")?;
    let pid = *handle.pids().first().context("QEMU has no pid")?;
    let guard = Guard {
        handle: &handle,
        group: Group::new(pid),
    };
    let start = Instant::now();
    let mut console = Tail::new(&spec.console_log);
    let mut ktap = Tail::new(&spec.ktap_log);
    let mut last_output = Instant::now();
    let mut first_ktap = None;
    let mut running: Option<(String, Instant)> = None;
    let mut panic_seen: Option<Instant> = None;
    let mut shown_lines = 0usize;
    let mut nmis_injected = 0usize;
    let mut first_failure_shown = false;
    let ending = loop {
        let got_console = console.poll();
        let got_ktap = ktap.poll();
        if got_console || got_ktap {
            last_output = Instant::now();
        }
        if got_ktap {
            first_ktap.get_or_insert(start.elapsed());
            let report = ktap::parse(&ktap.text);
            let now = report.running().map(str::to_string);
            if now.as_deref() != running.as_ref().map(|(n, _)| n.as_str()) {
                running = now.map(|n| (n, Instant::now()));
            }
            if !quiet {
                shown_lines = show_results(&ktap.text, shown_lines);
            }
            if live == Live::FirstFailure && !first_failure_shown {
                if let Some(lines) = first_failure(&ktap::parse(whole_lines(&ktap.text))) {
                    eprintln!("{}", lines.join("\n"));
                    first_failure_shown = true;
                }
            }
            if let Some(sock) = &spec.qmp {
                while nmis_injected < qmp::nmi_requests(&ktap.text) {
                    nmis_injected += 1;
                    // The guest's test fails on its own if no NMI comes.
                    if let Err(e) = qmp::inject_nmi(sock) {
                        eprintln!("[boot] warning: the guest asked for an NMI: {e:#}");
                    } else if !quiet {
                        eprintln!(
                            "[boot]   injected an NMI on the guest's request (QMP inject-nmi)"
                        );
                    }
                }
            }
        }
        if let Some(out) = handle.try_wait().context("waiting for QEMU")? {
            // Read what QEMU wrote last.
            console.poll();
            ktap.poll();
            break if crate::judge::console::panic_message(&console.text).is_some() {
                Ending::Panicked
            } else {
                Ending::Exited {
                    code: out.status.code(),
                }
            };
        }
        // No KTAP will come: say why now rather than at the boot timeout.
        if got_console
            && first_ktap.is_none()
            && rig_contract::port::console_says_missing(&console.text)
        {
            break Ending::NoKtapPort;
        }
        if let Some(sig) = signals::interrupted() {
            break Ending::Interrupted {
                signal: sig.to_string(),
            };
        }
        if got_console
            && panic_seen.is_none()
            && crate::judge::console::panic_message(&console.text).is_some()
        {
            panic_seen = Some(Instant::now());
        }
        // panic=-1 makes QEMU exit by itself; give it a moment, then end it.
        if panic_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break Ending::Panicked;
        }
        if first_ktap.is_none() && start.elapsed() > limits.boot {
            break Ending::BootTimeout;
        }
        if last_output.elapsed() > limits.silence {
            break Ending::Silence;
        }
        if let Some((test, since)) = &running {
            if since.elapsed() > limits.test {
                break Ending::TestTimeout { test: test.clone() };
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    drop(guard);
    if let Some(sock) = &spec.qmp {
        // QEMU leaves its socket behind.
        let _ = std::fs::remove_file(sock);
    }
    console.poll();
    ktap.poll();
    Ok(Outcome {
        ending,
        console: console.text,
        ktap: ktap.text,
        qemu_stderr: std::fs::read_to_string(stderr_log).unwrap_or_default(),
        elapsed: start.elapsed(),
        first_ktap,
    })
}

/// Prints each new KTAP result line as it arrives.
fn show_results(text: &str, shown: usize) -> usize {
    let complete: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    for line in complete.iter().skip(shown) {
        let l = line.trim_end();
        if l.starts_with("ok ") || l.starts_with("not ok ") {
            eprintln!("[boot]   {l}");
        }
    }
    complete.len()
}

/// The text up to its last newline: a result line cut mid-name is no result.
fn whole_lines(text: &str) -> &str {
    &text[..text.rfind('\n').map_or(0, |i| i + 1)]
}

/// The first test that reported a failure (or was cut off by the next
/// test), as the lines to print: its name, then its diagnostics.
fn first_failure(report: &ktap::Report) -> Option<Vec<String>> {
    let running = report.running();
    let t = report.tests.iter().find(|t| match t.status {
        ktap::Status::Failed => true,
        ktap::Status::Crashed => running != Some(t.name.as_str()),
        _ => false,
    })?;
    let mut lines = vec![format!(
        "[boot] first failure: {} {}",
        t.name,
        t.status.name()
    )];
    lines.extend(t.diagnostics.iter().map(|d| format!("[boot]     # {d}")));
    Some(lines)
}

/// Kills QEMU's process group when the run ends, however it ends.
struct Guard<'a> {
    handle: &'a duct::Handle,
    group: Group,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let handle = self.handle;
        self.group.terminate(Duration::from_secs(1), &|| {
            matches!(handle.try_wait(), Ok(Some(_)))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_once_its_result_is_in() {
        let running = "KTAP version 1\n1..3\n# start: a\nok 1 a\n# start: b\n# why 1\n";
        assert_eq!(first_failure(&ktap::parse(running)), None);
        let failed = format!("{running}# why 2\nnot ok 2 b\n");
        assert_eq!(
            first_failure(&ktap::parse(&failed)).unwrap(),
            [
                "[boot] first failure: b FAILED",
                "[boot]     # why 1",
                "[boot]     # why 2"
            ]
        );
        assert_eq!(whole_lines("ok 1 a\nnot ok 2 glo"), "ok 1 a\n");
        assert_eq!(whole_lines("not ok"), "");
        let passed = "KTAP version 1\n1..1\n# start: a\nok 1 a\n";
        assert_eq!(first_failure(&ktap::parse(passed)), None);
    }
}
