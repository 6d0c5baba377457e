//! Splat scanner for the guest's kernel console log, in the spirit of
//! syzkaller's report parser and libbpf CI's log checks: the console is
//! evidence, and any kernel splat in it is a finding even when every test
//! passed.
//!
//! Every line first loses its `[   12.345678] ` timestamp and an optional
//! `[  T123]` / `[  C1]` caller id (CONFIG_PRINTK_CALLER). A line whose
//! remaining text matches one of the [`SPLATS`] regexes (anchored at the start
//! of the message, so benign messages that merely contain `WARNING:` or `BUG`
//! do not count) starts a report. The report runs until its end:
//!
//! * `---[ end trace ... ]---` or `---[ end Kernel panic ... ]---` (always);
//! * per kind ([`End`]): the closing ` </TASK>` of its stack trace, the
//!   closing `=====` rule of KASAN/UBSAN, the end of kmemleak's indented
//!   block, or a fixed number of lines;
//! * the title of another report (a panic following an oops is two splats);
//! * a blank gap (three empty lines in a row), or 60 lines, whichever is first.
//!
//! Lines inside a report are not scanned again, except that a report may
//! absorb the titles that are part of it (see [`ABSORB`]): the `Oops:` line
//! that follows `BUG: kernel NULL pointer dereference`, the `KASAN:` line
//! inside a general protection fault.

use regex::{Regex, RegexSet};
use serde::Serialize;
use std::sync::OnceLock;

/// One kernel report found in the console.
#[derive(Debug, Clone, Serialize)]
pub struct Splat {
    pub kind: String,
    /// 1-based line number of the title in the console log.
    pub line: usize,
    /// The matching line, timestamp stripped.
    pub title: String,
    /// The report, timestamps stripped: from the title to its end, at most
    /// 60 lines.
    pub excerpt: Vec<String>,
}

/// Where a report of a kind ends (besides the universal ends listed in the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Only at `---[ end trace` / `---[ end Kernel panic`.
    Marker,
    /// At the ` </TASK>` closing its stack trace.
    Stack,
    /// At a line of `=` (KASAN and UBSAN frame their reports with them).
    Rule,
    /// When its lines stop being indented (kmemleak's object reports).
    Indented,
    /// After this many lines.
    Lines(usize),
}

/// (kind, regex on the message, where the report ends). The first matching
/// row wins, so more specific rows come first. Adding a kind is one row.
#[rustfmt::skip]
const SPLATS: &[(&str, &str, End)] = &[
    ("SOFT_LOCKUP", r"^(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck for", End::Stack),
    ("HARD_LOCKUP", r"^(?:NMI watchdog: )?Watchdog detected hard LOCKUP on cpu \d+", End::Stack),
    ("KASAN", r"^(?:BUG: )?KASAN: ", End::Rule),
    ("KFENCE", r"^BUG: KFENCE: ", End::Rule),
    ("UBSAN", r"^UBSAN: ", End::Rule),
    ("BUG", r"^BUG: ", End::Stack),
    ("BUG", r"^kernel BUG at ", End::Stack),
    ("OOPS", r"^(?:Oops|general protection fault|invalid opcode|divide error|stack segment|double fault)\b.*: [0-9a-f]{4} \[#\d+\]", End::Marker),
    ("OOPS", r"^Internal error: .*\[#\d+\]", End::Marker),
    ("PANIC", r"^Kernel panic - not syncing: ", End::Marker),
    ("LOCKDEP", r"^WARNING: (?:possible circular locking dependency detected|inconsistent lock state|possible recursive locking detected|suspicious RCU usage|possible irq lock inversion dependency detected|\S+-safe -> \S+-unsafe lock order detected|bad unlock balance detected!|held lock freed!|\S+ still has locks held!|lock held when returning to user space!|Nested lock was not taken|chain_key collision)", End::Stack),
    ("WARNING", r"^WARNING: CPU: \d+ PID: \d+ at ", End::Marker),
    ("KMEMLEAK", r"^kmemleak: \d+ new suspected memory leaks?\b", End::Lines(1)),
    // A leak check that did not happen is not a clean one.
    ("KMEMLEAK", r"^kmemleak: (?:Kernel memory leak detector disabled|Memory pool empty)", End::Lines(1)),
    ("KMEMLEAK", r"^(?:kmemleak: )?unreferenced object 0x[0-9a-f]+ \(size \d+\):", End::Indented),
    ("RCU_STALL", r"^(?:rcu: )?INFO: rcu_\w+ (?:self-detected stall on CPU|detected stalls on CPUs/tasks|detected expedited stalls on CPUs/tasks)", End::Stack),
    ("HUNG_TASK", r"^INFO: task .+:\d+ blocked for more than \d+ seconds", End::Stack),
    ("NMI", r"^Uhhuh\. NMI received for unknown reason", End::Lines(2)),
];

