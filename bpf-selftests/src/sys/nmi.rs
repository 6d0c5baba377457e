//! The kernel's NMI source for tests (`CONFIG_BPF_GLOBAL_MA_TEST_NMI`,
//! patches/global-ma 0014): `/sys/kernel/debug/bpf_global_ma_test/nmi`.
//! Writing `<cpulist> <count>` sends `count` rounds of one NMI to every
//! listed CPU and returns when all were handled; reading it gives
//! `cpu<N> ipi <handled> external <claimed>` per possible CPU.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const NMI_PATH: &str = "/sys/kernel/debug/bpf_global_ma_test/nmi";

/// Whether this kernel has the NMI source.
pub fn available() -> bool {
    Path::new(NMI_PATH).exists()
}

/// `0,2,3` for the kernel's cpulist parser.
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends `rounds` rounds of one NMI to each of `cpus`; returns how long the
/// kernel took to send and handle them all.
pub fn send(cpus: &[usize], rounds: u64) -> Result<Duration> {
    if cpus.is_empty() {
        bail!("no CPU to send NMIs to");
    }
    let request = format!("{} {rounds}", cpu_list(cpus));
    let start = Instant::now();
    fs::write(NMI_PATH, &request).with_context(|| format!("writing {request:?} to {NMI_PATH}"))?;
    Ok(start.elapsed())
}

/// NMIs handled per CPU, by source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub ipi: u64,
    pub external: u64,
}

pub fn parse(text: &str) -> Result<BTreeMap<usize, Handled>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (Some(cpu), ["ipi", ipi, "external", ext]) = (
            w.first().and_then(|l| l.strip_prefix("cpu")),
            w.get(1..).unwrap_or_default(),
        ) else {
            bail!("unexpected line {line:?} (want `cpu<N> ipi <n> external <n>`)");
        };
        let num = |v: &str| -> Result<u64> {
            v.parse()
                .with_context(|| format!("{v:?} in line {line:?} is not a number"))
        };
        let cpu: usize = cpu
            .parse()
            .with_context(|| format!("bad CPU in line {line:?}"))?;
        out.insert(
            cpu,
            Handled {
                ipi: num(ipi)?,
                external: num(ext)?,
            },
        );
    }
    if out.is_empty() {
        bail!("no CPU lines");
    }
    Ok(out)
}

pub fn read() -> Result<BTreeMap<usize, Handled>> {
    let text = fs::read_to_string(NMI_PATH).with_context(|| format!("reading {NMI_PATH}"))?;
    parse(&text).with_context(|| format!("parsing {NMI_PATH}:\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let h = parse("cpu0 ipi 12 external 0\ncpu1 ipi 3 external 1\n").unwrap();
        assert_eq!(h[&0].ipi, 12);
        assert_eq!(h[&1].external, 1);
        assert!(parse("").is_err());
        assert!(parse("cpu0 ipi x external 0\n").is_err());
        assert!(parse("cpu0 ipi 1\n").is_err());
        assert_eq!(cpu_list(&[0, 2, 3]), "0,2,3");
    }
}
