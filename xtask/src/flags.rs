//! Command-line flags for every subcommand, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rig_contract::cmdline::Profile;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and test the BPF allocator series"
)]
pub struct Xtask {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run every stage: tree, apply, config, build, image, boot, judge, report.
    Test(TestFlags),
    /// Fetch and import the pinned kernel tree (or check --tree).
    Tree(Common),
    /// Apply the patch series onto the baseline.
    Apply(Common),
    /// Merge the kconfig fragments and verify every requested option.
    Config(Common),
    /// Build the kernel QEMU boots: vmlinux (PVH), or bzImage for KASAN.
    Build(Common),
    /// Build the initramfs: busybox, guest runner, BPF objects.
    Image(Common),
    /// Boot the kernel and run the selftests; print the verdict (no snapshot).
    Boot(BootFlags),
    /// Every patch of the series in turn: checkpatch --strict, build, and with
    /// --boot the selftests that exist at that point.
    CheckSeries(CheckSeriesFlags),
    /// Find the first bad patch of the series (or commit, with --tree) for a
    /// failing selftest or a console splat.
    Bisect(BisectFlags),
    /// Benchmarks that print figures side by side in one run.
    Bench(BenchFlags),
    /// Break one claim of the series at a time (patches/<series>/mutants.yaml),
    /// rebuild, boot with fail-fast selftests: every mutant must be killed.
    Mutants(MutantsFlags),
    /// Move kernel.lock to another version of the package: download it, record
    /// its sha256, import it and re-apply the series (exit 1 if a patch no
    /// longer applies; kernel.lock is then restored unless --keep-on-conflict).
    Pin(PinFlags),
    /// Install what the rig and its tests need (every command does this first):
    /// .ci/debian-packages with apt-get when root, actionlint under target/tools.
    Setup,
    /// One `git bisect run` step (used by bisect): 0 good, 1 bad, 125 skip.
    #[command(hide = true)]
    BisectStep(BootFlags),
}

#[derive(Args, Debug, Clone)]
pub struct PinFlags {
    /// The version to pin, as `apt-cache madison <package>` lists it (e.g. 6.1.192-2).
    pub version: String,
    /// Leave kernel.lock at the new version even when the series does not
    /// apply there (by default the old kernel.lock is restored).
    #[arg(long)]
    pub keep_on_conflict: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct CheckSeriesFlags {
    #[command(flatten)]
    pub boot_flags: BootFlags,
    /// Also boot each patch and run the selftests.
    #[arg(long)]
    pub boot: bool,
}

#[derive(Args, Debug, Clone)]
#[command(mut_arg("filter", |a| a
    .help("Run only the mutants whose name, patch number or file contains this")))]
pub struct MutantsFlags {
    #[command(flatten)]
    pub boot: BootFlags,
    /// Print the mutants (name, patch, claim) and exit.
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchFlags {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand, Debug, Clone)]
pub enum BenchWhat {
    /// The rig's loop against virtme-ng and plain make, on the same kernel.
    Rig(BenchRigFlags),
    /// ns per alloc+free of the global allocator against kmalloc and a
    /// per-map bpf_mem_alloc, in NMI, and the prefill syscall: one guest boot.
    Alloc(BenchAllocFlags),
}

#[derive(Args, Debug, Clone)]
pub struct BenchAllocFlags {
    #[command(flatten)]
    pub boot: BootFlags,
    /// Repetitions of each measurement (min and median are printed).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Object sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    pub sizes: Vec<u32>,
    /// Allocations (each followed by its free) per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub loops: u64,
    /// Allocations per NMI in the NMI measurement, and the objects reserved
    /// for them with a BPF_MAP_TYPE_GLOBAL_MA_RESERVE map.
    #[arg(long, default_value_t = 1_000)]
    pub batch: u32,
    /// Leave out the unpatched baseline kernel, and with it the map loop
    /// (series vs baseline).
    #[arg(long)]
    pub no_baseline: bool,
    /// Leave out the series kernel with the debug mode compiled out
    /// (kconfigs/gma-nodebug.config).
    #[arg(long)]
    pub no_nodebug: bool,
    /// Map loop: pairs of boots, baseline then series, interleaved.
    #[arg(long, default_value_t = 3)]
    pub maploop_boots: u32,
    /// Map loop: timed runs in each boot, after one untimed warm-up run
    /// (the boot's figure is their min).
    #[arg(long, default_value_t = 5)]
    pub maploop_runs: u32,
    /// Map loop: hash map update+delete pairs per run (at most 2^23,
    /// bpf_loop's limit; one run holds its CPU with preemption off, so keep
    /// it well under the 21 s RCU stall limit under TCG).
    #[arg(long, default_value_t = 1_000_000)]
    pub maploop_loops: u64,
    /// Leave out the instruction counts: the boots again under TCG with
    /// `-icount shift=0` on one vCPU, where the guest clock counts executed
    /// instructions (only under TCG; with KVM they are left out).
    #[arg(long)]
    pub no_icount: bool,
    /// Instruction counts: alloc+free pairs per measurement of the
    /// allocator bench (2 runs after a warm-up).
    #[arg(long, default_value_t = 100_000)]
    pub icount_loops: u64,
    /// Instruction counts: map loop update+delete pairs per run (one boot
    /// per kernel, 2 runs after a warm-up).
    #[arg(long, default_value_t = 100_000)]
    pub icount_maploop_loops: u64,
}

