//! One thread per CPU, each pinned to its CPU and registered with the BPF
//! program before any of them starts, then all released at once: how the
//! tests make every CPU run a program at the same time.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Error, Result};
use libbpf_rs::{Map, MapCore, MapFlags};

use crate::runner::panic_message;
use crate::sys::bpf::{self, Pod};
use crate::sys::cpu;

/// How long the pinned threads get to report in.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What one thread did: its CPU, its kernel thread id and what its work
/// returned.
pub struct Ran<T> {
    pub cpu: usize,
    pub tid: u32,
    pub out: T,
}

/// Spawns a thread per CPU of `cpus`, pinned there. Once every thread is
/// pinned, each is registered in the program's `threads` hash map (tid ->
/// `slot(cpu)`), then `go()` is called once and
/// every thread is released with its value to run `work(cpu, go)`, after
/// which it must still be on its CPU. No thread runs `work` unless all
/// were pinned and registered. Returns every thread's result, by CPU, or
/// the first error (the others as `also:` diagnostics).
pub fn on_every_cpu<S: Pod, G, T>(
    cpus: &[usize],
    threads: &Map<'_>,
    slot: impl Fn(usize) -> S,
    go: impl FnOnce() -> G,
    work: impl Fn(usize, G) -> Result<T> + Sync,
) -> Result<Vec<Ran<T>>>
where
    G: Clone + Send,
    T: Send,
{
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<u32>)>();
    let work = &work;
    thread::scope(|s| {
        let mut workers = Vec::new();
        for &cpu in cpus {
            let (go_tx, go_rx) = mpsc::channel::<Option<G>>();
            let ready_tx = ready_tx.clone();
            let handle = s.spawn(move || -> Result<Option<T>> {
                let pinned = cpu::pin_current_thread(cpu).map(|()| cpu::gettid());
                let ok = pinned.is_ok();
                let _ = ready_tx.send((cpu, pinned));
                drop(ready_tx);
                let Some(go) = go_rx.recv().ok().flatten().filter(|_| ok) else {
                    return Ok(None);
                };
                let out = work(cpu, go)?;
                let now = cpu::current_cpu()?;
                if now != cpu {
                    bail!("thread pinned to CPU {cpu} ended on CPU {now}");
                }
                Ok(Some(out))
            });
            workers.push((cpu, go_tx, handle));
        }
        drop(ready_tx);

        let mut errors: Vec<Error> = Vec::new();
        let mut pinned = Vec::new();
        for _ in cpus {
            match ready_rx.recv_timeout(READY_TIMEOUT) {
                Ok((cpu, Ok(tid))) => pinned.push((cpu, tid)),
                Ok((cpu, Err(e))) => errors.push(e.context(format!("pinning to CPU {cpu}"))),
                Err(e) => {
                    errors.push(anyhow!("waiting for pinned threads: {e}"));
                    break;
                }
            }
        }
        if errors.is_empty() {
            for &(cpu, tid) in &pinned {
                if let Err(e) = threads.update(
                    &tid.to_ne_bytes(),
                    &bpf::pod_bytes(&slot(cpu)),
                    MapFlags::NO_EXIST,
                ) {
                    errors.push(Error::from(e).context(format!("registering tid {tid}")));
                    break;
                }
            }
        }
        // Every thread is released before any is joined, so that they all
        // run at once.
        let go = errors.is_empty().then(go);
        for (_, go_tx, _) in &workers {
            let _ = go_tx.send(go.clone());
        }
        let mut done = Vec::new();
        for (cpu, _, handle) in workers {
            match handle.join() {
                Ok(Ok(Some(out))) => {
                    if let Some(&(_, tid)) = pinned.iter().find(|(c, _)| *c == cpu) {
                        done.push(Ran { cpu, tid, out });
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => errors.push(e.context(format!("thread on CPU {cpu}"))),
                Err(p) => errors.push(anyhow!(
                    "thread on CPU {cpu} panicked: {}",
                    panic_message(p.as_ref())
                )),
            }
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            None => {
                done.sort_unstable_by_key(|r| r.cpu);
                Ok(done)
            }
            Some(first) => {
                for e in errors {
                    crate::ktap::diag(&format!("also: {e:#}"));
                }
                Err(first)
            }
        }
    })
}
