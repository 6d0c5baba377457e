//! 2. Warm: `cargo xtask test` with nothing changed against QEMU alone.
//! 3. Rebuild: after an edit in kernel/bpf/, ours against make alone.
//! 4. Cold: empty build dir and ccache against a plain cold make.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::report::{self, Measurement};
use super::run::{tail, test_args, timed, xtask_test};
use super::{jobs, Log, CHILD_LIMIT, EDITED};
use crate::flags::BenchRigFlags;
use crate::pipeline::Pipeline;
use crate::stages::image::Image;
use crate::stages::kbuild::Kernel;
use crate::stages::kconfig::Config;
use crate::stages::tree::Tree;
use crate::vm::Accel;
use crate::{sys::signals, vm::accel};

pub(super) type Built = (Config, Kernel, Image, Accel);

/// Builds the user's kernel and image first, so no measurement pays for it.
pub(super) fn warm_up(p: &Pipeline, f: &BenchRigFlags, log: &Log) -> Result<Built> {
    log.say("warm-up: building the kernel and image of the user's configs (not timed)");
    let (config, kernel, image) = p.imaged()?;
    let accel = accel::choose(&p.ctx, f.boot.accel, &kernel.vmlinux, &image.initramfs)?;
    Ok((config, kernel, image, accel))
}

pub(super) fn warm(
    p: &Pipeline,
    f: &BenchRigFlags,
    run_dir: &Path,
    log: &Log,
    m: &mut Measurement,
) -> Result<()> {
    let args = test_args(&f.boot, &p.ctx.work);
    m.ours_what = format!(
        "`xtask {}` (this binary) from spawn to exit, nothing changed since the warm-up build: \
         every stage's up-to-date check, the guest runner's cargo build, boot, judge, report",
        args.join(" ")
    );
    m.reference_what = "the boot+tests part of the same `xtask test` run: the lifetime of its \
        QEMU process (spawn to exit: boot, every selftest, shutdown), seen from here in /proc \
        every 10 ms; ratio - 1 is the rig's own overhead"
        .to_string();
    let mut codes = Vec::new();
    for i in 1..=f.runs {
        signals::check()?;
        let log_path = run_dir.join(format!("warm-test-{i}.log"));
        let t = xtask_test(&f.boot, &p.ctx.work, &log_path, &[])?;
        codes.push(t.code);
        let Some(qemu) = t.qemu.filter(|_| t.clean_boot) else {
            let why = format!(
                "warm run {i} left out: its guest did not finish by itself (hung, panicked or \
                 timed out: that times the hang, not the rig); see warm-test-{i}.log"
            );
            log.say(&why);
            m.notes.push(why);
            continue;
        };
        m.ours.push(t.secs);
        m.reference.push(qemu);
        log.say(&format!(
            "warm run {i}/{}: `xtask test` {}, of which QEMU {qemu:.2}s",
            f.runs,
            t.describe()
        ));
        m.ours_stages.push(t.stages);
    }
    if m.ours.is_empty() {
        bail!("no run's guest finished cleanly (see the notes and the logs in the run dir)");
    }
    if codes.iter().any(|&c| c != 0) {
        m.notes.push(format!(
            "`xtask test` exit codes {codes:?} (1 = a test or the snapshot disagreed; the run was complete)"
        ));
    }
    Ok(())
}

// 3. Rebuild.

/// Edits one file of the tree and always puts it back (`git checkout`), on
/// success, error or Ctrl-C alike.
struct Edit {
    tree: PathBuf,
    rel: &'static str,
    original: Vec<u8>,
}

impl Edit {
    fn new(tree: &Tree, rel: &'static str) -> Result<Edit> {
        let status = duct::cmd!("git", "-C", &tree.path, "status", "--porcelain", "--", rel)
            .read()
            .with_context(|| format!("git status of {rel}"))?;
        if !status.trim().is_empty() {
            bail!(
                "{} has uncommitted changes in {}; the bench edits and restores that file, so it \
                 must be clean",
                rel,
                tree.path.display()
            );
        }
        let path = tree.path.join(rel);
        let original =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Edit {
            tree: tree.path.clone(),
            rel,
            original,
        })
    }

    /// The file as committed plus a comment and one line of real code,
    /// `n` never used before: a comment-only edit would be a ccache hit
    /// (ccache hashes the preprocessed text), a real edit recompiles.
    fn apply(&self, n: u128) -> Result<()> {
        let mut text = self.original.clone();
        text.extend_from_slice(
            format!(
                "/* cargo xtask bench rig: edit {n} */\nstatic int rig_bench_edit __maybe_unused = {n};\n"
            )
            .as_bytes(),
        );
        let path = self.tree.join(self.rel);
        std::fs::write(&path, text).with_context(|| format!("editing {}", path.display()))
    }
}

