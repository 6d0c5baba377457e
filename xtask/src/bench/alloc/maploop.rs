//! One map-loop boot's figures, read back from its ktap.log: the `# bench:`
//! lines of the guest's `bench_maploop` test (`rig.bench=maploop`,
//! bpf-selftests/src/bench/maploop.rs documents them), checked complete:
//! every repetition the setup line announces, once, with its loop count.

use anyhow::{bail, Context, Result};

use super::figures::{passed_test, Line};
use crate::judge::ktap;

/// The guest's one KTAP test in `rig.bench=maploop` mode.
pub const TEST: &str = "bench_maploop";
/// bpf_loop()'s limit on its iterations, which bounds the pairs per run.
pub const MAX_LOOPS: u64 = 1 << 23;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// The CPU the guest pinned its thread to.
    pub cpu: u32,
    pub online: u32,
    /// update+delete pairs per run.
    pub loops: u64,
    pub reps: u32,
    pub warmup: u32,
    pub max_entries: u32,
}

/// One boot's map-loop figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Boot {
    pub setup: Setup,
    /// ns per update+delete pair, one per repetition in order.
    pub ns_per_pair: Vec<f64>,
}

pub fn parse(ktap_log: &str) -> Result<Boot> {
    let report = ktap::parse(ktap_log);
    let mut setup = None;
    let mut runs: Vec<(u32, u64, u64)> = Vec::new();
    for d in passed_test(&report, TEST)? {
        let Some(text) = rig_contract::bench::strip(d) else {
            continue;
        };
        let l = Line::parse(text).with_context(|| format!("{TEST}: `{d}`"))?;
        match l.kind {
            "setup" if setup.is_some() => bail!("{TEST}: a second setup line `{d}`"),
            "setup" => {
                setup = Some(Setup {
                    cpu: l.num("cpu")?,
                    online: l.num("online")?,
                    loops: l.num("loops")?,
                    reps: l.num("reps")?,
                    warmup: l.num("warmup")?,
                    max_entries: l.num("max_entries")?,
                })
            }
            "maploop" => runs.push((l.num("rep")?, l.num("loops")?, l.num("ns")?)),
            other => bail!("{TEST}: unknown kind {other:?} in `{d}`"),
        }
    }
    let setup = setup.context("the guest printed no `bench: setup` line")?;
    if setup.loops == 0 || setup.loops > MAX_LOOPS {
        bail!("setup {setup:?}: loops must be 1..={MAX_LOOPS}");
    }
    let mut reps: Vec<u32> = runs.iter().map(|r| r.0).collect();
    reps.sort_unstable();
    if reps != (1..=setup.reps).collect::<Vec<_>>() {
        bail!("map loop repetitions {reps:?}, want 1..={}", setup.reps);
    }
    runs.sort_unstable_by_key(|r| r.0);
    let mut ns_per_pair = Vec::new();
    for (rep, loops, ns) in runs {
        if loops != setup.loops || ns == 0 {
            bail!("map loop run {rep}: loops={loops} ns={ns} does not match the setup {setup:?}");
        }
        ns_per_pair.push(ns as f64 / loops as f64);
    }
    Ok(Boot { setup, ns_per_pair })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The guest runner's own output for `rig.bench=maploop
    /// rig.bench.loops=100000` (its default 5 runs), recorded by running it
    /// on the development host's kernel (6.18, with a bind-mounted
    /// /proc/cmdline), not in the rig's guest: the format is the runner's,
    /// the figures are not the rig kernel's.
    fn sample() -> String {
        let p =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test_data/bench/maploop-ktap.log");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn reads_the_sample() {
        let b = parse(&sample()).unwrap();
        assert_eq!(
            b.setup,
            Setup {
                cpu: 0,
                online: 2,
                loops: 100_000,
                reps: 5,
                warmup: 1,
                max_entries: 1024
            }
        );
        assert_eq!(b.ns_per_pair.len(), 5);
        assert_eq!(b.ns_per_pair[0], 60.83299);
        assert_eq!(b.ns_per_pair[3], 60.63495);
    }

    fn lines(body: &[&str]) -> String {
        let mut s =
            String::from("KTAP version 1\n1..1\n# plan: bench_maploop\n# start: bench_maploop\n");
        for b in body {
            s.push_str(b);
            s.push('\n');
        }
        s.push_str("# duration_ms: 1234\nok 1 bench_maploop\n");
        s
    }

    /// What the guest's writer makes of one run (the same function writes
    /// both sides' lines).
    fn run_line(rep: u32, loops: u64, ns: u64) -> String {
        format!(
            "# {}",
            rig_contract::bench::line(
                "maploop",
                &[
                    ("rep", rep.to_string()),
                    ("loops", loops.to_string()),
                    ("ns", ns.to_string()),
                ],
            )
        )
    }

    const SETUP: &str = "# bench: setup cpu=1 online=2 loops=10 reps=2 warmup=1 max_entries=1024";

    #[test]
    fn repetitions_come_back_in_order() {
        let (r2, r1) = (run_line(2, 10, 3000), run_line(1, 10, 2000));
        let b = parse(&lines(&[SETUP, &r2, &r1])).unwrap();
        assert_eq!(b.ns_per_pair, vec![200.0, 300.0]);
        assert_eq!(b.setup.cpu, 1);
    }

    #[test]
    fn missing_or_odd_figures_are_errors() {
        let (r1, r2) = (run_line(1, 10, 2000), run_line(2, 10, 3000));
        let cases: [(&str, Vec<&str>); 7] = [
            ("no setup", vec![&r1, &r2]),
            ("a repetition missing", vec![SETUP, &r1]),
            ("a repetition twice", vec![SETUP, &r1, &r2, &r2]),
            ("two setups", vec![SETUP, SETUP, &r1, &r2]),
            (
                "another loop count",
                vec![SETUP, &r1, "# bench: maploop rep=2 loops=11 ns=3000"],
            ),
            (
                "not a number",
                vec![SETUP, &r1, "# bench: maploop rep=2 loops=10 ns=fast"],
            ),
            (
                "an unknown kind",
                vec![SETUP, &r1, &r2, "# bench: alloc x=1"],
            ),
        ];
        for (why, body) in cases {
            assert!(parse(&lines(&body)).is_err(), "{why}");
        }
        let zero = "# bench: maploop rep=2 loops=10 ns=0";
        assert!(parse(&lines(&[SETUP, &r1, zero])).is_err(), "0 ns");
    }

    #[test]
    fn a_failed_or_crashed_boot_has_no_figures() {
        let text = sample().replace("ok 1 bench_maploop", "not ok 1 bench_maploop");
        let e = format!("{:#}", parse(&text).unwrap_err());
        assert!(e.contains("bench_maploop FAILED"), "{e}");
        let s = sample();
        assert!(parse(&s[..s.find("ok 1 bench_maploop").unwrap()]).is_err());
    }
}
