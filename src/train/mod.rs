//! The training loop: replays the recorded step, reads metrics back every N steps, evaluates,
//! writes metrics.jsonl, pictures and checkpoints.

pub mod checkpoint;
pub mod config;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Program};
use crate::kernels::data::{W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::elbo::Likelihood;
use crate::models::vae::{GpuDataset, Vae};
use crate::reference::sample::{normal, philox, seed_key};
pub use config::TrainConfig;

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: u32,
    /// Mean over the epoch's training batches of rec + β·KL (nats per image).
    pub train_loss: f64,
    pub train_rec: f64,
    pub train_kl: f64,
    /// Test set: mean per image of summed BCE (or Gaussian NLL) + β·KL, one z sample per image.
    pub test_loss: f64,
    pub test_rec: f64,
    pub test_kl: f64,
    pub grad_norm_mean: f64,
    pub nonfinite_steps: u32,
    pub epoch_seconds: f64,
    pub eval_seconds: f64,
}

/// A deterministic shuffle of 0..n for (seed, epoch): Fisher–Yates driven by Philox.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let key = seed_key(seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let r = philox([i as u32, epoch as u32, 4, 0], key)[0];
        let j = ((r as u64 * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

/// A model with its data on the GPU and its programs recorded.
pub struct Session {
    pub cfg: TrainConfig,
    pub vae: Vae,
    pub train_data: Option<GpuDataset>,
    pub test_data: GpuDataset,
    pub train_step: Option<Program>,
    pub eval_batch: Program,
    /// Height, width, channels of the images.
    pub image_shape: (usize, usize, usize),
    pub step: u32,
    pub epoch: usize,
}

impl Session {
    /// Builds the model for `data`. `for_training` uploads the training split too.
    pub fn new(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, for_training: bool) -> Result<Session> {
        let mut cfg = cfg.clone();
        cfg.resolve();
        let (h, w, c) = data.image_shape();
        cfg.vae.input_dim = h * w * c;
        cfg.vae.image = [h, w, c];
        cfg.validate()?;
        let mut train = data.train.clone();
        let mut test = data.test.clone();
        if cfg.train_limit > 0 {
            train.truncate(cfg.train_limit);
        }
        if cfg.test_limit > 0 {
            test.truncate(cfg.test_limit);
        }
        if for_training && train.len() < cfg.batch {
            return Err(Error::Config(format!(
                "batch {} is larger than the training set ({} images)",
                cfg.batch,
                train.len()
            )));
        }
        let vae = Vae::new(gpu, &cfg.vae, cfg.batch)?;
        gpu.write(&vae.params, 0, &vae.layout.init(cfg.seed));
        vae.set_state(gpu, cfg.seed, 0);
        let dim = cfg.vae.input_dim;
        let test_data = GpuDataset::upload(gpu, "test", &test.images.pixels, test.len(), dim)?;
        let eval_batch = vae.eval_program(gpu, &test_data, false)?;
        let (train_data, train_step) = if for_training {
            let d = GpuDataset::upload(gpu, "train", &train.images.pixels, train.len(), dim)?;
            let p = vae.train_program(gpu, &d, &cfg.adam(), cfg.max_grad_norm, cfg.binarize)?;
            (Some(d), Some(p))
        } else {
            (None, None)
        };
        gpu.sync()?;
        Ok(Session {
            cfg,
            vae,
            train_data,
            test_data,
            train_step,
            eval_batch,
            image_shape: (h, w, c),
            step: 0,
            epoch: 0,
        })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_data.as_ref().map_or(0, |d| d.n / self.cfg.batch)
    }

    /// Trains one epoch; `on_progress(steps_done, running_loss)` is called at each metrics read-back.
    pub fn train_epoch(
        &mut self,
        gpu: &Gpu,
        mut on_progress: impl FnMut(usize, f64),
    ) -> Result<(crate::models::vae::Metrics, f64)> {
        let (Some(data), Some(prog)) = (&self.train_data, &self.train_step) else {
            return Err(Error::Config("session was built without training data".into()));
        };
        self.epoch += 1;
        let t0 = Instant::now();
        data.set_order(gpu, &epoch_order(data.n, self.cfg.seed, self.epoch));
        self.vae.set_cursor(gpu, W_TRAIN_BATCH, 0);
        self.vae.reset_metrics(gpu);
        let steps = self.steps_per_epoch();
        let mut done = 0;
        let mut next_log = self.cfg.log_every;
        while done < steps {
            let n = self.cfg.steps_per_submit.min(steps - done);
            gpu.submit(prog, n);
            done += n;
            if done >= next_log || done == steps {
                next_log = done + self.cfg.log_every;
                let m = self.vae.read_metrics(gpu)?;
                on_progress(done, m.train.mean_loss());
            } else {
                gpu.check()?;
            }
        }
        let m = self.vae.read_metrics(gpu)?;
        self.step += steps as u32;
        Ok((m, t0.elapsed().as_secs_f64()))
    }

    /// Evaluates the test split: (mean loss, mean rec, mean kl) per image.
    pub fn evaluate(&self, gpu: &Gpu) -> Result<crate::models::vae::SlotMetrics> {
        self.vae.reset_metrics(gpu);
        self.vae.set_cursor(gpu, W_EVAL_BATCH, 0);
        let batches = self.test_data.n.div_ceil(self.cfg.batch);
        let mut done = 0;
        while done < batches {
            let n = self.cfg.steps_per_submit.min(batches - done);
            gpu.submit(&self.eval_batch, n);
            done += n;
        }
        let m = self.vae.read_metrics(gpu)?;
        Ok(m.eval)
    }

    /// Mean image of p(x|z) from the decoder output rows.
    fn to_images(&self, out: &[f32]) -> Vec<f32> {
        match self.cfg.vae.likelihood {
            Likelihood::Bernoulli => out.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
            Likelihood::Gaussian => out.to_vec(),
        }
    }

    /// Decodes `n` (≤ batch·M) latent vectors given row-major [n, Z]; returns the images.
    pub fn decode(&self, gpu: &Gpu, z: &[f32], n: usize) -> Result<Vec<f32>> {
        let rows = self.cfg.batch * self.cfg.vae.samples;
        if n > rows {
            return Err(Error::Config(format!("can decode at most {rows} vectors at once, asked for {n}")));
        }
        gpu.write(&self.vae.z, 0, z);
        let mut p = Program::new("decode");
        p.extend(self.vae.decode(gpu)?);
        gpu.submit(&p, 1);
        let out: Vec<f32> = gpu.read(self.vae.decoded(), 0, n * self.cfg.vae.input_dim)?;
        Ok(self.to_images(&out))
    }

    /// Prior samples z ~ N(0, I) (seeded), decoded.
    pub fn prior_samples(&self, gpu: &Gpu, n: usize, seed: u64) -> Result<Vec<f32>> {
        let key = seed_key(seed);
        let z: Vec<f32> = (0..n * self.cfg.vae.latent).map(|i| normal(i as u32, 0, 5, key) as f32).collect();
        self.decode(gpu, &z, n)
    }

    /// The first test batch and its reconstructions (one z sample each): (originals, recons, n).
    pub fn reconstructions(&self, gpu: &Gpu) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        self.vae.set_cursor(gpu, W_EVAL_BATCH, 0);
        gpu.submit(&self.eval_batch, 1);
        let n = self.cfg.batch.min(self.test_data.n);
        let d = self.cfg.vae.input_dim;
        let x: Vec<f32> = gpu.read(&self.vae.x, 0, n * d)?;
        let out: Vec<f32> = gpu.read(self.vae.decoded(), 0, n * d)?;
        Ok((x, self.to_images(&out), n))
    }

    pub fn write_pictures(&self, gpu: &Gpu, out: &Path) -> Result<()> {
        let shape = self.image_shape;
        let n = 64.min(self.cfg.batch * self.cfg.vae.samples);
        let samples = self.prior_samples(gpu, n, self.cfg.seed)?;
        crate::viz::save_grid(&out.join("samples.png"), &samples, n, shape, 8).map_err(Error::Output)?;
        let (x, r, n) = self.reconstructions(gpu)?;
        let n = n.min(32);
        crate::viz::save_recon(&out.join("recon.png"), &x, &r, n, shape, 8).map_err(Error::Output)?;
        Ok(())
    }

    pub fn checkpoint(&self, gpu: &Gpu) -> Result<checkpoint::Checkpoint> {
        let v = &self.vae;
        Ok(checkpoint::Checkpoint {
            meta: checkpoint::Meta {
                format_version: checkpoint::FORMAT_VERSION,
                crate_version: env!("CARGO_PKG_VERSION").into(),
                model: self.cfg.model.clone(),
                step: self.step,
                epoch: self.epoch,
                seed: self.cfg.seed,
                adapter: gpu.summary.to_string(),
                param_count: v.layout.count(),
                config: self.cfg.clone(),
            },
            params: gpu.read(&v.params, 0, v.layout.total)?,
            adam_m: gpu.read(&v.adam_m, 0, v.layout.total)?,
            adam_v: gpu.read(&v.adam_v, 0, v.layout.total)?,
        })
    }

    pub fn save_checkpoint(&self, gpu: &Gpu, dir: &Path) -> Result<()> {
        let ck = self.checkpoint(gpu)?;
        checkpoint::save(dir, &self.cfg.vae.named_tensors(&self.vae.layout), &ck)
    }

    /// Loads weights (and optimizer state, step, epoch) from a checkpoint folder.
    pub fn restore(&mut self, gpu: &Gpu, dir: &Path) -> Result<()> {
        let ck = checkpoint::load(dir, &self.cfg.vae.named_tensors(&self.vae.layout), self.vae.layout.total)?;
        gpu.write(&self.vae.params, 0, &ck.params);
        gpu.write(&self.vae.adam_m, 0, &ck.adam_m);
        gpu.write(&self.vae.adam_v, 0, &ck.adam_v);
        self.step = ck.meta.step;
        self.epoch = ck.meta.epoch;
        self.vae.set_state(gpu, self.cfg.seed, self.step);
        gpu.sync()?;
        Ok(())
    }
}

/// Opens (appending) the metrics file.
fn metrics_file(out: &Path) -> Result<std::fs::File> {
    let path = out.join("metrics.jsonl");
    std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(path, e))
}

