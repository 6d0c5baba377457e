//! Sanity checks of the guest itself: CPUs and kernel BTF.

use std::fs;

use anyhow::{bail, Context, Result};

use crate::runner::{Ctx, Outcome};
use crate::sys::cpu;

const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const BTF_MAGIC: u16 = 0xeb9f;
/// `struct btf_header`: magic, version, flags, hdr_len, type_off, type_len,
/// str_off, str_len.
const BTF_HEADER_LEN: usize = 24;

/// The guest sees exactly `rig.cpus` online CPUs.
pub fn cpus_online(ctx: &Ctx<'_>) -> Result<Outcome> {
    let Some(expected) = ctx.cfg.cpus else {
        return Ok(Outcome::Skip(
            "no rig.cpus= on the kernel command line".into(),
        ));
    };
    let online = cpu::online_cpus()?;
    ctx.diag(format!("online CPUs: {online:?}"));
    if online.len() != expected {
        bail!(
            "online CPUs: expected {expected} (rig.cpus), got {} ({online:?})",
            online.len()
        );
    }
    let want: Vec<usize> = (0..expected).collect();
    if online != want {
        bail!("online CPU ids: expected {want:?}, got {online:?}");
    }
    Ok(Outcome::Pass)
}

/// /sys/kernel/btf/vmlinux exists, is non-empty, starts with the BTF magic
/// and its header's section sizes add up to the file size.
pub fn btf_vmlinux_present(ctx: &Ctx<'_>) -> Result<Outcome> {
    let btf = fs::read(BTF_VMLINUX).with_context(|| format!("reading {BTF_VMLINUX}"))?;
    ctx.diag(format!("{BTF_VMLINUX}: {} bytes", btf.len()));
    if btf.is_empty() {
        bail!("{BTF_VMLINUX} is empty");
    }
    if btf.len() < BTF_HEADER_LEN {
        bail!(
            "{BTF_VMLINUX}: expected at least {BTF_HEADER_LEN} bytes (BTF header), got {}",
            btf.len()
        );
    }
    let magic = u16::from_le_bytes([btf[0], btf[1]]);
    if magic != BTF_MAGIC {
        bail!("{BTF_VMLINUX}: expected magic {BTF_MAGIC:#06x}, got {magic:#06x}");
    }
    let version = btf[2];
    if version != 1 {
        bail!("{BTF_VMLINUX}: expected BTF version 1, got {version}");
    }
    let word = |off: usize| u32::from_le_bytes(btf[off..off + 4].try_into().unwrap()) as usize;
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (word(4), word(8), word(12), word(16), word(20));
    let end = hdr_len + (type_off + type_len).max(str_off + str_len);
    ctx.diag(format!(
        "header: hdr_len {hdr_len} types {type_len} bytes, strings {str_len} bytes"
    ));
    if end != btf.len() {
        bail!(
            "{BTF_VMLINUX}: header says {end} bytes (hdr {hdr_len} + types/strings), file has {}",
            btf.len()
        );
    }
    if type_len == 0 {
        bail!("{BTF_VMLINUX}: no types (type_len 0)");
    }
    Ok(Outcome::Pass)
}
