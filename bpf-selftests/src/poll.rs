//! Waiting for the kernel's deferred work (map frees from a workqueue,
//! irq_work refills and trims): read until the reading is what is wanted
//! or a timeout passes, and hand back the last reading either way, so that
//! the caller judges it.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Calls `read` every `interval` until `done` holds for what it returned
/// or `timeout` has passed (a reading is always judged before giving up).
/// Returns the last reading, whether `done` held for it, and the time from
/// the first read.
pub fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut read: impl FnMut() -> Result<T>,
    mut done: impl FnMut(&T) -> bool,
) -> Result<(T, bool, Duration)> {
    let start = Instant::now();
    loop {
        let r = read()?;
        if done(&r) {
            return Ok((r, true, start.elapsed()));
        }
        if start.elapsed() >= timeout {
            return Ok((r, false, start.elapsed()));
        }
        thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_reading_that_is_done() {
        let mut n = 0;
        let (last, done, _) = poll(
            Duration::from_secs(10),
            Duration::ZERO,
            || {
                n += 1;
                Ok(n)
            },
            |&r| r == 3,
        )
        .unwrap();
        assert_eq!((last, done), (3, true));
    }

    #[test]
    fn after_the_timeout_the_last_reading_comes_back_not_done() {
        let (last, done, took) = poll(
            Duration::from_millis(5),
            Duration::from_millis(1),
            || Ok(7),
            |&r| r == 0,
        )
        .unwrap();
        assert_eq!((last, done), (7, false));
        assert!(took >= Duration::from_millis(5));
    }

    #[test]
    fn a_failed_read_ends_the_wait() {
        let r = poll(
            Duration::from_secs(10),
            Duration::ZERO,
            || -> Result<u32> { anyhow::bail!("gone") },
            |_| false,
        );
        assert_eq!(r.unwrap_err().to_string(), "gone");
    }
}
