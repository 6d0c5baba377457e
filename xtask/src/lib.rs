//! The rig's orchestrator as a library; main.rs only dispatches to it.
//!
//! The folders follow the pipeline of `cargo xtask test`:
//!
//! | folder | what |
//! |---|---|
//! | [`stages`] | tree, apply, config, build, image: one module per stage, each writing one artefact |
//! | [`vm`] | boot: QEMU's arguments, the accelerator, the live run, QMP |
//! | [`judge`] | the KTAP parser, the console's splat scanner, the verdict |
//! | [`report`] | the run dir, results.yaml, junit.xml, the table, the snapshot |
//! | [`commands`] | one module per subcommand that runs the pipeline (test and the stage subcommands, check-series, bisect, mutants, pin, setup) |
//! | [`suites`] | `--suite kernel`: the kernel's own BPF selftests, built, booted and compared |
//! | [`bench`] | `cargo xtask bench`: measurements of the rig and the allocator, apart from the pipeline |
//! | [`sys`] | process groups, signals, the work-dir lock, progress lines, shell quoting |
//!
//! [`flags`] holds every flag, [`context`] the repository and work dir,
//! [`pipeline`] chains the stages. The lines the guest and the host exchange
//! are the `rig_contract` crate's.

pub mod bench;
pub mod commands;
pub mod context;
pub mod flags;
pub mod judge;
pub mod pipeline;
pub mod report;
pub mod stages;
pub mod suites;
pub mod sys;
pub mod vm;

#[cfg(test)]
mod tidy;
