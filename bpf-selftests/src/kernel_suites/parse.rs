//! Line parsers for the output of the kernel's own BPF test binaries (the
//! pinned 6.1 tree's tools/testing/selftests/bpf), turning it into subtest
//! results. Pure: fed one line at a time, they never fail; a line they do not
//! recognise is log, kept for the test it belongs to.

/// How one subtest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One subtest, with the log lines that belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    pub name: String,
    pub status: Status,
    /// For a skip: the reason the binary gave, if any.
    pub reason: Option<String>,
    pub log: Vec<String>,
}

/// What a parser makes of one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A subtest finished.
    Sub(Sub),
    /// The binary's own end-of-run line for the whole test.
    Top(Status),
    /// test_verifier: a test's line whose verdict comes on a line of its
    /// own (libbpf printed an error in between).
    Open(String),
    /// Anything else: log.
    Log,
}

/// test_progs, one test selected (`-t NAME`).
///
/// Accepted format (test_progs.c's `print_test_name`/`print_subtest_name`,
/// after the test's log, which is printed only when it failed):
///
/// ```text
/// #123/4   name/subtest:OK|SKIP|FAIL
/// #123     name:OK|SKIP|FAIL
/// Summary: 1/4 PASSED, 0 SKIPPED, 0 FAILED
/// ```
///
/// The log printed before a subtest line belongs to that subtest; the
/// caller keeps it (see [`Collector`]).
pub fn test_progs(line: &str) -> Line {
    let Some(rest) = line.strip_prefix('#') else {
        return Line::Log;
    };
    let Some((num, rest)) = rest.split_once(char::is_whitespace) else {
        return Line::Log;
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '/') {
        return Line::Log;
    }
    let rest = rest.trim_start();
    let Some((name, result)) = rest.rsplit_once(':') else {
        return Line::Log;
    };
    let status = match result.trim_end() {
        "OK" => Status::Pass,
        "SKIP" => Status::Skip,
        "FAIL" => Status::Fail,
        _ => return Line::Log,
    };
    if num.contains('/') {
        let sub = name.split_once('/').map_or(name, |(_, s)| s);
        Line::Sub(Sub {
            name: sub.to_string(),
            status,
            reason: None,
            log: Vec::new(),
        })
    } else {
        Line::Top(status)
    }
}

/// test_verifier, every test.
///
/// Accepted format (test_verifier.c's `do_test`/`do_test_single`):
///
/// ```text
/// #0/u invalid and of negative number OK
/// #1/p invalid range check SKIP
/// #2/p some test SKIP (unsupported map type 23)
/// #3/p other test FAIL
/// <log lines of test 3>
/// #4/p a test FAIL retval 1 != 2 (run 1/1)
/// #5/u a test libbpf: Failed to load BTF spec: 'Operation not permitted'
/// OK
/// Summary: 1157 PASSED, 789 SKIPPED, 66 FAILED
/// ```
///
/// A test line without a verdict ([`Line::Open`]) takes the verdict of the
/// next line when that is `OK`, `SKIP...` or `FAIL...` alone.
///
/// The subtest is named `<description>/<u|p>` (its number would change as
/// tests are added). The log lines after a FAIL belong to it: the caller
/// attaches them when the next line arrives (see [`Collector`]).
pub fn test_verifier(line: &str) -> Line {
    if let Some(summary) = line.strip_prefix("Summary: ") {
        let failed = summary
            .rsplit_once(", ")
            .and_then(|(_, f)| f.strip_suffix(" FAILED"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        return match failed {
            Some(0) => Line::Top(Status::Pass),
            Some(_) => Line::Top(Status::Fail),
            None => Line::Log,
        };
    }
    let Some(rest) = line.strip_prefix('#') else {
        return Line::Log;
    };
    let Some((num, rest)) = rest.split_once(' ') else {
        return Line::Log;
    };
    let Some((n, mode)) = num.split_once('/') else {
        return Line::Log;
    };
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) || !matches!(mode, "u" | "p") {
        return Line::Log;
    }
    let rest = rest.trim_end();
    let (descr, status, reason) = if let Some(d) = rest.strip_suffix(" OK") {
        (d, Status::Pass, None)
    } else if let Some(d) = rest.strip_suffix(" SKIP") {
        (d, Status::Skip, None)
    } else if let Some((d, why)) = rest.rsplit_once(" SKIP (") {
        (d, Status::Skip, Some(why.trim_end_matches(')').to_string()))
    } else if let Some((d, why)) = rest.split_once(" FAIL") {
        let why = why.trim();
        (d, Status::Fail, (!why.is_empty()).then(|| why.to_string()))
    } else {
        return Line::Open(format!("{rest}/{mode}"));
    };
    // A failure's text after FAIL is its first log line, not a skip reason.
    let (reason, log) = match (status, reason) {
        (Status::Fail, Some(why)) => (None, vec![format!("FAIL {why}")]),
        (_, reason) => (reason, Vec::new()),
    };
    Line::Sub(Sub {
        name: format!("{descr}/{mode}"),
        status,
        reason,
        log,
    })
}

/// test_maps.
///
/// Accepted format (test_maps.c and map_tests/*.c): the built-in map tests
/// print nothing when they pass; each `map_tests/*.c` test prints
/// `test_<name>:PASS`; a failed CHECK prints `<function>(<line>):FAIL:<tag> ...`
/// and exits; the last line of a good run is `test_maps: OK, N SKIPPED`.
pub fn test_maps(line: &str) -> Line {
    if line.starts_with("test_maps: OK") {
        return Line::Top(Status::Pass);
    }
    if let Some(name) = line.trim_end().strip_suffix(":PASS") {
        if !name.contains(char::is_whitespace) {
            return Line::Sub(Sub {
                name: name.to_string(),
                status: Status::Pass,
                reason: None,
                log: Vec::new(),
            });
        }
    }
    if let Some((func, _)) = line.split_once(":FAIL:") {
        if let Some((name, lineno)) = func.split_once('(') {
            if lineno.ends_with(')') && !name.contains(char::is_whitespace) {
                return Line::Sub(Sub {
                    name: name.to_string(),
                    status: Status::Fail,
                    reason: None,
                    log: vec![line.trim_end().to_string()],
                });
            }
        }
    }
    Line::Log
}

/// Which binary's output a [`Collector`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Progs,
    Verifier,
    Maps,
}

