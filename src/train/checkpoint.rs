//! Checkpoints: a folder with model.safetensors (weights, PyTorch names and [out, in] shapes),
//! optimizer.safetensors (Adam moments `m.<name>`, `v.<name>`) and meta.json (config, step, epoch,
//! seed, adapter, crate version). Each file is written to a temporary name, fsynced and renamed, and
//! the folder is fsynced, so a crash leaves either the old file or the new one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::vae::NamedTensor;
use crate::train::config::TrainConfig;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub format_version: u32,
    pub crate_version: String,
    pub model: String,
    pub step: u32,
    pub epoch: usize,
    pub seed: u64,
    pub adapter: String,
    pub param_count: usize,
    pub config: TrainConfig,
}

pub struct Checkpoint {
    pub meta: Meta,
    /// Flat buffers in the model's layout.
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

/// Writes `bytes` to `path` crash-safely: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let io = |e| Error::io(&tmp, e);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn gather(flat: &[f32], nt: &NamedTensor) -> Vec<u8> {
    nt.index.iter().flat_map(|&i| flat[i].to_le_bytes()).collect()
}

/// Serialises the named tensors of each (prefix, flat buffer) pair into one safetensors file.
pub(crate) fn tensors_bytes(
    named: &[NamedTensor],
    parts: &[(&str, &[f32])],
    meta: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    for (prefix, flat) in parts {
        for nt in named {
            data.push((format!("{prefix}{}", nt.name), gather(flat, nt), nt.shape.clone()));
        }
    }
    let mut views = Vec::with_capacity(data.len());
    for (n, b, s) in &data {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
            .map_err(|e| Error::Output(format!("{n}: {e}")))?;
        views.push((n.clone(), view));
    }
    safetensors::serialize(views, meta).map_err(|e| Error::Output(e.to_string()))
}

/// Saves a checkpoint into `dir` (created if needed).
pub fn save(dir: &Path, named: &[NamedTensor], ck: &Checkpoint) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let info =
        HashMap::from([("format".to_string(), "vaegpu".to_string()), ("model".to_string(), ck.meta.model.clone())]);
    write_atomic(&dir.join("model.safetensors"), &tensors_bytes(named, &[("", &ck.params)], Some(info))?)?;
    let opt = tensors_bytes(named, &[("m.", &ck.adam_m), ("v.", &ck.adam_v)], None)?;
    write_atomic(&dir.join("optimizer.safetensors"), &opt)?;
    let meta = serde_json::to_vec_pretty(&ck.meta).map_err(|e| Error::Output(e.to_string()))?;
    write_atomic(&dir.join("meta.json"), &meta)?;
    Ok(())
}

pub fn load_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join("meta.json");
    let text = std::fs::read(&path).map_err(|e| err(&path, format!("cannot read: {e}")))?;
    let meta: Meta =
        serde_json::from_slice(&text).map_err(|e| err(&path, format!("not valid checkpoint metadata: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(err(&path, format!("format version {} (this build reads {FORMAT_VERSION})", meta.format_version)));
    }
    Ok(meta)
}

pub(crate) fn read_into(path: &Path, named: &[NamedTensor], prefix: &str, total: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
    let mut flat = vec![0.0f32; total];
    for nt in named {
        let name = format!("{prefix}{}", nt.name);
        let t = st
            .tensor(&name)
            .map_err(|_| err(path, format!("has no tensor '{name}' (a checkpoint of another model?)")))?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(err(path, format!("tensor '{name}' is {:?}, expected F32", t.dtype())));
        }
        if t.shape() != nt.shape.as_slice() {
            return Err(err(
                path,
                format!("tensor '{name}' has shape {:?}, the model needs {:?}", t.shape(), nt.shape),
            ));
        }
        for (k, c) in t.data().chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes(c.try_into().unwrap());
            if !v.is_finite() {
                return Err(err(path, format!("tensor '{name}' holds a non-finite value at element {k}")));
            }
            flat[nt.index[k]] = v;
        }
    }
    Ok(flat)
}

/// Loads the checkpoint in `dir` for a model whose tensors are `named` (flat size `total`).
pub fn load(dir: &Path, named: &[NamedTensor], total: usize) -> Result<Checkpoint> {
    let meta = load_meta(dir)?;
    let params = read_into(&dir.join("model.safetensors"), named, "", total)?;
    let opt = dir.join("optimizer.safetensors");
    let (adam_m, adam_v) = if opt.exists() {
        (read_into(&opt, named, "m.", total)?, read_into(&opt, named, "v.", total)?)
    } else {
        (vec![0.0; total], vec![0.0; total])
    };
    Ok(Checkpoint { meta, params, adam_m, adam_v })
}

pub fn default_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}
