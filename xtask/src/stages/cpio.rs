//! A newc ("070701") cpio writer: the initramfs format the kernel unpacks.
//! Written here so the image is byte-for-byte reproducible (fixed mtimes,
//! inode numbers and owners), which keeps its content hash stable.

use std::io::Write;

pub enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDev { major: u32, minor: u32 },
}

#[derive(Default)]
pub struct Archive {
    entries: Vec<(String, Entry)>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds `path` (no leading slash needed) and any missing parent dirs.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/').to_string();
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !self.entries.iter().any(|(p, _)| *p == parent) {
                self.entries.push((parent.clone(), Entry::Dir));
            }
        }
        self.entries.retain(|(p, _)| *p != path);
        self.entries.push((path, entry));
    }

    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100000 | mode, data, (0, 0)),
                Entry::CharDev { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            header(out, ino as u32 + 1, mode, data.len() as u32, rdev, path)?;
            out.write_all(data)?;
            pad(out, data.len())?;
        }
        header(out, 0, 0, 0, (0, 0), "TRAILER!!!")
    }
}

fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> std::io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut h = String::from("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + name.len() + 1)
}

fn pad(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_aligned_newc_with_parents_and_trailer() {
        let mut a = Archive::new();
        a.add(
            "/bin/sh",
            Entry::File {
                data: b"x".to_vec(),
                mode: 0o755,
            },
        );
        a.add(
            "init",
            Entry::File {
                data: b"#!/bin/sh\n".to_vec(),
                mode: 0o755,
            },
        );
        let mut buf = Vec::new();
        a.write(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf);
        // bin (parent), bin/sh, init, trailer
        assert_eq!(text.matches("070701").count(), 4);
        assert!(text.contains("bin\0"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.ends_with("TRAILER!!!\0"));
        assert_eq!(buf.len() % 4, 0);
        let first = &text[..110];
        assert_eq!(&first[14..22], "000041ed", "dir mode");
    }
}