/// Where log lines go: test_progs and test_maps print a subtest's log
/// before its result line, test_verifier after it.
#[derive(Debug, Default)]
pub struct Collector {
    kind: Option<Kind>,
    /// Log lines not yet given to a subtest.
    pending_log: Vec<String>,
    /// test_verifier: the last subtest, still collecting its log.
    held: Option<Sub>,
    /// test_verifier: a test line still waiting for its verdict line.
    open: Option<String>,
    /// The binary's own verdict line, if it printed one.
    pub top: Option<Status>,
    /// test_progs repeats every failed test after `All error logs:`: the
    /// rest is log, not new results.
    recap: bool,
}

impl Collector {
    pub fn new(kind: Kind) -> Collector {
        Collector {
            kind: Some(kind),
            ..Collector::default()
        }
    }

    /// Feeds one line; returns the subtests it completed, in order.
    pub fn feed(&mut self, line: &str) -> Vec<Sub> {
        let kind = self.kind.expect("Collector::new sets the kind");
        if kind == Kind::Progs && line.trim_end() == "All error logs:" {
            self.recap = true;
        }
        if self.recap {
            self.pending_log.push(line.to_string());
            return Vec::new();
        }
        let mut parsed = match kind {
            Kind::Progs => test_progs(line),
            Kind::Verifier => test_verifier(line),
            Kind::Maps => test_maps(line),
        };
        if let Some(name) = self.open.take() {
            // The verdict line of an open test: re-read the pair as one.
            let (descr, mode) = name.rsplit_once('/').unwrap_or((&name, "p"));
            let joined = format!("#0/{mode} {descr} {}", line.trim());
            let verdict = line.trim();
            let is_verdict =
                verdict == "OK" || verdict.starts_with("FAIL") || verdict.starts_with("SKIP");
            match test_verifier(&joined) {
                Line::Sub(sub) if is_verdict => parsed = Line::Sub(sub),
                _ => {
                    // No verdict came: the test's line stands as a failure
                    // (held for its log), and this line is read afresh.
                    let mut done: Vec<Sub> = self.release().into_iter().collect();
                    self.held = Some(Sub {
                        name,
                        status: Status::Fail,
                        reason: None,
                        log: vec!["test_verifier printed no verdict for this test".to_string()],
                    });
                    done.extend(self.feed(line));
                    return done;
                }
            }
        }
        if let Line::Open(name) = parsed {
            let done: Vec<Sub> = self.release().into_iter().collect();
            self.open = Some(name);
            return done;
        }
        let mut done = Vec::new();
        match parsed {
            Line::Sub(mut sub) => match kind {
                Kind::Verifier => {
                    done.extend(self.release());
                    self.held = Some(sub);
                }
                Kind::Progs | Kind::Maps => {
                    let mut log = std::mem::take(&mut self.pending_log);
                    log.append(&mut sub.log);
                    sub.log = log;
                    done.push(sub);
                }
            },
            Line::Top(status) => {
                done.extend(self.release());
                self.top = Some(status);
            }
            Line::Open(_) => unreachable!("handled above"),
            Line::Log => match &mut self.held {
                Some(sub) if sub.status == Status::Fail => sub.log.push(line.to_string()),
                Some(_) => {
                    done.extend(self.release());
                    self.pending_log.push(line.to_string());
                }
                None => self.pending_log.push(line.to_string()),
            },
        }
        done
    }

    fn release(&mut self) -> Option<Sub> {
        self.held.take()
    }

