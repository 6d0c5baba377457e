//! One line per stage: what it is doing and for how long.

use std::time::{Duration, Instant};

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
