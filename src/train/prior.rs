//! `vaegpu train-prior`: gated PixelCNN priors over the code maps of a trained VQ model, and sampling
//! from them. A VQ-VAE gets one prior over its code map; a VQ-VAE-2 gets a top prior and a bottom
//! prior conditioned on the top codes. The code maps of the train and test splits are extracted once
//! with the VQ model, the priors are trained on the GPU (the whole step recorded once, as for the
//! other models), and their test NLL is reported in bits per code.
//!
//! Output folder (default: the VQ run's folder): `prior/<name>/{model.safetensors, meta.json}` per prior,
//! prior_metrics.jsonl (one line per prior and epoch) and samples.png (prior samples decoded).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint::{read_into, tensors_bytes, write_atomic};
use super::{epoch_order, Session};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::data::{W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::optim::Adam;
use crate::models::prior::{Prior, PriorConfig};
use crate::models::vae::GpuDataset;

pub const PRIOR_FORMAT_VERSION: u32 = 1;

/// What `train-prior` is asked for.
#[derive(Clone, Debug)]
pub struct PriorOptions {
    /// The VQ model's checkpoint folder.
    pub checkpoint: PathBuf,
    /// Where the priors, metrics and samples go (default: the checkpoint's parent, the run folder).
    pub out: Option<PathBuf>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    /// channels, layers, kernel, hidden (grid, codes, dim and cond are set from the VQ model).
    pub arch: PriorConfig,
    /// Use only the first N training / test images (0 = the VQ run's own limits).
    pub train_limit: usize,
    pub test_limit: usize,
    /// Maps drawn for samples.png, and the sampling temperature.
    pub samples: usize,
    pub temperature: f32,
    pub quiet: bool,
}

/// One line of prior_metrics.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PriorRecord {
    /// "codes" (VQ-VAE), "top" or "bottom" (VQ-VAE-2).
    pub prior: String,
    pub epoch: usize,
    pub step: u32,
    /// Mean negative log-likelihood per code, in bits (log2 K = 9 for a uniform guess over 512 codes).
    pub train_bits_per_code: f64,
    pub test_bits_per_code: f64,
    /// Fraction of test codes whose most likely prediction is right.
    pub test_accuracy: f64,
    pub epoch_seconds: f64,
}

/// meta.json of a saved prior.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PriorMeta {
    pub format_version: u32,
    pub crate_version: String,
    pub name: String,
    /// The VQ level it models (0 = bottom).
    pub level: usize,
    pub config: PriorConfig,
    pub epochs: usize,
    pub step: u32,
    pub batch: usize,
    pub seed: u64,
    pub test_bits_per_code: f64,
}

/// The priors a VQ model needs, in sampling order: (name, level, conditioning level).
fn plan(levels: usize) -> Vec<(&'static str, usize, Option<usize>)> {
    if levels == 2 {
        vec![("top", 1, None), ("bottom", 0, Some(1))]
    } else {
        vec![("codes", 0, None)]
    }
}

/// Opens the VQ checkpoint with its training split (limits overridden where asked).
pub fn open_vq(gpu: &Gpu, checkpoint: &Path, train_limit: usize, test_limit: usize) -> Result<Session> {
    let meta = super::checkpoint::load_meta(checkpoint)?;
    let mut cfg = meta.config.clone();
    if !cfg.is_vq() {
        return Err(Error::Config(format!(
            "{} is a {} checkpoint; a prior needs vq-vae or vq-vae-2",
            checkpoint.display(),
            cfg.model
        )));
    }
    if train_limit > 0 {
        cfg.train_limit = train_limit;
    }
    if test_limit > 0 {
        cfg.test_limit = test_limit;
    }
    let dataset = cfg.load_data()?;
    let mut s = Session::new(gpu, &cfg, &dataset, true)?;
    s.restore(gpu, checkpoint)?;
    Ok(s)
}

/// The prior config for `level` of the session's VQ model, with the architecture of `arch`.
fn config_for(s: &Session, arch: &PriorConfig, level: usize, cond: Option<usize>) -> Result<PriorConfig> {
    let super::Model::Vq(v) = &s.model else { unreachable!("open_vq checks the model") };
    let grid = |l: usize| {
        let g = v.nets.grids()[l];
        [g.h, g.w]
    };
    let cfg =
        PriorConfig { grid: grid(level), codes: v.cfg.codes, dim: v.cfg.dim, cond: cond.map(grid), ..arch.clone() };
    cfg.validate().map_err(|m| Error::Config(format!("prior: {m}")))?;
    Ok(cfg)
}

fn bits(sum_nll: f64, rows: f64, positions: usize) -> f64 {
    sum_nll / (rows.max(1.0) * positions as f64) / std::f64::consts::LN_2
}

