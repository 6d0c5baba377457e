//! Stage `tree`: the pinned kernel (Debian's linux-source package, checked
//! against kernel.lock and imported once as a git baseline commit), or a
//! user's own kernel checkout with `--tree`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::context::{require_tool, Ctx};
use crate::stages::archive;
use crate::stages::hashing::sha256_file;
use crate::stages::patches::Series;
use crate::stages::series_in_tree::{self, SeriesInTree};
use crate::sys::progress::Stage;

pub const BASELINE_TAG: &str = "rig-baseline";

#[derive(Deserialize, Debug)]
pub struct KernelLock {
    pub package: String,
    pub version: String,
    pub tarball: String,
    pub sha256: String,
}

pub struct Tree {
    pub path: PathBuf,
    /// True for the pinned tree the rig owns (and may check out and patch).
    pub managed: bool,
    /// A short name for build dirs and reports.
    pub label: String,
    /// Whether a `--tree` has the series (`Managed` for the pinned tree).
    pub series: SeriesInTree,
}

impl KernelLock {
    pub fn load(repo: &Path) -> Result<KernelLock> {
        let path = repo.join("kernel.lock");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

pub fn prepare(ctx: &Ctx) -> Result<Tree> {
    require_tool("git", "git")?;
    if let Some(user) = &ctx.common.tree {
        return user_tree(ctx, user);
    }
    let lock = KernelLock::load(&ctx.repo)?;
    let label = format!("linux-{}", lock.version);
    let path = ctx.dir("src")?.join(&label);
    let sh = Shell::new()?;
    if path.join(".git").is_dir()
        && cmd!(
            sh,
            "git -C {path} rev-parse -q --verify refs/tags/{BASELINE_TAG}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .is_ok()
    {
        return Ok(Tree {
            path,
            managed: true,
            label,
            series: SeriesInTree::Managed,
        });
    }
    let stage = Stage::start(
        "tree",
        &format!("importing {} {} (once)", lock.package, lock.version),
    );
    let tarball = fetch_tarball(ctx, &sh, &lock)?;
    import(&sh, &lock, &tarball, &path)?;
    stage.done(&format!("baseline at {}", path.display()));
    Ok(Tree {
        path,
        managed: true,
        label,
        series: SeriesInTree::Managed,
    })
}

fn user_tree(ctx: &Ctx, user: &Path) -> Result<Tree> {
    let path = user
        .canonicalize()
        .with_context(|| format!("--tree {}: no such directory", user.display()))?;
    if !path.join("Makefile").is_file() || !path.join("kernel/bpf").is_dir() {
        bail!(
            "--tree {}: not a kernel source tree (no Makefile or kernel/bpf/)",
            path.display()
        );
    }
    if !path.join(".git").exists() {
        bail!(
            "--tree {}: not a git checkout; the rig keys builds by commit",
            path.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tree".into());
    let mut key = crate::stages::hashing::Key::new("user-tree");
    key.str(&path.to_string_lossy());
    let series = Series::load(&ctx.repo, &ctx.common.series)?;
    let series = series_in_tree::detect(&path, &series)
        .with_context(|| format!("--tree {}: does it have the series?", path.display()))?;
    Ok(Tree {
        label: format!("{name}-{}", &key.finish()[..8]),
        path,
        managed: false,
        series,
    })
}

/// Downloads the pinned package and returns its tarball, checksum verified.
fn fetch_tarball(ctx: &Ctx, sh: &Shell, lock: &KernelLock) -> Result<PathBuf> {
    let tarball = cached_tarball(ctx, sh, lock)?;
    let got = sha256_file(&tarball)?;
    if got != lock.sha256 {
        bail!(
            "{} has sha256 {got}, but kernel.lock pins {}. The download is corrupt or the \
             package was rebuilt: delete {} and retry; if the archive really changed, review \
             it and update the sha256 in kernel.lock",
            tarball.display(),
            lock.sha256,
            ctx.work.join("cache").display()
        );
    }
    Ok(tarball)
}

/// What the tarball cache already holds for one version.
#[derive(Debug, PartialEq, Eq)]
enum Cached {
    Tarball(PathBuf),
    Deb { deb: PathBuf, tarball: PathBuf },
    Nothing { deb: PathBuf, tarball: PathBuf },
}

fn cache_state(cache: &Path, package: &str, version: &str) -> Cached {
    let tarball = cache.join(format!("{package}_{version}.tar.xz"));
    let deb = cache.join(format!("{package}_{version}_all.deb"));
    if tarball.is_file() {
        Cached::Tarball(tarball)
    } else if deb.is_file() {
        Cached::Deb { deb, tarball }
    } else {
        Cached::Nothing { deb, tarball }
    }
}

/// `lock`'s version of the package's tarball in the cache, downloaded with
/// `apt-get download` only when neither it nor its .deb is there (so a
/// fetched pin works offline); its sha256 is the caller's to check.
pub fn cached_tarball(ctx: &Ctx, sh: &Shell, lock: &KernelLock) -> Result<PathBuf> {
    let cache = ctx.dir("cache")?;
    let (deb, tarball) = match cache_state(&cache, &lock.package, &lock.version) {
        Cached::Tarball(tarball) => return Ok(tarball),
        Cached::Deb { deb, tarball } => (deb, tarball),
        Cached::Nothing { deb, tarball } => {
            download(sh, &cache, lock, &deb)?;
            (deb, tarball)
        }
    };
    require_tool("dpkg-deb", "dpkg")?;
    let partial = tarball.with_extension("partial");
    let member = format!("./{}", lock.tarball);
    let extract = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -xO '{member}' > '{}'",
        deb.display(),
        partial.display()
    );
    cmd!(sh, "sh -c {extract}")
        .quiet()
        .run()
        .with_context(|| format!("extracting {} from {}", lock.tarball, deb.display()))?;
    std::fs::rename(&partial, &tarball)
        .with_context(|| format!("renaming {}", partial.display()))?;
    // The tarball is all we keep: the .deb would double the cache.
    let _ = std::fs::remove_file(&deb);
    Ok(tarball)
}

/// `apt-get download` of `lock`'s version into `cache`, left at `deb`; when
/// apt does not offer that version, the error names the versions it does.
fn download(sh: &Shell, cache: &Path, lock: &KernelLock, deb: &Path) -> Result<()> {
    require_tool("apt-get", "apt")?;
    let spec = format!("{}={}", lock.package, lock.version);
    let _dir = sh.push_dir(cache);
    if let Err(e) = cmd!(sh, "apt-get download -q {spec}").quiet().run() {
        let available = archive::available_versions(&lock.package).unwrap_or_default();
        if available.contains(&lock.version) {
            return Err(e).with_context(|| {
                format!(
                    "`apt-get download {spec}` failed although `apt-cache madison {}` lists \
                     it: is the mirror reachable?",
                    lock.package
                )
            });
        }
        bail!(
            "{}",
            archive::unavailable_message(&lock.package, &lock.version, &available)
        );
    }
    if deb.is_file() {
        return Ok(());
    }
    // apt names the file after the version it fetched (an epoch is escaped).
    let downloaded = std::fs::read_dir(cache)
        .with_context(|| format!("listing {}", cache.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{}_", lock.package)) && n.ends_with(".deb")
            })
        })
        .context("apt-get download succeeded but left no .deb in the cache")?;
    std::fs::rename(&downloaded, deb).with_context(|| format!("renaming {}", downloaded.display()))
}

fn import(sh: &Shell, lock: &KernelLock, tarball: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("importing");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp)?;
    cmd!(sh, "tar -xf {tarball} --strip-components=1 -C {tmp}")
        .quiet()
        .run()
        .with_context(|| format!("unpacking {}", tarball.display()))?;
    let msg = format!(
        "baseline: {} {}\n\nsha256 {}",
        lock.package, lock.version, lock.sha256
    );
    let _dir = sh.push_dir(&tmp);
    cmd!(sh, "git init -q -b rig-baseline-branch")
        .quiet()
        .run()?;
    for (k, v) in [
        ("user.name", "rig"),
        ("user.email", "rig@localhost"),
        ("gc.auto", "0"),
        ("core.autocrlf", "false"),
    ] {
        cmd!(sh, "git config {k} {v}").quiet().run()?;
    }
    // -f: the tarball is the baseline, .gitignore'd files included.
    cmd!(sh, "git add -A -f")
        .quiet()
        .run()
        .context("git add of the kernel tree")?;
    cmd!(sh, "git commit -q --no-verify -m {msg}")
        .quiet()
        .run()
        .context("committing the baseline")?;
    cmd!(sh, "git tag {BASELINE_TAG}").quiet().run()?;
    drop(_dir);
    std::fs::rename(&tmp, dest).with_context(|| format!("moving the tree to {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetched pin needs no apt: the cached tarball (or its .deb) wins.
    #[test]
    fn cache_state_prefers_what_is_already_fetched() {
        let cache = std::env::temp_dir().join(format!("rig-tree-cache-{}", std::process::id()));
        std::fs::create_dir_all(&cache).unwrap();
        let (pkg, ver) = ("linux-source-6.1", "6.1.192-3");
        let tarball = cache.join("linux-source-6.1_6.1.192-3.tar.xz");
        let deb = cache.join("linux-source-6.1_6.1.192-3_all.deb");
        assert_eq!(
            cache_state(&cache, pkg, ver),
            Cached::Nothing {
                deb: deb.clone(),
                tarball: tarball.clone()
            }
        );
        std::fs::write(&deb, b"deb").unwrap();
        assert_eq!(
            cache_state(&cache, pkg, ver),
            Cached::Deb {
                deb: deb.clone(),
                tarball: tarball.clone()
            }
        );
        std::fs::write(&tarball, b"tar").unwrap();
        assert_eq!(cache_state(&cache, pkg, ver), Cached::Tarball(tarball));
        // Another version's files are not this one's.
        assert!(matches!(
            cache_state(&cache, pkg, "6.1.192-2"),
            Cached::Nothing { .. }
        ));
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
