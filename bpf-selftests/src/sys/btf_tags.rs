//! Checks on the BTF type tags of a compiled BPF object.
//!
//! clang before 15 accepts `__attribute__((btf_type_tag("kptr_ref")))` but
//! leaves the tag out of the object's BTF, so a `__kptr_ref` map value field
//! reaches the kernel as a plain pointer and the verifier then refuses every
//! `bpf_kptr_xchg()` on it with a message that does not say why. Checking
//! the object first turns that into a one-line diagnosis.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::btf::types::{Func, TypeTag};
use libbpf_rs::btf::Btf;

/// Whether the BTF of the object file at `path` has a type tag `tag`.
pub fn has_type_tag(path: &Path, tag: &str) -> Result<bool> {
    let btf = Btf::from_path(path).with_context(|| format!("reading BTF of {}", path.display()))?;
    Ok(btf.type_by_name::<TypeTag<'_>>(tag).is_some())
}

/// Err unless the object at `path` carries the `kptr_ref` type tag.
pub fn require_kptr_ref(path: &Path) -> Result<()> {
    if !has_type_tag(path, "kptr_ref")? {
        bail!(
            "{} has no BTF type tag \"kptr_ref\": it was compiled by a clang that drops \
             btf_type_tag (clang < 15), so its __kptr_ref fields are plain pointers; \
             compile progs/ with clang-16",
            path.display()
        );
    }
    Ok(())
}

/// Whether the running kernel's BTF has a function `name` (a kfunc the
/// tree under test may not have yet).
pub fn kernel_has_func(name: &str) -> Result<bool> {
    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
    let btf = Btf::from_path(VMLINUX).with_context(|| format!("reading {VMLINUX}"))?;
    Ok(btf.type_by_name::<Func<'_>>(name).is_some())
}
