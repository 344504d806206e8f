//! Checkpoints.
//!
//! A run keeps its checkpoints under one root, `<out>/checkpoint`: one folder per saved point, named
//! `epoch-0007` (the end of epoch 7) or `epoch-0008-batch-000123` (123 batches into epoch 8, written
//! when a run is interrupted), and a file `latest` naming the newest folder (with the SHA-256 of its
//! manifest). Giving the root wherever a checkpoint is asked for means the folder `latest` names; a
//! folder can be given directly too.
//!
//! A folder holds
//! - `model.safetensors`: the weights under PyTorch-style names and shapes (a VQ model's codebooks with
//!   their EMA counts and sums);
//! - `optimizer.safetensors`: Adam's moments `m.<name>`, `v.<name>`;
//! - `state.safetensors`: the GPU's running sums of the epoch in progress (`metrics`, and a VQ model's
//!   `vq.metrics` and `vq.usage`), so that an epoch resumed midway reports the same numbers;
//! - `meta.json`: the resolved config, crate version, adapter, optimizer step, epoch and batch within
//!   the epoch (the data order is a function of the seed and the epoch), and the GPU's state words (step,
//!   batch cursors, Philox key, the consecutive non-finite count);
//! - `manifest.json`: the size and SHA-256 of each of those files, and a SHA-256 of its own list.
//!   Loading verifies every file against it before reading anything, so a truncated, zero-filled or
//!   altered file is an [`Error::Checkpoint`] naming that file.
//!
//! Saving writes a hidden temporary folder (each file fsynced, then the folder), renames it into place,
//! fsyncs the root, then replaces `latest` atomically (temporary file, fsync, rename, fsync); only then
//! are older folders removed (renamed away first, so none is ever seen half deleted), keeping the newest
//! `keep`. A crash at any point leaves `latest` naming a complete folder.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::models::vae::NamedTensor;
use crate::train::config::TrainConfig;

/// 2: a folder per checkpoint with a manifest and the training state. 1 (read, unverified): the files
/// directly in `<out>/checkpoint`, no manifest.
pub const FORMAT_VERSION: u32 = 2;
pub const MANIFEST: &str = "manifest.json";
pub const LATEST: &str = "latest";
pub const MODEL: &str = "model.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const STATE: &str = "state.safetensors";
pub const META: &str = "meta.json";
const MANIFEST_FORMAT: &str = "vaegpu-checkpoint-manifest";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub format_version: u32,
    pub crate_version: String,
    pub model: String,
    /// Optimizer steps taken (steps skipped as non-finite do not count).
    pub step: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Batches of epoch `epoch + 1` already trained (0: at an epoch boundary).
    #[serde(default)]
    pub batch: usize,
    /// Batches per epoch of the run (a checkpoint taken mid-epoch resumes only with the same number).
    #[serde(default)]
    pub steps_per_epoch: usize,
    pub seed: u64,
    pub adapter: String,
    pub param_count: usize,
    /// The GPU state words (kernels::data: step, train and eval batch cursors, Philox key, non-finite
    /// flag and consecutive count); empty in format 1.
    #[serde(default)]
    pub gpu_state: Vec<u32>,
    /// Training seconds spent on the epoch in progress (mid-epoch checkpoints).
    #[serde(default)]
    pub epoch_seconds: f64,
    pub config: TrainConfig,
}

