//! Benchmark figures: KTAP diagnostics of a bench test, one figure set a line.
//!
//! ```text
//! # bench: <kind> <key>=<value> <key>=<value> ...
//! ```
//!
//! with no spaces in keys or values (bpf-selftests/src/bench/alloc.rs lists
//! the kinds and keys of `rig.bench=alloc`, bench/maploop.rs those of
//! `rig.bench=maploop`).

use std::collections::BTreeMap;

use crate::Error;

/// What starts a figures diagnostic (after the KTAP `# `).
pub const PREFIX: &str = "bench: ";

/// One figures line, without the KTAP `# ` (the writer adds it).
pub fn line(kind: &str, fields: &[(&str, String)]) -> String {
    let mut l = format!("{PREFIX}{kind}");
    for (k, v) in fields {
        l.push_str(&format!(" {k}={v}"));
    }
    l
}

/// A parsed figures line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures<'a> {
    pub kind: &'a str,
    pub fields: BTreeMap<&'a str, &'a str>,
}

/// The text after `bench: ` when the diagnostic `diag` is a figures line.
pub fn strip(diag: &str) -> Option<&str> {
    diag.strip_prefix(PREFIX)
}

/// Parses the text after `bench: `.
///
/// Accepted format: `<kind> <key>=<value> ...`, words separated by any
/// whitespace, each key at most once.
pub fn parse(text: &str) -> Result<Figures<'_>, Error> {
    let mut words = text.split_whitespace();
    let kind = words
        .next()
        .ok_or_else(|| Error::new("a bench line without a kind"))?;
    let mut fields = BTreeMap::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| Error::new(format!("{w:?} is not key=value")))?;
        if fields.insert(k, v).is_some() {
            return Err(Error::new(format!("{k} given twice")));
        }
    }
    Ok(Figures { kind, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let written = line("prefill", &[("size", "32".into()), ("ns", "12".into())]);
        assert_eq!(written, "bench: prefill size=32 ns=12");
        let f = parse(strip(&written).unwrap()).unwrap();
        assert_eq!(f.kind, "prefill");
        assert_eq!(
            f.fields.into_iter().collect::<Vec<_>>(),
            [("ns", "12"), ("size", "32")]
        );
        assert_eq!(parse("setup").unwrap().fields.len(), 0);
    }

    #[test]
    fn rejects() {
        assert_eq!(
            parse("").unwrap_err().to_string(),
            "a bench line without a kind"
        );
        assert_eq!(
            parse("alloc ns").unwrap_err().to_string(),
            "\"ns\" is not key=value"
        );
        assert_eq!(
            parse("alloc a=1 a=2").unwrap_err().to_string(),
            "a given twice"
        );
        assert_eq!(strip("benchmark: x"), None);
    }
}
