//! The test table. Add a test by writing `fn(&Ctx) -> Result<Outcome>` in a
//! module here and listing it below; names are snake_case and unique.

mod baseline;
mod hash_no_prealloc;

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
];

#[cfg(test)]
mod table {
    use super::ALL;

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for t in ALL {
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
