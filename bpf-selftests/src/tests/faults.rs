//! Test-only faults for the rig's own fault tests, selected with
//! `rig.fault=<name>` on the kernel command line and never part of a
//! normal run: they crash, hang or kill the guest on purpose. Their table
//! is `tests::FAULTS`.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::runner::{Ctx, Outcome};

/// A kernel crash through sysrq: an oops that panic_on_oops turns into a panic.
pub fn fault_panic(ctx: &Ctx<'_>) -> Result<Outcome> {
    ctx.diag("crashing the kernel with sysrq-c");
    std::fs::write("/proc/sysrq-trigger", "c").context("writing /proc/sysrq-trigger")?;
    anyhow::bail!("the kernel survived sysrq-c")
}

/// Stops printing for good, as a deadlocked test would.
pub fn fault_hang(ctx: &Ctx<'_>) -> Result<Outcome> {
    ctx.diag("sleeping forever without output");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The runner dies mid-test without reporting, as if the OOM killer hit it.
pub fn fault_runner_killed(ctx: &Ctx<'_>) -> Result<Outcome> {
    ctx.diag("killing the runner with SIGKILL");
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    anyhow::bail!("SIGKILL did not end the runner")
}
