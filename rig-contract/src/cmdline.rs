//! The `rig.*` words the host puts on the guest kernel's command line, and
//! how the guest runner reads them back from `/proc/cmdline`.

use std::fmt;

use crate::Error;

/// Which selftests the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// The series' own selftests (the default).
    Selftests,
    /// The kernel's own BPF selftests the host installed.
    Kernel,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Selftests => "selftests",
            Suite::Kernel => "kernel",
        }
    }
}

/// How hard the fixed-duration stress tests run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Short stress durations, every check kept: the desk's default.
    Quick,
    /// The full durations: what judges the series' strength, and what the
    /// guest runs without a `rig.profile=` word.
    #[default]
    Full,
}

/// The longest a fixed-duration stress test runs in [`Profile::Quick`]
/// (the guest runs it, the host says it).
pub const QUICK_STRESS_MS: u64 = 500;

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

/// One `rig.*` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// `rig.cpus=N`: how many vCPUs the host asked for.
    Cpus(usize),
    /// `rig.filter=S`: run only tests whose name contains S.
    Filter(String),
    /// `rig.failfast`: stop at the first failing test.
    FailFast,
    /// `rig.suite=kernel|selftests`.
    Suite(Suite),
    /// `rig.profile=quick|full`: the stress tests' durations.
    Profile(Profile),
    /// `rig.fault=NAME`: run only the test-only fault NAME.
    Fault(String),
    /// `rig.bench=NAME`: run the benchmark NAME instead of the selftests.
    Bench(String),
    /// `rig.bench.<param>=VALUE`: a parameter of the benchmark.
    BenchParam(String, String),
    /// `rig.probe=1`: the accelerator probe's boot; images/init answers
    /// [`PROBE_OK`] on the console instead of running the selftests.
    Probe,
}

/// What images/init prints on the console for [`Word::Probe`].
pub const PROBE_OK: &str = "rig: probe ok";

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Word::Cpus(n) => write!(f, "rig.cpus={n}"),
            Word::Filter(s) => write!(f, "rig.filter={s}"),
            Word::FailFast => f.write_str("rig.failfast"),
            Word::Suite(s) => write!(f, "rig.suite={}", s.name()),
            Word::Profile(p) => write!(f, "rig.profile={}", p.name()),
            Word::Fault(s) => write!(f, "rig.fault={s}"),
            Word::Bench(s) => write!(f, "rig.bench={s}"),
            Word::BenchParam(k, v) => write!(f, "rig.bench.{k}={v}"),
            Word::Probe => f.write_str("rig.probe=1"),
        }
    }
}

impl Word {
    /// The word as it goes on the command line.
    pub fn word(&self) -> String {
        self.to_string()
    }
}

/// Everything the `rig.*` words of one command line ask for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Words {
    pub cpus: Option<usize>,
    /// None for an empty `rig.filter=`.
    pub filter: Option<String>,
    pub fail_fast: bool,
    /// None without a `rig.suite=` word.
    pub suite: Option<Suite>,
    /// None without a `rig.profile=` word (the runner then runs full).
    pub profile: Option<Profile>,
    pub fault: Option<String>,
    pub bench: Option<String>,
    /// In command line order.
    pub bench_params: Vec<(String, String)>,
}