pub struct Checkpoint {
    pub meta: Meta,
    /// Flat buffers in the model's layout.
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    /// Training-state buffers by name (`metrics`, `vq.metrics`, `vq.usage`); values may be non-finite.
    pub buffers: Vec<(String, Vec<f32>)>,
    /// The folder it was loaded from (empty for one built to be saved).
    pub path: PathBuf,
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` and fsyncs it (no rename: for files inside a temporary folder).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Writes `bytes` to `path` crash-safely: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir);
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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
    serialize(&data, meta)
}

fn serialize(data: &[(String, Vec<u8>, Vec<usize>)], meta: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(data.len());
    for (n, b, s) in data {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
            .map_err(|e| Error::Output(format!("{n}: {e}")))?;
        views.push((n.clone(), view));
    }
    let bytes = safetensors::serialize(views, meta).map_err(|e| Error::Output(e.to_string()))?;
    Ok(canonical_header(bytes))
}

/// `bytes` (a safetensors file) with its JSON header's object keys in sorted order. safetensors writes
/// its `__metadata__` map in the HashMap's iteration order, which differs from one process to the next,
/// so that the same tensors gave files that differed in the header's bytes (and in the manifest's
/// SHA-256). The header is read back and written compact with sorted keys (serde_json's map, without
/// the preserve_order feature, is ordered), then padded with spaces to its old length as safetensors
/// pads it: the data offsets it holds are unchanged. Left as it was should that fail or not fit.
fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize) else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + n) else { return bytes };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else { return bytes };
    let Ok(mut sorted) = serde_json::to_vec(&value) else { return bytes };
    if sorted.len() > n {
        return bytes;
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    bytes
}

// ------------------------------------------------------------------------------------------------
// folder names

/// The folder name of a checkpoint `batch` batches into epoch `epoch + 1` (`epoch` completed).
pub fn folder_name(epoch: usize, batch: usize) -> String {
    if batch == 0 {
        format!("epoch-{epoch:04}")
    } else {
        format!("epoch-{:04}-batch-{batch:06}", epoch + 1)
    }
}

/// (epochs completed, batches into the next, collision suffix) of a checkpoint folder name.
pub fn progress(name: &str) -> Option<(usize, usize, usize)> {
    let (base, seq) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse().ok()?),
        None => (name, 0),
    };
    let rest = base.strip_prefix("epoch-")?;
    match rest.split_once("-batch-") {
        None => Some((rest.parse().ok()?, 0, seq)),
        Some((e, b)) => {
            let (e, b): (usize, usize) = (e.parse().ok()?, b.parse().ok()?);
            (e >= 1 && b >= 1).then(|| (e - 1, b, seq))
        }
    }
}

/// The checkpoint folders under `root`, oldest first.
fn folders(root: &Path) -> Vec<(String, (usize, usize, usize))> {
    let mut v: Vec<_> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let p = progress(&name)?;
            Some((name, p))
        })
        .collect();
    v.sort_by_key(|(_, p)| *p);
    v
}

// ------------------------------------------------------------------------------------------------
// manifest

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileSum {
    name: String,
    bytes: u64,
    sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    files: Vec<FileSum>,
    /// SHA-256 of the lines "name<TAB>bytes<TAB>sha256\n" of `files`, in order.
    sha256: String,
}

fn list_digest(files: &[FileSum]) -> String {
    let text: String = files.iter().map(|f| format!("{}\t{}\t{}\n", f.name, f.bytes, f.sha256)).collect();
    sha256_hex(text.as_bytes())
}

fn manifest_bytes(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let files: Vec<FileSum> = files
        .iter()
        .map(|(name, b)| FileSum { name: name.to_string(), bytes: b.len() as u64, sha256: sha256_hex(b) })
        .collect();
    let m = Manifest { format: MANIFEST_FORMAT.into(), sha256: list_digest(&files), files };
    serde_json::to_vec_pretty(&m).map_err(|e| Error::Output(e.to_string()))
}

/// (Re)writes the manifest of checkpoint folder `dir` over the checkpoint files it holds. Saving does this
/// itself; this is for a folder put together by hand (and tests that build a checkpoint of another
/// model's shapes).
pub fn write_manifest(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    for name in [MODEL, OPTIMIZER, STATE, META] {
        let p = dir.join(name);
        if p.is_file() {
            files.push((name, std::fs::read(&p).map_err(|e| Error::io(&p, e))?));
        }
    }
    let list: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    write_atomic(&dir.join(MANIFEST), &manifest_bytes(&list)?)
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name.chars().all(|c| !c.is_control())
}

/// The files of a verified checkpoint folder, by name.
struct Files {
    dir: PathBuf,
    bytes: HashMap<String, Vec<u8>>,
    /// Format 1: no manifest, nothing verified.
    legacy: bool,
}

impl Files {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.bytes.get(name).map(Vec::as_slice)
    }
}

/// The manifest of checkpoint folder `dir`, checked against its own SHA-256 (None: there is none).
fn read_manifest(dir: &Path) -> Result<Option<(Manifest, Vec<u8>)>> {
    let mpath = dir.join(MANIFEST);
    let text = match std::fs::read(&mpath) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&mpath, format!("cannot read: {e}"))),
    };
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| err(&mpath, format!("not a valid checkpoint manifest (truncated or corrupted?): {e}")))?;
    if m.format != MANIFEST_FORMAT {
        return Err(err(&mpath, format!("format '{}', expected '{MANIFEST_FORMAT}'", m.format)));
    }
    if list_digest(&m.files) != m.sha256 {
        return Err(err(&mpath, "corrupted: its list of files does not match its own SHA-256"));
    }
    Ok(Some((m, text)))
}

/// Reads and verifies every file of checkpoint folder `dir` against its manifest.
fn verify(dir: &Path) -> Result<Files> {
    let mpath = dir.join(MANIFEST);
    let Some((m, _)) = read_manifest(dir)? else { return legacy(dir) };
    let mut bytes = HashMap::new();
    for f in &m.files {
        if !plain_name(&f.name) {
            return Err(err(&mpath, format!("lists a file named {:?}, which is not a plain file name", f.name)));
        }
        let p = dir.join(&f.name);
        let b = std::fs::read(&p).map_err(|e| err(&p, format!("cannot read (listed in {MANIFEST}): {e}")))?;
        if b.len() as u64 != f.bytes {
            return Err(err(
                &p,
                format!(
                    "is {} bytes, {MANIFEST} records {}: the file is {}",
                    b.len(),
                    f.bytes,
                    if (b.len() as u64) < f.bytes { "truncated" } else { "longer than written" }
                ),
            ));
        }
        let got = sha256_hex(&b);
        if got != f.sha256 {
            return Err(err(
                &p,
                format!(
                    "SHA-256 {got} does not match {MANIFEST}'s {}: the file is corrupted{}",
                    f.sha256,
                    if b.iter().all(|&x| x == 0) { " (all zero bytes)" } else { "" }
                ),
            ));
        }
        bytes.insert(f.name.clone(), b);
    }
    for need in [META, MODEL] {
        if !bytes.contains_key(need) {
            return Err(err(&mpath, format!("does not list {need}")));
        }
    }
    Ok(Files { dir: dir.to_path_buf(), bytes, legacy: false })
}

/// A folder without a manifest: only a format-1 checkpoint (read as it is, unverified).
fn legacy(dir: &Path) -> Result<Files> {
    let mpath = dir.join(META);
    let text = std::fs::read(&mpath).map_err(|e| {
        let what = if dir.is_dir() { "not a checkpoint folder (no latest, manifest.json or meta.json)" } else { "" };
        err(&mpath, format!("cannot read: {e}{}{what}", if what.is_empty() { "" } else { "; " }))
    })?;
    let meta = parse_meta(&mpath, &text)?;
    if meta.format_version != 1 {
        return Err(err(
            &dir.join(MANIFEST),
            format!("missing: a format-{} checkpoint lists its files and their SHA-256 there", meta.format_version),
        ));
    }
    tracing::warn!("{}: a format-1 checkpoint (no manifest): its files are not verified", dir.display());
    let mut bytes = HashMap::from([(META.to_string(), text)]);
    for name in [MODEL, OPTIMIZER] {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => {
                bytes.insert(name.to_string(), b);
            }
            Err(e) if name == MODEL => return Err(err(&p, format!("cannot read: {e}"))),
            Err(_) => {}
        }
    }
    Ok(Files { dir: dir.to_path_buf(), bytes, legacy: true })
}

fn parse_meta(path: &Path, text: &[u8]) -> Result<Meta> {
    let meta: Meta =
        serde_json::from_slice(text).map_err(|e| err(path, format!("not valid checkpoint metadata: {e}")))?;
    if meta.format_version == 0 || meta.format_version > FORMAT_VERSION {
        return Err(err(
            path,
            format!("format version {} (this build reads 1 to {FORMAT_VERSION})", meta.format_version),
        ));
    }
    Ok(meta)
}

// ------------------------------------------------------------------------------------------------
// loading

/// The checkpoint folder `dir` stands for: the one its `latest` file names, or `dir` itself.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    let lpath = dir.join(LATEST);
    let text = match std::fs::read(&lpath) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dir.to_path_buf()),
        Err(e) => return Err(err(&lpath, format!("cannot read: {e}"))),
    };
    let bad = |why: &str| {
        err(
            &lpath,
            format!("corrupted ({why}): it should hold a checkpoint folder's name and the SHA-256 of its {MANIFEST}"),
        )
    };
    let text = std::str::from_utf8(&text).map_err(|_| bad("not text"))?;
    let mut words = text.split_whitespace();
    let (Some(name), Some(digest), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad("not two words"));
    };
    if !plain_name(name) || progress(name).is_none() {
        return Err(bad(&format!("{name:?} is not a checkpoint folder name")));
    }
    let folder = dir.join(name);
    if !folder.is_dir() {
        return Err(err(&lpath, format!("names {name}, which is not a folder there")));
    }
    let Some((_, manifest)) = read_manifest(&folder)? else {
        return Err(err(&folder.join(MANIFEST), "missing"));
    };
    if sha256_hex(&manifest) != digest {
        return Err(err(
            &lpath,
            format!("names {name}, but the SHA-256 of its {MANIFEST} does not match (one of them is corrupted)"),
        ));
    }
    Ok(folder)
}

/// Verifies the checkpoint `dir` stands for and returns (its folder, its metadata).
pub fn open_meta(dir: &Path) -> Result<(PathBuf, Meta)> {
    let folder = resolve(dir)?;
    let files = verify(&folder)?;
    let meta = parse_meta(&folder.join(META), files.get(META).unwrap_or_default())?;
    Ok((folder, meta))
}

/// The metadata of the checkpoint `dir` stands for, every file of it verified.
pub fn load_meta(dir: &Path) -> Result<Meta> {
    Ok(open_meta(dir)?.1)
}

/// Reads the tensors `named` (with `prefix`) of a safetensors file into a flat buffer of `total`.
fn tensors_from(path: &Path, bytes: &[u8], named: &[NamedTensor], prefix: &str, total: usize) -> Result<Vec<f32>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
    let mut flat = vec![0.0f32; total];
    for nt in named {
        let name = format!("{prefix}{}", nt.name);
        let t = st
            .tensor(&name)
            .map_err(|_| err(path, format!("has no tensor '{name}': a checkpoint of another model?")))?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(err(path, format!("tensor '{name}' is {:?}, expected F32", t.dtype())));
        }
        if t.shape() != nt.shape.as_slice() {
            return Err(err(
                path,
                format!(
                    "tensor '{name}' has shape {:?}, the model needs {:?}: a checkpoint of another model's shapes",
                    t.shape(),
                    nt.shape
                ),
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

/// Reads the tensors `named` (with `prefix`) of the safetensors file at `path` into a flat buffer.
pub(crate) fn read_into(path: &Path, named: &[NamedTensor], prefix: &str, total: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    tensors_from(path, &bytes, named, prefix, total)
}

/// Every tensor of a checkpoint's weights or optimizer file must be one the model has.
fn no_strangers(path: &Path, bytes: &[u8], named: &[NamedTensor], prefixes: &[&str]) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
    let want: std::collections::HashSet<String> =
        prefixes.iter().flat_map(|p| named.iter().map(move |nt| format!("{p}{}", nt.name))).collect();
    let mut extra: Vec<String> = st.names().into_iter().filter(|n| !want.contains(*n)).map(String::from).collect();
    extra.sort();
    match extra.first() {
        None => Ok(()),
        Some(n) => Err(err(
            path,
            format!(
                "holds tensor '{n}' (and {} more) that the model lacks: a checkpoint of another model?",
                extra.len() - 1
            ),
        )),
    }
}

/// Loads the checkpoint `dir` stands for, for a model whose tensors are `named` (flat size `total`).
pub fn load(dir: &Path, named: &[NamedTensor], total: usize) -> Result<Checkpoint> {
    let folder = resolve(dir)?;
    let files = verify(&folder)?;
    let meta = parse_meta(&folder.join(META), files.get(META).unwrap_or_default())?;
    let mpath = folder.join(MODEL);
    let model = files.get(MODEL).unwrap_or_default();
    let params = tensors_from(&mpath, model, named, "", total)?;
    no_strangers(&mpath, model, named, &[""])?;
    let opath = folder.join(OPTIMIZER);
    let (adam_m, adam_v) = match files.get(OPTIMIZER) {
        Some(b) => {
            let mv = (tensors_from(&opath, b, named, "m.", total)?, tensors_from(&opath, b, named, "v.", total)?);
            no_strangers(&opath, b, named, &["m.", "v."])?;
            mv
        }
        None if files.legacy => (vec![0.0; total], vec![0.0; total]),
        None => return Err(err(&folder.join(MANIFEST), format!("does not list {OPTIMIZER}"))),
    };
    let mut buffers = Vec::new();
    if let Some(b) = files.get(STATE) {
        let spath = folder.join(STATE);
        let st = safetensors::SafeTensors::deserialize(b)
            .map_err(|e| err(&spath, format!("not a valid safetensors file: {e}")))?;
        let mut names: Vec<&str> = st.names();
        names.sort();
        for n in names {
            let t = st.tensor(n).map_err(|e| err(&spath, e.to_string()))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape().len() != 1 {
                return Err(err(&spath, format!("tensor '{n}' must be a 1-D F32 tensor")));
            }
            let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            buffers.push((n.to_string(), v));
        }
    }
    debug_assert_eq!(files.dir, folder);
    Ok(Checkpoint { meta, params, adam_m, adam_v, buffers, path: folder })
}

// ------------------------------------------------------------------------------------------------
// saving

/// Saves `ck` as a new folder under the checkpoint root `root` (created if needed), points `latest`
/// at it, then removes the folders from an abandoned later history (at or past this point) and all but
/// the newest `keep` (≥ 1). Returns the new folder.
pub fn save(root: &Path, named: &[NamedTensor], ck: &Checkpoint, keep: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let base = folder_name(ck.meta.epoch, ck.meta.batch);
    let mut name = base.clone();
    let mut seq = 0;
    while root.join(&name).exists() {
        seq += 1;
        name = format!("{base}.{seq}");
    }
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let info =
        HashMap::from([("format".to_string(), "vaegpu".to_string()), ("model".to_string(), ck.meta.model.clone())]);
    let model = tensors_bytes(named, &[("", &ck.params)], Some(info))?;
    let opt = tensors_bytes(named, &[("m.", &ck.adam_m), ("v.", &ck.adam_v)], None)?;
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = ck
        .buffers
        .iter()
        .map(|(n, v)| (n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), vec![v.len()]))
        .collect();
    let state = serialize(&data, None)?;
    let mut meta = ck.meta.clone();
    meta.format_version = FORMAT_VERSION;
    let meta = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Output(e.to_string()))?;
    let files: [(&str, &[u8]); 4] = [(MODEL, &model), (OPTIMIZER, &opt), (STATE, &state), (META, &meta)];
    for (n, b) in files {
        write_synced(&tmp.join(n), b)?;
    }
    let manifest = manifest_bytes(&files)?;
    write_synced(&tmp.join(MANIFEST), &manifest)?;
    sync_dir(&tmp);
    let dir = root.join(&name);
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    sync_dir(root);
    write_atomic(&root.join(LATEST), format!("{name} {}\n", sha256_hex(&manifest)).as_bytes())?;
    prune(root, &name, keep.max(1));
    Ok(dir)
}

/// Removes the checkpoint folders at or past `newest`'s point (an abandoned history, from before a resume
/// of an older checkpoint) and all but the newest `keep` of the rest, and leftovers of interrupted saves.
/// Each folder is renamed away before it is deleted. Failures are warnings: the new checkpoint stands.
fn prune(root: &Path, newest: &str, keep: usize) {
    let Some(p) = progress(newest) else { return };
    let all = folders(root);
    let stale = all.iter().filter(|(n, q)| n != newest && (q.0, q.1) >= (p.0, p.1));
    let older: Vec<_> = all.iter().filter(|(n, q)| n != newest && (q.0, q.1) < (p.0, p.1)).collect();
    let drop_old = older.len().saturating_sub(keep - 1);
    let doomed: Vec<&String> = stale.map(|(n, _)| n).chain(older[..drop_old].iter().map(|(n, _)| n)).collect();
    for n in doomed {
        let from = root.join(n);
        let to = root.join(format!(".del-{n}"));
        if let Err(e) = std::fs::rename(&from, &to).and_then(|_| std::fs::remove_dir_all(&to)) {
            tracing::warn!("could not remove the old checkpoint {}: {e}", from.display());
        }
    }
    // Temporary and half-deleted folders of an earlier run that was killed.
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with(".tmp-") || name.starts_with(".del-")) && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    sync_dir(root);
}

/// The checkpoint root of a run folder.
pub fn default_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}
