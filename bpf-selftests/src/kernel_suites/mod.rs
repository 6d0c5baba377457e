//! `rig.suite=kernel`: the kernel's own BPF selftests (test_verifier,
//! test_maps, test_progs), built by the host from the tree under test and
//! installed under [`DIR`] with the plan the host chose. Each planned line is
//! one top-level KTAP test; the binary's subtests are a nested KTAP block,
//! written as they finish, so the host sees progress and names the leaf that
//! failed.

mod parse;

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmdline::Config;
use crate::ktap::{Ktap, Verdict};
use parse::{Collector, Kind, Status, Sub};

/// Where the host installs the binaries, their BPF objects and `plan`.
pub const DIR: &str = "/lib/kernel-suites";
/// A line on the KTAP stream at least this often while a binary runs: the
/// host's silence timeout is for a guest that stopped, not for test_progs,
/// which prints a test's output only when the test ends.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// Log lines kept for a failed test that belong to none of its subtests.
const TAIL: usize = 30;

/// One line of the plan: what to run, under which KTAP name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    kind: Kind,
    args: Vec<String>,
}

/// Accepted format, one test a line (`#` comments and blank lines ignored):
/// `test_verifier`, `test_maps`, `test_progs NAME`, and `test_progs *`
/// (every test the binary lists, each run on its own).
pub fn parse_plan(text: &str) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let planned = match words.as_slice() {
            ["test_verifier"] => Planned {
                name: "test_verifier".into(),
                kind: Kind::Verifier,
                args: vec![],
            },
            ["test_maps"] => Planned {
                name: "test_maps".into(),
                kind: Kind::Maps,
                args: vec![],
            },
            ["test_progs", test] => Planned {
                name: format!("test_progs:{test}"),
                kind: Kind::Progs,
                args: vec!["-t".into(), test.to_string()],
            },
            _ => bail!(
                "{DIR}/plan:{}: {line:?}: expected `test_verifier`, `test_maps` or `test_progs NAME`",
                n + 1
            ),
        };
        out.push(planned);
    }
    Ok(out)
}

/// `test_progs *` becomes one entry per name `test_progs --list` prints.
fn expand(plan: Vec<Planned>) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for p in plan {
        if p.kind != Kind::Progs || p.args.last().map(String::as_str) != Some("*") {
            out.push(p);
            continue;
        }
        let bin = format!("{DIR}/test_progs");
        let list = Command::new(&bin)
            .arg("--list")
            .current_dir(DIR)
            .output()
            .with_context(|| format!("running {bin} --list"))?;
        if !list.status.success() {
            bail!(
                "{bin} --list failed: {}",
                String::from_utf8_lossy(&list.stderr).trim()
            );
        }
        for name in String::from_utf8_lossy(&list.stdout).lines() {
            let name = name.trim();
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                out.push(Planned {
                    name: format!("test_progs:{name}"),
                    kind: Kind::Progs,
                    args: vec!["-t".into(), name.to_string()],
                });
            }
        }
    }
    Ok(out)
}

fn binary(kind: Kind) -> &'static str {
    match kind {
        Kind::Progs => "test_progs",
        Kind::Verifier => "test_verifier",
        Kind::Maps => "test_maps",
    }
}

/// Runs the plan; returns true when every test passed or skipped.
pub fn run(ktap: &Ktap, cfg: &Config) -> Result<bool> {
    let plan_path = format!("{DIR}/plan");
    let text = std::fs::read_to_string(&plan_path).with_context(|| {
        format!("reading {plan_path} (the host writes it with `--suite kernel`)")
    })?;
    let plan: Vec<Planned> = expand(parse_plan(&text)?)?
        .into_iter()
        .filter(|p| cfg.selects(&p.name))
        .collect();
    let names: Vec<&str> = plan.iter().map(|p| p.name.as_str()).collect();
    ktap.header(&names);
    // test_verifier runs each test unprivileged too, when unprivileged BPF
    // is allowed; the kernel boots with it off (BPF_UNPRIV_DEFAULT_OFF).
    let unpriv = "/proc/sys/kernel/unprivileged_bpf_disabled";
    if let Err(e) = std::fs::write(unpriv, "0") {
        ktap.diag(&format!(
            "could not allow unprivileged BPF ({unpriv}: {e}): test_verifier's /u tests will skip"
        ));
    }
    // test_maps' sockmap test and test_progs' socket tests talk over
    // loopback; the kernel brings `lo` up down.
    match Command::new("/bin/ip")
        .args(["link", "set", "dev", "lo", "up"])
        .status()
    {
        Ok(st) if st.success() => {}
        other => ktap.diag(&format!(
            "could not bring lo up ({other:?}): socket tests will fail"
        )),
    }
    let mut all_ok = true;
    for (i, p) in plan.iter().enumerate() {
        ktap.start(&p.name);
        let started = Instant::now();
        let verdict = match run_one(ktap, p) {
            Ok(v) => v,
            Err(e) => {
                ktap.diag(&format!("error: {e:#}"));
                Outcome::Fail
            }
        };
        let v = match &verdict {
            Outcome::Pass => Verdict::Pass,
            Outcome::Fail => Verdict::Fail,
            Outcome::Skip(why) => Verdict::Skip(why),
        };
        ktap.result(i + 1, &p.name, v, started.elapsed());
        if matches!(verdict, Outcome::Fail) {
            all_ok = false;
            if cfg.fail_fast {
                eprintln!("bpf-selftests: fail-fast: stopping after {}", p.name);
                break;
            }
        }
    }
    Ok(all_ok)
}

