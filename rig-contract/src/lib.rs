//! The contract between the rig's host (`xtask`) and its guest runner
//! (`bpf-selftests`): every line one side writes for the other to read, with
//! its writer and its parser next to each other, and tests that parse back
//! exactly what was written. std only, so the statically linked guest pays
//! nothing for it.
//!
//! | what | written by | read by | module |
//! |---|---|---|---|
//! | KTAP lines (`KTAP version 1`, `1..N`, `# plan:`, `# start:`, `# duration_ms:`, results, nested subtest headers) | guest | host | [`ktap`] |
//! | `rig.*` kernel command-line words | host | guest (`rig.probe=1`: images/init) | [`cmdline`] |
//! | `rig: probe ok`, the init script's answer to the accelerator probe | guest | host | [`cmdline`] |
//! | `# bench: <kind> k=v ...` figures | guest | host | [`bench`] |
//! | `# rig: inject-nmi`, the request for an external NMI | guest | host | [`request`] |
//! | the runner's "no virtio port named `ktap`" console message | guest | host | [`port`] |
//! | the image's `not-built` list of BPF objects and why | host | guest | [`lacks`] |
//! | SKIP reasons naming what the kernel lacks (`<seen>: this kernel lacks <feature>`) | guest | host | [`lacks`] |

pub mod bench;
pub mod cmdline;
pub mod ktap;
pub mod lacks;
pub mod port;
pub mod request;

use std::fmt;

/// A line or word that does not follow the contract.
#[derive(Debug)]
pub struct Error {
    message: String,
    source: Option<std::num::ParseIntError>,
}

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            source: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