#[derive(Args, Debug, Clone)]
pub struct BenchRigFlags {
    #[command(flatten)]
    pub boot: BootFlags,
    /// Repetitions of each measurement (min and median are printed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also measure the cold run (empty build dir and ccache) against a cold
    /// `make bzImage`: two full kernel builds.
    #[arg(long)]
    pub cold: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BisectFlags {
    #[command(flatten)]
    pub boot: BootFlags,
    /// Known good revision (with --tree; default for the series: the baseline).
    #[arg(long)]
    pub good: Option<String>,
    /// Known bad revision (with --tree: default HEAD; for the series: its last patch).
    #[arg(long)]
    pub bad: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Patch series to apply: a name under patches/, or a path to a series dir.
    #[arg(long, default_value = "global-ma")]
    pub series: String,
    /// Use this kernel git checkout as it is, instead of the pinned tree + series
    /// (the series' series.config is merged when the tree defines the options the
    /// series adds; without them the series' tests skip naming what the kernel lacks).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Extra kconfig fragment: a name in kconfigs/ or a path to a .config file
    /// (repeatable; base is always applied).
    #[arg(long = "config", value_name = "NAME")]
    pub configs: Vec<String>,
    /// Where stages keep their artefacts.
    #[arg(long, env = "RIG_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Parallel kbuild jobs (default: number of cores + 1).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Which tests the guest runs: the series' selftests (bpf-selftests/), or
    /// the kernel's own test_verifier, test_maps and test_progs, built from
    /// the tree under test with kconfigs/kernel-suites.config added.
    #[arg(long, value_enum, default_value_t = Suite::Selftests)]
    pub suite: Suite,
    /// Merge the series' own series.config into a `--tree` build too, after
    /// base (the unpatched baseline of `bench alloc`, which must have the
    /// series kernel's config; the options that tree does not define are
    /// only reported, see Pipeline::baseline).
    #[arg(skip)]
    pub series_config: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Selftests,
    Kernel,
}

#[derive(Args, Debug, Clone)]
pub struct BootFlags {
    #[command(flatten)]
    pub common: Common,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 4)]
    pub cpus: u32,
    /// Guest memory (QEMU -m syntax) [default: 1G; 4G with --suite kernel,
    /// whose test_maps fills hash maps of 32768 4 KiB keys].
    #[arg(long)]
    pub memory: Option<String>,
    /// Accelerator: auto probes KVM once per machine and falls back to TCG.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Seconds from QEMU start to the first KTAP line.
    #[arg(long, default_value_t = 120)]
    pub boot_timeout: u64,
    /// Seconds one selftest may run [default: 300; 900 with --suite kernel,
    /// whose test_maps alone runs for about 290 s under TCG at 4G].
    #[arg(long)]
    pub test_timeout: Option<u64>,
    /// Seconds with neither console nor KTAP output before the guest is
    /// declared hung [default: 60; 600 with --suite kernel, whose test_maps
    /// forks 100 tasks that kept the runner's 20 s heartbeat from running
    /// for over 60 s under TCG (BPF CI's watchdog is 600 s too)].
    #[arg(long)]
    pub silence_timeout: Option<u64>,
    /// Run only the selftests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Extra words for the guest kernel command line (repeatable).
    #[arg(long = "append", value_name = "WORD")]
    pub append: Vec<String>,
    /// The stress tests' durations: full for every command that judges the
    /// series' strength; only `test` without --full runs quick.
    #[arg(skip)]
    pub profile: Profile,
    /// `test --fail-fast`: the guest stops at the first failing test and the
    /// host prints that failure as soon as it arrives.
    #[arg(skip)]
    pub fail_fast: bool,
    /// Boot under TCG with `-icount shift=0` on one vCPU (`bench alloc`'s
    /// instruction counts); a boot that would run under KVM fails.
    #[arg(skip)]
    pub icount: bool,
}

impl BootFlags {
    /// `--test-timeout`, or the default for the suite.
    pub fn test_timeout(&self) -> u64 {
        self.test_timeout.unwrap_or(match self.common.suite {
            Suite::Selftests => 300,
            Suite::Kernel => 900,
        })
    }

    /// `--silence-timeout`, or the default for the suite.
    pub fn silence_timeout(&self) -> u64 {
        self.silence_timeout.unwrap_or(match self.common.suite {
            Suite::Selftests => 60,
            Suite::Kernel => 600,
        })
    }

    /// The boot's timeouts, from the flags.
    pub fn limits(&self) -> crate::vm::Limits {
        crate::vm::Limits {
            boot: std::time::Duration::from_secs(self.boot_timeout),
            test: std::time::Duration::from_secs(self.test_timeout()),
            silence: std::time::Duration::from_secs(self.silence_timeout()),
        }
    }