enum Outcome {
    Pass,
    Fail,
    Skip(String),
}

enum Event {
    Line(String),
    Eof,
}

fn run_one(ktap: &Ktap, p: &Planned) -> Result<Outcome> {
    let (read, write) = pipe()?;
    let write2 = write.try_clone().context("dup of the output pipe")?;
    let bin = format!("{DIR}/{}", binary(p.kind));
    let mut child = Command::new(&bin)
        .args(&p.args)
        .current_dir(DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(std::fs::File::from(read));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(Event::Line(line)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Event::Eof);
    });

    let started = Instant::now();
    let mut collector = Collector::new(p.kind);
    let mut block = Block::default();
    loop {
        match rx.recv_timeout(HEARTBEAT) {
            Ok(Event::Line(line)) => {
                for sub in collector.feed(&line) {
                    block.emit(ktap, &p.name, &sub);
                }
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => ktap.diag(&format!(
                "{} still running after {} s",
                p.name,
                started.elapsed().as_secs()
            )),
        }
    }
    let _ = reader.join();
    let status = child.wait().with_context(|| format!("waiting for {bin}"))?;
    let (held, leftover) = collector.finish();
    for sub in &held {
        block.emit(ktap, &p.name, sub);
    }
    Ok(outcome(ktap, &block, collector.top, status, &leftover))
}

/// The nested KTAP block of one top-level test.
#[derive(Default)]
struct Block {
    emitted: usize,
    failed: usize,
    skipped: usize,
    /// test_verifier has tests with the same description: the second is
    /// `<name> (2)`, so every leaf has a name of its own.
    seen: std::collections::HashMap<String, usize>,
}

impl Block {
    fn emit(&mut self, ktap: &Ktap, parent: &str, sub: &Sub) {
        if self.emitted == 0 {
            ktap.line("    KTAP version 1");
            ktap.line(&format!("    # Subtest: {parent}"));
        }
        self.emitted += 1;
        for l in &sub.log {
            let l = l.trim_end();
            ktap.line(&if l.is_empty() {
                "    #".to_string()
            } else {
                format!("    # {l}")
            });
        }
        // A `#` in a name would read as the start of a KTAP directive.
        let mut name = sub.name.replace('#', "%23");
        let times = self.seen.entry(name.clone()).or_insert(0);
        *times += 1;
        if *times > 1 {
            name = format!("{name} ({times})");
        }
        let n = self.emitted;
        ktap.line(&match sub.status {
            Status::Pass => format!("    ok {n} {name}"),
            Status::Fail => {
                self.failed += 1;
                format!("    not ok {n} {name}")
            }
            Status::Skip => {
                self.skipped += 1;
                let why = sub.reason.as_deref().unwrap_or("skipped by the test");
                format!("    ok {n} {name} # SKIP {why}")
            }
        });
    }
}

/// The top-level result: the binary's exit status and its own verdict line
/// must agree with the subtests; a run that printed no verdict failed.
fn outcome(
    ktap: &Ktap,
    block: &Block,
    top: Option<Status>,
    status: ExitStatus,
    leftover: &[String],
) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let mut why = Vec::new();
    if let Some(sig) = status.signal() {
        why.push(format!("killed by signal {sig}"));
    } else if !status.success() {
        why.push(format!("exited with {}", status.code().unwrap_or(-1)));
    }
    match top {
        None => why.push("printed no result line of its own".to_string()),
        Some(Status::Fail) if block.failed == 0 => why.push("reported FAIL".to_string()),
        _ => {}
    }
    if block.failed > 0 {
        why.push(format!("{} subtest(s) failed", block.failed));
    }
    if why.is_empty() {
        return match top {
            Some(Status::Skip) if block.emitted == block.skipped => {
                Outcome::Skip("skipped by the test".to_string())
            }
            _ => Outcome::Pass,
        };
    }
    let from = leftover.len().saturating_sub(TAIL);
    for l in &leftover[from..] {
        ktap.diag(l);
    }
    ktap.diag(&why.join("; "));
    Outcome::Fail
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success; each is owned once.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds are fresh and not owned by anything else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_lines() {
        let plan =
            parse_plan("# scope\ntest_verifier\n\ntest_maps\ntest_progs map_kptr\n").unwrap();
        let names: Vec<&str> = plan.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["test_verifier", "test_maps", "test_progs:map_kptr"]);
        assert_eq!(plan[2].args, ["-t", "map_kptr"]);
        let err = parse_plan("test_progs\n").unwrap_err().to_string();
        assert!(err.contains("plan:1"), "{err}");
        assert!(parse_plan("test_lru_map\n").is_err());
    }
}
