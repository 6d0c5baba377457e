//! Stage `image`: the guest's initramfs. BPF objects compiled against a
//! vmlinux.h from the built kernel, the static guest runner, busybox, init.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::{require_tool, Ctx};
use crate::stages::cpio::{Archive, Entry};
use crate::stages::hashing::{stamp_matches, write_stamp, Key};
use crate::stages::kbuild::Kernel;
use crate::stages::tree::Tree;
use crate::sys::progress::Stage;

const CLANG: &str = "clang-16";

pub struct Image {
    pub initramfs: PathBuf,
}

/// How a BPF program that does not compile against this kernel's vmlinux.h
/// is treated: an error in a normal run, left out (its selftests then skip)
/// when check-series or bisect build a patch that predates its feature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Progs {
    AllMustBuild,
    LeaveOutFailures,
}

pub fn build(ctx: &Ctx, tree: &Tree, kernel: &Kernel, progs: Progs) -> Result<Image> {
    let stage = Stage::start("image", "BPF objects, guest runner, initramfs");
    let objects = bpf_objects(ctx, tree, kernel, progs)?;
    let runner = guest_runner(ctx)?;
    let list_path = ctx.repo.join("images/files");
    let list = std::fs::read_to_string(&list_path)
        .with_context(|| format!("reading {}", list_path.display()))?;
    let mut archive = base_archive(&[]);
    for (n, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(guest), Some(source), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!(
                "{}:{}: expected `guest-path source`",
                list_path.display(),
                n + 1
            );
        };
        match source {
            "@runner" => add_file(&mut archive, guest, &runner)?,
            "@bpf-objects" => {
                for obj in &objects {
                    let name = obj.file_name().unwrap().to_string_lossy();
                    add_file(&mut archive, &format!("{guest}/{name}"), obj)?;
                }
            }
            path => {
                let src = if Path::new(path).is_absolute() {
                    PathBuf::from(path)
                } else {
                    ctx.repo.join(path)
                };
                if guest.starts_with("/bin/busybox") {
                    require_static(&src, "apt-get install busybox-static")?;
                }
                add_file(&mut archive, guest, &src)
                    .with_context(|| format!("{}:{}", list_path.display(), n + 1))?;
            }
        }
    }
    let dir = kernel.build_dir.join("rig-image");
    std::fs::create_dir_all(&dir)?;
    let initramfs = dir.join("initramfs.cpio");
    let size = write_if_changed(&archive, &initramfs)?;
    stage.done(&format!(
        "{} ({} KiB, {} BPF object(s))",
        initramfs.display(),
        size / 1024,
        objects.len()
    ));
    Ok(Image { initramfs })
}

/// The console device and the mount points `images/init` uses, plus `dirs`.
pub fn base_archive(dirs: &[&str]) -> Archive {
    let mut archive = Archive::new();
    archive.add("dev/console", Entry::CharDev { major: 5, minor: 1 });
    for dir in ["proc", "sys", "dev", "tmp", "run"].iter().chain(dirs) {
        archive.add(dir, Entry::Dir);
    }
    archive
}

/// Writes the archive to `path` unless the file already holds exactly it
/// (its mtime then stays, and so does QEMU's view of it); returns its size.
pub fn write_if_changed(archive: &Archive, path: &Path) -> Result<usize> {
    let mut bytes = Vec::new();
    archive.write(&mut bytes)?;
    if std::fs::read(path).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(bytes.len())
}

pub fn add_file(archive: &mut Archive, guest: &str, src: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let mut mode = std::fs::metadata(src)?.permissions().mode() & 0o777;
    // Scripts and binaries run in the guest whatever their mode in a checkout.
    if data.starts_with(b"#!") || data.starts_with(b"\x7fELF") {
        mode |= 0o555;
    }
    archive.add(guest, Entry::File { data, mode });
    Ok(())
}

/// The guest has no shared libraries: refuse a dynamically linked binary.
pub fn require_static(path: &Path, fix: &str) -> Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.get(..4) != Some(b"\x7fELF") {
        bail!("{} is not an ELF binary", path.display());
    }
    if elf_has_interp(&data) {
        bail!(
            "{} is dynamically linked; the guest needs a static one: {fix}",
            path.display()
        );
    }
    Ok(())
}

/// True when a 64-bit little-endian ELF has a PT_INTERP program header.
pub fn elf_has_interp(data: &[u8]) -> bool {
    let rd = |off: usize, n: usize| -> u64 {
        data.get(off..off + n).map_or(0, |b| {
            b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64)
        })
    };
    let phoff = rd(0x20, 8) as usize;
    let phentsize = rd(0x36, 2) as usize;
    let phnum = rd(0x38, 2) as usize;
    (0..phnum).any(|i| rd(phoff + i * phentsize, 4) == 3)
}

