//! Whether a `--tree` has the series: the Kconfig options the series'
//! patches add (`+config NAME` lines) looked up in the tree's Kconfig files.
//! A tree that defines them gets the series' own `series.config` merged as
//! the pinned tree does; a tree that defines none is a tree without the
//! series, whose selftests then skip for what the kernel lacks.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

use crate::stages::patches::Series;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesInTree {
    /// The pinned tree: the rig applies the series itself.
    Managed,
    /// The tree defines every option the series adds.
    Applied { options: Vec<String> },
    /// It defines some of them.
    Partial {
        defined: Vec<String>,
        undefined: Vec<String>,
    },
    /// It defines none (or the series adds none, so nothing tells).
    Absent { options: Vec<String> },
}

/// The options a patch adds to a Kconfig file, in order.
pub fn options_added(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('+')?.trim_start();
            let name = l
                .strip_prefix("config ")
                .or_else(|| l.strip_prefix("menuconfig "))?
                .trim();
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            valid.then(|| format!("CONFIG_{name}"))
        })
        .collect()
}

/// The options the whole series adds, in patch order, each once.
pub fn series_options(series: &Series) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut options = Vec::new();
    for p in &series.patches {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        for o in options_added(&text) {
            if seen.insert(o.clone()) {
                options.push(o);
            }
        }
    }
    Ok(options)
}

/// What a tree that defines `defined` of the series' `options` has.
pub fn judge(options: Vec<String>, defined: &BTreeSet<String>) -> SeriesInTree {
    let (yes, no): (Vec<String>, Vec<String>) =
        options.iter().cloned().partition(|o| defined.contains(o));
    if options.is_empty() || yes.is_empty() {
        SeriesInTree::Absent { options }
    } else if no.is_empty() {
        SeriesInTree::Applied { options }
    } else {
        SeriesInTree::Partial {
            defined: yes,
            undefined: no,
        }
    }
}

