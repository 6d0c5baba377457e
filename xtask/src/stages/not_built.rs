//! Why a BPF object did not build against a kernel's vmlinux.h: clang's
//! first error, read as the kernel definition it lacks, and the series'
//! patch that adds that definition. The guest gets the result as a
//! `rig_contract::lacks::NotBuilt` line, and skips with its reason.

use std::path::Path;

use rig_contract::lacks::{lacks, NotBuilt};

/// clang's first `error:` (or `fatal error:`) line, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClangError {
    /// `<file name>:<line>:<col>`, the directories left out.
    pub location: String,
    pub message: String,
}

impl ClangError {
    pub fn line(&self) -> String {
        format!("{}: error: {}", self.location, self.message)
    }
}

/// The first error in clang's output.
pub fn first_error(log: &str) -> Option<ClangError> {
    log.lines().find_map(|line| {
        let (location, message) = line
            .split_once(": error: ")
            .or_else(|| line.split_once(": fatal error: "))?;
        let file_name = |path: &str| {
            Path::new(path)
                .file_name()
                .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
        };
        Some(ClangError {
            location: file_name(location.trim()),
            message: message.trim().to_string(),
        })
    })
}

/// A kernel definition an error says vmlinux.h lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lack {
    /// `struct x` (incomplete), or a type name clang does not know.
    Type(String),
    /// A member `member` of type `of`.
    Member { member: String, of: String },
    /// An enum value (a map type, a flag) or a variable.
    Identifier(String),
    /// A function clang has no declaration of.
    Function(String),
}

impl Lack {
    /// As the SKIP reason names it.
    pub fn feature(&self) -> String {
        match self {
            Lack::Type(t) | Lack::Identifier(t) => t.clone(),
            Lack::Member { member, of } => format!("member {member} of {of}"),
            Lack::Function(f) => format!("function {f}"),
        }
    }

    /// What to look for in the series' added lines.
    fn needle(&self) -> &str {
        match self {
            Lack::Type(t) | Lack::Identifier(t) | Lack::Function(t) => t,
            Lack::Member { member, .. } => member,
        }
    }
}

/// The names clang quotes in `message`, in order.
fn quoted(message: &str) -> Vec<&str> {
    message.split('\'').skip(1).step_by(2).collect()
}

/// The kernel definition `message` (clang's words, see test_data/clang/)
/// says is missing; None for any other error (a syntax error, a missing
/// header: faults of the program, not of the kernel).
pub fn classify(message: &str) -> Option<Lack> {
    let names = quoted(message);
    let first = || names.first().map(|s| s.to_string());
    if message.contains("incomplete") || message.contains("never completed") {
        return names
            .iter()
            .find(|s| {
                ["struct ", "union ", "enum "]
                    .iter()
                    .any(|k| s.starts_with(k))
            })
            .map(|t| Lack::Type(t.to_string()));
    }
    if message.starts_with("no member named ") {
        return match names[..] {
            [member, of, ..] => Some(Lack::Member {
                member: member.to_string(),
                of: of.to_string(),
            }),
            _ => None,
        };
    }
    if message.starts_with("unknown type name ") {
        return first().map(Lack::Type);
    }
    if message.starts_with("use of undeclared identifier ") {
        return first().map(Lack::Identifier);
    }
    if message.starts_with("call to undeclared function ")
        || message.starts_with("implicit declaration of function ")
    {
        return first().map(Lack::Function);
    }
    None
}

/// A patch of the series, as a reason cites it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchRef {
    /// The file name's number, e.g. `0006`.
    pub number: String,
    pub subject: String,
}

/// The subject of a `git format-patch` file, without its `[PATCH n/m]`.
fn subject(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("Subject:"));
    let mut s = lines
        .next()?
        .trim_start_matches("Subject:")
        .trim()
        .to_string();
    for cont in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        s.push(' ');
        s.push_str(cont.trim());
    }
    if s.starts_with('[') {
        if let Some((_, rest)) = s.split_once("] ") {
            s = rest.to_string();
        }
    }
    Some(s)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `needle` in `line`, not as part of a longer identifier.
