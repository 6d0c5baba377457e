//! The kernel interfaces the tests and benchmarks use, each a thin module
//! that reads, writes or calls one thing and parses what comes back: no
//! test logic and no expectations here (those live in `crate::tests`).
//!
//! - `bpf`: loading the BPF objects with libbpf-rs, global data, Pod values;
//! - `btf_tags`: BTF type tags of an object, kfuncs in the kernel's BTF;
//! - `reserve`: the reservation map (`BPF_MAP_TYPE_GLOBAL_MA_RESERVE`) and
//!   the raw bpf() commands it needs;
//! - `fail_page_alloc`: page-allocation fault injection for one thread;
//! - `stats`, `caches`, `outstanding`: the global allocator's debugfs files;
//! - `fdinfo`: `/proc/self/fdinfo` of BPF objects;
//! - `nmi`: the kernel's test NMI source;
//! - `kmsg`: the kernel log, record by record;
//! - `cpu`, `affinity`: CPU lists and pinning.

pub mod affinity;
pub mod bpf;
pub mod btf_tags;
pub mod caches;
pub mod cpu;
pub mod fail_page_alloc;
pub mod fdinfo;
pub mod kmsg;
pub mod nmi;
pub mod outstanding;
pub mod reserve;
pub mod stats;
