//! Where a boot's time goes: the host clock when each milestone first shows
//! in the console file (polled every few ms while QEMU runs), next to the
//! guest kernel's own printk timestamp for it.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Console milestones in boot order: (name, text that marks it).
pub const MILESTONES: &[(&str, &str)] = &[
    ("first_console_line", ""),
    ("initramfs_unpack_start", "Unpacking initramfs..."),
    ("initramfs_unpack_done", "Freeing initrd memory"),
    ("kernel_runs_init", "Run /init as init process"),
    ("init_script_started", "rig: init started"),
];

/// When each milestone appeared, on the host clock from `start`.
pub struct Seen {
    pub host: Vec<Option<Duration>>,
}

/// Follows `path` from `start` until `stop` is set.
pub fn watch(path: PathBuf, start: Instant, stop: Arc<AtomicBool>) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut host = vec![None; MILESTONES.len()];
        let mut text = String::new();
        let mut file = None;
        loop {
            let done = stop.load(Ordering::SeqCst);
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            if let Some(f) = file.as_mut() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
                    let now = start.elapsed();
                    text.push_str(&String::from_utf8_lossy(&buf));
                    for (slot, (_, marker)) in host.iter_mut().zip(MILESTONES) {
                        if slot.is_none() && text.contains(marker) {
                            *slot = Some(now);
                        }
                    }
                }
            }
            if done || host.iter().all(Option::is_some) {
                return Seen { host };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// The printk timestamp (seconds) of the first console line containing
/// `marker`, when the line has one.
pub fn kernel_stamp(console: &str, marker: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(marker))?;
    let rest = line.trim_start().strip_prefix('[')?;
    let (num, _) = rest.split_once(']')?;
    num.trim().parse().ok()
}

/// Lines the kernel printed before it ran init (each one is serial output
/// that TCG emulates byte by byte).
pub fn lines_before_init(console: &str) -> usize {
    console
        .lines()
        .take_while(|l| !l.contains("Run /init as init process"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "[    0.000000] Linux version 6.1.192+\n\
        [    1.002671] Unpacking initramfs...\n\
        [    1.061017] Freeing initrd memory: 4788K\n\
        [    1.835874] Run /init as init process\n\
        rig: init started on 0-3 CPUs\n";

    #[test]
    fn reads_printk_stamps() {
        assert_eq!(kernel_stamp(LOG, "Unpacking initramfs"), Some(1.002671));
        assert_eq!(kernel_stamp(LOG, "Run /init"), Some(1.835874));
        assert_eq!(kernel_stamp(LOG, "rig: init started"), None);
        assert_eq!(kernel_stamp(LOG, "absent"), None);
        assert_eq!(lines_before_init(LOG), 3);
    }

    #[test]
    fn watcher_sees_milestones_in_a_growing_file() {
        let dir = std::env::temp_dir().join(format!("rig-bench-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let stop = Arc::new(AtomicBool::new(false));
        let h = watch(path.clone(), Instant::now(), Arc::clone(&stop));
        std::fs::write(&path, &LOG[..60]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&path, LOG).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::SeqCst);
        let seen = h.join().unwrap();
        assert!(seen.host.iter().all(Option::is_some), "{:?}", seen.host);
        assert!(seen.host[0] <= seen.host[3]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
