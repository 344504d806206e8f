//! The checkpoint loader on arbitrary files, for a small MLP VAE (16 inputs, hidden 4, latent 2).
//!
//! Input: a flags byte, then the parts `meta.json`, `model.safetensors`, `optimizer.safetensors`,
//! `state.safetensors`, `manifest.json` and `latest`, each preceded by its length as a little-endian
//! u32 (clamped to what is left). Meta and model are always written into the checkpoint folder; flag
//! bits 0, 1 and 4 write the optimizer, state and `latest` files; bit 3 writes a manifest that matches
//! the files (`write_manifest`, so the fuzzer gets past the SHA-256 checks), else bit 2 writes the
//! fuzzed one; no manifest means a format-1 checkpoint. Then `load_meta` and `load`. Every input must
//! give `Ok` or `Err`: no panic, no abort, no allocation beyond the model's size and the files'.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vaegpu::models::vae::{NamedTensor, VaeConfig};
use vaegpu::train::checkpoint::{self, LATEST, MANIFEST, META, MODEL, OPTIMIZER, STATE};

struct Setup {
    dir: PathBuf,
    named: Vec<NamedTensor>,
    total: usize,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vaegpu-fuzz-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = VaeConfig { input_dim: 16, image: [4, 4, 1], hidden: vec![4], latent: 2, ..Default::default() };
        let layout = cfg.layout();
        Setup { dir, named: cfg.named_tensors(&layout), total: layout.total }
    })
}

/// The next length-prefixed part of `input`.
fn take<'a>(input: &mut &'a [u8]) -> &'a [u8] {
    let (len, rest) = match input.split_first_chunk::<4>() {
        Some((len, rest)) => (u32::from_le_bytes(*len) as usize, rest),
        None => (0, &input[input.len()..]),
    };
    let (part, rest) = rest.split_at(len.min(rest.len()));
    *input = rest;
    part
}

/// Writes `bytes` as `dir/name`, or removes that file when `present` is false.
fn put(dir: &Path, name: &str, present: bool, bytes: &[u8]) {
    let path = dir.join(name);
    if present {
        std::fs::write(&path, bytes).unwrap();
    } else {
        let _ = std::fs::remove_file(&path);
    }
}

fuzz_target!(|input: &[u8]| {
    let s = setup();
    let Some((&flags, mut input)) = input.split_first() else { return };
    let parts: Vec<&[u8]> = (0..6).map(|_| take(&mut input)).collect();
    let bit = |b: u8| flags >> b & 1 == 1;
    put(&s.dir, META, true, parts[0]);
    put(&s.dir, MODEL, true, parts[1]);
    put(&s.dir, OPTIMIZER, bit(0), parts[2]);
    put(&s.dir, STATE, bit(1), parts[3]);
    put(&s.dir, MANIFEST, bit(2), parts[4]);
    put(&s.dir, LATEST, bit(4), parts[5]);
    if bit(3) {
        checkpoint::write_manifest(&s.dir).expect("writing a manifest");
    }
    if let Ok(m) = checkpoint::load_meta(&s.dir) {
        let _ = m.config.validate();
    }
    if let Ok(ck) = checkpoint::load(&s.dir, &s.named, s.total) {
        for v in [&ck.params, &ck.adam_m, &ck.adam_v] {
            assert_eq!(v.len(), s.total);
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }
});