/// vmlinux.h and bpf_helper_defs.h for this kernel, then each progs/*.bpf.c.
fn bpf_objects(ctx: &Ctx, tree: &Tree, kernel: &Kernel, mode: Progs) -> Result<Vec<PathBuf>> {
    // clang 14 (Debian 12's default) drops btf_type_tag from BTF, so
    // `__kptr_ref` fields would silently lose their tag.
    require_tool(CLANG, "clang-16")?;
    require_tool("bpftool", "bpftool")?;
    require_tool("python3", "python3")?;
    let out = kernel.build_dir.join("rig-bpf");
    let inc = out.join("include");
    std::fs::create_dir_all(&inc)?;
    let stamp = inc.join(".key");
    if !stamp_matches(&stamp, &kernel.key) {
        let vmlinux_h = duct::cmd!(
            "bpftool",
            "btf",
            "dump",
            "file",
            &kernel.vmlinux,
            "format",
            "c"
        )
        .stdout_capture()
        .run()
        .with_context(|| format!("bpftool btf dump of {}", kernel.vmlinux.display()))?;
        std::fs::write(inc.join("vmlinux.h"), vmlinux_h.stdout)?;
        let defs = duct::cmd!(
            "python3",
            tree.path.join("scripts/bpf_doc.py"),
            "--header",
            "--file",
            tree.path.join("include/uapi/linux/bpf.h")
        )
        .stdout_capture()
        .run()
        .context("generating bpf_helper_defs.h with the tree's scripts/bpf_doc.py")?;
        std::fs::write(inc.join("bpf_helper_defs.h"), defs.stdout)?;
        write_stamp(&stamp, &kernel.key)?;
    }
    let progs = ctx.repo.join("bpf-selftests/progs");
    let mut headers = Key::new("bpf-headers");
    headers.str(&kernel.key);
    let mut sources = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&progs)
        .with_context(|| format!("reading {}", progs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".h") {
            headers.file(&p)?;
        } else if name.ends_with(".bpf.c") {
            sources.push(p);
        }
    }
    let headers = headers.finish();
    let tools_inc = tree.path.join("tools/lib/bpf");
    // bpf_tracing.h includes <bpf/bpf_helpers.h>.
    let tools_lib = tree.path.join("tools/lib");
    let mut objects = Vec::new();
    for src in sources {
        let stem = src
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".bpf.c", "");
        let obj = out.join(format!("{stem}.bpf.o"));
        let mut key = Key::new("bpf-object");
        key.str(CLANG).str(&headers).file(&src)?;
        let key = key.finish();
        let obj_stamp = out.join(format!("{stem}.key"));
        if !(obj.is_file() && stamp_matches(&obj_stamp, &key)) {
            let res = duct::cmd!(
                CLANG,
                "-target",
                "bpf",
                "-O2",
                "-g",
                "-D__TARGET_ARCH_x86",
                "-I",
                &inc,
                "-I",
                &tools_inc,
                "-I",
                &tools_lib,
                "-c",
                &src,
                "-o",
                &obj
            )
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running clang")?;
            if !res.status.success() {
                let log = String::from_utf8_lossy(&res.stdout);
                if mode == Progs::LeaveOutFailures {
                    let first = log.lines().find(|l| l.contains("error:")).unwrap_or("");
                    eprintln!(
                        "[image] note: {} does not build against this kernel, left out: {first}",
                        src.display()
                    );
                    let _ = std::fs::remove_file(&obj);
                    continue;
                }
                bail!("compiling {}:\n{}", src.display(), log.trim_end());
            }
            write_stamp(&obj_stamp, &key)?;
        }
        objects.push(obj);
    }
    Ok(objects)
}

/// The guest runner, linked statically (the guest has no libc).
pub fn guest_runner(ctx: &Ctx) -> Result<PathBuf> {
    let target_dir = ctx.repo.join("target/guest");
    let triple = "x86_64-unknown-linux-gnu";
    let res = duct::cmd!(
        "cargo",
        "build",
        "--quiet",
        "--release",
        "--package",
        "bpf-selftests",
        "--target",
        triple,
        "--target-dir",
        &target_dir
    )
    .dir(&ctx.repo)
    .env(
        "RUSTFLAGS",
        "-C target-feature=+crt-static -C relocation-model=static",
    )
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .context("running cargo build for the guest runner")?;
    if !res.status.success() {
        bail!(
            "building the guest runner (bpf-selftests) failed:\n{}",
            String::from_utf8_lossy(&res.stdout).trim_end()
        );
    }
    let bin = target_dir.join(triple).join("release/bpf-selftests");
    require_static(&bin, "the build must use -C target-feature=+crt-static")?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tells_static_from_dynamic() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        // The test binary itself is dynamically linked.
        assert!(super::elf_has_interp(&own));
        assert!(!super::elf_has_interp(b"\x7fELF"));
    }
}
