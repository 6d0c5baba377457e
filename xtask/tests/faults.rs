//! The rig under faults, on a real kernel in real QEMU: every fault ends in a
//! clear verdict, within seconds, with no process left behind.
//!
//! These boot VMs and reuse the kernel `cargo xtask test` built, so they are
//! `#[ignore]`d in a plain `cargo test`; `.ci/run` runs them after the main
//! run with `cargo test -p xtask --test faults -- --ignored --test-threads=1`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn verdict(run: &Run) -> &str {
    run.out
        .lines()
        .rev()
        .find(|l| l.starts_with("FAIL") || l.starts_with("PASS"))
        .unwrap_or("")
}

/// Brings the kernel and image up to date first, so a test that times
/// its signal against the boot is not racing a rebuild (an earlier test
/// may have left the tree on another series).
fn ensure_image() {
    let run = xtask(&["image"]);
    assert_eq!(run.code, Some(0), "cargo xtask image failed:\n{}", run.out);
}

fn boot_fault(fault: &str, extra: &[&str]) -> Run {
    let append = rig_contract::cmdline::Word::Fault(fault.to_string()).word();
    let mut args = vec!["boot", "--append", &append];
    args.extend_from_slice(extra);
    xtask(&args)
}

#[test]
#[ignore = "boots a VM"]
fn guest_panic_is_a_crash_with_the_panic_text() {
    let run = boot_fault("fault_panic", &[]);
    assert_eq!(run.code, Some(1));
    let v = verdict(&run);
    assert!(v.starts_with("FAIL (kernel panic: "), "{v}");
    assert!(v.contains("sysrq"), "the panic text is quoted: {v}");
    assert!(
        run.out
            .contains("fault_panic                              CRASHED"),
        "{}",
        run.out
    );
    assert_no_orphans();
}

#[test]
#[ignore = "boots a VM"]
fn silent_guest_is_a_hang_named_by_the_silence_timeout() {
    let run = boot_fault("fault_hang", &["--silence-timeout", "5"]);
    assert_eq!(run.code, Some(1));
    assert!(
        verdict(&run).contains("guest hung: no console or KTAP output for 5s"),
        "{}",
        verdict(&run)
    );
    assert!(run
        .out
        .contains("fault_hang                               CRASHED"));
    assert!(run.took < Duration::from_secs(60), "{:?}", run.took);
    assert_no_orphans();
}

#[test]
#[ignore = "boots a VM"]
fn slow_test_hits_the_per_test_timeout() {
    let run = boot_fault("fault_hang", &["--test-timeout", "3"]);
    assert_eq!(run.code, Some(1));
    assert!(
        verdict(&run).contains("test `fault_hang` still running after 3s"),
        "{}",
        verdict(&run)
    );
    assert_no_orphans();
}

