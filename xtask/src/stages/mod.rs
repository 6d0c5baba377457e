//! The pipeline's stages before the boot, in order: tree (the pinned kernel
//! tree), apply (the series), config (the merged .config), build (vmlinux and
//! bzImage) and image (the initramfs). Each takes the previous stage's
//! artefact and skips itself when the content key of its inputs is unchanged.

pub mod archive;
pub mod baseline;
pub mod cpio;
pub mod hashing;
pub mod image;
pub mod kbuild;
pub mod kconfig;
pub mod make;
pub mod not_built;
pub mod patches;
pub mod series_in_tree;
pub mod tree;