/// (kind of the open report, kind of a title it absorbs once): titles that
/// are part of the report in progress rather than a new one.
const ABSORB: &[(&str, &str)] = &[
    // BUG: kernel NULL pointer dereference / unable to handle page fault /
    // kernel BUG at ..., then the die() header.
    ("BUG", "OOPS"),
    // general protection fault ..., then KASAN: null-ptr-deref in range ...
    ("OOPS", "KASAN"),
];

const MAX_EXCERPT: usize = 60;

/// Consecutive empty lines that end a report.
const BLANK_GAP: usize = 3;

struct Patterns {
    prefix: Regex,
    /// SPLATS' regexes, matched in one pass.
    titles: RegexSet,
    rule: Regex,
    panic: Regex,
    end_panic: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        prefix: Regex::new(r"^(?:<\d+>)?\[\s*\d+\.\d+\]\s?(?:\[\s*[TC]\d+\]\s?)?").expect("regex"),
        titles: RegexSet::new(SPLATS.iter().map(|(_, re, _)| re)).expect("SPLATS regex"),
        rule: Regex::new(r"^={20,}\s*$").expect("regex"),
        panic: Regex::new(r"^Kernel panic - not syncing: (.*)$").expect("regex"),
        end_panic: Regex::new(r"^---\[ end Kernel panic - not syncing: (.*?) \]---")
            .expect("regex"),
    })
}

/// The message of a console line: no trailing CR/whitespace, no timestamp or
/// caller id (one space after them is part of the prefix, so indentation such
/// as ` </TASK>` survives).
fn message(raw: &str) -> &str {
    let raw = raw.trim_end();
    match patterns().prefix.find(raw) {
        Some(m) => &raw[m.end()..],
        None => raw,
    }
}

fn title_kind(msg: &str) -> Option<(&'static str, End)> {
    // The first matching row wins.
    let row = patterns().titles.matches(msg).into_iter().next()?;
    SPLATS.get(row).map(|&(kind, _, end)| (kind, end))
}

struct Open {
    splat: Splat,
    end: End,
    absorbed: Vec<&'static str>,
    blanks: usize,
}

impl Open {
    fn finish(mut self, out: &mut Vec<Splat>) {
        while self
            .splat
            .excerpt
            .last()
            .is_some_and(|l| l.trim().is_empty())
        {
            self.splat.excerpt.pop();
        }
        out.push(self.splat);
    }

    /// Adds a continuation line; true when the report ends with it.
    fn push(&mut self, msg: &str) -> bool {
        self.splat.excerpt.push(msg.to_string());
        let trimmed = msg.trim();
        if trimmed.is_empty() {
            self.blanks += 1;
        } else {
            self.blanks = 0;
        }
        trimmed.starts_with("---[ end trace")
            || trimmed.starts_with("---[ end Kernel panic")
            || self.blanks >= BLANK_GAP
            || self.splat.excerpt.len() >= MAX_EXCERPT
            || match self.end {
                End::Marker | End::Indented => false,
                End::Stack => trimmed == "</TASK>",
                End::Rule => patterns().rule.is_match(trimmed),
                End::Lines(n) => self.splat.excerpt.len() >= n,
            }
    }

    /// Whether a non-title line still belongs to the report.
    fn continues_with(&self, msg: &str) -> bool {
        match self.end {
            End::Indented => {
                let body = msg.strip_prefix("kmemleak: ").unwrap_or(msg);
                body.starts_with([' ', '\t'])
            }
            _ => true,
        }
    }
}