#[test]
#[ignore = "boots a VM"]
fn runner_killed_mid_test_is_crashed_not_missing() {
    let run = boot_fault("fault_runner_killed", &[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.out
            .contains("fault_runner_killed                      CRASHED"),
        "{}",
        run.out
    );
    assert!(run.out.contains("never reported a result"), "{}", run.out);
    assert_no_orphans();
}

#[test]
#[ignore = "uses the kernel tree"]
fn bad_patch_names_patch_file_and_hunk_and_leaves_the_tree_clean() {
    let run = xtask(&["test", "--series", "test_data/series/bad-patch"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.out
            .contains("0001-bpf-Include-a-header-rig-fault-test.patch (patch 1 of 1)"),
        "{}",
        run.out
    );
    assert!(
        run.out
            .contains("kernel/bpf/memalloc.c: Hunk #1 FAILED at 7."),
        "{}",
        run.out
    );
    assert!(!run.out.contains("[build]"), "stopped before building");
    let tree = work().join("src/linux-6.1.192-3");
    let status = Command::new("git")
        .arg("-C")
        .arg(&tree)
        .args(["status", "--porcelain"])
        .output()
        .unwrap();
    assert!(
        status.stdout.is_empty(),
        "tree left dirty: {}",
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
#[ignore = "uses the kernel tree"]
fn dropped_kconfig_options_are_all_named() {
    let run = xtask(&["config", "--config", "test_data/kconfigs/impossible.config"]);
    assert_eq!(run.code, Some(2));
    assert!(run.out.contains("2 option(s) requested"), "{}", run.out);
    assert!(run.out.contains("CONFIG_KASAN_SW_TAGS=y (got: not set)"));
    assert!(run
        .out
        .contains("CONFIG_RIG_NO_SUCH_OPTION=y (got: not set)"));
}

#[test]
#[ignore = "builds a kernel"]
fn build_failure_shows_the_compiler_error_not_the_whole_log() {
    let run = xtask(&["build", "--series", "test_data/series/build-break"]);
    assert_eq!(run.code, Some(2));
    assert!(run.out.contains("kernel build failed"), "{}", run.out);
    assert!(
        run.out
            .contains("error: #error \"planted build failure (rig fault test)\""),
        "{}",
        run.out
    );
    assert!(
        run.out.lines().count() < 80,
        "verdict is one screen: {} lines",
        run.out.lines().count()
    );
    assert_no_orphans();
}

#[test]
#[ignore = "boots a VM"]
fn missing_host_tool_names_the_debian_package() {
    // A PATH with every tool but QEMU.
    let dir = work().join("fault-tests/path-without-qemu");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for p in std::env::split_paths(&std::env::var_os("PATH").unwrap()) {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("qemu-system") {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.join(&name));
        }
    }
    let start = Instant::now();
    let mut cmd = Command::new(XTASK);
    cmd.args(["boot"])
        .current_dir(repo())
        .env("PATH", &dir)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    eprintln!("{text} ({:?})", start.elapsed());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text.contains(
            "`qemu-system-x86_64` is not installed: run `apt-get install qemu-system-x86`"
        ),
        "{text}"
    );
}

#[test]
#[ignore = "boots a VM"]
fn ctrl_c_during_boot_kills_qemu_and_keeps_the_run_dir() {
    ensure_image();
    let start = Instant::now();
    let child = spawn(&[
        "boot",
        "--append",
        &rig_contract::cmdline::Word::Fault("fault_hang".into()).word(),
    ]);
    let pgid = Pid::from_raw(child.child.id() as i32);
    // Wait until QEMU runs, then Ctrl-C the whole foreground group, as a terminal does.
    let deadline = Instant::now() + Duration::from_secs(120);
    while orphans().iter().all(|p| !p.contains("qemu-system")) {
        assert!(Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    killpg(pgid, Signal::SIGINT).unwrap();
    let run = finish(child, start);
    eprintln!("{}", run.out);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        sent.elapsed()
    );
    assert_eq!(run.code, Some(1));
    assert!(
        verdict(&run).contains("interrupted by SIGINT"),
        "{}",
        verdict(&run)
    );
    assert_no_orphans();
    let latest = work().join("runs/latest");
    let results = std::fs::read_to_string(latest.join("results.yaml")).unwrap();
    assert!(results.contains("interrupted by SIGINT"), "{results}");
    assert!(latest.join("console.log").metadata().unwrap().len() > 0);
}

#[test]
#[ignore = "builds a kernel"]
fn ctrl_c_during_build_leaves_no_make_behind() {
    let start = Instant::now();
    let child = spawn(&["build", "--series", "test_data/series/touch"]);
    let pgid = Pid::from_raw(child.child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !orphans()
        .iter()
        .any(|p| p.contains(": make") && p.contains(" vmlinux"))
    {
        assert!(Instant::now() < deadline, "make never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    killpg(pgid, Signal::SIGINT).unwrap();
    let run = finish(child, start);
    eprintln!("{}", run.out);
    assert_eq!(run.code, Some(2));
    assert!(run.out.contains("interrupted by SIGINT"), "{}", run.out);
    assert_no_orphans();
}

#[test]
#[ignore = "boots a VM"]
fn two_runs_at_once_wait_for_each_other() {
    let start = Instant::now();
    let first = spawn(&["boot", "--filter", "cpus_online"]);
    std::thread::sleep(Duration::from_millis(300));
    let second = xtask(&["boot", "--filter", "cpus_online"]);
    let first = finish(first, start);
    assert_eq!(first.code, Some(0), "{}", first.out);
    assert_eq!(second.code, Some(0), "{}", second.out);
    assert!(
        second.out.contains("another cargo xtask run")
            || first.out.contains("another cargo xtask run"),
        "one of them waited for the lock"
    );
}

/// Ctrl-C at random moments of `boot` (image check, QEMU start, kernel boot,
/// selftests, shutdown): never an orphan. RIG_CTRL_C_TRIES sets the count.
#[test]
#[ignore = "boots VMs"]
fn ctrl_c_at_random_moments_leaves_no_orphans() {
    let tries: usize = std::env::var("RIG_CTRL_C_TRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    ensure_image();
    let mut orphan_total = 0;
    for i in 0..tries {
        // xorshift: a moment between 0 and 4 s after the start.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 4000);
        let start = Instant::now();
        let child = spawn(&["boot", "--filter", "hash_no_prealloc"]);
        let pgid = Pid::from_raw(child.child.id() as i32);
        std::thread::sleep(delay);
        let _ = killpg(pgid, Signal::SIGINT);
        let run = finish(child, start);
        std::thread::sleep(Duration::from_millis(200));
        let left = orphans();
        orphan_total += left.len();
        eprintln!(
            "try {i}: SIGINT after {delay:?}, exit {:?} after {:?}, orphans {}",
            run.code,
            run.took,
            left.len()
        );
        assert!(left.is_empty(), "orphans after try {i}: {left:#?}");
    }
    eprintln!("{tries} tries, {orphan_total} orphans");
}
