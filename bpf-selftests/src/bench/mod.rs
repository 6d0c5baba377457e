//! Benchmarks, run instead of the selftests when the kernel command line
//! says `rig.bench=NAME` (parameters: `rig.bench.<param>=VALUE`). They report
//! on the same KTAP stream, so the host judges a bench boot like a test
//! boot (console splats, crashes, timeouts): each part of a benchmark is a
//! KTAP test, and its figures are diagnostic lines of the form
//!
//! ```text
//! # bench: <kind> <key>=<value> <key>=<value> ...
//! ```
//!
//! with no spaces in keys or values, read back from ktap.log by `cargo
//! xtask bench <NAME>`. A part that cannot measure fails its test: the host
//! then reports no figures at all.

mod alloc;
pub mod kernel_bench;
mod maploop;

use anyhow::{bail, Result};

use crate::cmdline::Config;
use crate::ktap;
use crate::runner::Test;

/// The tests that make up benchmark `name`, its parameters checked first.
pub fn table(name: &str, cfg: &Config) -> Result<&'static [Test]> {
    match name {
        "alloc" => {
            alloc::Params::parse(&cfg.bench_params)?;
            Ok(alloc::TESTS)
        }
        "maploop" => {
            maploop::Params::parse(&cfg.bench_params)?;
            Ok(maploop::TESTS)
        }
        other => bail!("unknown benchmark rig.bench={other} (known: alloc, maploop)"),
    }
}

/// One `bench: <kind> k=v ...` line (rig_contract::bench).
pub fn line(kind: &str, fields: &[(&str, String)]) -> String {
    rig_contract::bench::line(kind, fields)
}

/// Writes one figures line as a diagnostic of the running test.
pub fn emit(kind: &str, fields: &[(&str, String)]) {
    ktap::diag(&line(kind, fields));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_line() {
        assert_eq!(
            line("prefill", &[("size", "32".into()), ("ns", "12".into())]),
            "bench: prefill size=32 ns=12"
        );
    }

    #[test]
    fn unknown_benchmark() {
        assert!(table("nope", &Config::default()).is_err());
        assert!(table("alloc", &Config::default()).is_ok());
        assert!(table("maploop", &Config::default()).is_ok());
        let cfg = Config {
            bench_params: vec![("sizes".into(), "32".into())],
            ..Config::default()
        };
        assert!(
            table("maploop", &cfg).is_err(),
            "alloc's words are not maploop's"
        );
    }
}
