//! The test table. Add a test by writing `fn(&Ctx) -> Result<Outcome>` in a
//! module here and listing it below; names are snake_case and unique.

mod baseline;
mod faults;
mod global_ma;
mod hash_no_prealloc;

use anyhow::{bail, Result};

use crate::runner::Test;

pub const ALL: &[Test] = &[
    Test {
        name: "cpus_online",
        run: baseline::cpus_online,
    },
    Test {
        name: "btf_vmlinux_present",
        run: baseline::btf_vmlinux_present,
    },
    Test {
        name: "hash_no_prealloc_all_cpus",
        run: hash_no_prealloc::hash_no_prealloc_all_cpus,
    },
    Test {
        name: "global_ma_hash_delete",
        run: global_ma::global_ma_hash_delete,
    },
    Test {
        name: "global_ma_hash_overwrite",
        run: global_ma::global_ma_hash_overwrite,
    },
    Test {
        name: "global_ma_map_free",
        run: global_ma::global_ma_map_free,
    },
    Test {
        name: "global_ma_cross_cpu",
        run: global_ma::global_ma_cross_cpu,
    },
    Test {
        name: "global_ma_prog_counts",
        run: global_ma::global_ma_prog_counts,
    },
    Test {
        name: "global_ma_zero_size",
        run: global_ma::global_ma_zero_size,
    },
    Test {
        name: "global_ma_prog_arg_refused",
        run: global_ma::global_ma_prog_arg_refused,
    },
    Test {
        name: "global_ma_concurrent",
        run: global_ma::global_ma_concurrent,
    },
    Test {
        name: "global_ma_prefill_bad_input",
        run: global_ma::global_ma_prefill_bad_input,
    },
    Test {
        name: "global_ma_prefill_sequence",
        run: global_ma::global_ma_prefill_sequence,
    },
    Test {
        name: "global_ma_prefill_release",
        run: global_ma::global_ma_prefill_release,
    },
    Test {
        name: "global_ma_prefill_prog_lifetime",
        run: global_ma::global_ma_prefill_prog_lifetime,
    },
    Test {
        name: "global_ma_prefill_stacking",
        run: global_ma::global_ma_prefill_stacking,
    },
    Test {
        name: "global_ma_prefill_concurrent",
        run: global_ma::global_ma_prefill_concurrent,
    },
    Test {
        name: "global_ma_prefill_token_probe",
        run: global_ma::global_ma_prefill_token_probe,
    },
    Test {
        name: "global_ma_reserve_in_programs",
        run: global_ma::global_ma_reserve_in_programs,
    },
    Test {
        name: "global_ma_reserve_no_elements",
        run: global_ma::global_ma_reserve_no_elements,
    },
    Test {
        name: "global_ma_prefill_enomem",
        run: global_ma::global_ma_prefill_enomem,
    },
    Test {
        name: "global_ma_debug_bugs",
        run: global_ma::global_ma_debug_bugs,
    },
    Test {
        name: "global_ma_debug_owner_gone",
        run: global_ma::global_ma_debug_owner_gone,
    },
    Test {
        name: "global_ma_nmi_within_reserve",
        run: global_ma::global_ma_nmi_within_reserve,
    },
    Test {
        name: "global_ma_nmi_over_reserve",
        run: global_ma::global_ma_nmi_over_reserve,
    },
    Test {
        name: "global_ma_nmi_hash_kptr",
        run: global_ma::global_ma_nmi_hash_kptr,
    },
    Test {
        name: "global_ma_nmi_hash_buckets",
        run: global_ma::global_ma_nmi_hash_buckets,
    },
    Test {
        name: "global_ma_nmi_busy_free",
        run: global_ma::global_ma_nmi_busy_free,
    },
    Test {
        name: "global_ma_nmi_external",
        run: global_ma::global_ma_nmi_external,
    },
    Test {
        name: "global_ma_nmi_stress",
        run: global_ma::global_ma_nmi_stress,
    },
];

/// The one test-only fault `rig.fault=<name>` asks for.
pub fn fault(name: &str) -> Result<&'static [Test]> {
    match faults::ALL.iter().position(|t| t.name == name) {
        Some(i) => Ok(&faults::ALL[i..=i]),
        None => {
            let known: Vec<&str> = faults::ALL.iter().map(|t| t.name).collect();
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

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for t in ALL.iter().chain(super::faults::ALL) {
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