/// Trains every prior the VQ model needs; writes the priors, prior_metrics.jsonl and samples.png.
pub fn train_prior(gpu: &Gpu, o: &PriorOptions) -> Result<Vec<PriorRecord>> {
    if o.epochs == 0 || o.batch == 0 || !(o.lr > 0.0 && o.lr.is_finite()) {
        return Err(Error::Config("train-prior needs epochs >= 1, batch >= 1 and lr > 0".into()));
    }
    if o.samples == 0 || o.samples > o.batch || !(o.temperature > 0.0 && o.temperature.is_finite()) {
        return Err(Error::Config(format!("need 1 <= samples <= batch ({}) and temperature > 0", o.batch)));
    }
    o.arch.validate().map_err(|m| Error::Config(format!("prior: {m}")))?;
    let s = open_vq(gpu, &o.checkpoint, o.train_limit, o.test_limit)?;
    if o.samples > s.cfg.batch {
        return Err(Error::Config(format!("the VQ model decodes at most {} maps at once (--samples)", s.cfg.batch)));
    }
    let out = o.out.clone().unwrap_or_else(|| run_dir(&o.checkpoint));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let t0 = Instant::now();
    let train_maps = s.code_maps(gpu, true)?;
    let test_maps = s.code_maps(gpu, false)?;
    let codebooks = s.codebooks(gpu)?;
    if !o.quiet {
        println!(
            "code maps of {} train and {} test images in {:.1}s",
            s.train_data.as_ref().map_or(0, |d| d.n),
            s.test_data.n,
            t0.elapsed().as_secs_f64()
        );
    }
    let mpath = out.join("prior_metrics.jsonl");
    let mut file = std::fs::File::create(&mpath).map_err(|e| Error::io(&mpath, e))?;
    let mut records = Vec::new();
    let mut priors = Vec::new();
    for (name, level, cond) in plan(codebooks.len()) {
        let cfg = config_for(&s, &o.arch, level, cond)?;
        let prior = Prior::new(gpu, &cfg, o.batch, o.seed, &codebooks[level], cond.map(|c| &codebooks[c][..]))?;
        let upload = |label: &str, maps: &[Vec<u32>], l: usize| -> Result<GpuDataset> {
            let per = per_map(&s, l);
            Ok(GpuDataset::upload_words(gpu, label, &maps[l], maps[l].len() / per, per)?)
        };
        let train = upload("prior.train", &train_maps, level)?;
        let test = upload("prior.test", &test_maps, level)?;
        let train_c = cond.map(|c| upload("prior.train.cond", &train_maps, c)).transpose()?;
        let test_c = cond.map(|c| upload("prior.test.cond", &test_maps, c)).transpose()?;
        let adam = Adam { lr: o.lr, ..Adam::default() };
        let step_prog = prior.train_program(gpu, &train, train_c.as_ref(), &adam, 0.0)?;
        let eval_prog = prior.eval_program(gpu, &test, test_c.as_ref())?;
        prior.core.set_state(gpu, o.seed, 0);
        let steps = train.n / o.batch;
        if steps == 0 {
            return Err(Error::Config(format!("{} training maps are fewer than one batch of {}", train.n, o.batch)));
        }
        let mut step = 0u32;
        let mut test_bits = f64::NAN;
        for epoch in 1..=o.epochs {
            let t = Instant::now();
            let order = epoch_order(train.n, o.seed, epoch);
            train.set_order(gpu, &order);
            if let Some(c) = &train_c {
                c.set_order(gpu, &order);
            }
            prior.core.set_cursor(gpu, W_TRAIN_BATCH, 0);
            prior.core.reset_metrics(gpu);
            let mut done = 0;
            while done < steps {
                let n = 8.min(steps - done);
                gpu.submit(&step_prog, n);
                done += n;
                gpu.check()?;
            }
            step += steps as u32;
            let m = prior.core.read_metrics(gpu)?;
            prior.core.reset_metrics(gpu);
            prior.core.set_cursor(gpu, W_EVAL_BATCH, 0);
            gpu.submit(&eval_prog, test.n.div_ceil(o.batch));
            let ev = prior.core.read_metrics(gpu)?.eval;
            let p = cfg.positions();
            let rec = PriorRecord {
                prior: name.to_string(),
                epoch,
                step,
                train_bits_per_code: bits(m.train.rec, m.train.rows, p),
                test_bits_per_code: bits(ev.rec, ev.rows, p),
                test_accuracy: ev.kl / (ev.rows.max(1.0) * p as f64),
                epoch_seconds: t.elapsed().as_secs_f64(),
            };
            if !rec.train_bits_per_code.is_finite() || !rec.test_bits_per_code.is_finite() {
                return Err(Error::NonFinite(format!("prior {name} epoch {epoch}: {rec:?}")));
            }
            test_bits = rec.test_bits_per_code;
            let line = serde_json::to_string(&rec).map_err(|e| Error::Output(e.to_string()))?;
            writeln!(file, "{line}").and_then(|_| file.flush()).map_err(|e| Error::io(&mpath, e))?;
            if !o.quiet {
                println!(
                    "prior {name} epoch {epoch:>3}  train {:.3} bits/code  test {:.3} bits/code (accuracy {:.3})  {:.1}s",
                    rec.train_bits_per_code, rec.test_bits_per_code, rec.test_accuracy, rec.epoch_seconds
                );
            }
            records.push(rec);
        }
        let meta = PriorMeta {
            format_version: PRIOR_FORMAT_VERSION,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            name: name.to_string(),
            level,
            config: cfg.clone(),
            epochs: o.epochs,
            step,
            batch: o.batch,
            seed: o.seed,
            test_bits_per_code: test_bits,
        };
        save_prior(gpu, &out.join("prior").join(name), &prior, &meta)?;
        priors.push((prior, meta));
    }
    let maps = sample_codes(gpu, &priors, o.samples, o.seed, o.temperature)?;
    let imgs = s.decode_codes(gpu, &maps, o.samples)?;
    let png = out.join("samples.png");
    crate::viz::save_grid(&png, &imgs, o.samples, s.image_shape, 8).map_err(Error::Output)?;
    if !o.quiet {
        println!("wrote {}", png.display());
    }
    Ok(records)
}