    /// `--memory`, or the default for the suite.
    pub fn memory(&self) -> String {
        self.memory.clone().unwrap_or_else(|| {
            match self.common.suite {
                Suite::Selftests => "1G",
                Suite::Kernel => "4G",
            }
            .to_string()
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct TestFlags {
    #[command(flatten)]
    pub boot: BootFlags,
    /// Accept the new results as the committed snapshot.
    #[arg(long)]
    pub accept: bool,
    /// With --suite kernel: run the suites on the unpatched baseline too, with
    /// the same config, and compare (regressions fail the run).
    #[arg(long)]
    pub baseline: bool,
    /// With --suite kernel: what the guest runs (default
    /// images/kernel-suites.plan; images/kernel-suites-full.plan runs all).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Run the stress tests for their full durations (the default at the
    /// desk is a quick profile: 0.5 s each, every check kept).
    #[arg(long)]
    pub full: bool,
    /// Stop at the first failing selftest and print it as soon as it is
    /// known; the rest are reported as not run (the run fails).
    #[arg(long, conflicts_with = "accept")]
    pub fail_fast: bool,
}

impl TestFlags {
    /// The boot flags with the profile and fail-fast this command asked for.
    pub fn boot_flags(&self) -> BootFlags {
        BootFlags {
            profile: if self.full {
                Profile::Full
            } else {
                Profile::Quick
            },
            fail_fast: self.fail_fast,
            ..self.boot.clone()
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        let mut argv = vec!["cargo xtask"];
        argv.extend(args);
        Xtask::try_parse_from(argv).expect("parses").cmd
    }

    fn test_boot(args: &[&str]) -> BootFlags {
        let mut argv = vec!["test"];
        argv.extend(args);
        match parse(&argv) {
            Cmd::Test(t) => t.boot_flags(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kernel_suites_give_a_test_longer() {
        assert_eq!(test_boot(&[]).test_timeout(), 300);
        assert_eq!(test_boot(&["--suite", "kernel"]).test_timeout(), 900);
        let b = test_boot(&["--suite", "kernel", "--test-timeout", "400"]);
        assert_eq!(b.test_timeout(), 400);
    }

    #[test]
    fn kernel_suites_wait_longer_for_a_silent_guest() {
        assert_eq!(test_boot(&[]).silence_timeout(), 60);
        assert_eq!(test_boot(&["--suite", "kernel"]).silence_timeout(), 600);
        let b = test_boot(&["--suite", "kernel", "--silence-timeout", "90"]);
        assert_eq!(b.silence_timeout(), 90);
    }

    #[test]
    fn test_runs_quick_unless_full() {
        let b = test_boot(&[]);
        assert_eq!((b.profile, b.fail_fast), (Profile::Quick, false));
        assert_eq!(test_boot(&["--full"]).profile, Profile::Full);
        let b = test_boot(&["--fail-fast"]);
        assert_eq!((b.profile, b.fail_fast), (Profile::Quick, true));
        let b = test_boot(&["--full", "--fail-fast"]);
        assert_eq!((b.profile, b.fail_fast), (Profile::Full, true));
    }

    #[test]
    fn pin_takes_a_version_and_keeps_only_on_request() {
        match parse(&["pin", "6.1.192-2"]) {
            Cmd::Pin(p) => assert_eq!(
                (p.version.as_str(), p.keep_on_conflict),
                ("6.1.192-2", false)
            ),
            other => panic!("{other:?}"),
        }
        match parse(&["pin", "--keep-on-conflict", "6.1.176-1"]) {
            Cmd::Pin(p) => assert_eq!(
                (p.version.as_str(), p.keep_on_conflict),
                ("6.1.176-1", true)
            ),
            other => panic!("{other:?}"),
        }
        assert!(Xtask::try_parse_from(["cargo xtask", "pin"]).is_err());
    }

    #[test]
    fn fail_fast_does_not_accept_a_snapshot() {
        let argv = ["cargo xtask", "test", "--fail-fast", "--accept"];
        assert!(Xtask::try_parse_from(argv).is_err());
    }

    /// What judges the series' strength runs the full durations.
    #[test]
    fn the_series_judges_run_full() {
        let boot = |cmd: Cmd| match cmd {
            Cmd::Mutants(m) => m.boot,
            Cmd::CheckSeries(c) => c.boot_flags,
            Cmd::Bisect(b) => b.boot,
            Cmd::BisectStep(b) | Cmd::Boot(b) => b,
            other => panic!("{other:?}"),
        };
        for argv in [
            &["mutants"][..],
            &["check-series", "--boot"],
            &["bisect"],
            &["bisect-step"],
            &["boot"],
        ] {
            let b = boot(parse(argv));
            assert_eq!((b.profile, b.fail_fast), (Profile::Full, false), "{argv:?}");
        }
        assert!(Xtask::try_parse_from(["cargo xtask", "mutants", "--full"]).is_err());
    }
}
