//! Stage `suites`: the kernel's own BPF selftests (test_verifier, test_maps,
//! test_progs and bpf_testmod.ko), built from the tree under test against the
//! kernel just built, and nothing written into that tree.
//!
//! The selftests' Makefile writes generated headers next to its sources
//! (prog_tests/tests.h, verifier/tests.h, ...) and builds bpf_testmod in its
//! source dir, so the rig builds from a copy: the files git knows under
//! `tools/` (plus bpftool's kernel/bpf/disasm.[ch], libbpf's scripts/bpf_doc.py
//! and include/uapi, which libbpf compares its copies with, and test_progs'
//! scripts/sign-file.c and ssl-common.h). A file is copied
//! only when its content changed and the BTF blob only when the kernel's BTF
//! did, so make's mtimes stay meaningful and a kernel-only edit rebuilds
//! bpf_testmod.ko, not 600 BPF objects.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::{require_tool, Ctx};
use crate::stages::kbuild::Kernel;
use crate::stages::tree::Tree;
use crate::sys::progress::Stage;

/// What the guest needs from the build: the output dir's top level.
pub struct Suites {
    pub dir: PathBuf,
}

const CLANG: &str = "clang-16";
/// The binaries the rig runs; make builds only these (and what they need).
pub const BINARIES: [&str; 3] = ["test_verifier", "test_maps", "test_progs"];

pub fn build(ctx: &Ctx, tree: &Tree, kernel: &Kernel) -> Result<Suites> {
    for (tool, pkg) in [
        (CLANG, "clang-16"),
        ("llc-16", "llvm-16"),
        ("llvm-strip-16", "llvm-16"),
        ("rsync", "rsync"),
        ("/usr/lib/llvm-16/bin/ld.lld", "lld-16"),
        ("pahole", "dwarves"),
    ] {
        require_tool(tool, pkg)?;
    }
    let root = kernel.build_dir.join("rig-suites");
    let src = root.join("src");
    let out = root.join("out");
    std::fs::create_dir_all(&out)?;
    let stage = Stage::start(
        "suites",
        "test_verifier, test_maps, test_progs, bpf_testmod.ko from the tree's tools/testing/selftests/bpf",
    );
    let copied = sync_sources(tree, &src)?;
    let btf = root.join("vmlinux.btf");
    let btf_changed = extract_btf(&kernel.vmlinux, &btf)?;
    stage.tick(&format!(
        "{copied} source file(s) updated, kernel BTF {}",
        if btf_changed { "changed" } else { "unchanged" }
    ));
    let bpf_dir = src.join("tools/testing/selftests/bpf");
    // 6.1's rule for urandom_read links `liburandom_read.so` by a name
    // relative to the source dir, where it is only with OUTPUT unset.
    let lib_link = bpf_dir.join("liburandom_read.so");
    if std::fs::read_link(&lib_link).is_err() {
        std::os::unix::fs::symlink(out.join("liburandom_read.so"), &lib_link)
            .with_context(|| format!("linking {}", lib_link.display()))?;
    }
    let mut args: Vec<String> = vec![
        "-C".into(),
        bpf_dir.display().to_string(),
        format!("-j{}", ctx.jobs()),
        format!("OUTPUT={}", out.display()),
        format!("VMLINUX_BTF={}", btf.display()),
        // bpf_testmod.ko is built against the kernel under test.
        format!("KDIR={}", kernel.build_dir.display()),
        format!("CLANG={CLANG}"),
        "LLC=llc-16".into(),
        "LLVM_STRIP=llvm-strip-16".into(),
        // Debian's gcc warns where the 6.1 sources' authors' did not.
        "EXTRA_CFLAGS=-Wno-error".into(),
    ];
    args.extend(BINARIES.iter().map(|b| format!("{}/{b}", out.display())));
    // bpf_testmod.ko comes with test_progs: make remakes it when the BTF
    // blob changes. A kernel edit that leaves the BTF alone leaves the
    // module loadable (same release, same types; symbols resolve at load).
    // bpf_testmod.ko links with the kernel's module linker script, which a
    // vmlinux-only build does not generate; `make modules` (none are
    // configured =m) writes Module.symvers, without which modpost warns
    // that bpf_testmod's dependencies are unknown.
    crate::stages::make::make(ctx, tree, &kernel.build_dir, &["modules"])?;
    let log_path = root.join("make.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let res = duct::cmd("make", &args)
        .stderr_to_stdout()
        .stdout_file(log)
        .unchecked()
        .run()
        .context("running make in the selftests copy")?;
    crate::sys::signals::check().context("building the kernel suites")?;
    if !res.status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "building the kernel's BPF selftests failed (full log: {}):\n{}",
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    if let Some(w) = modpost_warning(&text) {
        bail!(
            "bpf_testmod's modpost warned: {w} (full log: {}); the kernel's build dir lacks \
             what an external module needs",
            log_path.display()
        );
    }
    for b in BINARIES.iter().chain(&["bpf_testmod.ko"]) {
        if !out.join(b).is_file() {
            bail!("make succeeded but left no {} in {}", b, out.display());
        }
    }
    stage.done(&format!("{}", out.display()));
    Ok(Suites { dir: out })
}

/// modpost's first `WARNING:` line: an input missing or a symbol unresolved.
fn modpost_warning(log: &str) -> Option<&str> {
    log.lines()
        .map(str::trim)
        .find(|l| l.starts_with("WARNING:") && (l.contains("modpost") || l.contains("is missing")))
}

/// Copies the tracked (and, in a user's tree, untracked but not ignored)
/// files the selftests build reads into `dst`, leaving unchanged files
/// alone. Returns how many it wrote.
fn sync_sources(tree: &Tree, dst: &Path) -> Result<usize> {
    let mut args = vec!["-C", "", "ls-files", "-z", "--cached"];
    if !tree.managed {
        args.extend(["--others", "--exclude-standard"]);
    }
    args.extend([
        "--",
        "tools",
        "kernel/bpf/disasm.c",
        "kernel/bpf/disasm.h",
        "scripts/bpf_doc.py",
        "scripts/sign-file.c",
        "scripts/ssl-common.h",
        "include/uapi",
    ]);
    let tree_path = tree.path.display().to_string();
    args[1] = &tree_path;
    let list = duct::cmd("git", &args)
        .stdout_capture()
        .run()
        .context("listing the tree's tools/ files")?;
    let mut written = 0;
    for rel in list.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let rel = String::from_utf8_lossy(rel);
        let from = tree.path.join(rel.as_ref());
        // A symlink or a file deleted in the work tree: take it as it is.
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        let to = dst.join(rel.as_ref());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from)?;
            if std::fs::read_link(&to).ok().as_ref() != Some(&target) {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_file(&to);
                std::os::unix::fs::symlink(&target, &to)
                    .with_context(|| format!("linking {}", to.display()))?;
                written += 1;
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let data = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if std::fs::read(&to).ok().as_deref() == Some(&data[..]) {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&to, &data).with_context(|| format!("writing {}", to.display()))?;
        std::fs::set_permissions(&to, meta.permissions())?;
        written += 1;
    }
    Ok(written)
}

