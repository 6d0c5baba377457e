//! QEMU command lines, built by pure functions so tests can snapshot them.

use std::path::PathBuf;

use anyhow::{bail, Result};
use rig_contract::cmdline::Word;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    /// KVM with the named CPU model.
    Kvm(String),
    Tcg,
    /// TCG with `-icount shift=0`: the guest clock advances exactly 1 ns per
    /// executed guest instruction, so the guest's own ns figures are
    /// instruction counts (`bench alloc`). Single-threaded TCG on one vCPU.
    TcgIcount,
}

impl Accel {
    pub fn name(&self) -> String {
        match self {
            Accel::Kvm(cpu) => format!("kvm (-cpu {cpu})"),
            Accel::Tcg => "tcg".to_string(),
            Accel::TcgIcount => "tcg -icount shift=0".to_string(),
        }
    }

    /// The same accelerator counting instructions; only TCG can.
    pub fn icount(self) -> Result<Accel> {
        match self {
            Accel::Tcg | Accel::TcgIcount => Ok(Accel::TcgIcount),
            other => bail!(
                "-icount needs TCG; this boot would run under {}",
                other.name()
            ),
        }
    }

    pub fn is_tcg(&self) -> bool {
        matches!(self, Accel::Tcg | Accel::TcgIcount)
    }
}

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cpus: u32,
    pub memory: String,
    pub accel: Accel,
    pub console_log: PathBuf,
    pub ktap_log: PathBuf,
    /// Extra `key=value` words for the kernel command line.
    pub cmdline: Vec<String>,
    /// A QMP socket for the guest's requests (see vm/qmp.rs).
    pub qmp: Option<PathBuf>,
}

impl VmSpec {
    /// The vCPUs the guest gets: `cpus`, but one under `-icount`, where
    /// the bring-up of a secondary CPU never finishes (QEMU 7.2 hangs at
    /// "x86: Booting SMP configuration", with `sleep=off` too).
    pub fn vcpus(&self) -> u32 {
        match self.accel {
            Accel::TcgIcount => 1,
            _ => self.cpus,
        }
    }
}

pub fn kernel_cmdline(spec: &VmSpec) -> String {
    let mut words: Vec<String> = [
        "console=ttyS0",
        "earlyprintk=serial",
        // A panic ends QEMU at once (with -no-reboot) instead of waiting.
        "panic=-1",
        "oops=panic",
        "rdinit=/init",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    words.push(Word::Cpus(spec.vcpus() as usize).word());
    words.extend(spec.cmdline.iter().cloned());
    words.join(" ")
}

pub fn args(spec: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-machine", "pc"]);
    match &spec.accel {
        Accel::Kvm(cpu) => push(&["-accel", "kvm", "-cpu", cpu]),
        Accel::Tcg => push(&["-accel", "tcg,thread=multi", "-cpu", "max"]),
        // icount needs single-threaded TCG.
        Accel::TcgIcount => push(&[
            "-accel",
            "tcg,thread=single",
            "-icount",
            "shift=0",
            "-cpu",
            "max",
        ]),
    }
    let smp = spec.vcpus().to_string();
    push(&["-smp", &smp, "-m", &spec.memory]);
    push(&["-kernel", &spec.kernel.to_string_lossy()]);
    push(&["-initrd", &spec.initrd.to_string_lossy()]);
    push(&["-append", &kernel_cmdline(spec)]);
    // A guest reboot (our init's `reboot -f`, or panic=-1) ends QEMU.
    push(&["-no-reboot"]);
    let console = format!("file:{}", spec.console_log.display());
    push(&["-serial", &console]);
    // KTAP on its own channel, never mixed with kernel messages.
    let ktap = format!("file,id=ktap,path={}", spec.ktap_log.display());
    push(&["-device", "virtio-serial-pci", "-chardev", &ktap]);
    push(&["-device", "virtserialport,chardev=ktap,name=ktap"]);
    // Entropy for getrandom() in the guest runner.
    push(&["-device", "virtio-rng-pci"]);
    if let Some(sock) = &spec.qmp {
        let qmp = format!("unix:{},server=on,wait=off", sock.display());
        push(&["-qmp", &qmp]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> VmSpec {
        VmSpec {
            kernel: "/b/vmlinux".into(),
            initrd: "/b/initramfs.cpio".into(),
            cpus: 4,
            memory: "1G".into(),
            accel,
            console_log: "/run/console.log".into(),
            ktap_log: "/run/ktap.log".into(),
            cmdline: vec!["rig.filter=hash".into()],
            qmp: Some("/tmp/rig-qmp-1-0.sock".into()),
        }
    }

    #[test]
    fn tcg_command_line() {
        insta::assert_snapshot!(args(&spec(Accel::Tcg)).join("\n"));
    }

    #[test]
    fn tcg_icount_command_line_has_one_vcpu() {
        let s = spec(Accel::TcgIcount);
        assert_eq!((s.cpus, s.vcpus()), (4, 1));
        insta::assert_snapshot!(args(&s).join("\n"));
    }

    #[test]
    fn only_tcg_counts_instructions() {
        assert_eq!(Accel::Tcg.icount().unwrap(), Accel::TcgIcount);
        assert_eq!(Accel::TcgIcount.icount().unwrap(), Accel::TcgIcount);
        let e = Accel::Kvm("host".into()).icount().unwrap_err().to_string();
        assert!(e.starts_with("-icount needs TCG"), "{e}");
        assert!(!Accel::Kvm("host".into()).is_tcg());
    }

    #[test]
    fn kvm_command_line() {
        let a = args(&spec(Accel::Kvm("host".into())));
        let s = a.join(" ");
        assert!(s.contains("-accel kvm -cpu host"), "{s}");
        assert!(!s.contains("tcg"));
    }
}
