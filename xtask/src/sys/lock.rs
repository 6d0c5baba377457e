//! One run at a time per work dir: a second `cargo xtask` waits for the first
//! instead of building into the same O= dir.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// Set for child processes that run under their parent's lock (bisect steps).
pub const HELD_BY_PARENT: &str = "RIG_LOCK_HELD_BY_PARENT";

pub struct WorkLock {
    _lock: Flock<File>,
}

pub fn acquire(work: &Path) -> Result<WorkLock> {
    let path = work.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, _)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!(
                "[lock] another cargo xtask run (pid {}) is using {}; waiting for it (Ctrl-C to give up)",
                holder.trim(),
                work.display()
            );
            let start = Instant::now();
            loop {
                crate::sys::signals::check().context("waiting for the work dir lock")?;
                match Flock::lock(file.try_clone()?, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => {
                        eprintln!("[lock] got it after {:.0?}", start.elapsed());
                        break lock;
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                }
            }
        }
    };
    std::fs::write(&path, format!("{}\n", std::process::id()))?;
    Ok(WorkLock { _lock: file })
}
