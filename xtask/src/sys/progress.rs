//! One line per stage: what it is doing and for how long. The times are
//! also kept, for the run's results.yaml (where the bench reads them).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds per stage since the last [`take_times`], in the order the stages
/// first finished.
static TIMES: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// Adds `secs` to stage `name`'s time.
pub fn record(name: &str, secs: f64) {
    let mut times = TIMES.lock().unwrap_or_else(|p| p.into_inner());
    match times.iter_mut().find(|(n, _)| n == name) {
        Some((_, t)) => *t += secs,
        None => times.push((name.to_string(), secs)),
    }
}

/// The stage times recorded since the last call (one boot's worth when a
/// command boots several times).
pub fn take_times() -> Vec<(String, f64)> {
    std::mem::take(&mut *TIMES.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A stage with nothing to do: its line, and a time of 0.
pub fn up_to_date(name: &'static str, what: &str) {
    eprintln!("[{name}] up to date: {what}");
    record(name, 0.0);
}

pub struct Stage {
    name: &'static str,
    start: Instant,
}

impl Stage {
    pub fn start(name: &'static str, what: &str) -> Stage {
        eprintln!("[{name}] {what}");
        Stage {
            name,
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A progress line for long stages, at most one every few seconds by the caller.
    pub fn tick(&self, what: &str) {
        eprintln!("[{}] {:>6} {what}", self.name, fmt_secs(self.elapsed()));
    }

    pub fn done(self, what: &str) -> Duration {
        let took = self.elapsed();
        eprintln!("[{}] {what} ({})", self.name, fmt_secs(took));
        record(self.name, took.as_secs_f64());
        took
    }
}

pub fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s as u64) / 60, (s as u64) % 60)
    }
}
