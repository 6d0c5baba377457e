//! Running things and timing them: children in their own process group,
//! `cargo xtask test` with the user's flags, QEMU specs like the rig's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::CHILD_LIMIT;
use crate::flags::{self, BootFlags};
use crate::report::results;
use crate::stages::image::Image;
use crate::stages::kbuild::Kernel;
use crate::sys::pgroup::{own_group, Group};
use crate::sys::signals;
use crate::vm::{self, Accel, VmSpec};

/// Runs `expr` in its own process group with its output in `log_path`;
/// returns its wall time and exit code. Ctrl-C or the limit end the group.
pub(super) fn timed(
    expr: duct::Expression,
    log_path: &Path,
    limit: Duration,
) -> Result<(f64, Option<i32>)> {
    let t = timed_with(expr, log_path, limit, false)?;
    Ok((t.secs, t.code))
}

pub(super) struct Timed {
    pub secs: f64,
    pub code: Option<i32>,
    /// How long a QEMU child of the command lived (first seen to gone).
    pub qemu: Option<f64>,
}

/// `timed`, and with `watch_qemu` also the lifetime of the command's
/// `qemu-system-*` child, seen in /proc every 10 ms: the boot+tests part of
/// a `cargo xtask test`, measured in the same run.
pub(super) fn timed_with(
    expr: duct::Expression,
    log_path: &Path,
    limit: Duration,
    watch_qemu: bool,
) -> Result<Timed> {
    let file = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let start = Instant::now();
    let handle = own_group(expr)
        .stdin_null()
        .stdout_file(file.try_clone()?)
        .stderr_file(file)
        .unchecked()
        .start()
        .context("starting the command")?;
    let pid = *handle.pids().first().context("the command has no pid")?;
    let group = Group::new(pid);
    let reap = || matches!(handle.try_wait(), Ok(Some(_)));
    let mut qemu_seen: Option<(Instant, Instant)> = None;
    let mut last_scan = start;
    loop {
        if let Some(out) = handle.try_wait()? {
            return Ok(Timed {
                secs: start.elapsed().as_secs_f64(),
                code: out.status.code(),
                qemu: qemu_seen.map(|(a, b)| (b - a).as_secs_f64()),
            });
        }
        if let Some(sig) = signals::interrupted() {
            group.terminate(Duration::from_secs(5), &reap);
            bail!("interrupted by {sig}");
        }
        if start.elapsed() > limit {
            group.terminate(Duration::from_secs(5), &reap);
            bail!(
                "still running after {}s (log: {})",
                limit.as_secs(),
                log_path.display()
            );
        }
        if watch_qemu && last_scan.elapsed() >= Duration::from_millis(10) {
            // The previous scan's time: QEMU was alive then, or started since.
            let before = last_scan;
            last_scan = Instant::now();
            if has_qemu_child(pid) {
                let first = qemu_seen.map_or(before.max(start), |(a, _)| a);
                qemu_seen = Some((first, last_scan));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a live process whose parent is `parent` runs qemu-system-*.
fn has_qemu_child(parent: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| is_qemu_child_stat(&stat, parent))
}

/// `/proc/<pid>/stat`: "pid (comm) state ppid ...", comm may hold spaces.
fn is_qemu_child_stat(stat: &str, parent: u32) -> bool {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let mut rest = stat[close + 1..].split_whitespace();
    let (state, ppid) = (rest.next(), rest.next());
    comm.starts_with("qemu-system")
        && state != Some("Z")
        && ppid.and_then(|p| p.parse::<u32>().ok()) == Some(parent)
}

/// The last lines of a log, for an error message.
pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The user's flags, back as `cargo xtask test` arguments.
pub(super) fn test_args(f: &BootFlags, work: &Path) -> Vec<String> {
    let mut a = vec!["test".to_string()];
    let mut push = |k: &str, v: String| {
        a.push(k.to_string());
        a.push(v);
    };
    let c = &f.common;
    push("--series", c.series.clone());
    if let Some(t) = &c.tree {
        push("--tree", t.display().to_string());
    }
    for cfg in &c.configs {
        push("--config", cfg.clone());
    }
    push("--work-dir", work.display().to_string());
    if let Some(j) = c.jobs {
        push("-j", j.to_string());
    }
    push("--cpus", f.cpus.to_string());
    push("--memory", f.memory());
    let accel = match f.accel {
        flags::Accel::Auto => "auto",
        flags::Accel::Kvm => "kvm",
        flags::Accel::Tcg => "tcg",
    };
    push("--accel", accel.to_string());
    push("--boot-timeout", f.boot_timeout.to_string());
    push("--test-timeout", f.test_timeout().to_string());
    push("--silence-timeout", f.silence_timeout().to_string());
    if let Some(filter) = &f.filter {
        push("--filter", filter.clone());
    }
    for w in &f.append {
        push("--append", w.clone());
    }
    a
}

/// This very binary: /proc/self/exe still runs it when a `cargo build`
/// replaced target/debug/xtask meanwhile (current_exe then names a
/// "(deleted)" file).
fn own_binary() -> Result<std::path::PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe().context("finding the xtask binary")
}

/// What one `cargo xtask test` child took, and where its time went.
pub(super) struct TestRun {
    pub secs: f64,
    pub code: i32,
    pub stages: Vec<(String, f64)>,
    /// Its guest shut down by itself (not hung, panicked or timed out): a
    /// run whose guest hung measures the hang, not the rig.
    pub clean_boot: bool,
    /// The lifetime of its QEMU process (boot + selftests), measured here.
    pub qemu: Option<f64>,
}

impl TestRun {
    pub fn describe(&self) -> String {
        format!(
            "{:.2}s (exit {}; {})",
            self.secs,
            self.code,
            describe_stages(&self.stages, self.secs)
        )
    }
}

/// One `cargo xtask test` with the user's flags, timed from spawn to exit.
/// Exit 0 and 1 are complete runs (1: a test or the snapshot disagreed).
pub(super) fn xtask_test(
    f: &BootFlags,
    work: &Path,
    log_path: &Path,
    extra_env: &[(&str, &Path)],
) -> Result<TestRun> {
    let exe = own_binary()?;
    let mut cmd = duct::cmd(exe, test_args(f, work));
    for (k, v) in extra_env {
        cmd = cmd.env(k, v);
    }
    let t = timed_with(cmd, log_path, CHILD_LIMIT, true)?;
    match t.code {
        Some(c @ (0 | 1)) => {
            // Exit 0 and 1 come from a judged run, which wrote its results.
            let results = work.join("runs/latest/results.yaml");
            let run = results::read_run_summary(&results).with_context(|| {
                format!(
                    "the stage times of `cargo xtask test` ({})",
                    log_path.display()
                )
            })?;
            let mut stages = run.stages_s;
            // QEMU's lifetime as seen from here includes its start-up and exit.
            if let (Some(q), Some(boot)) = (t.qemu, stages.iter_mut().find(|(k, _)| k == "boot")) {
                boot.1 = q;
            }
            Ok(TestRun {
                secs: t.secs,
                code: c,
                stages,
                clean_boot: run.ending == vm::CLEAN_SHUTDOWN,
                qemu: t.qemu,
            })
        }
        other => bail!(
            "`cargo xtask test` could not run (exit {other:?}); {}:\n{}",
            log_path.display(),
            tail(log_path, 8)
        ),
    }
}

pub(super) fn spec(
    f: &BootFlags,
    kernel: &Kernel,
    image: &Image,
    accel: &Accel,
    dir: &Path,
    name: &str,
    cmdline: Vec<String>,
) -> VmSpec {
    VmSpec {
        kernel: kernel.vmlinux.clone(),
        initrd: image.initramfs.clone(),
        cpus: f.cpus,
        memory: f.memory(),
        accel: accel.clone(),
        console_log: dir.join(format!("{name}.console.log")),
        ktap_log: dir.join(format!("{name}.ktap.log")),
        cmdline,
        qmp: None,
    }
}

/// "build 15.6s, image 1.1s, boot 7.0s, other 1.9s" for a progress line.
pub(super) fn describe_stages(stages: &[(String, f64)], total: f64) -> String {
    let counted: f64 = stages
        .iter()
        .filter(|(k, _)| k != "boot_first_ktap")
        .map(|(_, t)| t)
        .sum();
    let mut parts: Vec<String> = stages
        .iter()
        .filter(|(k, t)| k != "boot_first_ktap" && *t >= 0.05)
        .map(|(k, t)| format!("{k} {t:.1}s"))
        .collect();
    parts.push(format!("rest {:.1}s", (total - counted).max(0.0)));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn test_args_round_trip_through_the_parser() {
        use clap::Parser;
        let parsed = flags::Xtask::try_parse_from([
            "xtask", "boot", "--config", "lockdep", "--cpus", "2", "--accel", "tcg", "--filter",
            "hash", "--append", "quiet", "-j", "3",
        ])
        .unwrap();
        let flags::Cmd::Boot(b) = parsed.cmd else {
            panic!("not boot")
        };
        let args = test_args(&b, Path::new("/w"));
        let again =
            flags::Xtask::try_parse_from(std::iter::once("xtask".to_string()).chain(args)).unwrap();
        let flags::Cmd::Test(t) = again.cmd else {
            panic!("not test")
        };
        assert_eq!(t.boot.common.configs, vec!["lockdep"]);
        assert_eq!(t.boot.cpus, 2);
        assert_eq!(t.boot.accel, flags::Accel::Tcg);
        assert_eq!(t.boot.filter.as_deref(), Some("hash"));
        assert_eq!(t.boot.append, vec!["quiet"]);
        assert_eq!(t.boot.common.jobs, Some(3));
        assert_eq!(t.boot.common.work_dir.as_deref(), Some(Path::new("/w")));
        assert!(!t.accept);
    }

    #[test]
    fn describes_a_test_childs_stage_times() {
        let st = vec![
            ("build".to_string(), 69.0),
            ("image".to_string(), 0.9),
            ("boot".to_string(), 7.0),
            ("boot_first_ktap".to_string(), 3.1),
        ];
        assert_eq!(
            describe_stages(&st, 80.0),
            "build 69.0s, image 0.9s, boot 7.0s, rest 3.1s"
        );
    }

    #[test]
    fn finds_a_qemu_child_in_proc_stat() {
        let stat = "4242 (qemu-system-x86) S 4200 4242 4200 0 -1 4194560 0 0";
        assert!(is_qemu_child_stat(stat, 4200));
        assert!(!is_qemu_child_stat(stat, 4201));
        assert!(!is_qemu_child_stat("4242 (qemu-system-x86) Z 4200 1", 4200));
        assert!(!is_qemu_child_stat("4243 (make (x)) S 4200 1", 4200));
        assert!(!has_qemu_child(std::process::id()));
    }
}
