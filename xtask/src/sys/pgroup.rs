//! Child processes in their own process group, killed as a group: SIGTERM,
//! then SIGKILL. `kill` on the leader alone misses QEMU's and make's children.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Puts the spawned command in a new process group of its own.
pub fn own_group(expr: duct::Expression) -> duct::Expression {
    expr.before_spawn(|cmd| {
        cmd.process_group(0);
        Ok(())
    })
}

pub struct Group {
    pgid: Pid,
}

impl Group {
    pub fn new(leader_pid: u32) -> Group {
        Group {
            pgid: Pid::from_raw(leader_pid as i32),
        }
    }

    pub fn alive(&self) -> bool {
        killpg(self.pgid, None).is_ok()
    }

    /// SIGTERM, a grace period, then SIGKILL; returns once the group is empty
    /// (or after SIGKILL plus a bounded wait). `reap` must wait for the leader.
    pub fn terminate(&self, grace: Duration, reap: &dyn Fn() -> bool) {
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if reap() && !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if reap() && !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A command whose merged stdout+stderr arrives line by line on a channel;
/// dropping it kills the whole process group.
pub struct Streamed {
    handle: Arc<duct::ReaderHandle>,
    group: Group,
    pub lines: Receiver<String>,
    finished: bool,
}

impl Streamed {
    pub fn start(expr: duct::Expression) -> Result<Streamed> {
        let handle = own_group(expr)
            .stderr_to_stdout()
            .unchecked()
            .reader()
            .context("spawning the command")?;
        let handle = Arc::new(handle);
        let pid = *handle
            .pids()
            .first()
            .context("spawned command has no pid")?;
        let (tx, rx) = mpsc::channel();
        let reader = Arc::clone(&handle);
        std::thread::spawn(move || {
            let buf = BufReader::new(&*reader);
            for line in buf.split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Streamed {
            handle,
            group: Group::new(pid),
            lines: rx,
            finished: false,
        })
    }

    /// Exit status once the command has ended.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let out = self.handle.try_wait().context("waiting for the command")?;
        if out.is_some() {
            self.finished = true;
        }
        Ok(out.map(|o| o.status))
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if self.finished && !self.group.alive() {
            return;
        }
        let handle = Arc::clone(&self.handle);
        self.group.terminate(Duration::from_secs(2), &|| {
            matches!(handle.try_wait(), Ok(Some(_)))
        });
    }
}
