//! Temporarily pinning the calling thread: the global allocator's counters
//! are per CPU, so tests that check per-CPU lines run their triggers from a
//! known CPU, then give the thread its old CPU mask back.

use std::io;
use std::mem;

use anyhow::{Context, Result};

use super::cpu;

/// Restores the thread's CPU mask of before `pin` when dropped.
pub struct Pinned {
    saved: libc::cpu_set_t,
    pub cpu: usize,
}

/// Pins the calling thread to `cpu` (checked) until the guard is dropped.
pub fn pin(cpu_id: usize) -> Result<Pinned> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity(0, ...) writes the
    // calling thread's mask into it.
    let saved = unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        if libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error()).context("sched_getaffinity");
        }
        set
    };
    cpu::pin_current_thread(cpu_id)?;
    Ok(Pinned { saved, cpu: cpu_id })
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: restores a mask read by sched_getaffinity for this thread.
        let ret =
            unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &self.saved) };
        if ret != 0 {
            crate::ktap::diag(&format!(
                "warning: restoring the CPU mask after pinning to CPU {}: {}",
                self.cpu,
                io::Error::last_os_error()
            ));
        }
    }
}
