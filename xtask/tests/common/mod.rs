//! Helpers shared by the integration suites that run the real xtask binary.
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

pub const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
pub const LIMIT: Duration = Duration::from_secs(900);

pub struct Run {
    pub code: Option<i32>,
    pub out: String,
    pub took: Duration,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn work() -> PathBuf {
    repo().join("target/rig")
}

pub struct Spawned {
    pub child: std::process::Child,
    pub log: PathBuf,
}

pub fn spawn(args: &[&str]) -> Spawned {
    let (log, path) = tempfile();
    let mut cmd = Command::new(XTASK);
    cmd.args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // A session of its own: everything the rig starts (QEMU's and make's
    // own process groups included) stays in it unless it calls setsid, so
    // orphans are told apart from other users' builds by session id. setsid
    // also makes it a process group leader (pgid = pid), for killpg.
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawning xtask");
    SESSIONS.lock().unwrap().push(child.id() as i32);
    Spawned { child, log: path }
}

fn tempfile() -> (std::fs::File, PathBuf) {
    let dir = work().join("fault-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "out-{}-{}.log",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let f = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (f, path)
}

pub fn finish(spawned: Spawned, start: Instant) -> Run {
    let Spawned { mut child, log } = spawned;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > LIMIT {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            panic!("xtask did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    Run {
        code: status.code(),
        out: std::fs::read_to_string(log).unwrap_or_default(),
        took,
    }
}

pub fn xtask(args: &[&str]) -> Run {
    let start = Instant::now();
    let child = spawn(args);
    let run = finish(child, start);
    eprintln!(
        "$ xtask {}\n{}\n(exit {:?} after {:?})",
        args.join(" "),
        run.out,
        run.code,
        run.took
    );
    run
}

/// Sessions of the xtask processes these tests started.
static SESSIONS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn session_of(proc_dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // pid (comm) state ppid pgrp session ...
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(3)?.parse().ok()
}

/// QEMU and make processes from the xtask runs these tests started, still
/// alive (another user's build in the same work dir is not ours).
pub fn orphans() -> Vec<String> {
    let work = work().to_string_lossy().into_owned();
    let ours = SESSIONS.lock().unwrap().clone();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !session_of(&entry.path()).is_some_and(|sid| ours.contains(&sid)) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let is_tool = cmdline.starts_with("qemu-system")
            || cmdline.starts_with("make")
            || cmdline.contains("/cc1 ");
        if is_tool && cmdline.contains(&work) {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                cmdline
            ));
        }
    }
    found
}

pub fn assert_no_orphans() {
    // Reaping is done by the time xtask exits; allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = orphans();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes outlived the rig: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
