//! Helpers for running things on the host: process groups, signals, the
//! work-dir lock, progress lines and shell quoting.

pub mod lock;
pub mod pgroup;
pub mod progress;
pub mod shell;
pub mod signals;
