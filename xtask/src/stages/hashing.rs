//! Content hashes that key each stage's artefact, and the stamps that record them.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Key(Sha256);

impl Key {
    pub fn new(stage: &str) -> Key {
        let mut k = Key(Sha256::new());
        k.str(stage);
        k
    }

    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn file(&mut self, path: &Path) -> Result<&mut Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        self.str(&path.to_string_lossy());
        Ok(self.bytes(&data))
    }

    pub fn finish(&self) -> String {
        hex(&self.0.clone().finalize())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// True when `stamp` holds exactly `key`.
pub fn stamp_matches(stamp: &Path, key: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == key)
}

pub fn write_stamp(stamp: &Path, key: &str) -> Result<()> {
    std::fs::write(stamp, format!("{key}\n"))
        .with_context(|| format!("writing stamp {}", stamp.display()))
}
