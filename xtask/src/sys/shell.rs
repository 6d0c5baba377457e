//! Command lines written down for a human to rerun (`qemu.cmdline` in a run
//! dir): each argument as one shell word.

use std::path::Path;

use anyhow::{Context, Result};

/// `a` as one shell word: as it is when safe, else single-quoted (an empty
/// argument too, so that it is not lost).
pub fn word(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/@+".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// `program args...` as one shell line.
pub fn line(program: &str, args: &[String]) -> String {
    let mut l = program.to_string();
    for a in args {
        l.push(' ');
        l.push_str(&word(a));
    }
    l
}

/// Writes [`line`] and a line break to `path`.
pub fn write_cmdline(path: &Path, program: &str, args: &[String]) -> Result<()> {
    std::fs::write(path, format!("{}\n", line(program, args)))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_shell_words() {
        assert_eq!(word("-append"), "-append");
        assert_eq!(word("a b"), "'a b'");
        assert_eq!(word("it's"), "'it'\\''s'");
        assert_eq!(word(""), "''");
        assert_eq!(
            line(
                "qemu-system-x86_64",
                &["-m".into(), "".into(), "a=1 b".into()]
            ),
            "qemu-system-x86_64 -m '' 'a=1 b'"
        );
    }
}
