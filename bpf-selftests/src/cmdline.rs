//! Runner configuration from the kernel command line (the `rig.*` words,
//! parsed by rig_contract::cmdline) and argv.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rig_contract::cmdline::{self, Profile, Suite};

/// Where the host installs the compiled BPF objects in the guest.
pub const DEFAULT_BPF_DIR: &str = "/lib/bpf-selftests";
/// The longest a fixed-duration stress test runs in the quick profile.
pub const QUICK_STRESS: Duration = Duration::from_millis(cmdline::QUICK_STRESS_MS);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    /// `rig.cpus=N`: how many vCPUs the host asked for.
    pub cpus: Option<usize>,
    /// `rig.filter=S` / `--filter S`: run only tests whose name contains S.
    pub filter: Option<String>,
    /// `rig.failfast` / `--fail-fast`: stop at the first failing test (the
    /// host reports the rest as not run).
    pub fail_fast: bool,
    /// `--ktap PATH`: write KTAP here instead of the virtio port.
    pub ktap: Option<PathBuf>,
    /// `--bpf-dir DIR`: where `<name>.bpf.o` files live.
    pub bpf_dir: PathBuf,
    /// `--list`: print the test names and exit.
    pub list: bool,
    /// `--libbpf-debug`: libbpf's debug log to stderr.
    pub libbpf_debug: bool,
    /// `rig.fault=NAME`: run only the test-only fault NAME (see tests/faults.rs).
    pub fault: Option<String>,
    /// `rig.bench=NAME`: run the benchmark NAME instead of the selftests
    /// (see bench/mod.rs), tuned by `rig.bench.<param>=VALUE` words.
    pub bench: Option<String>,
    /// `rig.bench.<param>=VALUE` words, in command line order.
    pub bench_params: Vec<(String, String)>,
    /// `rig.suite=kernel`: run the kernel's own BPF selftests that the host
    /// installed (see kernel_suites/mod.rs) instead of ours.
    pub kernel_suites: bool,
    /// `rig.profile=quick|full`: the stress tests' durations; full without
    /// the word, so that an older host or a bare boot gets full strength.
    pub profile: Profile,
}

pub const USAGE: &str =
    "usage: bpf-selftests [--ktap PATH] [--bpf-dir DIR] [--filter SUBSTR] [--fail-fast] [--list] [--libbpf-debug]
Reads rig.cpus=N, rig.filter=SUBSTR, rig.failfast, rig.suite=kernel|selftests, rig.profile=quick|full and rig.bench=NAME (with rig.bench.<param>=VALUE)
from /proc/cmdline; --filter overrides rig.filter.";

impl Config {
    /// /proc/cmdline (if readable) overlaid with command line arguments.
    pub fn load() -> Result<Config> {
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let mut cfg = Config::from_cmdline(&cmdline)?;
        cfg.apply_args(std::env::args().skip(1))?;
        Ok(cfg)
    }

    /// The runner's configuration from the `rig.*` words (see
    /// rig_contract::cmdline), before any argv.
    pub fn from_cmdline(cmdline: &str) -> Result<Config> {
        let words = cmdline::parse(cmdline)?;
        Ok(Config {
            cpus: words.cpus,
            filter: words.filter,
            fail_fast: words.fail_fast,
            bpf_dir: PathBuf::from(DEFAULT_BPF_DIR),
            fault: words.fault,
            bench: words.bench,
            bench_params: words.bench_params,
            kernel_suites: words.suite == Some(Suite::Kernel),
            profile: words.profile.unwrap_or(Profile::Full),
            ..Config::default()
        })
    }

    pub fn apply_args(&mut self, args: impl IntoIterator<Item = String>) -> Result<()> {
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--ktap" => self.ktap = Some(PathBuf::from(value("--ktap")?)),
                "--bpf-dir" => self.bpf_dir = PathBuf::from(value("--bpf-dir")?),
                "--filter" => self.filter = Some(value("--filter")?),
                "--list" => self.list = true,
                "--fail-fast" => self.fail_fast = true,
                "--libbpf-debug" => self.libbpf_debug = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(())
    }

    /// How long a stress test whose full duration is `full` runs.
    pub fn stress_duration(&self, full: Duration) -> Duration {
        match self.profile {
            Profile::Full => full,
            Profile::Quick => full.min(QUICK_STRESS),
        }
    }

    pub fn selects(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rig_params() {
        let c =
            Config::from_cmdline("console=ttyS0 panic=-1 rig.cpus=4 rig.filter=hash\n").unwrap();
        assert_eq!(c.cpus, Some(4));
        assert_eq!(c.filter.as_deref(), Some("hash"));
        assert!(c.selects("hash_no_prealloc_all_cpus"));
        assert!(!c.fail_fast);
        assert!(Config::from_cmdline("rig.failfast").unwrap().fail_fast);
        assert!(
            Config::from_cmdline("rig.suite=kernel")
                .unwrap()
                .kernel_suites
        );
        assert!(!c.kernel_suites);
        assert!(Config::from_cmdline("rig.suite=bogus").is_err());
        assert!(!c.selects("cpus_online"));
        assert_eq!(c.bpf_dir, PathBuf::from(DEFAULT_BPF_DIR));
    }

    #[test]
    fn no_params() {
        let c = Config::from_cmdline("console=ttyS0").unwrap();
        assert_eq!(c.cpus, None);
        assert!(c.selects("anything"));
        assert!(Config::from_cmdline("rig.cpus=four").is_err());
    }

    #[test]
    fn profile_defaults_to_full() {
        let full = Duration::from_secs(3);
        let c = Config::from_cmdline("console=ttyS0").unwrap();
        assert_eq!(c.profile, Profile::Full);
        assert_eq!(c.stress_duration(full), full);
        let c = Config::from_cmdline("rig.profile=quick").unwrap();
        assert_eq!(c.profile, Profile::Quick);
        assert_eq!(c.stress_duration(full), QUICK_STRESS);
        assert_eq!(
            c.stress_duration(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        assert_eq!(
            Config::from_cmdline("rig.profile=full").unwrap().profile,
            Profile::Full
        );
        assert!(Config::from_cmdline("rig.profile=bogus").is_err());
    }

    #[test]
    fn bench_words() {
        let c = Config::from_cmdline(
            "rig.cpus=2 rig.bench=alloc rig.bench.reps=5 rig.bench.sizes=32,256",
        )
        .unwrap();
        assert_eq!(c.bench.as_deref(), Some("alloc"));
        assert_eq!(
            c.bench_params,
            vec![
                ("reps".to_string(), "5".to_string()),
                ("sizes".to_string(), "32,256".to_string())
            ]
        );
        assert!(Config::from_cmdline("rig.bench.reps").is_err());
        assert_eq!(Config::from_cmdline("rig.bench=").unwrap().bench, None);
    }

    #[test]
    fn args_override() {
        let mut c = Config::from_cmdline("rig.filter=a").unwrap();
        c.apply_args(["--filter", "b", "--ktap", "/tmp/k"].map(String::from))
            .unwrap();
        assert_eq!(c.filter.as_deref(), Some("b"));
        assert_eq!(c.ktap, Some(PathBuf::from("/tmp/k")));
        assert!(c.apply_args(["--bogus".to_string()]).is_err());
    }
}
