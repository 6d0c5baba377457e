//! Requests from the guest, answered through QEMU's QMP socket. A KTAP
//! diagnostic line `# rig: inject-nmi` asks for QMP `inject-nmi`: an NMI on
//! every vCPU from outside the guest (what `nmi` in the QEMU monitor does),
//! for the series' external-NMI selftest.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long QEMU gets to answer one QMP command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh socket path for one QEMU. Unix socket paths are limited to 108
/// bytes, so it lives in the temp dir rather than the (deep) run dir.
pub fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "rig-qmp-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// How many NMI requests the KTAP text holds (rig_contract::request).
pub fn nmi_requests(ktap: &str) -> usize {
    rig_contract::request::count_inject_nmi(ktap)
}

/// Reads QMP lines until a command's reply: Ok for `return`, the error
/// for `error`; events in between are skipped.
fn reply(r: &mut impl BufRead, what: &str) -> Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)
            .with_context(|| format!("reading QEMU's reply to {what}"))?
            == 0
        {
            bail!("QEMU closed the QMP socket before answering {what}");
        }
        if line.contains("\"return\"") {
            return Ok(());
        }
        if line.contains("\"error\"") {
            bail!("QEMU refused {what}: {}", line.trim());
        }
    }
}

/// Connects to QEMU's QMP socket and sends `inject-nmi`.
pub fn inject_nmi(socket: &Path) -> Result<()> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to QMP at {}", socket.display()))?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .context("setting the QMP read timeout")?;
    let mut r = BufReader::new(s.try_clone().context("cloning the QMP socket")?);
    let mut greeting = String::new();
    r.read_line(&mut greeting)
        .context("reading the QMP greeting")?;
    if !greeting.contains("\"QMP\"") {
        bail!("not a QMP greeting: {}", greeting.trim());
    }
    for cmd in ["qmp_capabilities", "inject-nmi"] {
        writeln!(s, "{{\"execute\": \"{cmd}\"}}").with_context(|| format!("sending {cmd}"))?;
        reply(&mut r, cmd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn counts_requests() {
        assert_eq!(
            nmi_requests("ok 1 a\n# rig: inject-nmi\n  # rig: inject-nmi\n# x\n"),
            2
        );
        assert_eq!(nmi_requests("# rig: inject-nmi please\n"), 0);
    }

    /// A fake QEMU answering the greeting and each command with `reply`.
    fn fake_qemu(
        path: &Path,
        replies: &'static [&'static str],
    ) -> std::thread::JoinHandle<Vec<String>> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            writeln!(s, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut got = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                got.push(line.trim().to_string());
                writeln!(s, r#"{{"event": "X"}}"#).unwrap();
                writeln!(s, "{reply}").unwrap();
            }
            got
        })
    }

    #[test]
    fn negotiates_then_injects() {
        let path = socket_path();
        let t = fake_qemu(&path, &[r#"{"return": {}}"#, r#"{"return": {}}"#]);
        inject_nmi(&path).unwrap();
        let got = t.join().unwrap();
        assert_eq!(
            got,
            [
                r#"{"execute": "qmp_capabilities"}"#,
                r#"{"execute": "inject-nmi"}"#
            ]
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_refusal_is_an_error() {
        let path = socket_path();
        let _t = fake_qemu(
            &path,
            &[
                r#"{"return": {}}"#,
                r#"{"error": {"class": "GenericError"}}"#,
            ],
        );
        let e = inject_nmi(&path).unwrap_err().to_string();
        assert!(e.contains("refused inject-nmi"), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(inject_nmi(&path).is_err(), "no socket is an error");
    }
}
