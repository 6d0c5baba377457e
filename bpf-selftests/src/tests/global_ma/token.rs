//! `global_ma_prefill_token_probe`: the command number of
//! BPF_GLOBAL_MA_PREFILL (36 in 6.1's enum bpf_cmd) is BPF_TOKEN_CREATE
//! upstream since 6.9, and libbpf >= 1.4 (libbpf-rs's vendored 1.7 too)
//! sends `bpf(36, { flags = 0, bpffs_fd })` when it loads an object and
//! /sys/fs/bpf is a bpffs, as in this guest. Such a call must not make a
//! reservation: it arrives as size 0, count = the fd, which the command
//! refuses with EINVAL. Checked both ways: the token attribute sent by hand,
//! and a real object load through libbpf, with the reserves and the free
//! lists' watermarks unchanged.

use std::fs::File;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

use super::open;
use crate::bpf;
use crate::caches::Caches;
use crate::check::Checks;
use crate::prefill::{self, PrefillAttr};
use crate::runner::{Ctx, Outcome};
use crate::stats;

const OBJECT: &str = "global_ma_counts";
const BPFFS: &str = "/sys/fs/bpf";

fn reserved() -> Result<u64> {
    stats::read_total_field("reserved")?.context("stats total line has no `reserved` field")
}

pub fn global_ma_prefill_token_probe(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::prefill::missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let before = (reserved()?, Caches::read()?);

    // What libbpf's token probe sends: BPF_TOKEN_CREATE's { flags, bpffs_fd }.
    let bpffs = File::open(BPFFS).with_context(|| format!("opening {BPFFS}"))?;
    let fd = u32::try_from(bpffs.as_raw_fd()).context("bpffs fd")?;
    match prefill::prefill_raw(
        PrefillAttr {
            size: 0,
            count: fd,
            flags: 0,
        },
        &[],
    ) {
        Ok(_) => bail!("bpf(36, {{ flags 0, bpffs_fd {fd} }}) made a reservation"),
        Err(e) => checks.eq(
            "errno of bpf(36) with BPF_TOKEN_CREATE's attribute",
            Some(libc::EINVAL),
            e.raw_os_error(),
        ),
    };

    // And what libbpf itself does when it loads an object.
    let obj = bpf::load(open(ctx, OBJECT)?, OBJECT)?;
    let after = (reserved()?, Caches::read()?);
    checks.eq("reserved objects after a libbpf load", before.0, after.0);
    for bad in after.1.marks_changed(&before.1) {
        checks.fail(format!("watermarks moved by a libbpf load: {bad}"));
    }
    drop(obj);
    ctx.diag(format!(
        "bpf(36) with {{ flags 0, bpffs_fd }} refused; a libbpf load with {BPFFS} mounted left \
         {} objects reserved",
        after.0
    ));
    checks.finish()?;
    Ok(Outcome::Pass)
}
