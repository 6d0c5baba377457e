//! Stage `judge`: what the guest's KTAP stream and console say, and the
//! verdict drawn from them (pure functions; no I/O).

pub mod console;
pub mod ktap;
pub mod verdict;
