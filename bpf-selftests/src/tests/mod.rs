//! The test table. Add a test by writing `fn(&Ctx) -> Result<Outcome>` in a
//! module here and listing it below; names are snake_case and unique.

/// The table of `module::function` paths, each test named after its
/// function: `tests![baseline::cpus_online]` runs `cpus_online`.
macro_rules! tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        &[$(crate::runner::Test {
            name: stringify!($name),
            run: $module::$name,
        }),*]
    };
}

mod baseline;
mod faults;
mod global_ma;
mod hash_no_prealloc;
mod pinned;

use anyhow::{bail, Result};

use crate::runner::Test;

pub const ALL: &[Test] = tests![
    baseline::cpus_online,
    baseline::btf_vmlinux_present,
    hash_no_prealloc::hash_no_prealloc_all_cpus,
    global_ma::global_ma_hash_delete,
    global_ma::global_ma_hash_overwrite,
    global_ma::global_ma_map_free,
    global_ma::global_ma_cross_cpu,
    global_ma::global_ma_prog_counts,
    global_ma::global_ma_zero_size,
    global_ma::global_ma_size_classes,
    global_ma::global_ma_counting_off,
    global_ma::global_ma_prog_arg_refused,
    global_ma::global_ma_concurrent,
    global_ma::global_ma_prefill_bad_input,
    global_ma::global_ma_prefill_sequence,
    global_ma::global_ma_prefill_release,
    global_ma::global_ma_prefill_prog_lifetime,
    global_ma::global_ma_prefill_stacking,
    global_ma::global_ma_prefill_concurrent,
    global_ma::global_ma_prefill_token_probe,
    global_ma::global_ma_reserve_in_programs,
    global_ma::global_ma_reserve_no_elements,
    global_ma::global_ma_prefill_enomem,
    global_ma::global_ma_debug_bugs,
    global_ma::global_ma_debug_owner_gone,
    global_ma::global_ma_nmi_within_reserve,
    global_ma::global_ma_nmi_over_reserve,
    global_ma::global_ma_nmi_hash_kptr,
    global_ma::global_ma_nmi_hash_buckets,
    global_ma::global_ma_nmi_busy_free,
    global_ma::global_ma_nmi_external,
    global_ma::global_ma_nmi_stress,
];

/// The test-only faults, never in `ALL`.
const FAULTS: &[Test] = tests![
    faults::fault_panic,
    faults::fault_hang,
    faults::fault_runner_killed,
];

/// The one test-only fault `rig.fault=<name>` asks for.
pub fn fault(name: &str) -> Result<&'static [Test]> {
    match FAULTS.iter().position(|t| t.name == name) {
        Some(i) => Ok(&FAULTS[i..=i]),
        None => {
            let known: Vec<&str> = FAULTS.iter().map(|t| t.name).collect();
            bail!(
                "rig.fault={name}: no such fault (known: {})",
                known.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod table {
    use super::ALL;

    /// The host compares each run with this snapshot, by name and in order.
    const SNAPSHOT: &str = include_str!("../../snapshots/results@global-ma.snap");

    #[test]
    fn names_and_order_match_the_snapshot() {
        let body = SNAPSHOT
            .splitn(3, "---\n")
            .nth(2)
            .expect("snapshot has an insta header");
        let snap: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_once(": ").map(|(name, _)| name))
            .collect();
        let table: Vec<&str> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(snap, table);
    }

    /// The names xtask/tests/faults.rs boots with `rig.fault=`.
    #[test]
    fn fault_names() {
        let names: Vec<&str> = super::FAULTS.iter().map(|t| t.name).collect();
        assert_eq!(names, ["fault_panic", "fault_hang", "fault_runner_killed"]);
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for t in ALL.iter().chain(super::FAULTS) {
            assert!(
                t.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{} is not snake_case",
                t.name
            );
            assert!(seen.insert(t.name), "duplicate test {}", t.name);
        }
    }
}
