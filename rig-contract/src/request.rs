//! Requests from the guest to the host, written as KTAP diagnostics so they
//! travel on the KTAP port in order with the test's other lines. The only one
//! today asks the host for an external NMI (QMP `inject-nmi`).

/// The diagnostic text of the NMI request (the line is `# ` + this).
pub const INJECT_NMI: &str = "rig: inject-nmi";

/// The NMI request as a whole KTAP line.
pub fn inject_nmi_line() -> String {
    format!("# {INJECT_NMI}")
}

/// Whether `line` is an NMI request.
///
/// Accepted format: `# rig: inject-nmi`, with any surrounding whitespace
/// (a nested block indents it); nothing may follow the request.
pub fn is_inject_nmi(line: &str) -> bool {
    line.trim()
        .strip_prefix('#')
        .and_then(|rest| rest.strip_prefix(' '))
        == Some(INJECT_NMI)
}

/// How many NMI requests `ktap` holds.
pub fn count_inject_nmi(ktap: &str) -> usize {
    ktap.lines().filter(|l| is_inject_nmi(l)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert!(is_inject_nmi(&inject_nmi_line()));
        assert_eq!(inject_nmi_line(), "# rig: inject-nmi");
        assert_eq!(
            count_inject_nmi("ok 1 a\n# rig: inject-nmi\n  # rig: inject-nmi\n# x\n"),
            2
        );
        assert_eq!(count_inject_nmi("# rig: inject-nmi please\n"), 0);
    }
}