/// Reads the `rig.*` words of a kernel command line; other words are not
/// the rig's and are ignored.
///
/// Accepted format: whitespace-separated words; `rig.cpus=<decimal>`,
/// `rig.filter=S`, `rig.failfast`, `rig.suite=kernel|selftests`,
/// `rig.profile=quick|full`, `rig.fault=NAME`, `rig.bench=NAME`, `rig.bench.<param>=VALUE`. An empty
/// filter, fault or bench value is the same as none; a later word wins.
pub fn parse(cmdline: &str) -> Result<Words, Error> {
    let mut w = Words::default();
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_string());
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("rig.cpus=") {
            let n = v.parse().map_err(|e| Error {
                message: format!("bad rig.cpus={v:?} on the kernel command line"),
                source: Some(e),
            })?;
            w.cpus = Some(n);
        } else if let Some(v) = word.strip_prefix("rig.filter=") {
            w.filter = nonempty(v);
        } else if let Some(v) = word.strip_prefix("rig.suite=") {
            w.suite = Some(match v {
                "kernel" => Suite::Kernel,
                "selftests" => Suite::Selftests,
                _ => {
                    return Err(Error::new(format!(
                        "bad rig.suite={v:?} on the kernel command line (want kernel or selftests)"
                    )))
                }
            });
        } else if let Some(v) = word.strip_prefix("rig.profile=") {
            w.profile = Some(match v {
                "quick" => Profile::Quick,
                "full" => Profile::Full,
                _ => {
                    return Err(Error::new(format!(
                        "bad rig.profile={v:?} on the kernel command line (want quick or full)"
                    )))
                }
            });
        } else if word == "rig.failfast" {
            w.fail_fast = true;
        } else if let Some(v) = word.strip_prefix("rig.fault=") {
            w.fault = nonempty(v);
        } else if let Some(v) = word.strip_prefix("rig.bench=") {
            w.bench = nonempty(v);
        } else if let Some(param) = word.strip_prefix("rig.bench.") {
            let (k, v) = param.split_once('=').ok_or_else(|| {
                Error::new(format!(
                    "bad {word:?} on the kernel command line (want rig.bench.<param>=VALUE)"
                ))
            })?;
            w.bench_params.push((k.to_string(), v.to_string()));
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let written = [
            Word::Cpus(4),
            Word::Filter("hash".into()),
            Word::FailFast,
            Word::Suite(Suite::Kernel),
            Word::Profile(Profile::Quick),
            Word::Fault("fault_hang".into()),
            Word::Bench("alloc".into()),
            Word::BenchParam("sizes".into(), "32,256".into()),
            Word::BenchParam("reps".into(), "5".into()),
        ];
        let line = written.iter().map(Word::word).collect::<Vec<_>>().join(" ");
        assert_eq!(
            line,
            "rig.cpus=4 rig.filter=hash rig.failfast rig.suite=kernel rig.profile=quick \
             rig.fault=fault_hang \
             rig.bench=alloc rig.bench.sizes=32,256 rig.bench.reps=5"
        );
        let w = parse(&format!("console=ttyS0 panic=-1 {line}\n")).unwrap();
        assert_eq!(
            w,
            Words {
                cpus: Some(4),
                filter: Some("hash".into()),
                fail_fast: true,
                suite: Some(Suite::Kernel),
                profile: Some(Profile::Quick),
                fault: Some("fault_hang".into()),
                bench: Some("alloc".into()),
                bench_params: vec![
                    ("sizes".into(), "32,256".into()),
                    ("reps".into(), "5".into())
                ],
            }
        );
        let w = parse(&Word::Suite(Suite::Selftests).word()).unwrap();
        assert_eq!(w.suite, Some(Suite::Selftests));
        let w = parse(&Word::Profile(Profile::Full).word()).unwrap();
        assert_eq!(w.profile, Some(Profile::Full));
    }

    /// The probe is answered by the init script, not by Rust: check that
    /// the script reads the word and prints the answer this crate names.
    #[test]
    fn the_init_script_answers_the_probe() {
        let init = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../images/init"))
            .expect("images/init");
        assert!(
            init.contains(&format!("*\" {} \"*)", Word::Probe.word())),
            "{init}"
        );
        assert!(init.contains(&format!("echo \"{PROBE_OK}\"")), "{init}");
    }

    #[test]
    fn rejects_and_defaults() {
        assert_eq!(parse("console=ttyS0").unwrap(), Words::default());
        let e = parse("rig.cpus=four").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad rig.cpus=\"four\" on the kernel command line"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(parse("rig.suite=bogus").is_err());
        assert!(parse("rig.profile=slow").is_err());
        assert_eq!(parse("rig.failfast").unwrap().profile, None);
        assert!(parse("rig.bench.reps").is_err());
        assert_eq!(
            parse("rig.bench= rig.filter= rig.fault=").unwrap(),
            Words::default()
        );
    }
}
