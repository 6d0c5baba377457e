//! The kernel suites' initramfs: init, busybox and the guest runner as for
//! the selftests, then the suites' output dir under
//! `/lib/kernel-suites` with the plan, and the shared libraries the suites'
//! binaries link against (they are built by the selftests' Makefile, which
//! links dynamically), as `ldd` finds them on the host.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::build::Suites;
use crate::context::Ctx;
use crate::stages::cpio::Entry;
use crate::stages::image::{
    add_file, base_archive, elf_has_interp, guest_runner, write_if_changed,
};
use crate::stages::kbuild::Kernel;
use crate::sys::progress::Stage;

const GUEST_DIR: &str = "lib/kernel-suites";

pub fn build(ctx: &Ctx, kernel: &Kernel, suites: &Suites, plan: &str) -> Result<PathBuf> {
    let stage = Stage::start("image", "kernel suites, guest runner, shared libraries");
    let runner = guest_runner(ctx)?;
    // test_progs mounts its cgroup2 hierarchy on /mnt.
    let mut archive = base_archive(&["mnt"]);
    add_file(&mut archive, "init", &ctx.repo.join("images/init"))?;
    add_file(&mut archive, "bin/busybox", Path::new("/bin/busybox"))?;
    add_file(&mut archive, "bin/bpf-selftests", &runner)?;
    let mut elves = Vec::new();
    let mut count = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&suites.dir)
        .with_context(|| format!("reading {}", suites.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && wanted(p))
        .collect();
    entries.sort();
    let stripped_dir = kernel.build_dir.join("rig-suites/stripped");
    std::fs::create_dir_all(&stripped_dir)?;
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let head = std::fs::read(&p)
            .map(|d| d.get(..4) == Some(b"\x7fELF"))
            .unwrap_or(false);
        let program = head && !name.ends_with(".o") && !name.ends_with(".ko");
        let src = if program {
            // test_verifier alone is 50 MiB of DWARF; the guest needs none.
            let dst = stripped_dir.join(&name);
            duct::cmd!("objcopy", "--strip-debug", &p, &dst)
                .run()
                .with_context(|| format!("objcopy --strip-debug {}", p.display()))?;
            elves.push(p.clone());
            dst
        } else {
            p
        };
        add_file(&mut archive, &format!("{GUEST_DIR}/{name}"), &src)?;
        count += 1;
    }
    archive.add(
        &format!("{GUEST_DIR}/plan"),
        Entry::File {
            data: plan.as_bytes().to_vec(),
            mode: 0o644,
        },
    );
    // test_local_storage copies /bin/rm and runs the copy under another
    // name, which busybox's multi-call binary refuses: the host's own rm.
    let rm = Path::new("/usr/bin/rm");
    add_file(&mut archive, "bin/rm", rm)?;
    elves.push(rm.to_path_buf());
    let mut libs = shared_libraries(&elves, &suites.dir)?;
    // glibc loads it when a thread is cancelled or exits (test_progs'
    // map_lock, spinlock, bpf_iter); no binary links it.
    let gcc_s = PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1");
    if !gcc_s.is_file() {
        bail!("{} is missing: apt-get install libgcc-s1", gcc_s.display());
    }
    libs.push(gcc_s);
    for lib in &libs {
        add_file(&mut archive, &lib.display().to_string(), lib)?;
    }
    let initramfs = kernel.build_dir.join("rig-suites/initramfs.cpio");
    let size = write_if_changed(&archive, &initramfs)?;
    stage.done(&format!(
        "{} ({} MiB, {count} suite file(s), {} shared librar(ies))",
        initramfs.display(),
        size >> 20,
        libs.len()
    ));
    Ok(initramfs)
}

/// What the guest needs of the output dir's top level: the binaries, the
/// BPF objects and modules, and test_progs' extra files; not the build's
/// intermediate objects, headers and skeletons.
fn wanted(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    if name.ends_with(".bpf.o") || name.ends_with(".ko") {
        return true;
    }
    let dropped = [
        ".o",
        ".d",
        ".h",
        ".a",
        ".skel.h",
        ".lskel.h",
        ".subskel.h",
        ".linked1.o",
    ];
    !dropped.iter().any(|s| name.ends_with(s)) && !name.starts_with('.')
}

/// Every library `ldd` lists for `bins` (the dynamic loader included),
/// by the absolute path the binaries ask for. `dir` is where they run and
/// holds their own libraries (urandom_read's rpath is `.`).
fn shared_libraries(bins: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut libs = BTreeSet::new();
    for b in bins {
        let data = std::fs::read(b).with_context(|| format!("reading {}", b.display()))?;
        if !elf_has_interp(&data) {
            continue;
        }
        let out = duct::cmd!("ldd", b)
            .dir(dir)
            .stderr_to_stdout()
            .unchecked()
            .read()
            .with_context(|| format!("ldd {}", b.display()))?;
        for line in out.lines() {
            let own = line
                .split_whitespace()
                .next()
                .is_some_and(|l| dir.join(l).is_file());
            if line.contains("not found") && !own {
                bail!(
                    "{}: a shared library is missing on the host: {}",
                    b.display(),
                    line.trim()
                );
            }
            // "libelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)".
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    Ok(libs.into_iter().collect())
}
