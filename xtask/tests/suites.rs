//! `cargo xtask test --suite kernel --baseline` on a planted regression: the
//! real series plus a patch (test_data/series/suites-planted/0017) that makes
//! bpf_for_each_map_elem() on a hash map return one fewer than it visited.
//! The series' own selftests ignore that count; the kernel's test_progs
//! for_each test checks it. The comparison must name the regression with
//! test_progs' own failure line. Builds and boots
//! two kernels with the suites' config, so it is `#[ignore]`d in a plain
//! cargo test; the nightly workflow runs it.

mod common;

use common::*;

#[test]
#[ignore = "builds and boots two kernels with the kernel suites"]
fn kernel_suites_name_the_planted_for_each_regression() {
    let run = xtask(&[
        "test",
        "--suite",
        "kernel",
        "--baseline",
        "--series",
        "test_data/series/suites-planted",
        "--filter",
        "for_each",
    ]);
    assert_eq!(
        run.code,
        Some(1),
        "a regression fails the run:\n{}",
        run.out
    );
    let out = &run.out;
    let count = out
        .lines()
        .find(|l| l.starts_with("regressions (pass on the baseline, fail on the series): "))
        .unwrap_or_else(|| panic!("no regressions line in:\n{out}"));
    assert!(!count.ends_with(": 0"), "{count}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  test_progs:for_each.hash_map FAILED")),
        "the leaf is named:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("test_hash_map:FAIL:hashmap_elems")),
        "test_progs' own failure line is quoted:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("problem: regression: test_progs:for_each.hash_map")),
        "{out}"
    );
    assert_no_orphans();
}
