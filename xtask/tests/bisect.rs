//! `cargo xtask bisect` on a planted regression: a copy of the real series
//! (test_data/series/planted) with a patch that breaks the build, the patch
//! that fixes it, and a patch that breaks the no-prealloc hash selftest.
//! The bisect must name the planted regression and never blame the build
//! break. Builds several kernels, so it is `#[ignore]`d in a plain cargo test;
//! `.ci/run` runs it after the main run.

mod common;

use common::*;

#[test]
#[ignore = "builds and boots several kernels"]
fn bisect_names_the_planted_regression_and_skips_the_build_break() {
    let run = xtask(&[
        "bisect",
        "--series",
        "test_data/series/planted",
        "--filter",
        "hash_no_prealloc",
    ]);
    assert_eq!(run.code, Some(1), "bisect found a bad commit");
    let first_bad = run
        .out
        .lines()
        .find(|l| l.starts_with("first bad commit: "))
        .unwrap_or_else(|| panic!("no first bad commit in:\n{}", run.out));
    assert!(
        first_bad.contains("bpf: Keep deleted no-prealloc hash elements"),
        "{first_bad}"
    );
    assert!(!first_bad.contains("Break the build"), "{first_bad}");
    assert!(
        run.out
            .contains("failing: hash_no_prealloc_all_cpus FAILED"),
        "the failing test is named: {}",
        run.out
    );
    let summary = run.out.lines().find(|l| l.starts_with("bisect: ")).unwrap();
    eprintln!("{first_bad}\n{summary}");
    // The tree is left as it was: on the series branch, clean.
    let tree = work().join("src/linux-6.1.192-3");
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(&tree)
        .args(["symbolic-ref", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&head.stdout).trim(),
        "refs/heads/rig/planted"
    );
    assert_no_orphans();
}
