//! `gma_pf_*`'s control array: what the program is told to do on a CPU,
//! and what it counted doing it.

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, Object};

use crate::sys::affinity;
use crate::sys::bpf::{self, Pod};
use crate::tests::global_ma::trigger;

/// GMA_PF_* in the BPF program.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub(super) enum Cmd {
    None = 0,
    Alloc = 1,
    Free = 2,
    Hammer = 3,
}

/// `struct gma_pf_ctl`, the value of the `ctl` array (by CPU).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(super) struct PfCtl {
    pub(super) cmd: u32,
    pub(super) tgid: u32,
    pub(super) base: u32,
    pub(super) n: u32,
    pub(super) runs: u64,
    pub(super) done: u64,
    pub(super) fails: u64,
    pub(super) empty: u64,
    pub(super) old_found: u64,
    pub(super) wrong_cpu: u64,
    pub(super) bad_magic: u64,
    pub(super) no_elem: u64,
}
// SAFETY: repr(C), integers only, same layout as the C struct.
unsafe impl Pod for PfCtl {}

pub(super) fn write_ctl(obj: &Object, cpu: usize, c: &PfCtl) -> Result<()> {
    bpf::map(obj, "ctl")?
        .update(
            &(cpu as u32).to_ne_bytes(),
            &bpf::pod_bytes(c),
            MapFlags::ANY,
        )
        .with_context(|| format!("writing ctl[{cpu}]"))
}

pub(super) fn read_ctl(obj: &Object, cpu: usize) -> Result<PfCtl> {
    let bytes = bpf::map(obj, "ctl")?
        .lookup(&(cpu as u32).to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading ctl[{cpu}]"))?
        .with_context(|| format!("ctl has no element {cpu}"))?;
    bpf::read_pod(&bytes)
}

/// Runs `cmd` on slots base..base+n of `cpu`, once, from a thread pinned
/// there; returns what the program counted.
pub(super) fn run_on(obj: &Object, cpu: usize, cmd: Cmd, base: u32, n: u32) -> Result<PfCtl> {
    let pin = affinity::pin(cpu)?;
    write_ctl(
        obj,
        cpu,
        &PfCtl {
            cmd: cmd as u32,
            tgid: std::process::id(),
            base,
            n,
            ..PfCtl::default()
        },
    )?;
    let r = trigger();
    let c = read_ctl(obj, cpu)?;
    write_ctl(
        obj,
        cpu,
        &PfCtl {
            cmd: Cmd::None as u32,
            ..PfCtl::default()
        },
    )?;
    drop(pin);
    r?;
    if c.runs != 1 {
        bail!(
            "{cmd:?} on cpu{cpu}: the program ran {} times, not once",
            c.runs
        );
    }
    if c.no_elem != 0 || c.bad_magic != 0 || c.wrong_cpu != 0 || c.old_found != 0 {
        bail!("{cmd:?} on cpu{cpu}: {c:?}");
    }
    Ok(c)
}
