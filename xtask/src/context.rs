//! Where things are: the repository, the work dir, and the host's resources.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::flags::Common;

pub struct Ctx {
    pub repo: PathBuf,
    pub work: PathBuf,
    pub common: Common,
}

impl Ctx {
    pub fn new(common: Common) -> Result<Ctx> {
        let repo = repo_root();
        let work = match &common.work_dir {
            Some(dir) => dir.clone(),
            None => repo.join("target/rig"),
        };
        std::fs::create_dir_all(&work)
            .with_context(|| format!("creating the work dir {}", work.display()))?;
        let work = work
            .canonicalize()
            .with_context(|| format!("resolving the work dir {}", work.display()))?;
        Ok(Ctx { repo, work, common })
    }

    pub fn jobs(&self) -> usize {
        self.common.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() + 1)
                .unwrap_or(2)
        })
    }

    pub fn dir(&self, rel: &str) -> Result<PathBuf> {
        let dir = self.work.join(rel);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// The workspace root: xtask lives one level below it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Names the Debian package to install when a host tool is missing.
pub fn require_tool(tool: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        anyhow::bail!("`{tool}` is not installed: run `apt-get install {package}`")
    }
}
