//! `cargo xtask bench`: figures measured side by side in one run.

use anyhow::Result;

use crate::flags::BenchRigFlags;

pub fn rig(_f: BenchRigFlags) -> Result<i32> {
    anyhow::bail!("cargo xtask bench rig is not written yet")
}