impl Drop for Edit {
    fn drop(&mut self) {
        let restored = duct::cmd!("git", "-C", &self.tree, "checkout", "--", self.rel)
            .stderr_capture()
            .unchecked()
            .run()
            .is_ok_and(|o| o.status.success());
        if !restored {
            let path = self.tree.join(self.rel);
            if let Err(e) = std::fs::write(&path, &self.original) {
                eprintln!(
                    "[bench] error: could not restore {}: {e}; run `git -C {} checkout -- {}`",
                    path.display(),
                    self.tree.display(),
                    self.rel
                );
            }
        }
    }
}

pub(super) fn rebuild(
    p: &Pipeline,
    f: &BenchRigFlags,
    run_dir: &Path,
    log: &Log,
    config: &Config,
    m: &mut Measurement,
) -> Result<()> {
    let tree = p.applied()?;
    let j = format!("-j{}", jobs(&f.boot));
    m.ours_what = format!(
        "`xtask {}` from spawn to exit after appending one line of code to {EDITED}: \
         recompile, vmlinux relink + BTF (the rig boots vmlinux, so no bzImage), vmlinux.h + \
         BPF objects, initramfs, boot, selftests, report",
        test_args(&f.boot, &p.ctx.work).join(" ")
    );
    m.reference_what = format!(
        "`make O={} KBUILD_BUILD_*=rig CC='ccache gcc' HOSTCC='ccache gcc' {j} bzImage` in {} \
         (the rig's own make command and ccache environment) after another one-line edit of \
         the same file",
        config.build_dir.display(),
        tree.path.display()
    );
    let edit = Edit::new(&tree, EDITED)?;
    // Unique across bench runs too, so ccache never has the edited file.
    let unique = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    };
    let mut vmlinux = Vec::new();
    for i in 1..=f.runs {
        signals::check()?;
        edit.apply(unique())?;
        let log_path = run_dir.join(format!("rebuild-test-{i}.log"));
        let ours = xtask_test(&f.boot, &p.ctx.work, &log_path, &[])?;

        // After another edit of the same file: make alone, its log kept.
        let edited_make = |target: &str, log: String| -> Result<f64> {
            signals::check()?;
            edit.apply(unique())?;
            let t = Instant::now();
            let out =
                crate::stages::make::make(&p.ctx, &tree, &config.build_dir, &[j.as_str(), target])
                    .with_context(|| format!("the reference make {target}"))?;
            let secs = t.elapsed().as_secs_f64();
            std::fs::write(run_dir.join(log), out)?;
            Ok(secs)
        };
        let make_secs = edited_make("bzImage", format!("rebuild-make-{i}.log"))?;
        // What the rig itself builds: the ratio without bzImage's compression.
        let vmlinux_secs = edited_make("vmlinux", format!("rebuild-make-vmlinux-{i}.log"))?;
        log.say(&format!(
            "rebuild run {i}/{}: `xtask test` {}, make bzImage {make_secs:.2}s, make vmlinux \
             {vmlinux_secs:.2}s",
            f.runs,
            ours.describe()
        ));
        if !ours.clean_boot {
            let why = format!(
                "rebuild run {i} left out: the `xtask test` guest did not finish (hung, \
                 panicked or timed out); see rebuild-test-{i}.log"
            );
            log.say(&why);
            m.notes.push(why);
            continue;
        }
        m.ours.push(ours.secs);
        m.reference.push(make_secs);
        m.ours_stages.push(ours.stages);
        vmlinux.push(vmlinux_secs);
    }
    drop(edit);
    log.say(&format!("{EDITED} restored (git checkout)"));
    if m.ours.is_empty() {
        bail!("no run's guest finished cleanly (see the notes and the logs in the run dir)");
    }
    m.notes.push(format!(
        "edit = `static int rig_bench_edit __maybe_unused = N;` appended to {EDITED}, N new each time"
    ));
    note_without_qemu(m);
    if let (Some(ours), Some(v)) = (report::min(&m.ours), report::min(&vmlinux)) {
        m.notes.push(format!(
            "against `make {j} vmlinux` after the same kind of edit (what the rig builds: no \
             bzImage, so none of its compression) ours is {:.2}x (min {v:.2}s)",
            ours / v
        ));
    }
    Ok(())
}

/// Ours less its QEMU part (boot + selftests) against the reference: what
/// the rig adds to the build, apart from running the tests.
fn note_without_qemu(m: &mut Measurement) {
    let rest: Vec<f64> = m
        .ours_stages
        .iter()
        .zip(&m.ours)
        .filter_map(|(st, secs)| {
            st.iter()
                .find(|(k, _)| k == "boot")
                .map(|(_, qemu)| secs - qemu)
        })
        .collect();
    if let (Some(a), Some(b)) = (report::min(&rest), report::min(&m.reference)) {
        m.notes.push(format!(
            "without its boot+tests (QEMU) part ours is min {a:.2}s, {:.2}x the reference",
            a / b
        ));
    }
}

