//! Collecting expected-vs-got mismatches so a failing test reports all of
//! them (as KTAP diagnostics) rather than just the first.

use std::fmt::{Debug, Display};

use anyhow::{bail, Result};

use crate::ktap;

#[derive(Default)]
pub struct Checks {
    failures: usize,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records a failure unless `got == expected`.
    pub fn eq<T: PartialEq + Debug>(&mut self, what: impl Display, expected: T, got: T) -> bool {
        if got == expected {
            return true;
        }
        self.fail(format!("{what}: expected {expected:?}, got {got:?}"));
        false
    }

    /// Records (and prints) a failure.
    pub fn fail(&mut self, what: impl Display) {
        self.failures += 1;
        ktap::diag(&format!("FAIL: {what}"));
    }

    /// Err if any check failed.
    pub fn finish(self) -> Result<()> {
        if self.failures > 0 {
            bail!("{} check(s) failed", self.failures);
        }
        Ok(())
    }
}
