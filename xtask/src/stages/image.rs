//! Stage `image`: the guest's initramfs. BPF objects compiled against a
//! vmlinux.h from the built kernel, the static guest runner, busybox, init.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use rig_contract::lacks::{self, NotBuilt};

use crate::context::{require_tool, Ctx};
use crate::stages::cpio::{Archive, Entry};
use crate::stages::hashing::{stamp_matches, write_stamp, Key};
use crate::stages::kbuild::Kernel;
use crate::stages::not_built;
use crate::stages::patches::Series;
use crate::stages::tree::Tree;
use crate::sys::progress::Stage;

const CLANG: &str = "clang-16";

pub struct Image {
    pub initramfs: PathBuf,
    /// The BPF objects left out, and why (the guest's `not-built` list).
    pub not_built: Vec<NotBuilt>,
    /// Built for a `--tree` without the series: its selftests' skips for
    /// what the kernel lacks are expected.
    pub tree_lacks_series: bool,
}

/// How a BPF program that does not compile against this kernel's vmlinux.h
/// is treated: an error on the pinned tree with the series, left out (its
/// selftests then skip, with clang's reason) on a `--tree` and when
/// check-series or bisect build a patch that predates its feature.
/// A bench image holds only the objects its benchmarks load (`Only`, by
/// file stem), each of which must build: `bench alloc`'s baseline kernel
/// cannot compile the series' own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Progs {
    AllMustBuild,
    LeaveOutFailures,
    Only(&'static [&'static str]),
}

pub fn build(ctx: &Ctx, tree: &Tree, kernel: &Kernel, progs: Progs) -> Result<Image> {
    let stage = Stage::start("image", "BPF objects, guest runner, initramfs");
    let (objects, not_built) = bpf_objects(ctx, tree, kernel, progs)?;
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
                archive.add(
                    &format!("{guest}/{}", lacks::LIST),
                    Entry::File {
                        data: lacks::write_list(&not_built).into_bytes(),
                        mode: 0o644,
                    },
                );
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
    let left_out = if not_built.is_empty() {
        String::new()
    } else {
        format!(
            ", {} left out: {}",
            not_built.len(),
            kernel.build_dir.join(BPF_DIR).join(lacks::LIST).display()
        )
    };
    stage.done(&format!(
        "{} ({} KiB, {} BPF object(s){left_out})",
        initramfs.display(),
        size / 1024,
        objects.len()
    ));
    Ok(Image {
        initramfs,
        not_built,
        tree_lacks_series: tree.series.lacks_series(),
    })
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

/// Where the compiled objects, their stamps and clang's logs live, in the
/// kernel's build dir.
const BPF_DIR: &str = "rig-bpf";

/// vmlinux.h and bpf_helper_defs.h for this kernel, then each progs/*.bpf.c:
/// the objects built, and those left out with their reasons.
fn bpf_objects(
    ctx: &Ctx,
    tree: &Tree,
    kernel: &Kernel,
    mode: Progs,
) -> Result<(Vec<PathBuf>, Vec<NotBuilt>)> {
    // clang 14 (Debian 12's default) drops btf_type_tag from BTF, so
    // `__kptr_ref` fields would silently lose their tag.
    require_tool(CLANG, "clang-16")?;
    require_tool("bpftool", "bpftool")?;
    require_tool("python3", "python3")?;
    let out = kernel.build_dir.join(BPF_DIR);
    let inc = out.join("include");
    std::fs::create_dir_all(&inc).with_context(|| format!("creating {}", inc.display()))?;
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
        std::fs::write(inc.join("vmlinux.h"), vmlinux_h.stdout).context("writing vmlinux.h")?;
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
        std::fs::write(inc.join("bpf_helper_defs.h"), defs.stdout)
            .context("writing bpf_helper_defs.h")?;
        write_stamp(&stamp, &kernel.key)?;
    }
    let progs = ctx.repo.join("bpf-selftests/progs");
    // The headers' content, not the kernel's key: most kernel edits leave
    // the BTF (so vmlinux.h) alone, and then no object is recompiled.
    let mut headers = Key::new("bpf-headers");
    headers
        .file(&inc.join("vmlinux.h"))?
        .file(&inc.join("bpf_helper_defs.h"))?;
    let tools_bpf = tree.path.join("tools/lib/bpf");
    let mut lib_headers: Vec<PathBuf> = std::fs::read_dir(&tools_bpf)
        .with_context(|| format!("reading {}", tools_bpf.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "h"))
        .collect();
    lib_headers.sort();
    for h in &lib_headers {
        headers.file(h)?;
    }
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
    if let Progs::Only(names) = mode {
        sources = only(sources, names, &progs)?;
    }
    let compiler = Compiler {
        inc,
        tools_inc: tree.path.join("tools/lib/bpf"),
        // bpf_tracing.h includes <bpf/bpf_helpers.h>.
        tools_lib: tree.path.join("tools/lib"),
    };
    // One clang per core: after most kernel edits pahole's parallel BTF
    // encoding orders vmlinux.h differently, and every object recompiles.
    let compiled = sources
        .par_iter()
        .map(|src| {
            let stem = src
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".bpf.c", "");
            let obj = out.join(format!("{stem}.bpf.o"));
            let mut key = Key::new("bpf-object");
            key.str(CLANG).str(&headers).file(src)?;
            let key = key.finish();
            let result = compiler.object(src, &obj, &out.join(&stem), &key)?;
            Ok((stem, obj, result))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut objects = Vec::new();
    let mut failed = Vec::new();
    for ((stem, obj, result), src) in compiled.into_iter().zip(&sources) {
        match result {
            Compiled::Built => objects.push(obj),
            Compiled::Failed { log } if mode == Progs::LeaveOutFailures => {
                let _ = std::fs::remove_file(&obj);
                failed.push((format!("{stem}.bpf.o"), log));
            }
            Compiled::Failed { log } => bail!(
                "compiling {} (every BPF program builds on the pinned tree with the series, \
                 so this is the program's fault):\n{}",
                src.display(),
                log.trim_end()
            ),
        }
    }
    let not_built = explain_failures(ctx, &failed);
    let list = out.join(lacks::LIST);
    std::fs::write(&list, lacks::write_list(&not_built))
        .with_context(|| format!("writing {}", list.display()))?;
    Ok((objects, not_built))
}

/// The not-built entries, each said once on stderr with clang's first error.
fn explain_failures(ctx: &Ctx, failed: &[(String, String)]) -> Vec<NotBuilt> {
    if failed.is_empty() {
        return Vec::new();
    }
    // Only to cite the patch that adds what is missing: a series that does
    // not load leaves the reasons without it.
    let series = Series::load(&ctx.repo, &ctx.common.series).ok();
    let patches: Vec<(String, String)> = series
        .iter()
        .flat_map(|s| &s.patches)
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, std::fs::read_to_string(p).ok()?))
        })
        .collect();
    let name = series.map_or_else(String::new, |s| s.name);
    failed
        .iter()
        .map(|(object, log)| {
            let nb = not_built::explain(object, log, &name, &patches);
            eprintln!("[image] left out {}", nb.reason);
            if !nb.compiler.is_empty() {
                eprintln!("[image]   clang: {}", nb.compiler);
            }
            nb
        })
        .collect()
}

