//! Debian's archive as the tree stage and `cargo xtask pin` see it: which
//! versions of the source package apt offers (`apt-cache madison`), and the
//! error that names them when the pinned one cannot be fetched.

use anyhow::{Context, Result};

/// The versions of `package` in `apt-cache madison <package>` output, in
/// madison's order (newest first), each once. Accepted lines:
/// `pkg | version | source`; anything else (apt's `N:` notes) is ignored.
pub fn parse_madison(text: &str, package: &str) -> Vec<String> {
    let mut versions: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split('|').map(str::trim);
        let (Some(pkg), Some(version), Some(_source)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // Madison lists a version once per archive (and per arch for sources).
        if pkg == package && !version.is_empty() && !versions.iter().any(|v| v == version) {
            versions.push(version.to_string());
        }
    }
    versions
}

/// The versions of `package` apt offers now, from `apt-cache madison`.
pub fn available_versions(package: &str) -> Result<Vec<String>> {
    let out = duct::cmd!("apt-cache", "madison", package)
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .with_context(|| format!("running `apt-cache madison {package}`"))?;
    Ok(parse_madison(
        &String::from_utf8_lossy(&out.stdout),
        package,
    ))
}

/// Why `package=version` cannot be fetched, with the versions that can be
/// and the one command that moves the pin to the newest of them.
pub fn unavailable_message(package: &str, version: &str, available: &[String]) -> String {
    let spec = format!("{package}={version}");
    match available.first() {
        Some(newest) => format!(
            "`apt-get download {spec}` failed: the package lists do not offer {version}. \
             `apt-cache madison {package}` offers: {}. Move the pin with \
             `cargo xtask pin {newest}` (it updates kernel.lock's version and sha256 and \
             re-applies the series), or run `apt-get update` first if the lists are stale",
            available.join(", ")
        ),
        None => format!(
            "`apt-get download {spec}` failed, and `apt-cache madison {package}` offers no \
             version at all: run `apt-get update` (is deb.debian.org in the sources?), then \
             `apt-cache madison {package}`, and move the pin with `cargo xtask pin VERSION`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test_data/apt/madison-linux-source-6.1.txt"
        );
        std::fs::read_to_string(path).expect("recorded madison output")
    }

    #[test]
    fn madison_versions_newest_first() {
        assert_eq!(
            parse_madison(&recorded(), "linux-source-6.1"),
            [
                "6.1.192-3",
                "6.1.192-2",
                "6.1.192-1",
                "6.1.190-1",
                "6.1.187-1",
                "6.1.176-1",
                "6.1.170-3"
            ]
        );
    }

    #[test]
    fn madison_skips_notes_other_packages_and_repeats() {
        let text = "N: Unable to locate package nope\n\
                    linux-source-6.1 | 6.1.1-1 | http://x bookworm/main amd64 Packages\n\
                    linux-source-6.1 | 6.1.1-1 | http://x bookworm/main Sources\n\
                    linux-source-6.12 | 6.12.1-1 | http://x trixie/main amd64 Packages\n\
                    garbage line\n";
        assert_eq!(parse_madison(text, "linux-source-6.1"), ["6.1.1-1"]);
        assert!(parse_madison("", "linux-source-6.1").is_empty());
    }

    #[test]
    fn unavailable_names_the_versions_and_the_command() {
        let available = parse_madison(&recorded(), "linux-source-6.1");
        let msg = unavailable_message("linux-source-6.1", "6.1.150-1", &available);
        assert!(
            msg.contains("6.1.192-3, 6.1.192-2, 6.1.192-1, 6.1.190-1"),
            "{msg}"
        );
        assert!(msg.contains("`cargo xtask pin 6.1.192-3`"), "{msg}");
        let none = unavailable_message("linux-source-6.1", "6.1.150-1", &[]);
        assert!(none.contains("offers no version"), "{none}");
        assert!(none.contains("apt-get update"), "{none}");
    }
}
