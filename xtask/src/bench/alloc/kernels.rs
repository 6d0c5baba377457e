//! The kernels `bench alloc` boots, each built (and imaged) by a pipeline
//! of its own under the bench's work-dir lock, and the guest command line
//! each boot gets:
//!
//! - `series`: the series kernel as `cargo xtask test` builds it (same build
//!   dir, same image), booted with `bpf_global_ma_debug=0`;
//! - `nodebug`: the same with kconfigs/gma-nodebug.config merged after the
//!   series' series.config (its own build dir): the debug mode compiled out;
//! - `baseline`: the unpatched tree (Pipeline::baseline: the worktree at
//!   `rig-baseline`, the same fragments, its own build dir).
//!
//! The extra kernels' images hold only the BPF objects the benchmarks load
//! (the series' own objects do not compile against the baseline).

use anyhow::{Context, Result};
use rig_contract::cmdline::Word;

use crate::commands::test::Built;
use crate::pipeline::Pipeline;
use crate::stages::image::{Image, Progs};
use crate::stages::kbuild::Kernel;
use crate::stages::kconfig::Config;

/// The fragment that compiles the debug mode out.
pub const NODEBUG_FRAGMENT: &str = "gma-nodebug";
/// What a bench image holds of bpf-selftests/progs/ (by file stem).
pub const BENCH_OBJECTS: &[&str] = &["bench_maploop"];
/// The series' switch for its debug mode; only the series kernel with the
/// mode compiled in knows it (elsewhere it would reach init as an unknown
/// parameter).
pub const DEBUG_OFF: &str = "bpf_global_ma_debug=0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Series,
    NoDebug,
    Baseline,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Series => "series",
            Role::NoDebug => "nodebug",
            Role::Baseline => "baseline",
        }
    }

    /// What the progress lines call it.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Series => "the series kernel (debug mode compiled in)",
            Role::NoDebug => "the series kernel with the debug mode compiled out (gma-nodebug)",
            Role::Baseline => "the unpatched baseline kernel (rig-baseline, same config)",
        }
    }
}

/// What a boot runs in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bench {
    /// `rig.bench=alloc` with its words (sizes, reps, loops, batch).
    Alloc(Vec<(String, String)>),
    /// `rig.bench=maploop` with its words (loops, reps).
    Maploop { loops: u64, reps: u32 },
}

/// The guest command-line words of one boot of `role` running `bench`.
pub fn words(role: Role, bench: &Bench) -> Vec<String> {
    let mut w = Vec::new();
    if role == Role::Series {
        // The series' test config builds the allocator's debug mode, whose
        // checks would be timed too (patches/global-ma 0018).
        w.push(DEBUG_OFF.to_string());
    }
    match bench {
        Bench::Alloc(params) => {
            w.push(Word::Bench("alloc".into()).word());
            w.extend(
                params
                    .iter()
                    .map(|(k, v)| Word::BenchParam(k.clone(), v.clone()).word()),
            );
        }
        Bench::Maploop { loops, reps } => {
            w.push(Word::Bench("maploop".into()).word());
            w.push(Word::BenchParam("loops".into(), loops.to_string()).word());
            w.push(Word::BenchParam("reps".into(), reps.to_string()).word());
        }
    }
    w
}

/// A kernel built and imaged, with the pipeline that built it (its name
/// and work dir label the boots' run dirs).
pub struct BenchKernel {
    pub role: Role,
    pub p: Pipeline,
    pub config: Config,
    pub kernel: Kernel,
    pub image: Image,
}

impl BenchKernel {
    pub fn built(&self) -> Built<'_> {
        Built {
            config: &self.config,
            kernel: &self.kernel,
            image: &self.image,
        }
    }
}

/// Builds `role`'s kernel and image (each stage skips itself when its
/// inputs are unchanged, as for any command).
pub fn build(p: &Pipeline, role: Role) -> Result<BenchKernel> {
    let (q, progs) = match role {
        Role::Series => (p.with_configs(&[])?, p.progs()),
        Role::NoDebug => {
            let mut q = p.with_configs(&[NODEBUG_FRAGMENT.to_string()])?;
            q.name = Some(format!("{}-nodebug", p.series_name()));
            (q, Progs::Only(BENCH_OBJECTS))
        }
        Role::Baseline => (p.baseline()?, Progs::Only(BENCH_OBJECTS)),
    };
    let (config, kernel, image) = q
        .imaged_with(progs)
        .with_context(|| format!("building {}", role.describe()))?;
    Ok(BenchKernel {
        role,
        p: q,
        config,
        kernel,
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_series_kernel_is_told_to_turn_its_debug_mode_off() {
        let m = Bench::Maploop {
            loops: 1000,
            reps: 3,
        };
        assert_eq!(
            words(Role::Series, &m),
            [
                "bpf_global_ma_debug=0",
                "rig.bench=maploop",
                "rig.bench.loops=1000",
                "rig.bench.reps=3"
            ]
        );
        assert_eq!(words(Role::Baseline, &m)[0], "rig.bench=maploop");
        let a = Bench::Alloc(vec![("sizes".into(), "32,256".into())]);
        assert_eq!(
            words(Role::NoDebug, &a),
            ["rig.bench=alloc", "rig.bench.sizes=32,256"]
        );
        assert_eq!(words(Role::Series, &a).len(), 3);
    }

    #[test]
    fn the_bench_objects_exist() {
        let progs = crate::context::repo_root().join("bpf-selftests/progs");
        for o in BENCH_OBJECTS {
            assert!(progs.join(format!("{o}.bpf.c")).is_file(), "{o}");
        }
        let frag = crate::context::repo_root().join(format!("kconfigs/{NODEBUG_FRAGMENT}.config"));
        assert!(frag.is_file());
    }
}