pub struct TrainOptions {
    pub progress: bool,
    /// Continue from this checkpoint (weights, Adam moments, step and epoch) up to `cfg.epochs`,
    /// appending to metrics.jsonl.
    pub resume: Option<PathBuf>,
}

/// `vaegpu train`: the whole run. Returns the per-epoch records.
pub fn run(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, opts: &TrainOptions) -> Result<Vec<EpochRecord>> {
    let out: PathBuf = cfg.out.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut session = Session::new(gpu, cfg, data, true)?;
    let mpath = out.join("metrics.jsonl");
    if let Some(dir) = &opts.resume {
        session.restore(gpu, dir)?;
        tracing::info!("resuming from {} at epoch {}, step {}", dir.display(), session.epoch, session.step);
    } else if mpath.exists() {
        // A fresh run starts a fresh metrics file.
        std::fs::remove_file(&mpath).map_err(|e| Error::io(&mpath, e))?;
    }
    let mut file = metrics_file(&out)?;
    let config_text = toml::to_string_pretty(&session.cfg).map_err(|e| Error::Output(e.to_string()))?;
    checkpoint::write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    tracing::info!(
        "training {} on {} ({} train / {} test images, {} parameters, {} steps per epoch)",
        session.cfg.model,
        data.name,
        session.train_data.as_ref().map_or(0, |d| d.n),
        session.test_data.n,
        session.vae.layout.count(),
        session.steps_per_epoch()
    );
    let mut records = Vec::new();
    let steps = session.steps_per_epoch() as u64;
    while session.epoch < session.cfg.epochs {
        let bar = if opts.progress {
            let b = indicatif::ProgressBar::new(steps);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}", session.epoch + 1));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (m, secs) = session.train_epoch(gpu, |done, loss| {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.2}"));
        })?;
        bar.finish_and_clear();
        if m.nonfinite_steps > 0 {
            tracing::warn!("{} steps had a non-finite gradient and were skipped", m.nonfinite_steps);
        }
        let t1 = Instant::now();
        let ev = session.evaluate(gpu)?;
        let eval_seconds = t1.elapsed().as_secs_f64();
        let rec = EpochRecord {
            epoch: session.epoch,
            step: session.step,
            train_loss: m.train.mean_loss(),
            train_rec: m.train.mean_rec(),
            train_kl: m.train.mean_kl(),
            test_loss: ev.mean_loss(),
            test_rec: ev.mean_rec(),
            test_kl: ev.mean_kl(),
            grad_norm_mean: m.grad_norm_mean as f64,
            nonfinite_steps: m.nonfinite_steps,
            epoch_seconds: secs,
            eval_seconds,
        };
        if !rec.train_loss.is_finite() || !rec.test_loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "epoch {} gave train loss {} and test loss {}",
                rec.epoch, rec.train_loss, rec.test_loss
            )));
        }
        let line = serde_json::to_string(&rec).map_err(|e| Error::Output(e.to_string()))?;
        writeln!(file, "{line}").and_then(|_| file.flush()).map_err(|e| Error::io(&mpath, e))?;
        println!(
            "epoch {:>3}  train {:.3}  test {:.3} (rec {:.3}, kl {:.3})  {:.1}s",
            rec.epoch, rec.train_loss, rec.test_loss, rec.test_rec, rec.test_kl, rec.epoch_seconds
        );
        session.save_checkpoint(gpu, &checkpoint::default_dir(&out))?;
        records.push(rec);
    }
    session.write_pictures(gpu, &out)?;
    Ok(records)
}
