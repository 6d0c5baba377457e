//! The host's BPF objects in the image. For each one the host could not
//! build against this kernel, the image's `not-built` list
//! (rig_contract::lacks) has the reason, and a test that needs the object
//! skips with it.

use std::path::Path;

use rig_contract::lacks::{self, NotBuilt};

use crate::runner::{Ctx, Outcome};
use crate::sys::bpf;

/// `<dir>/<object>.bpf.o`'s entry in the list, or why there is none.
fn entry(dir: &Path, object: &str) -> Result<NotBuilt, String> {
    let list = dir.join(lacks::LIST);
    let text = std::fs::read_to_string(&list)
        .map_err(|e| format!("{} unreadable: {e}", list.display()))?;
    let file = format!("{object}.bpf.o");
    lacks::parse_list(&text)
        .map_err(|e| format!("{}: {e}", list.display()))?
        .into_iter()
        .find(|e| e.object == file)
        .ok_or_else(|| format!("{} does not list it", list.display()))
}

/// None when the image holds `<object>.bpf.o`; else a skip with the host's
/// reason (clang's first error as a diagnostic). An object missing without
/// a reason is a broken image: that skip names no feature, so it fails
/// the run on any tree.
pub fn skip_if_not_built(ctx: &Ctx<'_>, object: &str) -> Option<Outcome> {
    let dir = &ctx.cfg.bpf_dir;
    let path = bpf::object_path(dir, object);
    if path.exists() {
        return None;
    }
    Some(Outcome::Skip(match entry(dir, object) {
        Ok(nb) => {
            if !nb.compiler.is_empty() {
                ctx.diag(format!("clang: {}", nb.compiler));
            }
            nb.reason
        }
        Err(why) => format!("{} missing from the image, and {why}", path.display()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_comes_from_the_list() {
        let dir = std::env::temp_dir().join(format!("rig-objects-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = crate::cmdline::Config {
            bpf_dir: dir.clone(),
            ..Default::default()
        };
        let ctx = Ctx { cfg: &cfg };
        let reason = |object: &str| match skip_if_not_built(&ctx, object) {
            Some(Outcome::Skip(why)) => Some(why),
            Some(Outcome::Pass) => panic!("a pass"),
            None => None,
        };
        let no_list = reason("a").unwrap();
        assert!(
            no_list.contains("a.bpf.o missing from the image, and "),
            "{no_list}"
        );
        assert!(no_list.contains("not-built unreadable"), "{no_list}");
        // A broken image names no feature: such a skip fails any run.
        assert_eq!(lacks::lacked(&no_list), None);
        let nb = NotBuilt {
            object: "a.bpf.o".into(),
            reason: lacks::lacks("a.bpf.o not built", "struct x"),
            compiler: "a.bpf.c:1:1: error: incomplete definition of type 'struct x'".into(),
        };
        std::fs::write(
            dir.join(lacks::LIST),
            lacks::write_list(std::slice::from_ref(&nb)),
        )
        .unwrap();
        assert_eq!(reason("a").unwrap(), nb.reason);
        assert_eq!(lacks::lacked(&reason("a").unwrap()), Some("struct x"));
        let unlisted = reason("b").unwrap();
        assert!(
            unlisted.ends_with("not-built does not list it"),
            "{unlisted}"
        );
        std::fs::write(bpf::object_path(&dir, "b"), b"").unwrap();
        assert_eq!(reason("b"), None);
        std::fs::write(dir.join(lacks::LIST), "broken\n").unwrap();
        assert!(reason("a").unwrap().contains("expected `object<TAB>reason"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
