//! The kernel's allocator benchmark (`CONFIG_BPF_GLOBAL_MA_TEST_NMI`,
//! patches/global-ma 0015): `/sys/kernel/debug/bpf_global_ma_test/bench`.
//! Writing `<mode> <size> <loops>` (or `nmi <size> <loops> <batch>`) runs
//! the benchmark on the writer's CPU and returns when done; reading gives
//! the last result:
//!
//! ```text
//! mode <m> size <s> loops <l> batch <b> ns <total ns> fails <failed allocations>
//! ```

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::sys::cpu;
use crate::sys::stats::{self, Stats};

pub const BENCH_PATH: &str = "/sys/kernel/debug/bpf_global_ma_test/bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// bpf_global_ma_alloc + free.
    Global,
    /// The same with BPF stats enabled, so that the allocator counts each
    /// alloc and free (patches/global-ma 0004); the counts are checked.
    GlobalCounted,
    /// kmalloc(GFP_KERNEL) + kfree.
    Kmalloc,
    /// A bpf_mem_alloc of that size made for the run (6.1's per-map cache).
    Cache,
    /// bpf_global_ma in NMIs sent to the current CPU, `batch` per NMI.
    Nmi,
    /// bpf_global_ma without the debug mode's checks, even with it on
    /// (patches/global-ma 0020): what bpf_global_ma_debug=0 runs.
    Unchecked,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Global => "global",
            Mode::GlobalCounted => "global_counted",
            Mode::Kmalloc => "kmalloc",
            Mode::Cache => "cache",
            Mode::Nmi => "nmi",
            Mode::Unchecked => "unchecked",
        }
    }

    /// The mode as the kernel's bench file knows it.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Mode::GlobalCounted => Mode::Global.name(),
            m => m.name(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub mode: Mode,
    pub size: u32,
    pub loops: u64,
    /// Allocations per NMI (mode nmi only; the kernel reports 0 otherwise).
    pub batch: u32,
}

impl Request {
    pub fn text(&self) -> String {
        match self.mode {
            Mode::Nmi => format!("nmi {} {} {}", self.size, self.loops, self.batch),
            m => format!("{} {} {}", m.kernel_name(), self.size, self.loops),
        }
    }
}

/// One result line of the bench file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    pub mode: String,
    pub size: u32,
    pub loops: u64,
    pub batch: u32,
    /// Total over all loops (alloc + free pairs only).
    pub ns: u64,
    pub fails: u64,
}

pub fn parse(text: &str) -> Result<Measured> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let ["mode", mode, "size", size, "loops", loops, "batch", batch, "ns", ns, "fails", fails] =
        w[..]
    else {
        bail!(
            "unexpected bench result {text:?} \
             (want `mode <m> size <s> loops <l> batch <b> ns <ns> fails <n>`)"
        );
    };
    let num = |what: &str, v: &str| -> Result<u64> {
        v.parse()
            .with_context(|| format!("{what} {v:?} in bench result {text:?} is not a number"))
    };
    Ok(Measured {
        mode: mode.to_string(),
        size: u32::try_from(num("size", size)?).context("size out of range")?,
        loops: num("loops", loops)?,
        batch: u32::try_from(num("batch", batch)?).context("batch out of range")?,
        ns: num("ns", ns)?,
        fails: num("fails", fails)?,
    })
}

/// Runs `req` on the calling thread's CPU (pin it first) and returns the
/// kernel's result, checked to be this request's and not an older one.
pub fn run(req: &Request) -> Result<Measured> {
    if !Path::new(BENCH_PATH).exists() {
        bail!(
            "{BENCH_PATH} does not exist: this kernel has no allocator benchmark \
             (CONFIG_BPF_GLOBAL_MA_TEST_NMI with patches/global-ma 0015)"
        );
    }
    if req.mode == Mode::GlobalCounted {
        return run_counted(req);
    }
    let text = req.text();
    fs::write(BENCH_PATH, &text).with_context(|| format!("writing {text:?} to {BENCH_PATH}"))?;
    let out = fs::read_to_string(BENCH_PATH).with_context(|| format!("reading {BENCH_PATH}"))?;
    let mut m = parse(out.trim()).with_context(|| format!("after writing {text:?}"))?;
    let batch = if req.mode == Mode::Nmi { req.batch } else { 0 };
    if m.mode != req.mode.kernel_name()
        || m.size != req.size
        || m.loops != req.loops
        || m.batch != batch
    {
        bail!(
            "wrote {text:?} to {BENCH_PATH} but it reports {:?}",
            out.trim()
        );
    }
    m.mode = req.mode.name().to_string();
    Ok(m)
}

/// `global` with BPF stats enabled for the run only. The calling thread's
/// CPU must then have counted exactly one alloc and one free per loop:
/// a counter that is cheap because it is wrong would not be a figure.
fn run_counted(req: &Request) -> Result<Measured> {
    let cpu = cpu::current_cpu()?;
    let plain = Request {
        mode: Mode::Global,
        ..*req
    };
    stats::set_counting(true)?;
    let before = Stats::read();
    let m = before.and_then(|before| {
        let m = run(&plain)?;
        let d = Stats::read()?.cpu(cpu).since(&before.cpu(cpu));
        Ok((m, d))
    });
    stats::set_counting(false)?;
    let (mut m, d) = m?;
    let loops = i64::try_from(req.loops).context("loops out of range")?;
    if (d.alloc, d.free) != (loops, loops) {
        bail!(
            "with BPF stats on, cpu{cpu} counted alloc +{} free +{} for {} alloc+free pairs",
            d.alloc,
            d.free,
            req.loops
        );
    }
    m.mode = req.mode.name().to_string();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_text() {
        let r = Request {
            mode: Mode::Cache,
            size: 32,
            loops: 1000,
            batch: 0,
        };
        assert_eq!(r.text(), "cache 32 1000");
        let r = Request {
            mode: Mode::Nmi,
            batch: 100,
            ..r
        };
        assert_eq!(r.text(), "nmi 32 1000 100");
    }

    #[test]
    fn result_line() {
        let m = parse("mode nmi size 256 loops 1000000 batch 1000 ns 987654321 fails 3").unwrap();
        assert_eq!(
            m,
            Measured {
                mode: "nmi".into(),
                size: 256,
                loops: 1_000_000,
                batch: 1000,
                ns: 987_654_321,
                fails: 3
            }
        );
        assert!(parse("").is_err());
        assert!(parse("mode global size 32 loops x batch 0 ns 1 fails 0").is_err());
        assert!(parse("mode global size 32 loops 1 batch 0 ns 1").is_err());
    }
}
