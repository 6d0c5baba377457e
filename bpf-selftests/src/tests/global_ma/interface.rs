//! The reservation map's interface (patch 0011).
//!
//! `global_ma_prefill_token_probe`: what user space already sends must never
//! make a reservation.
//!
//! - v2 of the series made reservations with bpf() command 36, which is
//!   BPF_TOKEN_CREATE upstream since 6.9; libbpf >= 1.4 (libbpf-rs's
//!   vendored 1.7 too) sends `bpf(36, { flags = 0, bpffs_fd })` when it
//!   loads an object and /sys/fs/bpf is a bpffs, as in this guest. The
//!   series now has no command of its own, so 36 is unknown (EINVAL).
//! - The map type's number (32) is upstream's BPF_MAP_TYPE_CGRP_STORAGE
//!   (6.2+). Its attribute shape (key_size 4, max_entries 0,
//!   BPF_F_NO_PREALLOC) must be refused, not read as a reservation.
//! - A real object load through libbpf leaves the reserves and the free
//!   lists' watermarks unchanged.
//!
//! `global_ma_reserve_in_programs`: a reservation map declared in an object
//! is created by libbpf like any map; a sleepable program may refer to it
//! (progs/global_ma_reserve_ref.bpf.c) and holds the reservation while it
//! is loaded; a program passing it to a helper is refused
//! (progs/global_ma_reserve_helper.bpf.c).
//!
//! `global_ma_reserve_no_elements`: from user space, every element command
//! on a reservation map fails with EOPNOTSUPP, and none of them touches the
//! reservation.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Context, Result};

use super::open;
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::sys::bpf;
use crate::sys::caches::Caches;
use crate::sys::reserve::{self, PrefillAttr, BPF_MAP_TYPE_GLOBAL_MA_RESERVE};

const OBJECT: &str = "global_ma_counts";
const BPFFS: &str = "/sys/fs/bpf";
/// BPF_F_NO_PREALLOC, which upstream's cgroup storage requires.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Must not load: see progs/global_ma_reserve_helper.bpf.c.
const RESERVE_HELPER: &str = "global_ma_reserve_helper";
/// Must load: see progs/global_ma_reserve_ref.bpf.c.
const RESERVE_REF: &str = "global_ma_reserve_ref";
/// The verifier's words at the helper call: the map's key is zero-sized,
/// so no element helper can take it (6.1's check_helper_mem_access()).
const HELPER_REFUSED: &str = "invalid zero-sized read";

pub fn global_ma_reserve_in_programs(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::prefill::missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    for object in [RESERVE_REF, RESERVE_HELPER] {
        if let Some(skip) = super::missing_feature(ctx, object) {
            return Ok(skip);
        }
    }
    let mut checks = Checks::new();
    let before = reserve::reserved_total()?;

    let open_ref = bpf::open_object(&ctx.cfg.bpf_dir, RESERVE_REF)?;
    let (loaded, log) = bpf::capture_libbpf_log(|| open_ref.load());
    match loaded {
        Ok(obj) => {
            let held = reserve::reserved_total()?;
            checks.eq(
                "objects reserved while a sleepable program refers to a 32 x 1 map",
                true,
                held > before,
            );
            drop(obj);
            reserve::wait_reserved_total(before)?;
            ctx.diag(format!(
                "sleepable program referring to the map loaded; {} objects reserved until it \
                 was unloaded",
                held - before
            ));
        }
        Err(e) => checks.fail(format!(
            "a sleepable program referring to a reservation map did not load: {e:#}\n{log}"
        )),
    }

    let open_helper = bpf::open_object(&ctx.cfg.bpf_dir, RESERVE_HELPER)?;
    let (loaded, log) = bpf::capture_libbpf_log(|| open_helper.load());
    checks.eq(
        "a program passing a reservation map to bpf_map_lookup_elem: the object loads",
        false,
        loaded.is_ok(),
    );
    let refused_at_call = log
        .lines()
        .skip_while(|l| !l.contains("call bpf_map_lookup_elem"))
        .nth(1)
        .is_some_and(|l| l.contains(HELPER_REFUSED));
    checks.eq(
        format!(
            "the verifier log says {HELPER_REFUSED:?} right after the call to \
             bpf_map_lookup_elem (so libbpf created the map)"
        ),
        true,
        refused_at_call,
    );
    if refused_at_call {
        ctx.diag(format!("bpf_map_lookup_elem refused: {HELPER_REFUSED}"));
    }
    drop(loaded);
    // The map libbpf made for the object goes with the failed load.
    reserve::wait_reserved_total(before)?;
    checks.finish()?;
    Ok(Outcome::Pass)
}