/// The run folder of a checkpoint folder (its parent).
pub fn run_dir(checkpoint: &Path) -> PathBuf {
    match checkpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => checkpoint.join(".."),
    }
}

fn per_map(s: &Session, level: usize) -> usize {
    let super::Model::Vq(v) = &s.model else { unreachable!() };
    v.levels[level].q.n / v.batch
}

fn save_prior(gpu: &Gpu, dir: &Path, prior: &Prior, meta: &PriorMeta) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let params: Vec<f32> = gpu.read_f32(&prior.core.params)?;
    let info = HashMap::from([("format".to_string(), "vaegpu-prior".to_string())]);
    write_atomic(
        &dir.join("model.safetensors"),
        &tensors_bytes(&prior.named_tensors(), &[("", &params)], Some(info))?,
    )?;
    let m = serde_json::to_vec_pretty(meta).map_err(|e| Error::Output(e.to_string()))?;
    write_atomic(&dir.join("meta.json"), &m)
}

/// Loads the priors saved under `dir` (the `prior` folder of a train-prior run) for the session's model.
pub fn load_priors(gpu: &Gpu, s: &Session, dir: &Path, batch: usize) -> Result<Vec<(Prior, PriorMeta)>> {
    let codebooks = s.codebooks(gpu)?;
    let mut out = Vec::new();
    for (name, level, cond) in plan(codebooks.len()) {
        let d = dir.join(name);
        let path = d.join("meta.json");
        let bad = |m: String| Error::Checkpoint { path: path.clone(), message: m };
        let text =
            std::fs::read(&path).map_err(|e| bad(format!("cannot read ({e}); train one with `vaegpu train-prior`")))?;
        let meta: PriorMeta = serde_json::from_slice(&text).map_err(|e| bad(format!("not prior metadata: {e}")))?;
        if meta.format_version != PRIOR_FORMAT_VERSION || meta.level != level {
            return Err(bad(format!(
                "format {} level {} (expected {PRIOR_FORMAT_VERSION}, {level})",
                meta.format_version, meta.level
            )));
        }
        if batch == 0 || batch > s.cfg.batch {
            return Err(Error::Config(format!("can draw 1 to {} maps at once (the VQ model's batch)", s.cfg.batch)));
        }
        let want = config_for(s, &meta.config, level, cond)?;
        if want != meta.config {
            return Err(bad(format!("the prior was trained for {:?}, this VQ model has {:?}", meta.config, want)));
        }
        let prior =
            Prior::new(gpu, &meta.config, batch, meta.seed, &codebooks[level], cond.map(|c| &codebooks[c][..]))?;
        let params = read_into(&d.join("model.safetensors"), &prior.named_tensors(), "", prior.core.layout.total)?;
        gpu.write(&prior.core.params, 0, &params);
        out.push((prior, meta));
    }
    Ok(out)
}

/// Draws `n` code maps per level (bottom first) from the priors, top level first.
pub fn sample_codes(
    gpu: &Gpu,
    priors: &[(Prior, PriorMeta)],
    n: usize,
    seed: u64,
    temperature: f32,
) -> Result<Vec<Vec<u32>>> {
    let mut maps: Vec<Vec<u32>> = vec![Vec::new(); priors.len()];
    for (prior, meta) in priors {
        if n > prior.batch {
            return Err(Error::Config(format!("can draw at most {} maps at once", prior.batch)));
        }
        if let Some(c) = &prior.cond {
            let top = maps
                .get(1)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| Error::Config("the bottom prior needs top codes first".into()))?;
            let per = top.len() / n;
            let mut words = top.clone();
            words.resize(prior.batch * per, 0);
            gpu.write(&c.idx, 0, &words);
        }
        gpu.write(&prior.emb, 0, &vec![0f32; prior.emb.size() as usize / 4]);
        prior.core.set_state(gpu, seed, meta.level as u32);
        let prog = prior.sample_program(gpu, temperature)?;
        gpu.submit(&prog, 1);
        maps[meta.level] = gpu.read(&prior.idx, 0, n * meta.config.positions())?;
    }
    Ok(maps)
}
