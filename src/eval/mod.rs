//! Evaluation of a trained checkpoint on the test split: the loss terms, and for VAEs the
//! importance-sampled log-likelihood L_k, the latent-space analyses and the pictures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::analysis::{analyze_latents, analyze_latents_prior, AnalysisOptions, LatentAnalysis};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::vae::Loglik;
use crate::reference::latent_prior;
use crate::train::{checkpoint, Model, Session, TrainConfig};
use crate::viz;

/// What `evaluate` computes beyond the loss terms (VAE checkpoints only).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Samples k of the log-likelihood estimate L_k (0 = skip it).
    pub k: usize,
    /// Test images the estimate runs over (the first N; 0 = all).
    pub ll_images: usize,
    /// The latent-space analyses (average KL, marginal KL, mutual information, active units).
    pub analyze: bool,
    /// Folder for the pictures (interpolations; for a 2-D latent space the manifold and the scatter).
    pub pictures: Option<PathBuf>,
    /// Seed of the estimator's and the analyses' draws.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { k: 5000, ll_images: 0, analyze: true, pictures: None, seed: 0 }
    }
}

/// The importance-sampled estimate of log p(x) (nats per image).
#[derive(Clone, Debug, Serialize)]
pub struct LoglikReport {
    pub k: usize,
    pub images: usize,
    /// Mean over the images of L_k = log (1/k) Σ_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x).
    pub log_likelihood: f64,
    /// The ELBO estimated from the same k samples per image: −(rec + kl).
    pub elbo: f64,
    /// −mean log p(x|z) and mean (log q(z|x) − log p(z)) over the samples.
    pub rec: f64,
    pub kl: f64,
    /// Images per batch and samples per chunk the estimator ran with.
    pub images_per_batch: usize,
    pub samples_per_chunk: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub checkpoint: String,
    /// The model kind of the checkpoint (`vae`, `conv-vae`, `ae`, `vq-vae`, ...).
    pub model: String,
    pub dataset: String,
    pub test_images: usize,
    pub step: u32,
    pub epoch: usize,
    /// VAE: rec + β·KL, rec, KL (nats per image); AE: rec + penalty, rec, penalty (per image); VQ:
    /// mse / var + w·vq, mse per pixel, mean((z_e − e)²).
    pub test_loss: f64,
    pub test_rec: f64,
    pub test_kl: f64,
    /// VAEs: the test ELBO per image, −(rec + kl) (β = 1; one z per image; the KL closed-form for the
    /// N(0, I) prior, a Monte-Carlo estimate with the model's M samples otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_elbo: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglik: Option<LoglikReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent: Option<LatentAnalysis>,
    /// The pictures written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pictures: Vec<String>,
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

pub fn evaluate(gpu: &Gpu, dir: &Path, data: Option<&Path>, opts: &EvalOptions) -> Result<EvalReport> {
    let (s, dataset) = open(gpu, dir, data)?;
    let m = s.evaluate(gpu)?;
    let (test_loss, test_rec, test_kl) = s.losses(&m);
    let mut report = EvalReport {
        checkpoint: dir.display().to_string(),
        model: s.cfg.model.clone(),
        dataset: dataset.name.clone(),
        test_images: s.test_data.n,
        step: s.step,
        epoch: s.epoch,
        test_loss,
        test_rec,
        test_kl,
        test_elbo: None,
        loglik: None,
        latent: None,
        pictures: Vec::new(),
    };
    if !matches!(s.model, Model::Vae(_)) {
        return Ok(report);
    }
    report.test_elbo = Some(-(test_rec + test_kl));
    if opts.k > 0 {
        report.loglik = Some(loglik(gpu, &s, opts)?);
    }
    if opts.analyze || opts.pictures.is_some() {
        let head = s.encode_test(gpu)?;
        let z = s.cfg.vae.latent;
        if opts.analyze {
            let a = AnalysisOptions { seed: opts.seed, ..Default::default() };
            let n = s.test_data.n;
            let nets = s.cfg.vae.nets().map_err(Error::Config)?;
            report.latent = Some(
                match &nets.prior {
                    // a learned prior: its log-density in f64 from the trained parameters
                    Some(pr) => {
                        let c = s.core();
                        let params: Vec<f64> =
                            gpu.read::<f32>(&c.params, 0, c.layout.total)?.iter().map(|&v| v as f64).collect();
                        let log_prior =
                            |zs: &[f64], rows: usize| latent_prior::logp(pr, &nets.layout, &params, zs, rows);
                        analyze_latents_prior(&head, n, z, &a, Some(&log_prior))
                    }
                    None => analyze_latents(&head, n, z, &a),
                }
                .map_err(Error::Config)?,
            );
        }
        if let Some(out) = &opts.pictures {
            report.pictures = pictures(gpu, &s, &dataset, &head, out)?;
        }
    }
    Ok(report)
}

/// L_k over the first `ll_images` test images.
pub fn loglik(gpu: &Gpu, s: &Session, opts: &EvalOptions) -> Result<LoglikReport> {
    let t0 = Instant::now();
    let c = s.core();
    let params: Vec<f32> = gpu.read(&c.params, 0, c.layout.total)?;
    let est = Loglik::new(gpu, &s.cfg.vae, &params, opts.k)?;
    let n = if opts.ll_images == 0 { s.test_data.n } else { opts.ll_images.min(s.test_data.n) };
    let m = est.run(gpu, &s.test_data, n, opts.seed)?;
    Ok(LoglikReport {
        k: opts.k,
        images: n,
        log_likelihood: -m.mean_loss(),
        elbo: -(m.mean_rec() + m.mean_kl()),
        rec: m.mean_rec(),
        kl: m.mean_kl(),
        images_per_batch: est.images,
        samples_per_chunk: est.chunk,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Label names of the datasets we know by name (Fashion-MNIST); digits otherwise.
fn class_names(dataset: &str) -> Option<&'static [&'static str]> {
    const FASHION: [&str; 10] =
        ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"];
    dataset.to_ascii_lowercase().contains("fashion").then_some(&FASHION[..])
}

/// interpolations.png (always); for a 2-D latent space also manifold.png (decoded grid at
/// inverse-normal-CDF points) and latent_scatter.png (test means coloured by label).
fn pictures(gpu: &Gpu, s: &Session, data: &Dataset, head: &[f32], out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let z = s.cfg.vae.latent;
    let shape = s.image_shape;
    let cap = s.cfg.batch * s.cfg.vae.samples;
    // decodes any number of latent vectors, `cap` at a time
    let decode = |pts: &[f32], n: usize| -> Result<Vec<f32>> {
        let mut imgs = Vec::new();
        for start in (0..n).step_by(cap) {
            let m = cap.min(n - start);
            imgs.extend(s.decode(gpu, &pts[start * z..(start + m) * z], m)?);
        }
        Ok(imgs)
    };
    let mut written = Vec::new();
    let mut save = |name: &str, images: &[f32], n: usize, cols: usize| -> Result<()> {
        let path = out.join(name);
        viz::save_grid(&path, images, n, shape, cols).map_err(Error::Output)?;
        written.push(path.display().to_string());
        Ok(())
    };
    // Interpolations between the means of pairs of test images (the first 16 images, paired in order).
    let steps = 10;
    let pairs = (s.test_data.n / 2).min(8);
    if pairs > 0 {
        let mu = |i: usize| head[i * 2 * z..i * 2 * z + z].to_vec();
        let pts: Vec<f32> =
            (0..pairs).flat_map(|p| viz::interpolation_points(&mu(2 * p), &mu(2 * p + 1), steps)).collect();
        let imgs = decode(&pts, pairs * steps)?;
        save("interpolations.png", &imgs, pairs * steps, steps)?;
    }
    if z == 2 {
        let side = 20;
        let pts = viz::manifold_points(side);
        let imgs = decode(&pts, side * side)?;
        save("manifold.png", &imgs, side * side, side)?;
        let means: Vec<f32> = (0..s.test_data.n).flat_map(|i| [head[i * 4], head[i * 4 + 1]]).collect();
        let labels = &data.test.labels[..s.test_data.n.min(data.test.labels.len())];
        let path = out.join("latent_scatter.png");
        let names = class_names(&data.name);
        viz::save_scatter(&path, &means[..2 * labels.len()], labels, 800, names).map_err(Error::Output)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Variance of the encoder's gradient estimate over draws of ε on one fixed batch, per estimator.
#[derive(Clone, Debug, Serialize)]
pub struct GradientVariance {
    pub estimator: String,
    pub draws: usize,
    pub batch: usize,
    pub samples: usize,
    /// Encoder parameters the statistics run over.
    pub parameters: usize,
    /// Σ_i Var(g_i) over the encoder parameters (the trace of the covariance), and its mean per parameter.
    pub total_variance: f64,
    pub mean_variance: f64,
    /// ‖E\[g\]‖² over the same parameters (the squared norm of the mean gradient).
    pub mean_gradient_norm_sq: f64,
}

/// The encoder gradient's variance under the pathwise and the score-function estimators on the first
/// test batch of a VAE checkpoint, `draws` draws of ε each (the same draws for both), with the model's
/// M samples per image or `samples` (the score estimator's leave-one-out baseline needs M > 1).
pub fn gradient_variance(
    gpu: &Gpu,
    dir: &Path,
    data: Option<&Path>,
    draws: usize,
    samples: Option<usize>,
    seed: u64,
) -> Result<Vec<GradientVariance>> {
    use crate::models::vae::{Gradient, Objective, Vae};
    let (s, _) = open(gpu, dir, data)?;
    let Model::Vae(trained) = &s.model else {
        return Err(Error::Config("gradient variance needs a VAE checkpoint".into()));
    };
    if draws < 2 {
        return Err(Error::Config("need at least 2 draws".into()));
    }
    if trained.cfg.objective != Objective::Elbo || trained.prior.is_some() {
        return Err(Error::Config("the score-function gradient needs an ELBO model with the N(0, I) prior".into()));
    }
    let params: Vec<f32> = gpu.read(&trained.core.params, 0, trained.core.layout.total)?;
    let (enc, _) = trained.cfg.split(&trained.core.layout);
    let ranges: Vec<std::ops::Range<usize>> = enc.iter().map(|l| l.offset..l.offset + l.len()).collect();
    // the first test batch
    trained.core.set_cursor(gpu, crate::kernels::data::W_EVAL_BATCH, 0);
    gpu.submit(&s.eval_batch, 1);
    let x: Vec<f32> = gpu.read(&trained.x, 0, trained.batch * trained.cfg.input_dim)?;
    let mut out = Vec::new();
    for gradient in [Gradient::Pathwise, Gradient::Score] {
        let samples = samples.unwrap_or(trained.cfg.samples);
        let cfg = crate::models::vae::VaeConfig { gradient, samples, ..trained.cfg.clone() };
        cfg.validate().map_err(Error::Config)?;
        let v = Vae::new(gpu, &cfg, trained.batch)?;
        gpu.write(&v.core.params, 0, &params);
        gpu.write(&v.x, 0, &x);
        let p = v.grad_program(gpu)?;
        let n: usize = ranges.iter().map(|r| r.len()).sum();
        let (mut sum, mut sq) = (vec![0.0f64; n], vec![0.0f64; n]);
        for d in 0..draws {
            v.core.set_state(gpu, seed, d as u32);
            gpu.submit(&p, 1);
            let g: Vec<f32> = gpu.read(&v.core.grads, 0, v.core.layout.total)?;
            for (k, &gi) in ranges.iter().flat_map(|r| g[r.clone()].iter()).enumerate() {
                sum[k] += gi as f64;
                sq[k] += gi as f64 * gi as f64;
            }
        }
        let dn = draws as f64;
        let mut total = 0.0;
        let mut mean_sq = 0.0;
        for k in 0..n {
            let m = sum[k] / dn;
            total += (sq[k] / dn - m * m).max(0.0) * dn / (dn - 1.0);
            mean_sq += m * m;
        }
        out.push(GradientVariance {
            estimator: format!("{gradient:?}").to_lowercase(),
            draws,
            batch: trained.batch,
            samples: cfg.samples,
            parameters: n,
            total_variance: total,
            mean_variance: total / n as f64,
            mean_gradient_norm_sq: mean_sq,
        });
    }
    Ok(out)
}