pub fn global_ma_reserve_no_elements(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::prefill::missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    const SIZE: u32 = 32;
    const COUNT: u32 = 4;
    let mut checks = Checks::new();
    let before = reserve::reserved_total()?;
    let map = reserve::prefill(SIZE, COUNT, 0).context("creating a 32 x 4 reservation map")?;
    let held = reserve::reserved_total()?;
    let mut value = [0u8; SIZE as usize];
    for (name, cmd) in reserve::ELEM_CMDS {
        let got = reserve::map_elem_cmd(cmd, map.as_fd(), &mut value);
        checks.eq(
            format!("errno of {name} on a reservation map"),
            Some(libc::EOPNOTSUPP),
            got.err().and_then(|e| e.raw_os_error()),
        );
    }
    checks.eq(
        "reserved objects after the element commands",
        held,
        reserve::reserved_total()?,
    );
    let took = reserve::close_and_wait(map, before)?;
    ctx.diag(format!(
        "lookup, update, delete and get_next_key refused; {} objects reserved, \
         released {took:.1?} after close",
        held - before
    ));
    checks.finish()?;
    Ok(Outcome::Pass)
}

pub fn global_ma_prefill_token_probe(ctx: &Ctx<'_>) -> Result<Outcome> {
    if let Some(skip) = super::prefill::missing_reserves(ctx, OBJECT)? {
        return Ok(skip);
    }
    let mut checks = Checks::new();
    let before = (reserve::reserved_total()?, Caches::read()?);

    // What libbpf's token probe sends: BPF_TOKEN_CREATE's { flags, bpffs_fd }.
    let bpffs = File::open(BPFFS).with_context(|| format!("opening {BPFFS}"))?;
    let fd = u32::try_from(bpffs.as_raw_fd()).context("bpffs fd")?;
    let mut token = [0u8; 8];
    token[4..].copy_from_slice(&fd.to_ne_bytes());
    match reserve::sys_bpf(reserve::BPF_TOKEN_CREATE, &token) {
        Ok(_) => bail!("bpf(36, {{ flags 0, bpffs_fd {fd} }}) returned an fd"),
        Err(e) => checks.eq(
            "errno of bpf(36) with BPF_TOKEN_CREATE's attribute",
            Some(libc::EINVAL),
            e.raw_os_error(),
        ),
    };

    // Upstream's map type 32, BPF_MAP_TYPE_CGRP_STORAGE, as libbpf's probe
    // creates it: key = cgroup fd (4 bytes), no max_entries, no prealloc.
    let cgrp_storage = PrefillAttr {
        map_type: BPF_MAP_TYPE_GLOBAL_MA_RESERVE,
        key_size: 4,
        size: 8,
        count: 0,
        flags: BPF_F_NO_PREALLOC,
    };
    match reserve::prefill_raw(cgrp_storage, &[]) {
        Ok(_) => bail!("map type 32 with BPF_MAP_TYPE_CGRP_STORAGE's shape was created"),
        Err(e) => checks.eq(
            "errno of map type 32 with CGRP_STORAGE's key_size 4, max_entries 0, NO_PREALLOC",
            Some(libc::EINVAL),
            e.raw_os_error(),
        ),
    };

    // And what libbpf itself does when it loads an object.
    let obj = bpf::load(open(ctx, OBJECT)?, OBJECT)?;
    let after = (reserve::reserved_total()?, Caches::read()?);
    checks.eq("reserved objects after a libbpf load", before.0, after.0);
    for bad in after.1.marks_changed(&before.1) {
        checks.fail(format!("watermarks moved: {bad}"));
    }
    drop(obj);
    ctx.diag(format!(
        "bpf(36) with {{ flags 0, bpffs_fd }} and map type 32 with CGRP_STORAGE's shape \
         refused; a libbpf load with {BPFFS} mounted left {} objects reserved",
        after.0
    ));
    checks.finish()?;
    Ok(Outcome::Pass)
}
