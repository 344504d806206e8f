//! Helpers shared by the integration test modules.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The `vaegpu` binary that cargo built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vaegpu"))
}

/// A fresh temporary folder path (removed if it exists), unique to this process, the calling module
/// (`module`) and `name`.
pub fn tmp(module: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vaegpu-{module}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// An IDX image file (magic 0x803): `n` images of `rows`×`cols`, then `pixels` as given.
pub fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0803u32, n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

/// An IDX label file (magic 0x801).
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x0000_0801u32.to_be_bytes());
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