/// Which of `options` (`CONFIG_X`) the tree's Kconfig files define, by one
/// `git grep` over its Kconfig files (committed or not, as kbuild sees them).
pub fn defined_options(tree: &Path, options: &[String]) -> Result<BTreeSet<String>> {
    if options.is_empty() {
        return Ok(BTreeSet::new());
    }
    let names: Vec<&str> = options
        .iter()
        .map(|o| o.trim_start_matches("CONFIG_"))
        .collect();
    let pattern = format!("^[[:space:]]*(menu)?config ({})$", names.join("|"));
    let out = duct::cmd!(
        "git",
        "-C",
        tree,
        "grep",
        "-h",
        "-E",
        pattern,
        "--",
        ":(glob)**/Kconfig*"
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()
    .with_context(|| format!("looking for the series' options in {}", tree.display()))?;
    // git grep: 1 is "no match".
    if !out.status.success() && out.status.code() != Some(1) {
        anyhow::bail!(
            "git grep in {} failed: {}",
            tree.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| format!("CONFIG_{n}"))
        .collect())
}

/// The series' place in a user's tree.
pub fn detect(tree: &Path, series: &Series) -> Result<SeriesInTree> {
    let options = series_options(series)?;
    let defined = defined_options(tree, &options)?;
    Ok(judge(options, &defined))
}

impl SeriesInTree {
    /// Whether the series' own `series.config` is merged.
    pub fn merges_series_config(&self) -> bool {
        !matches!(self, SeriesInTree::Absent { .. })
    }

    /// A `--tree` without the series: its selftests' skips for what the
    /// kernel lacks are expected.
    pub fn lacks_series(&self) -> bool {
        matches!(self, SeriesInTree::Absent { .. })
    }

    /// The line the config stage prints for a `--tree` (None for the pinned
    /// tree). `config` is the series' `series.config` when it has one.
    pub fn describe(&self, series: &str, config: Option<&str>) -> Option<String> {
        let merged = match config {
            Some(c) => format!("{c} is merged right after base"),
            None => format!("(series {series} has no series.config to merge)"),
        };
        Some(match self {
            SeriesInTree::Managed => return None,
            SeriesInTree::Applied { options } => format!(
                "--tree has series {series}: it defines {}, the options the series adds; {merged}",
                options.join(", ")
            ),
            SeriesInTree::Partial { defined, undefined } => format!(
                "--tree has part of series {series}: it defines {} but not {}; {merged}, \
                 without the options the tree lacks, and the tests that need them will SKIP \
                 (which fails the run)",
                defined.join(", "),
                undefined.join(", ")
            ),
            SeriesInTree::Absent { options } if options.is_empty() => format!(
                "series {series} adds no Kconfig option, so whether --tree has it cannot be \
                 told: treated as a tree without it (base only)"
            ),
            SeriesInTree::Absent { options } => format!(
                "--tree has no series {series}: it defines none of {}, the options the series \
                 adds; base only, and the series' selftests will SKIP naming what this kernel \
                 lacks",
                options.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_options_global_ma_adds() {
        let s = Series::load(&crate::context::repo_root(), "global-ma").unwrap();
        assert_eq!(
            series_options(&s).unwrap(),
            [
                "CONFIG_BPF_GLOBAL_MA_TEST",
                "CONFIG_BPF_GLOBAL_MA_TEST_NMI",
                "CONFIG_BPF_GLOBAL_MA_DEBUG"
            ]
        );
        // Only added lines count, and only whole option names.
        let patch = "+config FOO\n+\tmenuconfig BAR_2\n config OLD\n-config GONE\n\
                     +config lower\n+config\n+# config COMMENT x\n";
        assert_eq!(options_added(patch), ["CONFIG_FOO", "CONFIG_BAR_2"]);
    }

    #[test]
    fn all_some_or_none_of_the_options() {
        let opts = || vec!["CONFIG_A".to_string(), "CONFIG_B".to_string()];
        let all = judge(opts(), &set(&["CONFIG_A", "CONFIG_B", "CONFIG_X"]));
        assert_eq!(all, SeriesInTree::Applied { options: opts() });
        assert!(all.merges_series_config() && !all.lacks_series());
        let some = judge(opts(), &set(&["CONFIG_B"]));
        assert_eq!(
            some,
            SeriesInTree::Partial {
                defined: vec!["CONFIG_B".into()],
                undefined: vec!["CONFIG_A".into()]
            }
        );
        assert!(some.merges_series_config() && !some.lacks_series());
        let none = judge(opts(), &set(&["CONFIG_X"]));
        assert_eq!(none, SeriesInTree::Absent { options: opts() });
        assert!(!none.merges_series_config() && none.lacks_series());
        // Nothing to tell by.
        assert_eq!(
            judge(vec![], &set(&["CONFIG_A"])),
            SeriesInTree::Absent { options: vec![] }
        );
        assert!(!SeriesInTree::Managed.lacks_series());
        assert!(SeriesInTree::Managed.merges_series_config());
    }

    #[test]
    fn what_the_config_stage_says() {
        let opts = vec!["CONFIG_A".to_string(), "CONFIG_B".to_string()];
        let cfg = Some("patches/s/series.config");
        assert_eq!(SeriesInTree::Managed.describe("s", cfg), None);
        assert_eq!(
            SeriesInTree::Applied {
                options: opts.clone()
            }
            .describe("s", cfg)
            .unwrap(),
            "--tree has series s: it defines CONFIG_A, CONFIG_B, the options the series adds; \
             patches/s/series.config is merged right after base"
        );
        assert_eq!(
            SeriesInTree::Absent {
                options: opts.clone()
            }
            .describe("s", cfg)
            .unwrap(),
            "--tree has no series s: it defines none of CONFIG_A, CONFIG_B, the options the \
             series adds; base only, and the series' selftests will SKIP naming what this \
             kernel lacks"
        );
        let partial = SeriesInTree::Partial {
            defined: vec!["CONFIG_A".into()],
            undefined: vec!["CONFIG_B".into()],
        }
        .describe("s", None)
        .unwrap();
        assert!(
            partial.starts_with(
                "--tree has part of series s: it defines CONFIG_A but not CONFIG_B; (series s \
                 has no series.config to merge)"
            ),
            "{partial}"
        );
    }

    /// The lookup itself, on a throwaway git repository.
    #[test]
    fn defined_options_reads_the_trees_kconfig() {
        let dir = std::env::temp_dir().join(format!("rig-series-in-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kernel/bpf")).unwrap();
        std::fs::write(
            dir.join("kernel/bpf/Kconfig"),
            "config BPF_GLOBAL_MA_TEST\n\tbool \"x\"\n# config BPF_GLOBAL_MA_DEBUG\n\
             menuconfig BPF_GLOBAL_MA_TEST_NMI\n",
        )
        .unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        let opts: Vec<String> = [
            "CONFIG_BPF_GLOBAL_MA_TEST",
            "CONFIG_BPF_GLOBAL_MA_TEST_NMI",
            "CONFIG_BPF_GLOBAL_MA_DEBUG",
        ]
        .map(String::from)
        .to_vec();
        let defined = defined_options(&dir, &opts).unwrap();
        assert_eq!(
            defined,
            set(&["CONFIG_BPF_GLOBAL_MA_TEST", "CONFIG_BPF_GLOBAL_MA_TEST_NMI"])
        );
        assert_eq!(
            defined_options(&dir, &["CONFIG_NOWHERE".to_string()]).unwrap(),
            set(&[])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