// 4. Cold.

/// Clones the pinned tree into target/bench-cold (untimed), under the
/// work-dir lock; the cold run itself needs nothing else from the work dir.
pub(super) fn cold_prepare(p: &Pipeline, log: &Log) -> Result<PathBuf> {
    let tree = p.applied()?;
    if !tree.managed {
        bail!("--cold measures the pinned tree with the series; not with --tree");
    }
    let cold = p.ctx.repo.join("target/bench-cold");
    if cold.exists() {
        std::fs::remove_dir_all(&cold).with_context(|| format!("emptying {}", cold.display()))?;
    }
    let src = cold.join("src").join(&tree.label);
    std::fs::create_dir_all(cold.join("src"))?;
    log.say(&format!(
        "cold: cloning the pinned tree into {} (not timed: the tree is not a build artefact)",
        src.display()
    ));
    duct::cmd!(
        "git",
        "-c",
        "advice.detachedHead=false",
        "clone",
        "-q",
        "--shared",
        "--branch",
        crate::stages::tree::BASELINE_TAG,
        &tree.path,
        &src
    )
    .stdout_null()
    .run()
    .context("cloning the tree for the cold run")?;
    // The accelerator verdict is the machine's, not the build's: no KVM probe.
    let verdict = p.ctx.work.join("accel-verdict");
    if verdict.is_file() {
        std::fs::copy(&verdict, cold.join("accel-verdict"))?;
    }
    Ok(cold)
}

/// Removes a directory when dropped, however its user returned.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// Our cold run, then a cold `make bzImage`, in `cold` (from
/// `cold_prepare`), which is removed afterwards.
pub(super) fn cold(
    f: &BenchRigFlags,
    cold: &Path,
    run_dir: &Path,
    log: &Log,
    m: &mut Measurement,
) -> Result<()> {
    let _remove = RemoveOnDrop(cold);
    let src = std::fs::read_dir(cold.join("src"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join(".git").exists())
        .context("the cold tree is missing")?;
    let ccache = cold.join("ccache");
    std::fs::create_dir_all(&ccache)?;
    let mut bf = f.boot.clone();
    bf.common.work_dir = Some(cold.to_path_buf());
    m.ours_what = format!(
        "`xtask {}` from spawn to exit with CCACHE_DIR={} (empty) and an empty build dir: \
         the series applied with git am, config, full build through ccache, image, boot, \
         selftests (the tree itself is cloned beforehand, untimed; the guest runner's cargo \
         target dir is shared)",
        test_args(&bf, cold).join(" "),
        ccache.display()
    );
    log.say("cold: our run (a full kernel build)");
    let ours = xtask_test(
        &bf,
        cold,
        &run_dir.join("cold-test.log"),
        &[("CCACHE_DIR", ccache.as_path())],
    )?;
    m.ours.push(ours.secs);
    log.say(&format!("cold: `xtask test` {}", ours.describe()));
    m.ours_stages.push(ours.stages);
    if !ours.clean_boot {
        m.notes.push(
            "the cold run's guest did not finish (hung, panicked or timed out): its time \
             includes that; see cold-test.log"
                .into(),
        );
    }

    // The same tree state and .config, a fresh O= dir, plain gcc.
    let builds = cold.join("build");
    let dot_config = std::fs::read_dir(&builds)
        .with_context(|| format!("listing {}", builds.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(".config"))
        .find(|p| p.is_file())
        .context("the cold run left no .config")?;
    let out = cold.join("make-ref");
    std::fs::create_dir_all(&out)?;
    std::fs::copy(&dot_config, out.join(".config"))?;
    let args: Vec<String> = vec![
        format!("O={}", out.display()),
        "KBUILD_BUILD_TIMESTAMP=rig".into(),
        "KBUILD_BUILD_USER=rig".into(),
        "KBUILD_BUILD_HOST=rig".into(),
        format!("-j{}", jobs(&f.boot)),
        "bzImage".into(),
    ];
    m.reference_what = format!(
        "`make {}` in the same tree state with the cold run's .config in a fresh O= dir, plain \
         gcc (no ccache)",
        args.join(" ")
    );
    log.say("cold: the reference make bzImage (a full kernel build)");
    let (secs, code) = timed(
        duct::cmd("make", &args).dir(&src),
        &run_dir.join("cold-make.log"),
        CHILD_LIMIT,
    )?;
    if code != Some(0) {
        bail!(
            "cold make bzImage failed ({code:?}):\n{}",
            tail(&run_dir.join("cold-make.log"), 8)
        );
    }
    m.reference.push(secs);
    log.say(&format!("cold: make bzImage {secs:.2}s"));
    note_without_qemu(m);
    m.notes.push(format!(
        "one repetition (each side is a full kernel build); {} removed afterwards",
        cold.display()
    ));
    Ok(())
}
