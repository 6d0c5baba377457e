//! Checkpatch findings a series argues away: `patches/<series>/checkpatch-exceptions`,
//! one line per exception,
//!
//! ```text
//! <patch file name> <checkpatch type>  <why, in a few words>
//! ```
//!
//! (`#` starts a comment). check-series passes the types as `--ignore` for
//! that patch only and prints each with its reason. The commit message of
//! the patch is where the full argument belongs; this file only names it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const FILE: &str = "checkpatch-exceptions";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    pub kind: String,
    pub reason: String,
}

/// Exceptions by patch file name. Every patch named must be in `patches`.
pub fn parse(text: &str, patches: &[String]) -> Result<BTreeMap<String, Vec<Exception>>> {
    let mut out: BTreeMap<String, Vec<Exception>> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.splitn(3, char::is_whitespace);
        let (Some(patch), Some(kind), Some(reason)) = (words.next(), words.next(), words.next())
        else {
            bail!(
                "{FILE} line {}: {raw:?}: want `<patch file> <CHECKPATCH_TYPE> <reason>`",
                n + 1
            );
        };
        if !patches.iter().any(|p| p == patch) {
            bail!(
                "{FILE} line {}: {patch} is not in the series (a stale exception: remove it)",
                n + 1
            );
        }
        if !kind.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            bail!(
                "{FILE} line {}: {kind:?} is not a checkpatch type (see --show-types)",
                n + 1
            );
        }
        out.entry(patch.to_string()).or_default().push(Exception {
            kind: kind.to_string(),
            reason: reason.trim().to_string(),
        });
    }
    Ok(out)
}

/// The series dir's exceptions, or none when it has no such file.
pub fn load(series_dir: &Path, patches: &[String]) -> Result<BTreeMap<String, Vec<Exception>>> {
    let path = series_dir.join(FILE);
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, patches).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["0001-a.patch".into(), "0002-b.patch".into()]
    }

    #[test]
    fn parses_lines_and_comments() {
        let e = parse(
            "# comment\n0002-b.patch INCLUDE_LINUX  x86 API, see the message\n\n",
            &names(),
        )
        .unwrap();
        assert_eq!(
            e["0002-b.patch"],
            vec![Exception {
                kind: "INCLUDE_LINUX".into(),
                reason: "x86 API, see the message".into()
            }]
        );
        assert!(!e.contains_key("0001-a.patch"));
    }

    #[test]
    fn rejects_bad_lines() {
        let stale = parse("0009-gone.patch UNKNOWN_COMMIT_ID no history", &names()).unwrap_err();
        assert!(format!("{stale:#}").contains("not in the series"));
        let short = parse("0001-a.patch UNKNOWN_COMMIT_ID", &names()).unwrap_err();
        assert!(format!("{short:#}").contains("want"));
        let kind = parse("0001-a.patch unknown-id why", &names()).unwrap_err();
        assert!(format!("{kind:#}").contains("not a checkpatch type"));
    }
}
