//! `/dev/kmsg`: the kernel log, one record per read, without blocking.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};

/// Kernel log records not read yet by `kmsg`'s reader (from the start the
/// first time).
pub struct Kmsg(fs::File);

impl Kmsg {
    pub fn open() -> Result<Kmsg> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .context("opening /dev/kmsg")?;
        Ok(Kmsg(f))
    }

    /// The messages of the records available now.
    pub fn drain(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    // "<prio>,<seq>,<time>,<flags>;<message>\n<continuation>"
                    if let Some((_, msg)) = rec.split_once(';') {
                        out.push(msg.lines().next().unwrap_or("").to_string());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(out),
                // Records overwritten before we read them: go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(e).context("reading /dev/kmsg"),
            }
        }
    }
}