/// Finds the kernel splats in a console log, in order.
pub fn scan(console: &str) -> Vec<Splat> {
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    for (i, raw) in console.split('\n').enumerate() {
        let msg = message(raw);
        let title = title_kind(msg);
        if let Some(mut report) = open.take() {
            let absorbs = title.is_some_and(|(kind, _)| {
                !report.absorbed.contains(&kind)
                    && ABSORB
                        .iter()
                        .any(|&(from, to)| from == report.splat.kind && to == kind)
            });
            if absorbs {
                let (kind, end) = title.unwrap_or(("", End::Marker));
                report.absorbed.push(kind);
                // After a die() header the report runs to its end marker.
                if end == End::Marker {
                    report.end = End::Marker;
                }
                if report.push(msg) {
                    report.finish(&mut out);
                } else {
                    open = Some(report);
                }
                continue;
            }
            if title.is_none() && report.continues_with(msg) {
                if report.push(msg) {
                    report.finish(&mut out);
                } else {
                    open = Some(report);
                }
                continue;
            }
            report.finish(&mut out);
        }
        if let Some((kind, end)) = title {
            let report = Open {
                splat: Splat {
                    kind: kind.to_string(),
                    line: i + 1,
                    title: msg.trim().to_string(),
                    excerpt: vec![msg.to_string()],
                },
                end,
                absorbed: Vec::new(),
                blanks: 0,
            };
            if end == End::Lines(1) {
                report.finish(&mut out);
            } else {
                open = Some(report);
            }
        }
    }
    if let Some(report) = open {
        report.finish(&mut out);
    }
    out
}