fn has_word(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(i, _)| {
        let before = line.as_bytes().get(i.wrapping_sub(1)).copied();
        let after = line.as_bytes().get(i + needle.len()).copied();
        !before.is_some_and(is_word_byte) && !after.is_some_and(is_word_byte)
    })
}

/// The first of `patches` (file name, text; in series order) whose diff
/// adds a line naming `lack`.
pub fn adding_patch(patches: &[(String, String)], lack: &Lack) -> Option<PatchRef> {
    let needle = lack.needle();
    patches.iter().find_map(|(file, text)| {
        let adds = text
            .lines()
            .any(|l| l.starts_with('+') && !l.starts_with("+++") && has_word(l, needle));
        adds.then(|| PatchRef {
            number: file.chars().take_while(char::is_ascii_digit).collect(),
            subject: subject(text).unwrap_or_default(),
        })
    })
}

/// What the guest is told about `object` (`<name>.bpf.o`), from clang's
/// output and the series' patches (file name, text).
pub fn explain(object: &str, log: &str, series: &str, patches: &[(String, String)]) -> NotBuilt {
    let error = first_error(log);
    let observed = format!("{object} not built");
    let reason = match (&error, error.as_ref().and_then(|e| classify(&e.message))) {
        (_, Some(lack)) => {
            let origin = adding_patch(patches, &lack).map_or(String::new(), |p| {
                format!(" (added by {series} patch {}: {})", p.number, p.subject)
            });
            lacks(&observed, &format!("{}{origin}", lack.feature()))
        }
        (Some(e), None) => format!("{observed}: clang: {}", e.message),
        (None, None) => format!("{observed}: clang failed without an error line"),
    };
    NotBuilt {
        object: object.to_string(),
        reason,
        compiler: error.map(|e| e.line()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clang_log(name: &str) -> String {
        let path = crate::context::repo_root().join(format!("test_data/clang/{name}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn lack_in(name: &str) -> Option<Lack> {
        classify(
            &first_error(&clang_log(name))
                .expect("an error line")
                .message,
        )
    }

    fn series() -> Vec<(String, String)> {
        let s = crate::stages::patches::Series::load(&crate::context::repo_root(), "global-ma")
            .unwrap();
        s.patches
            .iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(p).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_first_error_without_directories() {
        let e = first_error(&clang_log("plain-global_ma_counts")).unwrap();
        assert_eq!(e.location, "global_ma_counts.bpf.c:78:10");
        assert_eq!(
            e.message,
            "incomplete definition of type 'struct bpf_ma_testobj'"
        );
        assert_eq!(
            e.line(),
            "global_ma_counts.bpf.c:78:10: error: incomplete definition of type 'struct \
             bpf_ma_testobj'"
        );
        let fatal = first_error(&clang_log("missing_header")).unwrap();
        assert_eq!(fatal.location, "missing_header.bpf.c:2:10");
        assert_eq!(fatal.message, "'bpf_no_such_header.h' file not found");
        assert_eq!(first_error("warning: x\n1 warning generated.\n"), None);
    }

    #[test]
    fn what_each_recorded_error_lacks() {
        let ty = |t: &str| Some(Lack::Type(t.into()));
        assert_eq!(
            lack_in("plain-global_ma_counts"),
            ty("struct bpf_ma_testobj")
        );
        assert_eq!(lack_in("plain-global_ma_kptr"), ty("struct bpf_ma_testobj"));
        assert_eq!(lack_in("incomplete_field"), ty("struct bpf_ma_testobj"));
        assert_eq!(
            lack_in("incomplete_variable"),
            ty("struct bpf_ma_reserve_arg")
        );
        assert_eq!(lack_in("unknown_type"), ty("bpf_ma_testobj_t"));
        assert_eq!(
            lack_in("undeclared_identifier"),
            Some(Lack::Identifier("BPF_MAP_TYPE_GLOBAL_MA_RESERVE".into()))
        );
        assert_eq!(
            lack_in("undeclared_function"),
            Some(Lack::Function("bpf_ma_testobj_count".into()))
        );
        assert_eq!(
            lack_in("no_member"),
            Some(Lack::Member {
                member: "global_ma_owner".into(),
                of: "struct bpf_map".into()
            })
        );
        // The program's own faults are not the kernel's.
        assert_eq!(lack_in("syntax_error"), None);
        assert_eq!(lack_in("missing_header"), None);
        // Every error of incomplete_field.log is one of a type.
        let all: Vec<_> = clang_log("incomplete_field")
            .lines()
            .filter_map(|l| l.split_once(": error: ").map(|(_, m)| classify(m)))
            .collect();
        assert_eq!(
            all,
            [
                ty("struct bpf_ma_testobj"),
                ty("struct bpf_ma_reserve_arg"),
                ty("struct bpf_global_ma_owner")
            ]
        );
    }

    #[test]
    fn the_patch_that_adds_a_definition() {
        let patches = series();
        let testobj = adding_patch(&patches, &Lack::Type("struct bpf_ma_testobj".into())).unwrap();
        assert_eq!(testobj.number, "0006");
        assert_eq!(
            testobj.subject,
            "bpf: Add a test object type and kfuncs for the global allocator"
        );
        let map_type = Lack::Identifier("BPF_MAP_TYPE_GLOBAL_MA_RESERVE".into());
        assert_eq!(adding_patch(&patches, &map_type).unwrap().number, "0011");
        // A longer identifier does not count: bpf_ma_testobj_new is not
        // bpf_ma_testobj.
        assert!(!has_word(
            "+BTF_ID_FLAGS(func, bpf_ma_testobj_new)",
            "bpf_ma_testobj"
        ));
        assert!(has_word(
            "+struct bpf_ma_testobj {",
            "struct bpf_ma_testobj"
        ));
        assert_eq!(
            adding_patch(&patches, &Lack::Type("struct nowhere_in_it".into())),
            None
        );
    }

    #[test]
    fn the_reason_the_guest_gets() {
        let patches = series();
        let nb = explain(
            "global_ma_counts.bpf.o",
            &clang_log("plain-global_ma_counts"),
            "global-ma",
            &patches,
        );
        assert_eq!(
            nb.reason,
            "global_ma_counts.bpf.o not built: this kernel lacks struct bpf_ma_testobj (added \
             by global-ma patch 0006: bpf: Add a test object type and kfuncs for the global \
             allocator)"
        );
        assert_eq!(
            rig_contract::lacks::lacked(&nb.reason),
            Some(
                "struct bpf_ma_testobj (added by global-ma patch 0006: bpf: Add a test object \
                 type and kfuncs for the global allocator)"
            )
        );
        assert_eq!(
            nb.compiler,
            "global_ma_counts.bpf.c:78:10: error: incomplete definition of type 'struct \
             bpf_ma_testobj'"
        );
        // Without the series' patches: no origin.
        let bare = explain("x.bpf.o", &clang_log("no_member"), "global-ma", &[]);
        assert_eq!(
            bare.reason,
            "x.bpf.o not built: this kernel lacks member global_ma_owner of struct bpf_map"
        );
        // Not the kernel's fault: no feature named, so never an expected skip.
        let syntax = explain("x.bpf.o", &clang_log("syntax_error"), "global-ma", &patches);
        assert_eq!(
            syntax.reason,
            "x.bpf.o not built: clang: expected ';' after top level declarator"
        );
        assert_eq!(rig_contract::lacks::lacked(&syntax.reason), None);
        let silent = explain("x.bpf.o", "Killed\n", "global-ma", &patches);
        assert_eq!(
            silent.reason,
            "x.bpf.o not built: clang failed without an error line"
        );
        assert_eq!(silent.compiler, "");
    }
}
