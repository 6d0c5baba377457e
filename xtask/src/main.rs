//! `cargo xtask`: the rig's orchestrator. This file only dispatches; the
//! rig itself is the `xtask` library (lib.rs).

use clap::Parser;
use xtask::bench;
use xtask::commands::{bisect, mutants, pin, series_check, setup, test};
use xtask::{context, flags, sys::signals};

fn main() -> anyhow::Result<()> {
    let args = flags::Xtask::parse();
    signals::install().map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    let outcome = match args.cmd {
        flags::Cmd::Test(f) => test::run(f),
        flags::Cmd::Tree(c) => test::stage_tree(c),
        flags::Cmd::Apply(c) => test::stage_apply(c),
        flags::Cmd::Config(c) => test::stage_config(c),
        flags::Cmd::Build(c) => test::stage_build(c),
        flags::Cmd::Image(c) => test::stage_image(c),
        flags::Cmd::Boot(f) => test::stage_boot(f),
        flags::Cmd::CheckSeries(f) => series_check::run(f),
        flags::Cmd::Bisect(f) => bisect::run(f),
        flags::Cmd::Bench(f) => match f.what {
            flags::BenchWhat::Rig(r) => bench::rig(r),
            flags::BenchWhat::Alloc(a) => bench::alloc(a),
        },
        flags::Cmd::Mutants(f) => mutants::run(f),
        flags::Cmd::Pin(f) => pin::run(f),
        flags::Cmd::Setup => setup::ensure(&context::repo_root()).map(|()| 0),
        flags::Cmd::BisectStep(f) => bisect::step(f),
    };
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
