//! Loading the host-compiled BPF objects with libbpf-rs (no skeletons).

use std::mem;
use std::path::{Path, PathBuf};
use std::ptr;

use anyhow::{bail, Context, Result};
use libbpf_rs::{
    Map, MapCore, MapFlags, Object, ObjectBuilder, OpenMapMut, OpenObject, PrintLevel, ProgramType,
};

use crate::ktap;

/// Routes libbpf's log: warnings (including verifier logs of failed loads)
/// become KTAP diagnostics of the running test; info (and debug, if asked
/// for) goes to stderr.
pub fn forward_libbpf_log(debug: bool) {
    fn print(level: PrintLevel, msg: String) {
        if let Some(buf) = CAPTURED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            buf.push_str(&msg);
        }
        match level {
            // libbpf's messages already start with "libbpf: ".
            PrintLevel::Warn => ktap::diag(msg.trim_end()),
            _ => eprint!("{msg}"),
        }
    }
    let level = if debug {
        PrintLevel::Debug
    } else {
        PrintLevel::Info
    };
    libbpf_rs::set_print(Some((level, print)));
}

/// libbpf's messages while `capture_libbpf_log` runs.
static CAPTURED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Runs `f` and returns what libbpf logged meanwhile (verifier logs of
/// failed loads included), besides forwarding it as usual.
pub fn capture_libbpf_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let lock = || CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
    *lock() = Some(String::new());
    let r = f();
    let log = lock().take().unwrap_or_default();
    (r, log)
}

/// `<dir>/<name>.bpf.o`.
pub fn object_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.bpf.o"))
}

/// Opens `<dir>/<name>.bpf.o` (not loaded yet).
pub fn open_object(dir: &Path, name: &str) -> Result<OpenObject> {
    let path = object_path(dir, name);
    if !path.exists() {
        bail!("BPF object {} not found", path.display());
    }
    ObjectBuilder::default()
        .open_file(&path)
        .with_context(|| format!("opening BPF object {}", path.display()))
}

/// Loads an opened object into the kernel (runs the verifier).
pub fn load(open: OpenObject, name: &str) -> Result<Object> {
    let global_data = open
        .maps()
        .any(|m| is_internal_map(&m.name().to_string_lossy()));
    open.load().map_err(|e| {
        let e = anyhow::Error::from(e).context(format!(
            "loading BPF object {name}.bpf.o (verifier log above)"
        ));
        // libbpf probes global-data support by loading a socket filter; a
        // kernel without CONFIG_NET fails that probe, so libbpf silently
        // skips creating .bss/.data/.rodata and the verifier then rejects
        // the program with a confusing "fd N is not pointing to valid bpf_map".
        if global_data && matches!(ProgramType::SocketFilter.is_supported(), Ok(false)) {
            e.context(
                "the kernel lacks BPF_PROG_TYPE_SOCKET_FILTER (CONFIG_NET=n), so libbpf \
                 believes global data is unsupported and did not create the .bss/.data \
                 maps; enable CONFIG_NET",
            )
        } else {
            e
        }
    })
}

/// libbpf's maps for global data: `<prefix>.bss`, `.data`, `.rodata`, ...
fn is_internal_map(name: &str) -> bool {
    name.contains('.')
}

/// Whether a libbpf map name refers to `want`. Internal maps (`.bss`,
/// `.data`, `.rodata`) get an object-name prefix, e.g. `hash_no.bss`.
fn map_name_matches(name: &str, want: &str) -> bool {
    if want.starts_with('.') {
        name.ends_with(want)
    } else {
        name == want
    }
}

/// A map of an opened object by name (`.bss` etc. for global data).
pub fn open_map_mut<'o>(obj: &'o mut OpenObject, want: &str) -> Result<OpenMapMut<'o>> {
    obj.maps_mut()
        .find(|m| map_name_matches(&m.name().to_string_lossy(), want))
        .with_context(|| format!("no map {want:?} in BPF object"))
}

/// A map of a loaded object by name (`.bss` etc. for global data).
pub fn map<'o>(obj: &'o Object, want: &str) -> Result<Map<'o>> {
    obj.maps()
        .find(|m| map_name_matches(&m.name().to_string_lossy(), want))
        .with_context(|| format!("no map {want:?} in BPF object"))
}

/// Marker for `#[repr(C)]` structs made only of integers, mirrored from a BPF
/// program, so any byte pattern is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` types whose fields are all integers (or
/// arrays of integers) with no padding the BPF side would not also have.
pub unsafe trait Pod: Copy {}

/// Reads a `T` from the start of `bytes` (e.g. a global-data map value).
pub fn read_pod<T: Pod>(bytes: &[u8]) -> Result<T> {
    if bytes.len() < mem::size_of::<T>() {
        bail!(
            "value of {} bytes is shorter than {} ({} bytes): C and Rust layouts disagree",
            bytes.len(),
            std::any::type_name::<T>(),
            mem::size_of::<T>()
        );
    }
    // SAFETY: length checked above, T is Pod, read_unaligned needs no alignment.
    Ok(unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Writes `value` over the start of `bytes` (e.g. a `.bss` initial value).
pub fn write_pod<T: Pod>(bytes: &mut [u8], value: &T) -> Result<()> {
    let size = mem::size_of::<T>();
    if bytes.len() < size {
        bail!(
            "value of {} bytes is shorter than {} ({size} bytes): C and Rust layouts disagree",
            bytes.len(),
            std::any::type_name::<T>(),
        );
    }
    // SAFETY: T is Pod (no padding of interest), size checked above.
    let src = unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size) };
    bytes[..size].copy_from_slice(src);
    Ok(())
}

/// The bytes of a Pod value (map keys and values).
pub fn pod_bytes<T: Pod>(value: &T) -> Vec<u8> {
    let mut v = vec![0; mem::size_of::<T>()];
    write_pod(&mut v, value).expect("buffer sized for T");
    v
}

/// Sets the initial contents of an opened object's global-data map `.bss` /
/// `.data` to `value` (must be called before load).
pub fn set_global<T: Pod>(obj: &mut OpenObject, section: &str, value: &T) -> Result<()> {
    let mut m = open_map_mut(obj, section)?;
    let init = m
        .initial_value_mut()
        .with_context(|| format!("map {section} has no initial value"))?;
    write_pod(init, value).with_context(|| format!("setting {section}"))
}

/// Reads the current contents of a loaded object's global-data map.
pub fn read_global<T: Pod>(obj: &Object, section: &str) -> Result<T> {
    let m = map(obj, section)?;
    let bytes = m
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("reading {section}"))?
        .with_context(|| format!("{section} has no element 0"))?;
    read_pod(&bytes).with_context(|| format!("decoding {section}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct S {
        a: u32,
        b: u32,
        c: u64,
    }
    unsafe impl Pod for S {}

    #[test]
    fn pod_round_trip() {
        let s = S { a: 1, b: 2, c: 3 };
        let bytes = pod_bytes(&s);
        assert_eq!(bytes.len(), 16);
        assert_eq!(read_pod::<S>(&bytes).unwrap(), s);
        assert!(read_pod::<S>(&bytes[..8]).is_err());
    }

    #[test]
    fn internal_map_names() {
        assert!(map_name_matches("hash_no.bss", ".bss"));
        assert!(!map_name_matches("hash_no.data", ".bss"));
        assert!(map_name_matches("stress", "stress"));
        assert!(!map_name_matches("stress2", "stress"));
    }
}
