//! Stage `build`: an out-of-tree (O=) kbuild of what QEMU boots (`vmlinux`,
//! or the bzImage of a KASAN kernel), through ccache when present, skipped
//! outright when nothing it depends on changed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::context::{require_tool, Ctx};
use crate::stages::hashing::{stamp_matches, write_stamp, Key};
use crate::stages::kconfig::Config;
use crate::stages::make::{ccache_env, make_vars};
use crate::stages::tree::Tree;
use crate::sys::pgroup::Streamed;
use crate::sys::progress::Stage;
use crate::sys::signals;

pub struct Kernel {
    pub vmlinux: PathBuf,
    /// Only when this build made it: a bzImage costs the desk loop its
    /// compression (XZ in tinyconfig-based configs, several seconds).
    pub bzimage: Option<PathBuf>,
    pub build_dir: PathBuf,
    pub release: String,
    /// Content key of the built kernel: tree state + .config.
    pub key: String,
}

/// Commit plus uncommitted changes: what the kernel is built from.
pub fn tree_state(tree: &Tree) -> Result<String> {
    let head = duct::cmd!("git", "-C", &tree.path, "rev-parse", "HEAD")
        .read()
        .context("reading the tree's HEAD")?;
    let diff = duct::cmd!("git", "-C", &tree.path, "diff", "HEAD", "--binary")
        .stdout_capture()
        .run()
        .context("diffing the tree")?;
    // The pinned tree's Debian .gitignore hides everything at its top level,
    // and its builds are out of tree: there every untracked file counts.
    let mut others = vec!["ls-files", "--others"];
    if !tree.managed {
        others.push("--exclude-standard");
    }
    let untracked = duct::cmd(
        "git",
        ["-C".as_ref(), tree.path.as_os_str()]
            .into_iter()
            .chain(others.iter().map(|s| s.as_ref()))
            .collect::<Vec<&std::ffi::OsStr>>(),
    )
    .read()
    .context("listing untracked files")?;
    let mut key = Key::new("tree-state");
    key.str(&head).bytes(&diff.stdout);
    for f in untracked.lines() {
        let p = tree.path.join(f);
        if p.is_file() {
            key.file(&p)?;
        }
    }
    Ok(format!("{head}-{}", &key.finish()[..16]))
}

pub fn build(ctx: &Ctx, tree: &Tree, config: &Config, state: &str) -> Result<Kernel> {
    for (tool, pkg) in [
        ("make", "make"),
        ("gcc", "gcc"),
        ("flex", "flex"),
        ("bison", "bison"),
        ("bc", "bc"),
        ("pahole", "dwarves"),
    ] {
        require_tool(tool, pkg)?;
    }
    let dir = &config.build_dir;
    let target = boot_target(dir);
    let mut key = Key::new("build");
    key.str(state).str(&config.hash).str(target);
    let key = key.finish();
    let stamp = dir.join(".rig-build-key");
    let kernel = Kernel {
        vmlinux: dir.join("vmlinux"),
        bzimage: (target == BZIMAGE).then(|| dir.join(BZIMAGE_PATH)),
        build_dir: dir.clone(),
        release: String::new(),
        key: key.clone(),
    };
    let built = |k: &Kernel| k.vmlinux.is_file() && k.bzimage.as_ref().is_none_or(|b| b.is_file());
    if stamp_matches(&stamp, &key) && built(&kernel) {
        crate::sys::progress::up_to_date("build", &dir.display().to_string());
        return with_release(kernel);
    }
    let _ = std::fs::remove_file(&stamp);
    run_make(ctx, tree, dir, target).context("kernel build failed")?;
    write_stamp(&stamp, &key)?;
    with_release(kernel)
}

const BZIMAGE: &str = "bzImage";
const BZIMAGE_PATH: &str = "arch/x86/boot/bzImage";