/// The .BTF section of vmlinux as a raw blob (bpftool reads either), written
/// only when it changed. Returns whether it did.
fn extract_btf(vmlinux: &Path, dst: &Path) -> Result<bool> {
    let tmp = dst.with_extension("new");
    duct::cmd!(
        "objcopy",
        "-O",
        "binary",
        "--only-section=.BTF",
        vmlinux,
        &tmp
    )
    .run()
    .with_context(|| format!("extracting .BTF from {}", vmlinux.display()))?;
    let new = std::fs::read(&tmp)?;
    if new.is_empty() {
        bail!(
            "{} has no .BTF section: the kernel needs CONFIG_DEBUG_INFO_BTF",
            vmlinux.display()
        );
    }
    if std::fs::read(dst).ok().as_deref() == Some(&new[..]) {
        std::fs::remove_file(&tmp)?;
        return Ok(false);
    }
    std::fs::rename(&tmp, dst)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_modpost_warnings_only() {
        let log = "  CC [M]  bpf_testmod.o\n  MODPOST Module.symvers\n\
            WARNING: Module.symvers is missing.\n\
                     Modules may not have dependencies or modversions.\n";
        assert_eq!(
            super::modpost_warning(log),
            Some("WARNING: Module.symvers is missing.")
        );
        let unresolved = "WARNING: modpost: \"bpf_foo\" [bpf_testmod.ko] undefined!\n";
        assert!(super::modpost_warning(unresolved).is_some());
        assert_eq!(super::modpost_warning("  LD [M]  bpf_testmod.ko\n"), None);
    }
}