/// The reason given by the first `Kernel panic - not syncing: ...` line (or,
/// if that line was lost, by its `---[ end Kernel panic ... ]---` marker).
pub fn panic_message(console: &str) -> Option<String> {
    if !console.contains("Kernel panic - not syncing: ") {
        return None; // cheap: the VM loop asks on every poll
    }
    let p = patterns();
    let find = |re: &Regex| {
        console
            .split('\n')
            .find_map(|raw| re.captures(message(raw)).map(|c| c[1].trim().to_string()))
    };
    find(&p.panic).or_else(|| find(&p.end_panic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Timestamps a block of console text the way printk does.
    fn log(text: &str) -> String {
        text.lines()
            .enumerate()
            .map(|(i, l)| format!("[{:>12.6}] {l}\n", 10.0 + i as f64 * 0.000_1))
            .collect()
    }

    fn kinds(splats: &[Splat]) -> Vec<(&str, usize)> {
        splats.iter().map(|s| (s.kind.as_str(), s.line)).collect()
    }

    /// The only splat in `text` (timestamped first).
    fn one(text: &str) -> Splat {
        let splats = scan(&log(text));
        assert_eq!(splats.len(), 1, "{splats:#?}");
        splats.into_iter().next().expect("one splat")
    }

    const TRACE: &str = "\
CPU: 1 PID: 97 Comm: bpf-selftests Not tainted 6.1.192 #1
Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
Call Trace:
 <TASK>
 dump_stack_lvl+0x5b/0x77
 __might_resched.cold+0xf4/0x12f
 __mutex_lock+0x4d/0x9a0
 do_syscall_64+0x35/0x80
 entry_SYSCALL_64_after_hwframe+0x63/0xcd
 </TASK>";

    #[test]
    fn prefix_is_stripped() {
        assert_eq!(message("[   12.345678] BUG: x"), "BUG: x");
        assert_eq!(message("[   12.345678][    T1] BUG: x"), "BUG: x");
        assert_eq!(message("[   12.345678] [    C0] BUG: x\r"), "BUG: x");
        assert_eq!(message("[   12.345678]  </TASK>"), " </TASK>");
        assert_eq!(message("<4>[    1.000000] WARNING: y"), "WARNING: y");
        assert_eq!(message("no prefix"), "no prefix");
    }

    #[test]
    fn benign_lines_are_not_splats() {
        let benign = "\
Command line: console=ttyS0 panic=-1 oops=panic panic_on_warn=1 softlockup_panic=1
RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!
RETBleed: WARNING: kernel not compiled with CPU_UNRET_ENTRY.
Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!
Spectre V2 : WARNING: LFENCE mitigation is not recommended for this CPU, data leaks possible!
SRSO: WARNING: See https://kernel.org/doc/html/latest/admin-guide/hw-vuln/srso.html for mitigation options.
MDS: Mitigation: Clear CPU buffers
Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar
rcu: \tRCU lockdep checking is enabled.
rcu: Preemptible hierarchical RCU implementation.
kmemleak: Kernel memory leak detector initialized (mem pool available: 15873)
kmemleak: Automatic memory scanning thread started
kasan: KernelAddressSanitizer initialized
NMI watchdog: Perf NMI watchdog permanently disabled
watchdog: Disabling watchdog on nohz_full cores by default
ACPI BIOS Error (bug): Could not resolve symbol [\\_SB.PCI0.S08], AE_NOT_FOUND (20220331/dswload2-162)
hrtimer: interrupt took 2741302 ns
clocksource: timekeeping watchdog on CPU1: Marking clocksource 'tsc' as unstable because the skew is too large:
perf: interrupt took too long (2505 > 2500), lowering kernel.perf_event_max_sample_rate to 79750
 WARNING: CPU: 0 PID: 1 at indented, so not the start of a kernel message
ok 1 BUG: in a test name
";
        assert_eq!(scan(&log(benign)).len(), 0, "{:#?}", scan(&log(benign)));
        assert_eq!(panic_message(&log(benign)), None);
    }

    #[test]
    fn warn_on_runs_to_end_trace() {
        let s = one(&format!(
            "------------[ cut here ]------------\n\
             WARNING: CPU: 1 PID: 97 at kernel/bpf/hashtab.c:1021 htab_map_update_elem+0x2b1/0x3a0\n\
             Modules linked in:\n{TRACE}\n\
             irq event stamp: 5326\n\
             ---[ end trace 0000000000000000 ]---\n\
             after the report"
        ));
        assert_eq!(s.kind, "WARNING");
        assert_eq!(s.line, 2);
        assert_eq!(
            s.title,
            "WARNING: CPU: 1 PID: 97 at kernel/bpf/hashtab.c:1021 htab_map_update_elem+0x2b1/0x3a0"
        );
        assert_eq!(s.excerpt.first(), Some(&s.title));
        assert_eq!(
            s.excerpt.last().map(String::as_str),
            Some("---[ end trace 0000000000000000 ]---")
        );
        assert!(s.excerpt.contains(&" </TASK>".to_string()));
    }

    #[test]
    fn bug_sleeping_function_ends_with_its_stack() {
        let s = one(&format!(
            "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580\n\
             in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 97, name: bpf-selftests\n\
             preempt_count: 1, expected: 0\n\
             RCU nest depth: 1, expected: 0\n{TRACE}\n\
             random: crng init done"
        ));
        assert_eq!(s.kind, "BUG");
        assert_eq!(s.excerpt.len(), 4 + TRACE.lines().count());
        assert_eq!(s.excerpt.last().map(String::as_str), Some(" </TASK>"));
    }

    #[test]
    fn null_deref_oops_and_panic_are_two_splats() {
        let text = log(&format!(
            "BUG: kernel NULL pointer dereference, address: 0000000000000010\n\
             #PF: supervisor read access in kernel mode\n\
             #PF: error_code(0x0000) - not-present page\n\
             PGD 0 P4D 0 \n\
             Oops: 0000 [#1] PREEMPT SMP NOPTI\n{TRACE}\n\
             Modules linked in:\n\
             CR2: 0000000000000010\n\
             ---[ end trace 0000000000000000 ]---\n\
             RIP: 0010:bpf_prog_test_run_skb+0x4f/0x6a0\n\
             Kernel panic - not syncing: Fatal exception\n\
             Kernel Offset: disabled\n\
             ---[ end Kernel panic - not syncing: Fatal exception ]---"
        ));
        let splats = scan(&text);
        assert_eq!(kinds(&splats), [("BUG", 1), ("PANIC", 20)]);
        // The Oops line is part of the BUG report, not a splat of its own,
        // and the report runs past </TASK> to its end marker.
        assert!(splats[0]
            .excerpt
            .iter()
            .any(|l| l.starts_with("Oops: 0000 [#1]")));
        assert_eq!(
            splats[0].excerpt.last().map(String::as_str),
            Some("---[ end trace 0000000000000000 ]---")
        );
        assert_eq!(
            splats[1].title,
            "Kernel panic - not syncing: Fatal exception"
        );
        assert_eq!(splats[1].excerpt.len(), 3);
        assert_eq!(panic_message(&text).as_deref(), Some("Fatal exception"));
    }

    #[test]
    fn kernel_bug_at_absorbs_invalid_opcode() {
        let s = one(&format!(
            "kernel BUG at mm/slub.c:436!\n\
             invalid opcode: 0000 [#1] PREEMPT SMP NOPTI\n{TRACE}\n\
             ---[ end trace 0000000000000000 ]---"
        ));
        assert_eq!(
            (s.kind.as_str(), s.title.as_str()),
            ("BUG", "kernel BUG at mm/slub.c:436!")
        );
    }

    #[test]
    fn oops_alone() {
        let s = one("Oops: 0002 [#1] PREEMPT SMP NOPTI\nCPU: 0 PID: 1 Comm: init\n---[ end trace 0000000000000000 ]---");
        assert_eq!(s.kind, "OOPS");
        assert_eq!(s.excerpt.len(), 3);
    }

    #[test]
    fn general_protection_fault_absorbs_its_kasan_line() {
        let s = one(&format!(
            "general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000 [#1] PREEMPT SMP KASAN NOPTI\n\
             KASAN: null-ptr-deref in range [0x0000000000000010-0x0000000000000017]\n{TRACE}\n\
             ---[ end trace 0000000000000000 ]---"
        ));
        assert_eq!(s.kind, "OOPS");
        assert!(s
            .title
            .starts_with("general protection fault, probably for non-canonical address"));
    }

    #[test]
    fn kasan_report_is_framed_by_rules() {
        let rule = "==================================================================";
        let splats = scan(&log(&format!(
            "{rule}\n\
             BUG: KASAN: slab-use-after-free in htab_map_lookup_elem+0x5e/0x90\n\
             Read of size 8 at addr ffff888004a5c0d8 by task bpf-selftests/97\n\
             \n{TRACE}\n\
             \n\
             Allocated by task 97:\n \
             kasan_save_stack+0x22/0x50\n\
             \n\
             Freed by task 97:\n \
             kasan_save_stack+0x22/0x50\n\
             {rule}\n\
             Disabling lock debugging due to kernel taint"
        )));
        assert_eq!(kinds(&splats), [("KASAN", 2)]);
        assert_eq!(splats[0].excerpt.last(), Some(&rule.to_string()));
        assert!(splats[0].excerpt.iter().any(|l| l == "Freed by task 97:"));
    }

    #[test]
    fn kfence_is_framed_by_rules() {
        let rule = "==================================================================";
        let splats = scan(&log(&format!(
            "{rule}\n\
             BUG: KFENCE: out-of-bounds read in test_out_of_bounds_read+0xa6/0x234\n\
             \n\
             Out-of-bounds read at 0xffff8c3f2e291fff (1B left of kfence-#72):\n \
             test_out_of_bounds_read+0xa6/0x234\n \
             kunit_try_run_case+0x61/0xa0\n\
             \n\
             CPU: 0 PID: 107 Comm: kunit_try_catch Not tainted 6.1.192 #1\n\
             {rule}\n\
             later"
        )));
        assert_eq!(kinds(&splats), [("KFENCE", 2)]);
        assert_eq!(splats[0].excerpt.len(), 8);
    }

    #[test]
    fn ubsan() {
        let rule =
            "================================================================================";
        let splats = scan(&log(&format!(
            "{rule}\n\
             UBSAN: shift-out-of-bounds in kernel/bpf/verifier.c:12345:17\n\
             shift exponent 64 is too large for 64-bit type 'long long unsigned int'\n{TRACE}\n\
             {rule}"
        )));
        assert_eq!(kinds(&splats), [("UBSAN", 2)]);
        assert_eq!(splats[0].excerpt.len(), 3 + TRACE.lines().count());
    }

    #[test]
    fn lockdep_reports() {
        for title in [
            "WARNING: possible circular locking dependency detected",
            "WARNING: inconsistent lock state",
            "WARNING: possible recursive locking detected",
            "WARNING: suspicious RCU usage",
            "WARNING: bad unlock balance detected!",
            "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
        ] {
            let splats = scan(&log(&format!(
                "\n=============================\n{title}\n6.1.192 #1 Not tainted\n-----------------------------\n\
                 net/core/dev.c:1234 suspicious rcu_dereference_check() usage!\n\
                 \nother info that might help us debug this:\n\n\n\
                 rcu_scheduler_active = 2, debug_locks = 1\n\
                 stack backtrace:\n{TRACE}\nreboot: Power down"
            )));
            assert_eq!(kinds(&splats), [("LOCKDEP", 3)], "{title}");
            assert_eq!(splats[0].title, title);
            // Lockdep's own blank lines do not end the report; </TASK> does.
            assert_eq!(
                splats[0].excerpt.last().map(String::as_str),
                Some(" </TASK>"),
                "{title}"
            );
        }
    }

    #[test]
    fn kmemleak_summary_and_objects() {
        // As `cat /sys/kernel/debug/kmemleak > /dev/console` shows them.
        let text = "\
[   15.812345] kmemleak: 1 new suspected memory leaks (see /sys/kernel/debug/kmemleak)
unreferenced object 0xffff888004c1e400 (size 512):
  comm \"bpf-selftests\", pid 97, jiffies 4294678123
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 08 e4 c1 04 80 88 ff ff  ................
  backtrace:
    [<00000000b3c4a2f1>] __kmalloc_node+0x4b/0x140
    [<00000000a8f3c2d4>] htab_map_alloc+0x2f1/0x590
unreferenced object 0xffff888004d2a380 (size 64):
  comm \"bpf-selftests\", pid 97, jiffies 4294678124
  backtrace:
    [<00000000e5a1b3c9>] kmalloc_trace+0x26/0x60
# done
";
        let splats = scan(text);
        assert_eq!(
            kinds(&splats),
            [("KMEMLEAK", 1), ("KMEMLEAK", 2), ("KMEMLEAK", 9)]
        );
        assert_eq!(splats[0].excerpt.len(), 1);
        assert_eq!(splats[1].excerpt.len(), 7);
        assert_eq!(splats[2].excerpt.len(), 4);
    }

    #[test]
    fn soft_lockup() {
        let s = one(&format!(
            "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [bpf-selftests:97]\n\
             Modules linked in:\n{TRACE}\nrcu: something else"
        ));
        assert_eq!(s.kind, "SOFT_LOCKUP");
        assert_eq!(s.excerpt.len(), 2 + TRACE.lines().count());
    }

    #[test]
    fn hard_lockup() {
        let s = one(&format!(
            "NMI watchdog: Watchdog detected hard LOCKUP on cpu 2\nModules linked in:\n{TRACE}"
        ));
        assert_eq!(s.kind, "HARD_LOCKUP");
    }

    #[test]
    fn rcu_stalls() {
        for title in [
            "rcu: INFO: rcu_sched self-detected stall on CPU",
            "rcu: INFO: rcu_preempt self-detected stall on CPU",
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "INFO: rcu_sched detected stalls on CPUs/tasks:",
        ] {
            let s = one(&format!(
                "{title}\nrcu: \t1-....: (14999 ticks this GP) idle=3a4c/1/0x4000000000000000\n\
                 \t(t=15000 jiffies g=5849 q=213 ncpus=4)\n{TRACE}"
            ));
            assert_eq!((s.kind.as_str(), s.title.as_str()), ("RCU_STALL", title));
            assert_eq!(s.excerpt[2], "\t(t=15000 jiffies g=5849 q=213 ncpus=4)");
        }
    }

    #[test]
    fn hung_task() {
        let s = one(&format!(
            "INFO: task kworker/u8:1:45 blocked for more than 122 seconds.\n      \
             Not tainted 6.1.192 #1\n\
             \"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.\n\
             task:kworker/u8:1    state:D stack:0     pid:45    ppid:2      flags:0x00004000\n{TRACE}"
        ));
        assert_eq!(s.kind, "HUNG_TASK");
        assert_eq!(s.excerpt.len(), 4 + TRACE.lines().count());
    }

    #[test]
    fn unknown_nmi() {
        let splats = scan(&log(
            "Uhhuh. NMI received for unknown reason 30 on CPU 0.\n\
             Dazed and confused, but trying to continue\n\
             virtio_net virtio0 eth0: link up",
        ));
        assert_eq!(kinds(&splats), [("NMI", 1)]);
        assert_eq!(splats[0].excerpt.len(), 2);
    }

    #[test]
    fn panic_message_first_panic_or_end_marker() {
        assert_eq!(
            panic_message(&log(
                "Kernel panic - not syncing: softlockup: hung tasks\nKernel panic - not syncing: other"
            ))
            .as_deref(),
            Some("softlockup: hung tasks")
        );
        assert_eq!(
            panic_message(&log(
                "lost\n---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---"
            ))
            .as_deref(),
            Some("VFS: Unable to mount root fs on unknown-block(0,0)")
        );
        assert_eq!(panic_message("Kernel command line: panic=-1\n"), None);
    }

    #[test]
    fn panic_on_warn_inside_a_warning_is_its_own_splat() {
        let splats = scan(&log("WARNING: CPU: 0 PID: 1 at lib/foo.c:1 foo+0x1/0x2\n\
             Modules linked in:\n\
             Kernel panic - not syncing: kernel: panic_on_warn set ...\n\
             CPU: 0 PID: 1 Comm: init\n\
             ---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---"));
        assert_eq!(kinds(&splats), [("WARNING", 1), ("PANIC", 3)]);
        assert_eq!(splats[0].excerpt.len(), 2);
    }

    #[test]
    fn excerpt_is_capped() {
        let body: String = (0..200).map(|i| format!(" frame_{i}+0x1/0x2\n")).collect();
        let s = one(&format!(
            "WARNING: CPU: 0 PID: 1 at lib/foo.c:1 foo+0x1/0x2\n{body}"
        ));
        assert_eq!(s.excerpt.len(), MAX_EXCERPT);
        // The lines after the cap are not scanned as new reports either.
        let splats = scan(&log(&format!(
            "WARNING: CPU: 0 PID: 1 at a\n{body}BUG: next"
        )));
        assert_eq!(kinds(&splats), [("WARNING", 1), ("BUG", 202)]);
    }

    #[test]
    fn blank_gap_ends_a_report() {
        let splats = scan(&log(
            "WARNING: CPU: 0 PID: 1 at a\nline\n\n\n\nafter the gap\n",
        ));
        assert_eq!(splats.len(), 1);
        assert_eq!(splats[0].excerpt, ["WARNING: CPU: 0 PID: 1 at a", "line"]);
    }

    #[test]
    fn line_numbers_are_one_based_with_crlf() {
        let splats = scan("boot\r\n[    1.0] BUG: soft lockup - CPU#0 stuck for 22s! [x:1]\r\n");
        assert_eq!(kinds(&splats), [("SOFT_LOCKUP", 2)]);
        assert_eq!(
            splats[0].title,
            "BUG: soft lockup - CPU#0 stuck for 22s! [x:1]"
        );
    }

    #[test]
    fn splat_table_regexes_compile_and_are_anchored() {
        for (kind, re, _) in SPLATS {
            assert!(re.starts_with('^'), "{kind}: {re}");
            Regex::new(re).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        for (from, to) in ABSORB {
            assert!(
                SPLATS.iter().any(|(k, _, _)| k == from) && SPLATS.iter().any(|(k, _, _)| k == to)
            );
        }
    }

    fn data_files() -> Vec<PathBuf> {
        crate::judge::test_data::files("console")
    }

    #[derive(Serialize)]
    struct Snapshot {
        panic_message: Option<String>,
        splats: Vec<Splat>,
    }

    #[test]
    fn snapshots_of_test_data() {
        for path in data_files() {
            let file = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
            let description = format!("scan(test_data/console/{file})");
            insta::with_settings!({ description => description, omit_expression => true }, {
                insta::assert_yaml_snapshot!(
                    file.replace('.', "_"),
                    Snapshot { panic_message: panic_message(&text), splats: scan(&text) }
                );
            });
        }
    }

    #[test]
    fn never_panics_on_prefixes_and_mutations() {
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for path in data_files() {
            let bytes = std::fs::read(&path).expect("read");
            for end in (0..=bytes.len()).step_by(7) {
                let text = String::from_utf8_lossy(&bytes[..end]);
                let _ = (scan(&text), panic_message(&text));
            }
            for _ in 0..100 {
                let mut b = bytes.clone();
                for _ in 0..=next() % 8 {
                    let at = next() % b.len().max(1);
                    match next() % 4 {
                        0 if at < b.len() => b[at] = next() as u8,
                        1 => b.insert(at.min(b.len()), b"\n []=-<>:#"[next() % 10]),
                        2 if at < b.len() => {
                            b.remove(at);
                        }
                        _ => b.truncate(at),
                    }
                }
                let text = String::from_utf8_lossy(&b);
                for s in scan(&text) {
                    assert!(s.line >= 1 && s.excerpt.len() <= MAX_EXCERPT && !s.excerpt.is_empty());
                }
                let _ = panic_message(&text);
            }
        }
    }

    #[test]
    fn a_disabled_leak_detector_is_a_splat() {
        for line in [
            "[   12.5] kmemleak: Kernel memory leak detector disabled",
            "[   12.5] kmemleak: Memory pool empty, consider increasing CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE",
        ] {
            let found = scan(&format!("{line}\n"));
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(found[0].kind, "KMEMLEAK");
        }
    }
}
