//! Evaluation of a trained checkpoint on the test split.

use std::path::Path;

use serde::Serialize;

use crate::data::Dataset;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::train::{checkpoint, Session, TrainConfig};

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub checkpoint: String,
    pub dataset: String,
    pub test_images: usize,
    pub step: u32,
    pub epoch: usize,
    /// VAE: rec + β·KL, rec, KL (nats per image); VQ: mse / var + w·vq, mse per pixel, mean((z_e − e)²).
    pub test_loss: f64,
    pub test_rec: f64,
    pub test_kl: f64,
}

/// Rebuilds the model a checkpoint describes, for evaluation or sampling (`data` may override where
/// the test split comes from).
pub fn open(gpu: &Gpu, dir: &Path, data: Option<&Path>) -> Result<(Session, Dataset)> {
    let meta = checkpoint::load_meta(dir)?;
    let mut cfg: TrainConfig = meta.config.clone();
    if let Some(d) = data {
        cfg.data = Some(d.to_path_buf());
    }
    let dataset = cfg.load_data()?;
    let mut s = Session::new(gpu, &cfg, &dataset, false)?;
    s.restore(gpu, dir)?;
    Ok((s, dataset))
}

pub fn evaluate(gpu: &Gpu, dir: &Path, data: Option<&Path>) -> Result<EvalReport> {
    let (s, dataset) = open(gpu, dir, data)?;
    let m = s.evaluate(gpu)?;
    let (test_loss, test_rec, test_kl) = s.losses(&m);
    Ok(EvalReport {
        checkpoint: dir.display().to_string(),
        dataset: dataset.name.clone(),
        test_images: s.test_data.n,
        step: s.step,
        epoch: s.epoch,
        test_loss,
        test_rec,
        test_kl,
    })
}
