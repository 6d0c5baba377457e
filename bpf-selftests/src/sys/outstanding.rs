//! Owners that went away with objects of the global allocator still
//! allocated, as the debug mode lists them (CONFIG_BPF_GLOBAL_MA_DEBUG,
//! patches/global-ma 0016) in `/sys/kernel/debug/bpf_global_ma/outstanding`:
//!
//! ```text
//! <name> id <id> live <n>
//! ```

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const PATH: &str = "/sys/kernel/debug/bpf_global_ma/outstanding";

/// One line of `outstanding`: an owner gone with objects still allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outstanding {
    pub name: String,
    pub id: u32,
    pub live: i64,
}

/// Every line of the file.
pub fn parse(text: &str) -> Result<Vec<Outstanding>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let [name, "id", id, "live", live] = w[..] else {
                bail!("unexpected line {line:?} (want `<name> id <id> live <n>`)");
            };
            Ok(Outstanding {
                name: name.to_string(),
                id: id.parse().with_context(|| format!("id in {line:?}"))?,
                live: live.parse().with_context(|| format!("live in {line:?}"))?,
            })
        })
        .collect()
}

/// The owners listed in `outstanding`, or None without the debug mode.
pub fn read() -> Result<Option<Vec<Outstanding>>> {
    if !Path::new(PATH).exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(PATH).with_context(|| format!("reading {PATH}"))?;
    parse(&text)
        .map(Some)
        .with_context(|| format!("parsing {PATH}:\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outstanding() {
        let o = parse("gma_test_leak id 0 live 1\ngma_pf_alloc id 42 live 3\n").unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].id, 42);
        assert_eq!(o[1].live, 3);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("x id 1\n").is_err());
        assert!(parse("x id y live 1\n").is_err());
    }
}
