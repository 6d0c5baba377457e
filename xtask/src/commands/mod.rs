//! One module per subcommand that runs the pipeline (the benchmarks are
//! bench/, the kernel suites suites/).

pub mod bisect;
pub mod checkpatch_exceptions;
pub mod mutants;
pub mod pin;
pub mod series_check;
pub mod setup;
pub mod test;
