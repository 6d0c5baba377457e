//! What the kernel under test lacks, both ways:
//!
//! - the image's list of BPF objects the host could not build against the
//!   kernel's vmlinux.h ([`NotBuilt`], one line each in the file [`LIST`]
//!   next to the objects), for the guest to skip their tests with the
//!   host's reason;
//! - the SKIP reasons that name a kernel feature the test needs and the
//!   kernel lacks ([`lacks`], [`lacked`]): on a `--tree` without the series
//!   these are the expected skips, and any other skip fails the run.
//!
//! ```text
//! global_ma_counts.bpf.o<TAB><reason><TAB><compiler's first error>
//! ok 8 global_ma_prog_counts # SKIP global_ma_counts.bpf.o not built: this kernel lacks struct bpf_ma_testobj (...)
//! ```

use crate::Error;

/// The list's file name, in the guest's BPF object directory. The host
/// always writes it, empty when every object was built.
pub const LIST: &str = "not-built";

/// What separates the observation from the missing feature in a SKIP reason.
const LACKS: &str = ": this kernel lacks ";

/// A SKIP reason for a test that needs `feature` (a type, kfunc, map type,
/// config option, debugfs file...) the kernel lacks; `observed` says how the
/// test found out, e.g. `/sys/kernel/debug/bpf_global_ma/stats missing`.
pub fn lacks(observed: &str, feature: &str) -> String {
    format!("{observed}{LACKS}{feature}")
}

/// The feature a [`lacks`] reason names, or None for any other reason.
///
/// Accepted format: `<observed>: this kernel lacks <feature>`, both parts
/// non-empty.
pub fn lacked(reason: &str) -> Option<&str> {
    let (observed, feature) = reason.split_once(LACKS)?;
    let feature = feature.trim();
    (!observed.trim().is_empty() && !feature.is_empty()).then_some(feature)
}

/// One BPF object the image does not hold, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotBuilt {
    /// The file name, `<name>.bpf.o`.
    pub object: String,
    /// The SKIP reason of every test that needs the object.
    pub reason: String,
    /// The compiler's first error line, for the tests' diagnostics.
    pub compiler: String,
}

/// Tabs and line breaks would split the fields.
fn field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ").trim().to_string()
}

impl NotBuilt {
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{}",
            field(&self.object),
            field(&self.reason),
            field(&self.compiler)
        )
    }

    /// Accepted format: three tab-separated fields, the first two non-empty.
    pub fn parse(line: &str) -> Result<NotBuilt, Error> {
        let mut parts = line.splitn(3, '\t');
        let (Some(object), Some(reason)) = (parts.next(), parts.next()) else {
            return Err(Error::new(format!(
                "not-built line {line:?}: expected `object<TAB>reason<TAB>compiler error`"
            )));
        };
        if object.trim().is_empty() || reason.trim().is_empty() {
            return Err(Error::new(format!(
                "not-built line {line:?}: empty object or reason"
            )));
        }
        Ok(NotBuilt {
            object: object.trim().to_string(),
            reason: reason.trim().to_string(),
            compiler: parts.next().unwrap_or("").trim().to_string(),
        })
    }
}

/// The list file's text: one line per object, in order.
pub fn write_list(entries: &[NotBuilt]) -> String {
    entries.iter().map(|e| e.line() + "\n").collect()
}

/// Every entry of a list file; blank lines are ignored.
pub fn parse_list(text: &str) -> Result<Vec<NotBuilt>, Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(NotBuilt::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lacks_reason_names_its_feature() {
        let r = lacks(
            "/sys/kernel/debug/bpf_global_ma/stats missing",
            "the global BPF allocator",
        );
        assert_eq!(
            r,
            "/sys/kernel/debug/bpf_global_ma/stats missing: this kernel lacks the global BPF \
             allocator"
        );
        assert_eq!(lacked(&r), Some("the global BPF allocator"));
        // Other skips name no feature.
        assert_eq!(lacked("needs at least 2 online CPUs"), None);
        assert_eq!(lacked("no rig.cpus= on the kernel command line"), None);
        assert_eq!(lacked(": this kernel lacks x"), None);
        assert_eq!(lacked("seen: this kernel lacks "), None);
    }

    #[test]
    fn the_list_round_trips() {
        let entries = vec![
            NotBuilt {
                object: "global_ma_counts.bpf.o".into(),
                reason: lacks("global_ma_counts.bpf.o not built", "struct bpf_ma_testobj"),
                compiler: "global_ma_counts.bpf.c:78:10: error: incomplete\tdefinition".into(),
            },
            NotBuilt {
                object: "x.bpf.o".into(),
                reason: "x.bpf.o not built: clang: expected ';'\nsecond line".into(),
                compiler: String::new(),
            },
        ];
        let text = write_list(&entries);
        assert_eq!(text.lines().count(), 2);
        let back = parse_list(&format!("\n{text}\n")).unwrap();
        assert_eq!(back[0].object, "global_ma_counts.bpf.o");
        assert_eq!(back[0].reason, entries[0].reason);
        assert_eq!(
            back[0].compiler,
            "global_ma_counts.bpf.c:78:10: error: incomplete definition"
        );
        assert_eq!(
            back[1].reason,
            "x.bpf.o not built: clang: expected ';' second line"
        );
        assert_eq!(back[1].compiler, "");
        assert_eq!(parse_list("").unwrap(), []);
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(NotBuilt::parse("just-an-object").is_err());
        assert!(NotBuilt::parse("\treason\t").is_err());
        assert!(NotBuilt::parse("obj\t \tclang").is_err());
        assert!(parse_list("a\tb\tc\nbroken\n").is_err());
    }
}
