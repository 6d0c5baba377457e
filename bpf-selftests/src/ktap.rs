//! KTAP output on the virtio-serial port named `ktap`.
//!
//! Every line goes out with a single `write` and is flushed immediately: the
//! host watches the stream live to notice hangs. The writer is process-global
//! so that anything (tests, the libbpf log callback) can add `# ` diagnostics.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rig_contract::ktap as line;
use rig_contract::port;

pub use rig_contract::ktap::Verdict;

/// The virtio-serial port name the host gives the KTAP channel.
pub const PORT_NAME: &str = port::NAME;
const PORT_CLASS_DIR: &str = "/sys/class/virtio-ports";
/// The port's `name` attribute is filled in asynchronously after the device
/// probes (the host sends it on a control message), so wait for it. A debug
/// kernel under TCG on a loaded host once took over 5 s: the runner fell
/// back to stdout and the host saw no KTAP at all. Only waited for when the
/// virtio-ports class exists.
const PORT_WAIT: Duration = Duration::from_secs(60);

enum Sink {
    File(File),
    Stdout(io::Stdout),
}

impl Sink {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Sink::File(f) => {
                f.write_all(line.as_bytes())?;
                f.flush()
            }
            Sink::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(line.as_bytes())?;
                s.flush()
            }
        }
    }
}

/// A KTAP stream.
pub struct Ktap {
    sink: Mutex<Sink>,
}

static KTAP: OnceLock<Ktap> = OnceLock::new();

impl Ktap {
    /// Opens `path` if given, else the `ktap` virtio port, else stdout.
    pub fn open(path: Option<&Path>) -> Result<Ktap> {
        let started = Instant::now();
        let sink = match path {
            Some(p) => Sink::File(open_for_append(p)?),
            None => match find_port(PORT_WAIT)? {
                Some(dev) => {
                    eprintln!(
                        "bpf-selftests: KTAP on {} (found after {} ms)",
                        dev.display(),
                        started.elapsed().as_millis()
                    );
                    Sink::File(open_for_append(&dev)?)
                }
                None => {
                    eprintln!("{}", port::missing_message(PORT_CLASS_DIR));
                    Sink::Stdout(io::stdout())
                }
            },
        };
        Ok(Ktap {
            sink: Mutex::new(sink),
        })
    }

    /// Installs `self` as the process-wide stream and returns it.
    pub fn install(self) -> &'static Ktap {
        let _ = KTAP.set(self);
        KTAP.get().expect("KTAP stream just installed")
    }

    /// Writes one line (without its trailing newline) in a single write.
    pub fn line(&self, text: &str) {
        let mut buf = String::with_capacity(text.len() + 1);
        buf.push_str(text);
        buf.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.write_line(&buf) {
            eprintln!("bpf-selftests: KTAP write failed ({e}): {text}");
        }
    }

    /// Writes `msg` as `# ` diagnostic lines, one per line of `msg`.
    pub fn diag(&self, msg: &str) {
        for l in line::diag(msg) {
            self.line(&l);
        }
    }

    /// `KTAP version 1`, the test count and the `# plan:` line.
    pub fn header(&self, names: &[&str]) {
        for l in line::header(names) {
            self.line(&l);
        }
    }

    pub fn start(&self, name: &str) {
        self.line(&line::start(name));
    }

    /// `# duration_ms:` followed by the result line for test number `n`.
    pub fn result(&self, n: usize, name: &str, verdict: Verdict<'_>, elapsed: Duration) {
        self.line(&line::duration(elapsed.as_millis()));
        self.line(&line::result(n, name, verdict));
    }
}

/// Diagnostic lines on the installed stream (stderr before installation).
pub fn diag(msg: &str) {
    match KTAP.get() {
        Some(k) => k.diag(msg),
        None => eprintln!("{msg}"),
    }
}

fn open_for_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening KTAP output {}", path.display()))
}

/// Looks for `/sys/class/virtio-ports/vportXpY/name` reading `ktap` and
/// returns `/dev/vportXpY`, polling up to `wait` for it to show up (not at
/// all without a virtio console driver).
fn find_port(wait: Duration) -> Result<Option<PathBuf>> {
    if !Path::new(PORT_CLASS_DIR).exists() {
        return Ok(None);
    }
    let deadline = Instant::now() + wait;
    loop {
        if let Some(dev) = scan_ports()? {
            if dev.exists() {
                return Ok(Some(dev));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn scan_ports() -> Result<Option<PathBuf>> {
    let entries = match fs::read_dir(PORT_CLASS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {PORT_CLASS_DIR}")),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {PORT_CLASS_DIR}"))?;
        // Absent or unreadable until the host names the port: keep polling.
        let Ok(name) = fs::read_to_string(entry.path().join("name")) else {
            continue;
        };
        if name.trim() == PORT_NAME {
            return Ok(Some(Path::new("/dev").join(entry.file_name())));
        }
    }
    Ok(None)
}