/// `vmlinux`, which QEMU boots through its PVH entry, unless the kernel must
/// boot as a bzImage (see `Kernel::boot_image`).
fn boot_target(build_dir: &Path) -> &'static str {
    let config = std::fs::read_to_string(build_dir.join(".config")).unwrap_or_default();
    if config.lines().any(|l| l == "CONFIG_KASAN=y") {
        BZIMAGE
    } else {
        "vmlinux"
    }
}

/// The bzImage of a built kernel, made on demand for whoever needs one
/// (virtme-ng boots only that); skipped when it is as new as `kernel`.
pub fn bzimage(ctx: &Ctx, tree: &Tree, kernel: &Kernel) -> Result<PathBuf> {
    if let Some(b) = &kernel.bzimage {
        return Ok(b.clone());
    }
    let dir = &kernel.build_dir;
    let path = dir.join(BZIMAGE_PATH);
    let stamp = dir.join(".rig-bzimage-key");
    if stamp_matches(&stamp, &kernel.key) && path.is_file() {
        return Ok(path);
    }
    let _ = std::fs::remove_file(&stamp);
    run_make(ctx, tree, dir, BZIMAGE).context("building the bzImage failed")?;
    write_stamp(&stamp, &kernel.key)?;
    Ok(path)
}

/// Runs make for `target` as the `build` stage, with its log in the build
/// dir; a failure quotes the compiler's errors, or else the log's tail.
fn run_make(ctx: &Ctx, tree: &Tree, dir: &Path, target: &str) -> Result<()> {
    let stage = Stage::start(
        "build",
        &format!("make -j{} {target} in {}", ctx.jobs(), dir.display()),
    );
    let mut args = make_vars(ctx, dir);
    args.push(format!("-j{}", ctx.jobs()));
    args.push(target.to_string());
    let mut child = Streamed::start(ccache_env(ctx, duct::cmd("make", &args)).dir(&tree.path))
        .context("starting make")?;
    let log_path = dir.join("rig-build.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut errors: Vec<String> = Vec::new();
    let mut last_tick = Instant::now();
    let status = loop {
        signals::check().context("kernel build")?;
        match child.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                if is_error_line(&line) && errors.len() < 40 {
                    errors.push(line.clone());
                }
                tail.push_back(line);
                if tail.len() > 30 {
                    tail.pop_front();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(st) = child.try_wait()? {
                    break st;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(10) {
            last_tick = Instant::now();
            if let Some(l) = tail.back() {
                stage.tick(l.trim());
            }
        }
    };
    if !status.success() {
        let shown = if errors.is_empty() {
            tail.into_iter().collect()
        } else {
            errors
        };
        bail!(
            "make {target}: {status}; full log: {}\n{}",
            log_path.display(),
            shown.join("\n")
        );
    }
    stage.done(&format!("{target} built"));
    Ok(())
}

impl Kernel {
    /// What QEMU boots: `vmlinux` through its PVH entry (no decompression,
    /// about 0.9 s faster under TCG), except for KASAN kernels, whose PVH
    /// entry runs instrumented C code before the shadow memory exists and
    /// triple-faults; those boot the bzImage.
    pub fn boot_image(&self) -> PathBuf {
        self.bzimage.clone().unwrap_or_else(|| self.vmlinux.clone())
    }
}

fn is_error_line(line: &str) -> bool {
    line.contains("error:")
        || line.contains("Error ")
        || line.contains("undefined reference")
        || line.starts_with("make") && line.contains("***")
}

fn with_release(mut k: Kernel) -> Result<Kernel> {
    let path = k.build_dir.join("include/config/kernel.release");
    k.release = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string();
    Ok(k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn picks_compiler_errors_not_noise() {
        let log = "  CC      kernel/bpf/hashtab.o\n\
            kernel/bpf/hashtab.c:12:5: error: 'x' undeclared (first use in this function)\n\
            make[3]: *** [scripts/Makefile.build:250: kernel/bpf/hashtab.o] Error 1\n\
            make[3]: Entering directory\n";
        let picked: Vec<&str> = log.lines().filter(|l| super::is_error_line(l)).collect();
        assert_eq!(picked.len(), 2);
        assert!(picked[0].contains("undeclared"));
    }
}
