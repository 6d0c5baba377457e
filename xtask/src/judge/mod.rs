//! Stage `judge`: what the guest's KTAP stream and console say, and the
//! verdict drawn from them (pure functions; no I/O).

pub mod console;
pub mod ktap;
pub mod verdict;

/// The recorded logs under test_data/ that the judge's tests read.
#[cfg(test)]
pub(crate) mod test_data {
    use std::path::{Path, PathBuf};

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../test_data")
    }

    /// The files of `test_data/<sub>`, sorted; there must be some.
    pub fn files(sub: &str) -> Vec<PathBuf> {
        let dir = dir().join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no files in {}", dir.display());
        files
    }

    /// `test_data/<path>` as text (invalid UTF-8 replaced).
    pub fn read(path: &str) -> String {
        let p = dir().join(path);
        String::from_utf8_lossy(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .into_owned()
    }
}
