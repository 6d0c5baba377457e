//! The global allocator's debug mode (CONFIG_BPF_GLOBAL_MA_DEBUG,
//! patches/global-ma 0016): refused double and foreign frees (`bad_free`
//! in the stats, a console report) and owners that went away with objects
//! still allocated (`/sys/kernel/debug/bpf_global_ma/outstanding`).
//!
//! `global_ma_debug_bugs` commits each bug on purpose through the test
//! code's `bpf_global_ma_bugs/inject` and checks the debug mode caught it
//! and kept the allocator intact. That a clean run reports nothing is
//! checked by every global_ma test: `finish` requires no new bad_free and
//! no owner in `outstanding` that was not there when the test started,
//! once the test's objects are released (so a leak fails the test that
//! leaked, not every test after it).

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{new_outstanding, quiet_stats, read_stats};
use crate::check::Checks;
use crate::runner::{Ctx, Outcome};
use crate::stats;

pub const OUTSTANDING_PATH: &str = "/sys/kernel/debug/bpf_global_ma/outstanding";
const INJECT_PATH: &str = "/sys/kernel/debug/bpf_global_ma_bugs/inject";
/// What the kernel prints for a refused free.
const REPORT: &str = "bpf_global_ma: bad free of ";

/// One line of `outstanding`: an owner gone with objects still allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outstanding {
    pub name: String,
    pub id: u32,
    pub live: i64,
}

pub fn parse_outstanding(text: &str) -> Result<Vec<Outstanding>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let [name, "id", id, "live", live] = w[..] else {
                bail!("unexpected line {line:?} (want `<name> id <id> live <n>`)");
            };
            Ok(Outstanding {
                name: name.to_string(),
                id: id.parse().with_context(|| format!("id in {line:?}"))?,
                live: live.parse().with_context(|| format!("live in {line:?}"))?,
            })
        })
        .collect()
}

/// The owners listed in `outstanding`, or None without the debug mode.
pub fn read_outstanding() -> Result<Option<Vec<Outstanding>>> {
    if !Path::new(OUTSTANDING_PATH).exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(OUTSTANDING_PATH)
        .with_context(|| format!("reading {OUTSTANDING_PATH}"))?;
    parse_outstanding(&text)
        .map(Some)
        .with_context(|| format!("parsing {OUTSTANDING_PATH}:\n{text}"))
}

fn inject(bug: &str) -> Result<()> {
    fs::write(INJECT_PATH, bug).with_context(|| format!("writing {bug:?} to {INJECT_PATH}"))
}

/// Kernel log records not read yet by `kmsg`'s reader (from the start the
/// first time).
struct Kmsg(fs::File);

impl Kmsg {
    fn open() -> Result<Kmsg> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .context("opening /dev/kmsg")?;
        Ok(Kmsg(f))
    }

    /// The messages of the records available now.
    fn drain(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    // "<prio>,<seq>,<time>,<flags>;<message>\n<continuation>"
                    if let Some((_, msg)) = rec.split_once(';') {
                        out.push(msg.lines().next().unwrap_or("").to_string());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(out),
                // Records overwritten before we read them: go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(e).context("reading /dev/kmsg"),
            }
        }
    }
}

fn bad_free() -> Result<u64> {
    stats::read_total_field("bad_free")?.context("the stats file has no bad_free field")
}

pub fn global_ma_debug_bugs(ctx: &Ctx<'_>) -> Result<Outcome> {
    if !Path::new(INJECT_PATH).exists() || !Path::new(OUTSTANDING_PATH).exists() {
        return Ok(Outcome::Skip(format!(
            "{INJECT_PATH} or {OUTSTANDING_PATH} missing: no global allocator debug mode \
             (CONFIG_BPF_GLOBAL_MA_DEBUG)"
        )));
    }
    let mut checks = Checks::new();
    let start = quiet_stats(&mut checks)?;
    let mut kmsg = Kmsg::open()?;
    kmsg.drain()?;

    for (bug, alloc, free) in [("double_free", 1, 1), ("foreign_free", 0, 0)] {
        let b0 = bad_free()?;
        let s0 = read_stats(&mut checks)?;
        inject(bug)?;
        let s1 = read_stats(&mut checks)?;
        let b1 = bad_free()?;
        let d = s1.total.since(&s0.total);
        checks.eq(format!("{bug}: bad_free delta"), 1, b1 - b0);
        checks.eq(
            format!("{bug}: alloc, free deltas (the bad free not carried out)"),
            (alloc, free),
            (d.alloc, d.free),
        );
        let reports: Vec<String> = kmsg
            .drain()?
            .into_iter()
            .filter(|m| m.starts_with(REPORT))
            .collect();
        checks.eq(format!("{bug}: console reports"), 1, reports.len());
        if let Some(r) = reports.first() {
            ctx.diag(format!("{bug}: {r}"));
        }
    }

    // A leak: the owner goes, its object stays.
    let s0 = read_stats(&mut checks)?;
    inject("leak")?;
    let s1 = read_stats(&mut checks)?;
    let listed = new_outstanding()?;
    checks.eq(
        "leak: new outstanding owners",
        Some(vec![Outstanding {
            name: "gma_test_leak".to_string(),
            id: 0,
            live: 1,
        }]),
        listed.clone(),
    );
    checks.eq("leak: in_use delta", 1, s1.in_use - s0.in_use);
    ctx.diag(format!("leak reported: {listed:?}"));
    inject("unleak")?;
    let s2 = read_stats(&mut checks)?;
    checks.eq(
        "after unleak: new outstanding owners",
        Some(vec![]),
        new_outstanding()?,
    );
    checks.eq("after unleak: in_use", start.in_use, s2.in_use);
    checks.eq(
        "reports besides the two bad frees",
        Vec::<String>::new(),
        kmsg.drain()?
            .into_iter()
            .filter(|m| m.starts_with(REPORT))
            .collect(),
    );
    checks.finish()?;
    Ok(Outcome::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outstanding() {
        let o =
            parse_outstanding("gma_test_leak id 0 live 1\ngma_pf_alloc id 42 live 3\n").unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].id, 42);
        assert_eq!(o[1].live, 3);
        assert!(parse_outstanding("").unwrap().is_empty());
        assert!(parse_outstanding("x id 1\n").is_err());
        assert!(parse_outstanding("x id y live 1\n").is_err());
    }
}