/// What one compile came to.
enum Compiled {
    Built,
    Failed { log: String },
}

/// clang with this kernel's headers.
struct Compiler {
    inc: PathBuf,
    tools_inc: PathBuf,
    tools_lib: PathBuf,
}

impl Compiler {
    /// Compiles `src` to `obj` unless its stamp says `key` was built, or
    /// failed with an error line, already; `base` names the stamps
    /// (`.key`, `.failed-key`) and the log (`.log`).
    fn object(&self, src: &Path, obj: &Path, base: &Path, key: &str) -> Result<Compiled> {
        let with = |ext: &str| base.with_extension(ext);
        let (built, failed, log_path) = (with("key"), with("failed-key"), with("log"));
        if obj.is_file() && stamp_matches(&built, key) {
            return Ok(Compiled::Built);
        }
        if stamp_matches(&failed, key) {
            if let Ok(log) = std::fs::read_to_string(&log_path) {
                return Ok(Compiled::Failed { log });
            }
        }
        let res = duct::cmd!(
            CLANG,
            "-target",
            "bpf",
            "-O2",
            "-g",
            "-D__TARGET_ARCH_x86",
            "-I",
            &self.inc,
            "-I",
            &self.tools_inc,
            "-I",
            &self.tools_lib,
            "-c",
            src,
            "-o",
            obj
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running clang")?;
        let log = String::from_utf8_lossy(&res.stdout).into_owned();
        if res.status.success() {
            let _ = std::fs::remove_file(&failed);
            write_stamp(&built, key)?;
            return Ok(Compiled::Built);
        }
        let _ = std::fs::remove_file(&built);
        std::fs::write(&log_path, &log)
            .with_context(|| format!("writing {}", log_path.display()))?;
        // A compile cut short (a signal) is not remembered as the answer.
        if not_built::first_error(&log).is_some() {
            write_stamp(&failed, key)?;
        }
        Ok(Compiled::Failed { log })
    }
}

/// The sources of `Progs::Only(names)`: `<name>.bpf.c` for each name, in
/// the order found, every one of them required.
fn only(sources: Vec<PathBuf>, names: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let stem = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().replace(".bpf.c", ""))
    };
    if let Some(n) = names
        .iter()
        .find(|n| !sources.iter().any(|p| stem(p).as_deref() == Some(**n)))
    {
        bail!("no {n}.bpf.c in {}", dir.display());
    }
    Ok(sources
        .into_iter()
        .filter(|p| stem(p).is_some_and(|s| names.contains(&s.as_str())))
        .collect())
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
    fn only_keeps_the_named_objects_and_requires_each() {
        use std::path::{Path, PathBuf};
        let dir = Path::new("progs");
        let srcs: Vec<PathBuf> = ["a.bpf.c", "bench_maploop.bpf.c", "b.bpf.c"]
            .iter()
            .map(|n| dir.join(n))
            .collect();
        let kept = super::only(srcs.clone(), &["bench_maploop"], dir).unwrap();
        assert_eq!(kept, [dir.join("bench_maploop.bpf.c")]);
        assert!(super::only(srcs.clone(), &[], dir).unwrap().is_empty());
        let e = super::only(srcs, &["bench_maploop", "gone"], dir).unwrap_err();
        assert_eq!(e.to_string(), "no gone.bpf.c in progs");
    }

    #[test]
    fn tells_static_from_dynamic() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        // The test binary itself is dynamically linked.
        assert!(super::elf_has_interp(&own));
        assert!(!super::elf_has_interp(b"\x7fELF"));
    }
}
