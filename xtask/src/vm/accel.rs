//! Which accelerator to boot with. `auto` probes KVM once per machine with a
//! short real boot of our kernel and remembers the verdict in the work dir:
//! nested KVM can accept the ioctls and still fail to boot (MSR errors,
//! emulation failures), so /dev/kvm existing proves nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rig_contract::cmdline::{Word, PROBE_OK};

use crate::context::Ctx;
use crate::flags;
use crate::stages::hashing::Key;
use crate::vm::{self, Accel, Limits, VmSpec};

/// CPU models tried under KVM, best first.
const KVM_CPUS: &[&str] = &["host", "qemu64"];
const PROBE_LIMIT: Duration = Duration::from_secs(20);

pub fn choose(ctx: &Ctx, flag: flags::Accel, kernel: &Path, initrd: &Path) -> Result<Accel> {
    match flag {
        flags::Accel::Tcg => Ok(Accel::Tcg),
        flags::Accel::Kvm => {
            kvm_usable().context("--accel kvm")?;
            Ok(Accel::Kvm(KVM_CPUS[0].to_string()))
        }
        flags::Accel::Auto => {
            if let Err(why) = kvm_usable() {
                eprintln!("[boot] warning: using TCG (slow): {why:#}");
                return Ok(Accel::Tcg);
            }
            let cache = ctx.work.join("accel-verdict");
            let key = machine_key();
            if let Some(cached) = read_cache(&cache, &key) {
                if cached == Accel::Tcg {
                    eprintln!("[boot] warning: using TCG: KVM did not boot our kernel on this machine (remembered in {}; delete it to probe again)", cache.display());
                }
                return Ok(cached);
            }
            let verdict = probe(ctx, kernel, initrd)?;
            let line = match &verdict {
                Accel::Kvm(cpu) => format!("{key} kvm {cpu}\n"),
                Accel::Tcg | Accel::TcgIcount => format!("{key} tcg\n"),
            };
            std::fs::write(&cache, line).with_context(|| format!("writing {}", cache.display()))?;
            Ok(verdict)
        }
    }
}

fn kvm_usable() -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .context("/dev/kvm cannot be opened read-write (no KVM, or no access to it)")?;
    Ok(())
}

/// What the verdict depends on: host kernel, CPU, QEMU.
fn machine_key() -> String {
    let mut k = Key::new("accel");
    for f in ["/proc/sys/kernel/osrelease", "/proc/sys/kernel/hostname"] {
        k.str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    k.str(
        cpu.lines()
            .find(|l| l.starts_with("model name"))
            .unwrap_or(""),
    );
    let qemu = duct::cmd!("qemu-system-x86_64", "--version")
        .stderr_null()
        .read()
        .unwrap_or_default();
    k.str(&qemu);
    k.finish()[..16].to_string()
}

fn read_cache(path: &Path, key: &str) -> Option<Accel> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    if words.next()? != key {
        return None;
    }
    match (words.next()?, words.next()) {
        ("kvm", Some(cpu)) => Some(Accel::Kvm(cpu.to_string())),
        ("tcg", _) => Some(Accel::Tcg),
        _ => None,
    }
}

fn probe(ctx: &Ctx, kernel: &Path, initrd: &Path) -> Result<Accel> {
    let dir = ctx.dir("accel-probe")?;
    for cpu in KVM_CPUS {
        eprintln!(
            "[boot] probing KVM with -cpu {cpu} (once per machine, at most {}s)",
            PROBE_LIMIT.as_secs()
        );
        let spec = VmSpec {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            cpus: 2,
            memory: "512M".into(),
            accel: Accel::Kvm(cpu.to_string()),
            console_log: dir.join(format!("console-{cpu}.log")),
            ktap_log: dir.join(format!("ktap-{cpu}.log")),
            cmdline: vec![Word::Probe.word()],
            qmp: None,
        };
        let limits = Limits {
            boot: PROBE_LIMIT,
            test: PROBE_LIMIT,
            silence: PROBE_LIMIT,
        };
        let out = probe_once(&spec, &limits, &dir.join(format!("qemu-{cpu}.stderr")))?;
        if let Some(out) = out {
            if out.console.contains(PROBE_OK) {
                eprintln!("[boot] KVM works here (-cpu {cpu})");
                return Ok(Accel::Kvm(cpu.to_string()));
            }
            let why = out
                .qemu_stderr
                .lines()
                .next()
                .map(str::to_string)
                .unwrap_or_else(|| format!("no init within {}s", PROBE_LIMIT.as_secs()));
            eprintln!("[boot] KVM with -cpu {cpu} failed: {why}");
        }
    }
    eprintln!("[boot] warning: KVM did not boot our kernel; using TCG (slow)");
    Ok(Accel::Tcg)
}

/// A probe boot, stopped as soon as init reports (the probe kernel has no
/// KTAP, so the boot limit is not used as a failure signal here).
fn probe_once(spec: &VmSpec, limits: &Limits, stderr: &Path) -> Result<Option<vm::Outcome>> {
    let out = vm::run(spec, limits, stderr, vm::Live::Quiet)?;
    if let vm::Ending::Interrupted { signal } = &out.ending {
        bail!("interrupted by {signal} while probing KVM");
    }
    Ok(Some(out))
}
