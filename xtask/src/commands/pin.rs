//! `cargo xtask pin VERSION`: moves kernel.lock to another version of the
//! Debian source package, for when the pinned one has left the archive.
//!
//! It downloads VERSION into the tree stage's tarball cache, records the
//! tarball's sha256 in kernel.lock (comments and other keys kept), imports
//! the tree (`src/linux-VERSION/`, beside the old one) and re-applies the
//! series with the apply stage, which names the patch, file and hunk that no
//! longer applies. The pin is never left half-moved without saying so: when
//! the series does not apply, the old kernel.lock is restored unless
//! `--keep-on-conflict` asks to keep the new version (to fix the series there).
//! Exit 0: moved, series applies; 1: series does not apply; 2: the pin did
//! not move (version not offered, download or import failed).

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::flags::PinFlags;
use crate::pipeline::Pipeline;
use crate::stages::hashing::sha256_file;
use crate::stages::patches::{self, Series};
use crate::stages::tree::{self, KernelLock};
use crate::sys::progress::Stage;

pub fn run(f: PinFlags) -> Result<i32> {
    if f.common.tree.is_some() {
        bail!("--tree: `pin` moves kernel.lock, the pinned tree, which --tree replaces");
    }
    check_version(&f.version)?;
    let p = Pipeline::new(f.common.clone())?;
    let lock_path = p.ctx.repo.join("kernel.lock");
    let old_text = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let old = KernelLock::load(&p.ctx.repo)?;
    if old.version == f.version {
        eprintln!(
            "[pin] kernel.lock already pins {} {}; nothing to move",
            old.package, old.version
        );
        return Ok(0);
    }
    let stage = Stage::start(
        "pin",
        &format!("{} {} -> {}", old.package, old.version, f.version),
    );
    let target = KernelLock {
        package: old.package.clone(),
        version: f.version.clone(),
        tarball: old.tarball.clone(),
        sha256: String::new(),
    };
    // Read before kernel.lock moves: a series that cannot load changes nothing.
    let series = Series::load(&p.ctx.repo, &p.ctx.common.series)?;
    let sh = Shell::new()?;
    // Not available: the same error as the tree stage's, naming what is.
    let tarball = tree::cached_tarball(&p.ctx, &sh, &target)?;
    let sha = sha256_file(&tarball)?;
    eprintln!("[pin] {} sha256 {sha}", tarball.display());
    let new_text = rewrite_lock(&old_text, &f.version, &sha)?;
    std::fs::write(&lock_path, &new_text)
        .with_context(|| format!("writing {}", lock_path.display()))?;
    eprintln!(
        "[pin] kernel.lock: version {} -> {}, sha256 {sha}",
        old.version, f.version
    );
    let restore = || {
        std::fs::write(&lock_path, &old_text)
            .with_context(|| format!("restoring {}", lock_path.display()))
    };
    // The tree stage reads the new kernel.lock: the new version's own dir.
    let t = match p.tree() {
        Ok(t) => t,
        Err(e) => {
            restore()?;
            return Err(e.context(format!(
                "importing {} {}; kernel.lock restored to {}",
                old.package, f.version, old.version
            )));
        }
    };
    if let Err(e) = patches::apply(&t, &series) {
        eprintln!("[pin] series `{}` at {}: {e:#}", series.name, f.version);
        if f.keep_on_conflict {
            eprintln!(
                "[pin] --keep-on-conflict: kernel.lock stays at {} although the series does \
                 not apply there; fix it on that tree, or move back with `cargo xtask pin {}`",
                f.version, old.version
            );
        } else {
            restore()?;
            eprintln!(
                "[pin] kernel.lock restored: it still pins {} {}. Pass --keep-on-conflict to \
                 keep {} and fix the series there",
                old.package, old.version, f.version
            );
        }
        return Ok(1);
    }
    stage.done(&format!(
        "kernel.lock pins {} {}; series `{}` applies ({}); review and commit kernel.lock",
        old.package,
        f.version,
        series.name,
        t.path.display()
    ));
    Ok(0)
}

/// A Debian version (`[epoch:]upstream[-revision]`): nothing that could
/// break out of kernel.lock's quoted string or name a path.
fn check_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c));
    if !ok {
        bail!("`{version}` is not a Debian package version (e.g. 6.1.192-2, as `apt-cache madison` lists them)");
    }
    Ok(())
}

/// kernel.lock's text with `version` and `sha256` replaced, every other
/// line (comments, package, tarball) as it was.
pub fn rewrite_lock(text: &str, version: &str, sha256: &str) -> Result<String> {
    let mut seen = (0, 0);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let key = body.split('=').next().unwrap_or("").trim();
        if body.contains('=') && !body.trim_start().starts_with('#') && key == "version" {
            seen.0 += 1;
            out.push_str(&format!("version = \"{version}\"{ending}"));
        } else if body.contains('=') && !body.trim_start().starts_with('#') && key == "sha256" {
            seen.1 += 1;
            out.push_str(&format!("sha256 = \"{sha256}\"{ending}"));
        } else {
            out.push_str(line);
        }
    }
    if seen != (1, 1) {
        bail!(
            "kernel.lock: expected one `version = ...` and one `sha256 = ...` line, found {} and {}",
            seen.0,
            seen.1
        );
    }
    let parsed: KernelLock = toml::from_str(&out).context("kernel.lock after the rewrite")?;
    if parsed.version != version || parsed.sha256 != sha256 {
        bail!("kernel.lock after the rewrite does not read back as {version} / {sha256}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"# The pinned kernel tree: Debian's linux-source package at an exact version.
# `cargo xtask test` fetches it with `apt-get download`, checks the tarball's
# sha256 and imports it once as a git baseline commit.
package = "linux-source-6.1"
version = "6.1.192-3"
tarball = "usr/src/linux-source-6.1.tar.xz"
sha256 = "cacdc3830989309d042083be3307969e55600ed7f908cf00df544c5ff50759a1"
"#;

    #[test]
    fn rewrite_moves_version_and_sha_and_keeps_the_rest() {
        let sha = "0".repeat(64);
        let out = rewrite_lock(LOCK, "6.1.192-2", &sha).unwrap();
        let expected = LOCK.replace("\"6.1.192-3\"", "\"6.1.192-2\"").replace(
            "cacdc3830989309d042083be3307969e55600ed7f908cf00df544c5ff50759a1",
            &sha,
        );
        assert_eq!(out, expected);
        // And back: the same text as before.
        let back = rewrite_lock(
            &out,
            "6.1.192-3",
            "cacdc3830989309d042083be3307969e55600ed7f908cf00df544c5ff50759a1",
        )
        .unwrap();
        assert_eq!(back, LOCK);
    }

    #[test]
    fn rewrite_refuses_a_lock_without_both_keys() {
        let no_sha: String = LOCK
            .lines()
            .filter(|l| !l.starts_with("sha256"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(rewrite_lock(&no_sha, "6.1.192-2", "00").is_err());
        let twice = format!("{LOCK}version = \"1\"\n");
        assert!(rewrite_lock(&twice, "6.1.192-2", "00").is_err());
    }

    #[test]
    fn versions_are_debian_versions() {
        for ok in ["6.1.192-2", "1:6.1.0+b1~rc1"] {
            check_version(ok).unwrap();
        }
        for bad in ["", "latest", "6.1\"", "../6.1", "6.1 -2"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