    /// At the end of the output: the subtests still held, and the log lines
    /// that belong to no subtest (the whole test's own log).
    pub fn finish(&mut self) -> (Vec<Sub>, Vec<String>) {
        let mut done: Vec<Sub> = self.release().into_iter().collect();
        if let Some(name) = self.open.take() {
            done.push(Sub {
                name,
                status: Status::Fail,
                reason: None,
                log: vec!["the output ended before this test's verdict".to_string()],
            });
        }
        (done, std::mem::take(&mut self.pending_log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: Kind, text: &str) -> (Vec<Sub>, Option<Status>, Vec<String>) {
        let mut c = Collector::new(kind);
        let mut subs = Vec::new();
        for l in text.lines() {
            subs.extend(c.feed(l));
        }
        let (last, log) = c.finish();
        subs.extend(last);
        (subs, c.top, log)
    }

    fn names(subs: &[Sub]) -> Vec<(&str, Status)> {
        subs.iter().map(|s| (s.name.as_str(), s.status)).collect()
    }

    #[test]
    fn test_progs_lines() {
        let (subs, top, log) = run(
            Kind::Progs,
            "test_map_kptr:PASS:skel_open 0 nsec\n\
             #101/1   map_kptr/success:OK\n\
             map_kptr_fail:FAIL:load unexpected error: -22\n\
             #101/2   map_kptr/fail:FAIL\n\
             #101/3   map_kptr/skipped:SKIP\n\
             #101     map_kptr:FAIL\n\
             \n\
             All error logs:\n\
             #101/2   map_kptr/fail:FAIL\n\
             #101     map_kptr:FAIL\n\
             Summary: 0/2 PASSED, 1 SKIPPED, 1 FAILED\n",
        );
        assert_eq!(
            names(&subs),
            [
                ("success", Status::Pass),
                ("fail", Status::Fail),
                ("skipped", Status::Skip)
            ]
        );
        assert_eq!(
            subs[1].log,
            ["map_kptr_fail:FAIL:load unexpected error: -22"]
        );
        assert_eq!(top, Some(Status::Fail));
        assert_eq!(log.len(), 5, "the recap is log: {log:?}");
        assert_eq!(log[4], "Summary: 0/2 PASSED, 1 SKIPPED, 1 FAILED");
        assert_eq!(test_progs("#12     for_each:OK"), Line::Top(Status::Pass));
        assert_eq!(test_progs("# not a result"), Line::Log);
        assert_eq!(test_progs("#12 x:MAYBE"), Line::Log);
    }

    #[test]
    fn test_verifier_lines() {
        let (subs, top, _) = run(
            Kind::Verifier,
            "#0/u invalid and of negative number OK\n\
             #0/p invalid and of negative number OK\n\
             #1/p map type SKIP (unsupported map type 23)\n\
             #2/u unpriv only SKIP\n\
             #3/p broken test FAIL\n\
             Unexpected error message!\n\
             \tEXP: foo\n\
             #4/p retval test FAIL retval 1 != 2 \n\
             #5/p last OK\n\
             #6/u btf test Failed to load BTF spec: 'Operation not permitted'\n\
             OK\n\
             #7/u no verdict\n\
             some log\n\
             Summary: 3 PASSED, 2 SKIPPED, 2 FAILED\n",
        );
        assert_eq!(
            names(&subs),
            [
                ("invalid and of negative number/u", Status::Pass),
                ("invalid and of negative number/p", Status::Pass),
                ("map type/p", Status::Skip),
                ("unpriv only/u", Status::Skip),
                ("broken test/p", Status::Fail),
                ("retval test/p", Status::Fail),
                ("last/p", Status::Pass),
                (
                    "btf test Failed to load BTF spec: 'Operation not permitted'/u",
                    Status::Pass
                ),
                ("no verdict/u", Status::Fail),
            ]
        );
        assert_eq!(subs[8].log[1], "some log");
        assert_eq!(subs[2].reason.as_deref(), Some("unsupported map type 23"));
        assert_eq!(subs[4].log, ["Unexpected error message!", "\tEXP: foo"]);
        assert_eq!(subs[5].log, ["FAIL retval 1 != 2"]);
        assert_eq!(top, Some(Status::Fail));
        assert_eq!(
            test_verifier("Summary: 3 PASSED, 2 SKIPPED, 0 FAILED"),
            Line::Top(Status::Pass)
        );
    }

    #[test]
    fn test_maps_lines() {
        let (subs, top, log) = run(
            Kind::Maps,
            "Fork 1024 tasks to 'test_update_delete'\n\
             test_htab_map_batch_ops:PASS\n\
             test_task_storage_map_stress_lookup:PASS\n\
             test_maps: OK, 0 SKIPPED\n",
        );
        assert_eq!(
            names(&subs),
            [
                ("test_htab_map_batch_ops", Status::Pass),
                ("test_task_storage_map_stress_lookup", Status::Pass)
            ]
        );
        assert_eq!(
            subs[0].log,
            ["Fork 1024 tasks to 'test_update_delete'"],
            "log before a result belongs to it"
        );
        assert_eq!(top, Some(Status::Pass));
        assert!(log.is_empty());
        let (subs, top, _) = run(
            Kind::Maps,
            "test_hashmap(123):FAIL:update key=1 value=1234 errno 12\n",
        );
        assert_eq!(names(&subs), [("test_hashmap", Status::Fail)]);
        assert_eq!(top, None);
    }
}
