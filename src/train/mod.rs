//! The training loop: replays the recorded step, reads metrics back every N steps, evaluates,
//! writes metrics.jsonl, pictures and checkpoints.

pub mod checkpoint;
pub mod config;
pub mod prior;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Program};
use crate::kernels::ae::{Noise, RecLoss, Sparsity};
use crate::kernels::data::{STATE_WORDS, W_EVAL_BATCH, W_NONFINITE_RUN, W_SEED_HI, W_SEED_LO, W_STEP, W_TRAIN_BATCH};
use crate::kernels::elbo::Likelihood;
use crate::kernels::reduce::METRICS_WORDS;
use crate::kernels::vq::VQM_LEVEL_WORDS;
use crate::models::ae::Ae;
use crate::models::core::{Core, Metrics, SlotMetrics};
use crate::models::vae::{GpuDataset, NamedTensor, Vae};
use crate::models::vq::VqVae;
use crate::reference::sample::{normal, philox, seed_key};
pub use config::TrainConfig;

/// The resident set size of this process in bytes (Linux: VmRSS in /proc/self/status), None elsewhere.
pub fn host_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

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
    /// Memory at the end of the epoch: the process's resident set (Linux), and the bytes the GPU
    /// allocator holds in live allocations and in reserved blocks (where the backend reports them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_allocated_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_reserved_bytes: Option<u64>,
    /// VQ models: reconstruction and code usage (their rec/kl fields hold the MSE per pixel and the
    /// mean VQ distance mean((z_e − e)²) over the code vectors of every level).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub vq: Option<VqRecord>,
    /// Autoencoders: their losses are the objective rec + penalty and the reconstruction loss per image
    /// (summed squared error or BCE); their kl fields hold the sparsity penalty, repeated here by name.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub ae: Option<AeRecord>,
}

/// The autoencoder part of an epoch record.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct AeRecord {
    /// Mean sparsity penalty per image (the same numbers as train_kl and test_kl): λ·Σ_j |a_j| (l1),
    /// β·Σ_j KL(ρ ‖ ρ̂_j) with ρ̂ the batch's mean activations (kl), 0 without sparsity.
    pub train_penalty: f64,
    pub test_penalty: f64,
    /// Sparse AEs: the mean over test images and units of |a|, the penalised layer's activations on
    /// the clean test inputs (for a sigmoid or ReLU layer the mean activation itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_mean_activation: Option<f64>,
}

/// The VQ part of an epoch record.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct VqRecord {
    /// Mean squared error per pixel (padding excluded), and divided by the data variance.
    pub train_mse: f64,
    pub test_mse: f64,
    pub test_mse_norm: f64,
    pub data_variance: f64,
    /// mean((z_e − e)²) over the test set's code vectors (of both levels for VQ-VAE-2).
    pub test_vq: f64,
    pub levels: Vec<LevelRecord>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct LevelRecord {
    pub codes: usize,
    /// Mean over the epoch's training batches of the batch perplexity and used codes.
    pub train_perplexity: f64,
    pub train_used: f64,
    /// Codes reset by dead-code restart during the epoch.
    pub restarts: f64,
    /// Perplexity and used codes of the code counts over the whole test set; dead = codes never used.
    pub test_perplexity: f64,
    pub test_used: usize,
    pub test_dead: usize,
    /// Mean over test batches of the batch perplexity.
    pub test_batch_perplexity: f64,
}

/// The model a session trains (one per session, so the size difference of the variants is no cost).
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Vae(Vae),
    Vq(VqVae),
    Ae(Ae),
}

impl Model {
    /// FLOPs of one training step at batch `b` (the networks' dense and conv layers, forward and
    /// backward).
    pub fn step_flops(&self, b: usize) -> f64 {
        match self {
            Model::Vae(v) => v.cfg.step_flops(b),
            Model::Vq(v) => v.cfg.step_flops(b),
            Model::Ae(a) => a.cfg.step_flops(b),
        }
    }

    pub fn core(&self) -> &Core {
        match self {
            Model::Vae(v) => &v.core,
            Model::Vq(v) => &v.core,
            Model::Ae(a) => &a.core,
        }
    }

    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        match self {
            Model::Vae(v) => v.cfg.named_tensors(&v.core.layout),
            Model::Vq(v) => v.named_tensors(),
            Model::Ae(a) => a.cfg.named_tensors(&a.core.layout),
        }
    }

    fn x(&self) -> &wgpu::Buffer {
        match self {
            Model::Vae(v) => &v.x,
            Model::Vq(v) => &v.x,
            Model::Ae(a) => &a.x,
        }
    }

    fn decoded(&self) -> &wgpu::Buffer {
        match self {
            Model::Vae(v) => v.decoded(),
            Model::Vq(v) => v.decoded(),
            Model::Ae(a) => a.decoded(),
        }
    }

    /// Values per (padded) image.
    fn dim(&self) -> usize {
        match self {
            Model::Vae(v) => v.cfg.input_dim,
            Model::Vq(v) => v.cfg.image.iter().product(),
            Model::Ae(a) => a.cfg.input_dim,
        }
    }
}

/// A denoising autoencoder's first test batch: `n` clean images, the same corrupted as in training, and
/// their reconstructions from the corrupted input (item-major, as the data's images).
pub struct Denoised {
    pub clean: Vec<f32>,
    pub corrupted: Vec<f32>,
    pub recons: Vec<f32>,
    pub n: usize,
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
    pub model: Model,
    pub train_data: Option<GpuDataset>,
    pub test_data: GpuDataset,
    pub train_step: Option<Program>,
    pub eval_batch: Program,
    /// Height, width, channels of the images (as the data has them, before any padding).
    pub image_shape: (usize, usize, usize),
    /// Pixel variance of the training images (values in [0, 1]; VQ models, which scale the MSE by it).
    pub variance: f64,
    /// Optimizer steps taken (the GPU's step word as of the last epoch end, checkpoint or restore).
    pub step: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Batches of epoch `epoch + 1` trained so far (0 at an epoch boundary).
    pub batch: usize,
    /// Training seconds of the epoch in progress spent before a restore (a mid-epoch checkpoint's).
    epoch_seconds: f64,
}

/// What may end [`Session::train_epoch_with`] early.
#[derive(Clone, Copy, Default)]
pub struct Control<'a> {
    /// Stop after this many consecutive steps with a non-finite gradient (0 = never).
    pub max_nonfinite: u32,
    /// A signal number set asynchronously (0 = none): stop after the submission in flight.
    pub stop: Option<&'a AtomicUsize>,
}

/// How [`Session::train_epoch_with`] ended.
pub enum EpochEnd {
    /// The epoch's last batch is done: its training metrics and seconds.
    Done(Metrics, f64),
    /// Stopped by the signal, `batch` batches into the epoch (the session can save a checkpoint there).
    Stopped(i32),
    /// [`Control::max_nonfinite`] consecutive non-finite steps: the GPU state words at the stop.
    NonFinite(Vec<u32>),
}

/// A copy in flight into a [`RunWatch`] slot: the submission it follows, the steps done by then, and its
/// mapping's status.
struct PendingMap {
    index: wgpu::SubmissionIndex,
    done: usize,
    status: Arc<AtomicU8>,
}

/// What a [`RunWatch`] copy holds: the GPU state words and the running metrics as they were after
/// `done` steps of the epoch.
pub(crate) struct Seen {
    pub done: usize,
    pub state: Vec<u32>,
    pub metrics: Metrics,
}

/// Reads the GPU state words and the running metrics back after each submission without stalling the
/// queue: a copy into one of a few mappable buffers, mapped asynchronously, looked at once the GPU has
/// got there (at the latest when the buffer comes round again, `DEPTH` submissions later, which bounds
/// how far the host runs ahead). The training loop (and `bench --steps`, which times it) takes its
/// progress from these copies, so no read-back inside an epoch makes the GPU wait for the host to
/// record the next submission.
pub(crate) struct RunWatch {
    slots: Vec<(wgpu::Buffer, Option<PendingMap>)>,
    next: usize,
}

impl RunWatch {
    const DEPTH: usize = 3;
    const STATE_BYTES: u64 = (STATE_WORDS * 4) as u64;
    const BYTES: u64 = Self::STATE_BYTES + (METRICS_WORDS * 4) as u64;

    pub(crate) fn new(gpu: &Gpu) -> RunWatch {
        let buf = |i: usize| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("run watch {i}")),
                size: Self::BYTES,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        RunWatch { slots: (0..Self::DEPTH).map(|i| (buf(i), None)).collect(), next: 0 }
    }

    /// Queues a copy of `core`'s state and metrics as they will be after everything submitted so far
    /// (`done` steps); returns an earlier copy it had to wait for.
    pub(crate) fn push(&mut self, gpu: &Gpu, core: &Core, done: usize) -> Result<Option<Seen>> {
        let i = self.next;
        self.next = (i + 1) % Self::DEPTH;
        let seen = self.take(gpu, i, true)?;
        let (buf, pending) = &mut self.slots[i];
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run watch") });
        enc.copy_buffer_to_buffer(&core.state, 0, buf, 0, Self::STATE_BYTES);
        enc.copy_buffer_to_buffer(&core.metrics, 0, buf, Self::STATE_BYTES, Self::BYTES - Self::STATE_BYTES);
        let index = gpu.queue.submit([enc.finish()]);
        let status = Arc::new(AtomicU8::new(0));
        let d = status.clone();
        buf.slice(..).map_async(wgpu::MapMode::Read, move |r| d.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst));
        *pending = Some(PendingMap { index, done, status });
        Ok(seen)
    }

    /// After a submission of the training loop (`done` steps of the epoch): queues this copy, checks for
    /// errors, and returns every copy the GPU has finished, oldest first, without waiting for the rest.
    pub(crate) fn after_submit(&mut self, gpu: &Gpu, core: &Core, done: usize) -> Result<Vec<Seen>> {
        let mut seen: Vec<Seen> = self.push(gpu, core, done)?.into_iter().collect();
        gpu.check()?;
        seen.extend(self.ready(gpu, false)?);
        Ok(seen)
    }

    /// Every copy the GPU has made, oldest first (`wait`: after waiting for all of them).
    pub(crate) fn ready(&mut self, gpu: &Gpu, wait: bool) -> Result<Vec<Seen>> {
        let mut out = Vec::new();
        for k in 0..Self::DEPTH {
            let i = (self.next + k) % Self::DEPTH;
            if !wait {
                let _ = gpu.device.poll(wgpu::PollType::Poll);
            }
            out.extend(self.take(gpu, i, wait)?);
        }
        Ok(out)
    }

    fn take(&mut self, gpu: &Gpu, i: usize, wait: bool) -> Result<Option<Seen>> {
        let (buf, pending) = &mut self.slots[i];
        let Some(p) = pending.as_ref() else { return Ok(None) };
        if wait && p.status.load(Ordering::SeqCst) == 0 {
            let poll = wgpu::PollType::Wait { submission_index: Some(p.index.clone()), timeout: None };
            gpu.device.poll(poll).map_err(|e| crate::gpu::GpuError::DeviceLost {
                adapter: gpu.summary.name.clone(),
                message: e.to_string(),
            })?;
        }
        let readback = |message: String| crate::gpu::GpuError::Readback { label: "state".into(), message };
        match p.status.load(Ordering::SeqCst) {
            0 if !wait => return Ok(None),
            0 => return Err(readback("the state copy never completed".into()).into()),
            1 => {}
            _ => return Err(readback("mapping failed".into()).into()),
        }
        let done = p.done;
        *pending = None;
        let words: Vec<u32> = {
            let view = buf.slice(..).get_mapped_range().map_err(|e| readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        buf.unmap();
        let (state, metrics) = words.split_at(STATE_WORDS);
        let metrics: Vec<f32> = metrics.iter().map(|w| f32::from_bits(*w)).collect();
        Ok(Some(Seen { done, state: state.to_vec(), metrics: Metrics::from_words(&metrics) }))
    }
}

/// Variance of the pixel values (/255) of a split.
fn pixel_variance(pixels: &[u8]) -> f64 {
    let n = pixels.len().max(1) as f64;
    let mean = pixels.iter().map(|&p| p as f64).sum::<f64>() / n / 255.0;
    pixels.iter().map(|&p| (p as f64 / 255.0 - mean).powi(2)).sum::<f64>() / n
}

impl Session {
    /// Builds the model for `data`. `for_training` uploads the training split too.
    pub fn new(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, for_training: bool) -> Result<Session> {
        let mut cfg = cfg.clone();
        cfg.resolve();
        let (h, w, c) = data.image_shape();
        cfg.vae.input_dim = h * w * c;
        cfg.vae.image = [h, w, c];
        cfg.ae.input_dim = h * w * c;
        cfg.ae.image = [h, w, c];
        let mut pad = 0;
        if cfg.is_vq() {
            let (top, left, ph, pw) = cfg.vq.padding(h, w);
            if top != left || ph != h + 2 * top || pw != w + 2 * left {
                return Err(Error::Config(format!(
                    "{h}x{w} images would need uneven padding to {ph}x{pw}; pass --image-size with a multiple of {}",
                    cfg.vq.stride()
                )));
            }
            pad = top;
            cfg.vq.image = [ph, pw, c];
            cfg.vq.valid = [h, w];
        }
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
        let variance = if cfg.is_vq() { pixel_variance(&train.images.pixels) } else { 0.0 };
        let (train, test) = (train.pad(pad), test.pad(pad));
        let model = if cfg.is_vq() {
            Model::Vq(VqVae::new(gpu, &cfg.vq, cfg.batch, cfg.seed)?)
        } else if cfg.is_ae() {
            let ae = Ae::new(gpu, &cfg.ae, cfg.batch)?;
            gpu.write(&ae.core.params, 0, &ae.core.layout.init(cfg.seed));
            Model::Ae(ae)
        } else {
            let vae = Vae::new(gpu, &cfg.vae, cfg.batch)?;
            gpu.write(&vae.core.params, 0, &cfg.vae.init_params(cfg.seed).map_err(Error::Config)?);
            Model::Vae(vae)
        };
        model.core().set_state(gpu, cfg.seed, 0);
        let dim = model.dim();
        let test_data = GpuDataset::upload(gpu, "test", &test.images.pixels, test.len(), dim)?;
        let eval_batch = match &model {
            Model::Vae(v) => v.eval_program(gpu, &test_data, false)?,
            Model::Vq(v) => v.eval_program(gpu, &test_data)?,
            Model::Ae(a) => a.eval_program(gpu, &test_data, false)?,
        };
        let (train_data, train_step) = if for_training {
            let d = GpuDataset::upload(gpu, "train", &train.images.pixels, train.len(), dim)?;
            let p = match &model {
                Model::Vae(v) => v.train_program(gpu, &d, &cfg.adam(), cfg.max_grad_norm, cfg.binarize)?,
                Model::Vq(v) => v.train_program(gpu, &d, &cfg.adam(), cfg.max_grad_norm, variance as f32)?,
                Model::Ae(a) => a.train_program(gpu, &d, &cfg.adam(), cfg.max_grad_norm, cfg.binarize)?,
            };
            (Some(d), Some(p))
        } else {
            (None, None)
        };
        gpu.sync()?;
        Ok(Session {
            cfg,
            model,
            train_data,
            test_data,
            train_step,
            eval_batch,
            image_shape: (h, w, c),
            variance,
            step: 0,
            epoch: 0,
            batch: 0,
            epoch_seconds: 0.0,
        })
    }

    pub fn core(&self) -> &Core {
        self.model.core()
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_data.as_ref().map_or(0, |d| d.n / self.cfg.batch)
    }

    /// Trains one epoch (the rest of it after a mid-epoch restore); `on_progress(steps_done,
    /// running_loss)` is called at each metrics read-back.
    pub fn train_epoch(&mut self, gpu: &Gpu, on_progress: impl FnMut(usize, f64)) -> Result<(Metrics, f64)> {
        match self.train_epoch_with(gpu, &Control::default(), on_progress)? {
            EpochEnd::Done(m, secs) => Ok((m, secs)),
            EpochEnd::Stopped(_) | EpochEnd::NonFinite(_) => unreachable!("nothing stops an epoch without control"),
        }
    }

    /// As [`Session::train_epoch`], stopping early as `ctl` says. The signal is looked at after each
    /// submission (not after the epoch's last: that epoch is finished); the consecutive non-finite count
    /// (a GPU state word) after each submission as the GPU gets there (a `RunWatch` copy, at most a
    /// few submissions behind), and at the epoch's end. `on_progress` takes its figures from the same
    /// copies: nothing inside an epoch waits for the GPU to drain.
    pub fn train_epoch_with(
        &mut self,
        gpu: &Gpu,
        ctl: &Control,
        mut on_progress: impl FnMut(usize, f64),
    ) -> Result<EpochEnd> {
        let (Some(data), Some(prog)) = (&self.train_data, &self.train_step) else {
            return Err(Error::Config("session was built without training data".into()));
        };
        let t0 = Instant::now();
        let steps = self.steps_per_epoch();
        data.set_order(gpu, &epoch_order(data.n, self.cfg.seed, self.epoch + 1));
        let core = self.model.core();
        if self.batch == 0 {
            core.set_cursor(gpu, W_TRAIN_BATCH, 0);
            core.reset_metrics(gpu);
            if let Model::Vq(v) = &self.model {
                v.reset_vq_metrics(gpu);
            }
            self.epoch_seconds = 0.0;
        }
        // else: the cursor, the epoch's running sums and seconds are the restored checkpoint's.
        let too_many = |w: &[u32]| ctl.max_nonfinite > 0 && w[W_NONFINITE_RUN] >= ctl.max_nonfinite;
        let mut watch = RunWatch::new(gpu);
        let mut done = self.batch;
        let mut next_log = done + self.cfg.log_every;
        while done < steps {
            let n = self.cfg.steps_per_submit.min(steps - done);
            gpu.submit(prog, n);
            done += n;
            self.batch = done;
            let seen = watch.after_submit(gpu, core, done)?;
            // Progress from the newest copy the GPU has made that reaches the next log point.
            if let Some(s) = seen.iter().rev().find(|s| s.done >= next_log) {
                next_log = s.done + self.cfg.log_every;
                on_progress(s.done, s.metrics.train.mean_loss());
            }
            if seen.iter().any(|s| too_many(&s.state)) {
                gpu.sync()?;
                return Ok(EpochEnd::NonFinite(core.read_state(gpu)?));
            }
            if let Some(sig) = ctl.stop.map(|s| s.load(Ordering::SeqCst)).filter(|&s| s != 0) {
                if done < steps {
                    let st = core.read_state(gpu)?;
                    self.step = st[W_STEP as usize];
                    self.epoch_seconds += t0.elapsed().as_secs_f64();
                    return Ok(EpochEnd::Stopped(sig as i32));
                }
            }
        }
        let m = core.read_metrics(gpu)?;
        let st = core.read_state(gpu)?;
        if watch.ready(gpu, true)?.iter().map(|s| &s.state[..]).chain([&st[..]]).any(too_many) {
            return Ok(EpochEnd::NonFinite(st));
        }
        self.step = st[W_STEP as usize];
        self.epoch += 1;
        self.batch = 0;
        // The GPU's train cursor with it, so that a checkpoint saved now (epoch end, batch 0) holds the
        // cursor of the batch it names; the next epoch would reset it anyway.
        core.set_cursor(gpu, W_TRAIN_BATCH, 0);
        let secs = self.epoch_seconds + t0.elapsed().as_secs_f64();
        self.epoch_seconds = 0.0;
        Ok(EpochEnd::Done(m, secs))
    }

    /// Evaluates the test split: the eval slot's sums (mean loss, rec, kl per image).
    pub fn evaluate(&self, gpu: &Gpu) -> Result<SlotMetrics> {
        Ok(self.evaluate_with_activation(gpu)?.0)
    }

    /// As [`Session::evaluate`]; for a sparse autoencoder also the mean |activation| of its penalised
    /// layer over the test images and units (read back after each batch; the partial last batch's
    /// repeated rows are left out).
    pub fn evaluate_with_activation(&self, gpu: &Gpu) -> Result<(SlotMetrics, Option<f64>)> {
        let core = self.model.core();
        core.reset_metrics(gpu);
        if let Model::Vq(v) = &self.model {
            v.reset_vq_metrics(gpu);
        }
        core.set_cursor(gpu, W_EVAL_BATCH, 0);
        let batches = self.test_data.n.div_ceil(self.cfg.batch);
        let sparse = match &self.model {
            Model::Ae(a) if a.cfg.sparsity != Sparsity::None => Some(a),
            _ => None,
        };
        let mut act = None;
        if let Some(a) = sparse {
            let units = a.penalised_units();
            let mut sum = 0.0f64;
            for b in 0..batches {
                gpu.submit(&self.eval_batch, 1);
                let rows = self.cfg.batch.min(self.test_data.n - b * self.cfg.batch);
                let v: Vec<f32> = gpu.read(a.penalised(), 0, rows * units)?;
                sum += v.iter().map(|&x| x.abs() as f64).sum::<f64>();
            }
            act = Some(sum / (self.test_data.n * units).max(1) as f64);
        } else {
            let mut done = 0;
            while done < batches {
                let n = self.cfg.steps_per_submit.min(batches - done);
                gpu.submit(&self.eval_batch, n);
                done += n;
            }
        }
        let m = core.read_metrics(gpu)?;
        Ok((m.eval, act))
    }

    /// Mean image of p(x|z) from the decoder output rows, cropped to the data's own size.
    fn to_images(&self, out: &[f32], n: usize) -> Vec<f32> {
        match &self.model {
            Model::Vae(v) if v.cfg.likelihood == Likelihood::Bernoulli => {
                out.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect()
            }
            Model::Vae(_) => out.to_vec(),
            Model::Ae(a) if a.cfg.loss == RecLoss::Bce => out.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
            Model::Ae(_) => out.to_vec(),
            Model::Vq(v) => {
                let [ph, pw, c] = v.cfg.image;
                let [h, w] = v.cfg.valid;
                let (top, left, _, _) = v.cfg.padding(h, w);
                let mut img = Vec::with_capacity(n * h * w * c);
                for i in 0..n {
                    for y in top..top + h {
                        let row = ((i * ph + y) * pw + left) * c;
                        img.extend_from_slice(&out[row..row + w * c]);
                    }
                }
                img
            }
        }
    }

    fn vae(&self, what: &str) -> Result<&Vae> {
        match &self.model {
            Model::Vae(v) => Ok(v),
            Model::Vq(_) => Err(Error::Config(format!(
                "{what} of a {} model needs a prior over its codes: train one with `vaegpu train-prior`",
                self.cfg.model
            ))),
            Model::Ae(_) => Err(Error::Config(format!(
                "{what} needs a generative model: an autoencoder ({}) has no prior over its codes to sample \
                 from (its outputs are recon.png and `vaegpu eval`)",
                self.cfg.model
            ))),
        }
    }

    /// Decodes `n` (≤ batch·M) latent vectors given row-major [n, Z]; returns the images.
    pub fn decode(&self, gpu: &Gpu, z: &[f32], n: usize) -> Result<Vec<f32>> {
        let vae = self.vae("decoding latents")?;
        let rows = self.cfg.batch * self.cfg.vae.samples;
        if n > rows {
            return Err(Error::Config(format!("can decode at most {rows} vectors at once, asked for {n}")));
        }
        gpu.write(&vae.z, 0, z);
        let mut p = Program::new("decode");
        p.extend(vae.decode(gpu)?);
        gpu.submit(&p, 1);
        let out: Vec<f32> = gpu.read(vae.decoded(), 0, n * self.cfg.vae.input_dim)?;
        Ok(self.to_images(&out, n))
    }

    /// The encoder's output [n, 2Z] (μ | logσ² per row) for every test image, in the stored order.
    pub fn encode_test(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let vae = self.vae("encoding")?;
        let p = vae.encode_program(gpu, &self.test_data)?;
        vae.core.set_cursor(gpu, W_EVAL_BATCH, 0);
        let (n, b, width) = (self.test_data.n, self.cfg.batch, 2 * self.cfg.vae.latent);
        let mut head = Vec::with_capacity(n * width);
        for start in (0..n).step_by(b) {
            gpu.submit(&p, 1);
            let rows = b.min(n - start);
            head.extend(gpu.read::<f32>(vae.head(), 0, rows * width)?);
        }
        Ok(head)
    }

    fn vq(&self, what: &str) -> Result<&VqVae> {
        match &self.model {
            Model::Vq(v) => Ok(v),
            _ => Err(Error::Config(format!("{what} needs a vq-vae or vq-vae-2 checkpoint"))),
        }
    }

    /// The code maps of every image of a split, per level (bottom first): [n_items, H_l·W_l] row-major.
    pub fn code_maps(&self, gpu: &Gpu, train: bool) -> Result<Vec<Vec<u32>>> {
        let v = self.vq("extracting code maps")?;
        let data = if train {
            self.train_data.as_ref().ok_or_else(|| Error::Config("session was built without training data".into()))?
        } else {
            &self.test_data
        };
        data.set_order(gpu, &(0..data.n as u32).collect::<Vec<_>>());
        let prog = v.eval_program(gpu, data)?;
        v.core.set_cursor(gpu, W_EVAL_BATCH, 0);
        let mut maps: Vec<Vec<u32>> = v.levels.iter().map(|l| Vec::with_capacity(data.n * l.q.n / v.batch)).collect();
        for b in 0..data.n.div_ceil(v.batch) {
            gpu.submit(&prog, 1);
            let rows = v.batch.min(data.n - b * v.batch);
            for (m, l) in maps.iter_mut().zip(&v.levels) {
                m.extend(gpu.read::<u32>(&l.idx, 0, rows * l.q.n / v.batch)?);
            }
        }
        v.reset_vq_metrics(gpu);
        self.model.core().reset_metrics(gpu);
        Ok(maps)
    }

    /// Each level's codebook [K, D] (bottom first).
    pub fn codebooks(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let v = self.vq("reading codebooks")?;
        let l = &v.core.layout.layers;
        v.levels.iter().map(|lv| Ok(gpu.read(&v.core.params, l[lv.tables.embed].offset, lv.q.k * lv.q.d)?)).collect()
    }

    /// Decodes `n` (≤ batch) code maps given per level (bottom first, [n, H_l·W_l]); returns the images.
    pub fn decode_codes(&self, gpu: &Gpu, maps: &[Vec<u32>], n: usize) -> Result<Vec<f32>> {
        let v = self.vq("decoding codes")?;
        if n > v.batch || maps.len() != v.levels.len() {
            return Err(Error::Config(format!(
                "can decode at most {} maps of {} level(s) at once",
                v.batch,
                v.levels.len()
            )));
        }
        for ((m, lv), code) in maps.iter().zip(&v.levels).zip(self.codebooks(gpu)?) {
            let (per, d) = (lv.q.n / v.batch, lv.q.d);
            if m.len() != n * per || m.iter().any(|&i| i as usize >= lv.q.k) {
                return Err(Error::Config(format!("code maps must be [{n}, {per}] with codes < {}", lv.q.k)));
            }
            let mut zq = vec![0f32; lv.q.n * d];
            for (r, &i) in m.iter().enumerate() {
                zq[r * d..(r + 1) * d].copy_from_slice(&code[i as usize * d..(i as usize + 1) * d]);
            }
            gpu.write(&lv.zq, 0, &zq);
        }
        let mut p = Program::new("decode codes");
        p.extend(v.decode(gpu)?);
        gpu.submit(&p, 1);
        let out: Vec<f32> = gpu.read(v.decoded(), 0, n * self.model.dim())?;
        Ok(self.to_images(&out, n))
    }

    /// Prior samples z ~ N(0, I) (seeded), decoded.
    /// (A learned prior maps the same normals through its sampler: the flow's inverse, or a mixture
    /// component per row drawn with the eval-batch word set to the low bits of `seed`.)
    pub fn prior_samples(&self, gpu: &Gpu, n: usize, seed: u64) -> Result<Vec<f32>> {
        let vae = self.vae("sampling")?;
        let key = seed_key(seed);
        let z: Vec<f32> = (0..n * self.cfg.vae.latent).map(|i| normal(i as u32, 0, 5, key) as f32).collect();
        if vae.prior.is_none() {
            return self.decode(gpu, &z, n);
        }
        let rows = self.cfg.batch * self.cfg.vae.samples;
        if n > rows {
            return Err(Error::Config(format!("can decode at most {rows} vectors at once, asked for {n}")));
        }
        gpu.write(&vae.eps, 0, &z);
        vae.core.set_cursor(gpu, W_EVAL_BATCH, seed as u32);
        let mut p = Program::new("prior sample");
        p.extend(vae.sample_prior(gpu, W_EVAL_BATCH)?);
        p.extend(vae.decode(gpu)?);
        gpu.submit(&p, 1);
        let out: Vec<f32> = gpu.read(vae.decoded(), 0, n * self.cfg.vae.input_dim)?;
        Ok(self.to_images(&out, n))
    }

    /// The first test batch and its reconstructions (one z sample each): (originals, recons, n), cropped
    /// to the data's own size.
    pub fn reconstructions(&self, gpu: &Gpu) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        self.core().set_cursor(gpu, W_EVAL_BATCH, 0);
        gpu.submit(&self.eval_batch, 1);
        let n = self.cfg.batch.min(self.test_data.n);
        let d = self.model.dim();
        let x: Vec<f32> = gpu.read(self.model.x(), 0, n * d)?;
        let out: Vec<f32> = gpu.read(self.model.decoded(), 0, n * d)?;
        let x = match self.model {
            Model::Vae(_) | Model::Ae(_) => x,
            Model::Vq(_) => self.to_images(&x, n),
        };
        Ok((x, self.to_images(&out, n), n))
    }

    pub fn write_pictures(&self, gpu: &Gpu, out: &Path) -> Result<()> {
        let shape = self.image_shape;
        if let Model::Vae(_) = self.model {
            let n = 64.min(self.cfg.batch * self.cfg.vae.samples);
            let samples = self.prior_samples(gpu, n, self.cfg.seed)?;
            crate::viz::save_grid(&out.join("samples.png"), &samples, n, shape, 8).map_err(Error::Output)?;
        }
        let (x, r, n) = self.reconstructions(gpu)?;
        let n = n.min(32);
        crate::viz::save_recon(&out.join("recon.png"), &x, &r, n, shape, 8).map_err(Error::Output)?;
        if let Some(d) = self.denoised(gpu)? {
            let n = d.n.min(32);
            crate::viz::save_rows(&out.join("denoise.png"), &[&d.clean, &d.corrupted, &d.recons], n, shape, 8)
                .map_err(Error::Output)?;
        }
        Ok(())
    }

    /// A denoising autoencoder's first test batch, corrupted as in training (the noise of the current
    /// step) and reconstructed from the corrupted input; none for other models.
    pub fn denoised(&self, gpu: &Gpu) -> Result<Option<Denoised>> {
        let Model::Ae(a) = &self.model else { return Ok(None) };
        if a.cfg.noise == Noise::None {
            return Ok(None);
        }
        // The eval program gathers the first test batch into x; then x_in = corrupt(x) → forward.
        self.core().set_cursor(gpu, W_EVAL_BATCH, 0);
        gpu.submit(&self.eval_batch, 1);
        let mut p = Program::new("ae_denoise");
        p.extend(a.corrupt(gpu, W_STEP)?);
        p.extend(a.forward(gpu, true)?);
        gpu.submit(&p, 1);
        let n = self.cfg.batch.min(self.test_data.n);
        let d = a.cfg.input_dim;
        let clean: Vec<f32> = gpu.read(&a.x, 0, n * d)?;
        let noisy: Vec<f32> = gpu.read(&a.x_in, 0, n * d)?;
        let out: Vec<f32> = gpu.read(a.decoded(), 0, n * d)?;
        Ok(Some(Denoised { clean, corrupted: noisy, recons: self.to_images(&out, n), n }))
    }

    /// Everything needed to continue exactly: weights (with a VQ model's EMA codebook state), Adam's
    /// moments, the GPU state words (step, cursors, Philox key, non-finite count), the epoch's running
    /// sums, and where in the data order the run is (epoch, batch).
    pub fn checkpoint(&self, gpu: &Gpu) -> Result<checkpoint::Checkpoint> {
        let c = self.core();
        let snap = c.snapshot(gpu)?;
        let mut buffers = vec![("metrics".to_string(), gpu.read(&c.metrics, 0, METRICS_WORDS)?)];
        if let Model::Vq(v) = &self.model {
            buffers.push(("vq.metrics".into(), gpu.read_f32(&v.vqm)?));
            buffers.push(("vq.usage".into(), gpu.read_f32(&v.usage)?));
        }
        Ok(checkpoint::Checkpoint {
            meta: checkpoint::Meta {
                format_version: checkpoint::FORMAT_VERSION,
                crate_version: env!("CARGO_PKG_VERSION").into(),
                model: self.cfg.model.clone(),
                step: snap.state[W_STEP as usize],
                epoch: self.epoch,
                batch: self.batch,
                steps_per_epoch: self.steps_per_epoch(),
                seed: self.cfg.seed,
                adapter: gpu.summary.to_string(),
                param_count: c.layout.count(),
                gpu_state: snap.state,
                epoch_seconds: self.epoch_seconds,
                config: self.cfg.clone(),
            },
            params: snap.params,
            adam_m: snap.adam_m,
            adam_v: snap.adam_v,
            buffers,
            path: PathBuf::new(),
        })
    }

    /// Saves a checkpoint as a new folder under the checkpoint root `root`, keeping the newest
    /// `cfg.keep_checkpoints`; returns the folder.
    pub fn save_checkpoint(&self, gpu: &Gpu, root: &Path) -> Result<PathBuf> {
        let ck = self.checkpoint(gpu)?;
        checkpoint::save(root, &self.model.named_tensors(), &ck, self.cfg.keep_checkpoints)
    }

    /// Loads everything a checkpoint holds (the folder `dir` stands for: see [`checkpoint::resolve`]);
    /// returns that folder.
    pub fn restore(&mut self, gpu: &Gpu, dir: &Path) -> Result<PathBuf> {
        let c = self.model.core();
        let ck = checkpoint::load(dir, &self.model.named_tensors(), c.layout.total)?;
        let err = |m: String| Error::Checkpoint { path: ck.path.clone(), message: m };
        let m = &ck.meta;
        let spe = self.steps_per_epoch();
        if m.batch > 0 && self.train_data.is_some() && (m.steps_per_epoch != spe || m.batch >= spe) {
            return Err(err(format!(
                "was taken {} batches into an epoch of {} batches; this configuration has {spe} batches per \
                 epoch (batch size or train_limit changed?)",
                m.batch, m.steps_per_epoch
            )));
        }
        let mut sizes = vec![("metrics", METRICS_WORDS)];
        if let Model::Vq(v) = &self.model {
            sizes.push(("vq.metrics", (v.vqm.size() / 4) as usize));
            sizes.push(("vq.usage", (v.usage.size() / 4) as usize));
        }
        for (name, vals) in &ck.buffers {
            match sizes.iter().find(|(n, _)| n == name) {
                Some((_, len)) if vals.len() == *len => {}
                Some((_, len)) => {
                    return Err(err(format!(
                        "state buffer '{name}' has {} values, the model needs {len}: a checkpoint of another model?",
                        vals.len()
                    )))
                }
                None => return Err(err(format!("state buffer '{name}' is not one this model has"))),
            }
        }
        gpu.write(&c.params, 0, &ck.params);
        gpu.write(&c.adam_m, 0, &ck.adam_m);
        gpu.write(&c.adam_v, 0, &ck.adam_v);
        self.step = m.step;
        self.epoch = m.epoch;
        self.batch = m.batch;
        self.epoch_seconds = m.epoch_seconds;
        if m.gpu_state.len() == STATE_WORDS {
            let mut st = m.gpu_state.clone();
            st[W_STEP as usize] = m.step;
            st[W_TRAIN_BATCH as usize] = m.batch as u32;
            st[W_SEED_LO] = self.cfg.seed as u32;
            st[W_SEED_HI] = (self.cfg.seed >> 32) as u32;
            gpu.write(&c.state, 0, &st);
        } else {
            c.set_state(gpu, self.cfg.seed, self.step);
        }
        for (name, vals) in &ck.buffers {
            match (name.as_str(), &self.model) {
                ("metrics", _) => gpu.write(&c.metrics, 0, vals),
                ("vq.metrics", Model::Vq(v)) => gpu.write(&v.vqm, 0, vals),
                ("vq.usage", Model::Vq(v)) => gpu.write(&v.usage, 0, vals),
                _ => {}
            }
        }
        gpu.sync()?;
        Ok(ck.path)
    }

    /// The VQ part of an epoch record from the train-epoch words and the evaluation just run.
    /// Also returns the test-set usage per code.
    fn vq_record(
        &self,
        gpu: &Gpu,
        train: &Metrics,
        train_words: &[f32],
        ev: &SlotMetrics,
    ) -> Result<Option<(VqRecord, Vec<Vec<f64>>)>> {
        let Model::Vq(v) = &self.model else { return Ok(None) };
        let pixels = v.valid_pixels() as f64;
        let elems = (v.vectors_per_row() * v.cfg.dim) as f64;
        let per = |sum: f64, rows: f64, n: f64| sum / (rows.max(1.0) * n);
        let test_mse = per(ev.rec, ev.rows, pixels);
        let mut levels = Vec::new();
        let mut usages = Vec::new();
        for (i, (words, usage)) in v.read_vq_metrics(gpu)?.into_iter().enumerate() {
            let usage: Vec<f64> = usage.iter().map(|&u| u as f64).collect();
            let (perp, used) = crate::reference::vq::perplexity(&usage);
            let tw = &train_words[i * VQM_LEVEL_WORDS..][..VQM_LEVEL_WORDS];
            let tb = tw[2].max(1.0) as f64;
            levels.push(LevelRecord {
                codes: v.cfg.codes,
                train_perplexity: tw[0] as f64 / tb,
                train_used: tw[1] as f64 / tb,
                restarts: tw[3] as f64,
                test_perplexity: perp,
                test_used: used,
                test_dead: v.cfg.codes - used,
                test_batch_perplexity: words[4] as f64 / (words[6].max(1.0) as f64),
            });
            usages.push(usage);
        }
        let rec = VqRecord {
            train_mse: per(train.train.rec, train.train.rows, pixels),
            test_mse,
            test_mse_norm: test_mse / self.variance,
            data_variance: self.variance,
            test_vq: per(ev.kl, ev.rows, elems),
            levels,
        };
        Ok(Some((rec, usages)))
    }

    /// (loss, rec, kl) per image of a slot: the VAE's (rec + β·KL, rec, KL); an autoencoder's
    /// (rec + penalty, rec, penalty) with rec the summed squared error or BCE; a VQ model's
    /// (mse / var + w·vq, mse, vq) with mse per pixel, vq = mean((z_e − e)²) and w = β (EMA) or 1 + β.
    pub fn losses(&self, m: &SlotMetrics) -> (f64, f64, f64) {
        match &self.model {
            Model::Vae(_) | Model::Ae(_) => (m.mean_loss(), m.mean_rec(), m.mean_kl()),
            Model::Vq(v) => {
                let rows = m.rows.max(1.0);
                let mse = m.rec / rows / v.valid_pixels() as f64;
                let vq = m.kl / rows / (v.vectors_per_row() * v.cfg.dim) as f64;
                let w = v.cfg.beta as f64 + if v.cfg.ema { 0.0 } else { 1.0 };
                (mse / self.variance + w * vq, mse, vq)
            }
        }
    }
}

/// Opens (appending) the metrics file.
fn metrics_file(out: &Path) -> Result<std::fs::File> {
    let path = out.join("metrics.jsonl");
    std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(path, e))
}

/// Drops the lines of metrics.jsonl past epoch `epoch` (written after the checkpoint a run resumes
/// from, by a run killed before its next checkpoint, or by a later history), and a torn last line.
fn truncate_metrics(path: &Path, epoch: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let keep: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
                .is_some_and(|e| e as usize <= epoch)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if keep != text {
        checkpoint::write_atomic(path, keep.as_bytes())?;
    }
    Ok(())
}

pub struct TrainOptions {
    pub progress: bool,
    /// Continue from this checkpoint (weights, Adam moments, state, step, epoch and batch) up to
    /// `cfg.epochs`, appending to metrics.jsonl.
    pub resume: Option<PathBuf>,
    /// Set asynchronously to a signal's number (SIGINT 2, SIGTERM 15): the run stops after the
    /// submission in flight (after the evaluation and checkpoint when that was an epoch's last), writes a
    /// checkpoint and returns [`Error::Interrupted`].
    pub stop: Option<Arc<AtomicUsize>>,
}

/// The non-finite stop's error.
fn nonfinite_error(s: &Session, st: &[u32], last_good: Option<&Path>) -> Error {
    let run = st[W_NONFINITE_RUN] as usize;
    let batch = st[W_TRAIN_BATCH as usize] as usize;
    let spe = s.steps_per_epoch().max(1);
    // The global index (from 1) of the first skipped batch of the streak.
    let first = (s.epoch * spe + batch + 1).saturating_sub(run);
    let (fe, fb) = ((first - 1) / spe + 1, (first - 1) % spe + 1);
    Error::NonFinite(format!(
        "{run} consecutive steps had a non-finite gradient and were skipped (max_nonfinite {}): from epoch {fe} \
         batch {fb} to epoch {} batch {batch}, the optimizer held at step {}; last good checkpoint: {}",
        s.cfg.max_nonfinite,
        s.epoch + 1,
        st[W_STEP as usize],
        last_good.map_or("none (no checkpoint was written before)".into(), |p| p.display().to_string())
    ))
}

/// `vaegpu train`: the whole run. Returns the per-epoch records.
pub fn run(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, opts: &TrainOptions) -> Result<Vec<EpochRecord>> {
    let out: PathBuf = cfg.out.clone();
    // The model is built (and its configuration checked) first: a refused run leaves no folder behind.
    let mut session = Session::new(gpu, cfg, data, true)?;
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mpath = out.join("metrics.jsonl");
    let root = checkpoint::default_dir(&out);
    let mut last_good: Option<PathBuf> = None;
    if let Some(dir) = &opts.resume {
        let from = session.restore(gpu, dir)?;
        tracing::info!(
            "resuming from {} at epoch {}, batch {}, step {}",
            from.display(),
            session.epoch,
            session.batch,
            session.step
        );
        truncate_metrics(&mpath, session.epoch)?;
        last_good = Some(from);
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
        session.core().layout.count(),
        session.steps_per_epoch()
    );
    let stop = opts.stop.as_deref();
    let signalled = || stop.map(|s| s.load(Ordering::SeqCst)).filter(|&s| s != 0).map(|s| s as i32);
    let ctl = Control { max_nonfinite: session.cfg.max_nonfinite, stop };
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
        bar.set_position(session.batch as u64);
        let end = session.train_epoch_with(gpu, &ctl, |done, loss| {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.2}"));
        })?;
        bar.finish_and_clear();
        let (m, secs) = match end {
            EpochEnd::Done(m, secs) => (m, secs),
            EpochEnd::Stopped(signal) => {
                let checkpoint = session.save_checkpoint(gpu, &root)?;
                return Err(Error::Interrupted { signal, checkpoint, root });
            }
            EpochEnd::NonFinite(st) => return Err(nonfinite_error(&session, &st, last_good.as_deref())),
        };
        if m.nonfinite_steps > 0 {
            tracing::warn!("{} steps had a non-finite gradient and were skipped", m.nonfinite_steps);
        }
        let train_words = match &session.model {
            Model::Vq(v) => v.read_vq_metrics(gpu)?.into_iter().flat_map(|(w, _)| w).collect(),
            Model::Vae(_) | Model::Ae(_) => Vec::new(),
        };
        let t1 = Instant::now();
        let (ev, mean_act) = session.evaluate_with_activation(gpu)?;
        let eval_seconds = t1.elapsed().as_secs_f64();
        let vq = session.vq_record(gpu, &m, &train_words, &ev)?;
        if let Some((_, usages)) = &vq {
            for (usage, name) in usages.iter().zip(["usage.png", "usage_top.png"]) {
                crate::viz::save_histogram(&out.join(name), usage, 128).map_err(Error::Output)?;
            }
        }
        let (train_loss, train_rec, train_kl) = session.losses(&m.train);
        let (test_loss, test_rec, test_kl) = session.losses(&ev);
        let gpu_memory = gpu.memory_report();
        let rec = EpochRecord {
            epoch: session.epoch,
            step: session.step,
            train_loss,
            train_rec,
            train_kl,
            test_loss,
            test_rec,
            test_kl,
            grad_norm_mean: m.grad_norm_mean as f64,
            nonfinite_steps: m.nonfinite_steps,
            epoch_seconds: secs,
            eval_seconds,
            host_rss_bytes: host_rss_bytes(),
            gpu_allocated_bytes: gpu_memory.map(|m| m.0),
            gpu_reserved_bytes: gpu_memory.map(|m| m.1),
            vq: vq.map(|(r, _)| r),
            ae: matches!(session.model, Model::Ae(_)).then_some(AeRecord {
                train_penalty: train_kl,
                test_penalty: test_kl,
                test_mean_activation: mean_act,
            }),
        };
        if !rec.train_loss.is_finite() || !rec.test_loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "epoch {} gave train loss {} and test loss {} (step {}, {} steps skipped as non-finite); last good \
                 checkpoint: {}",
                rec.epoch,
                rec.train_loss,
                rec.test_loss,
                rec.step,
                rec.nonfinite_steps,
                last_good.as_deref().map_or("none".into(), |p| p.display().to_string())
            )));
        }
        let line = serde_json::to_string(&rec).map_err(|e| Error::Output(e.to_string()))?;
        writeln!(file, "{line}")
            .and_then(|_| file.flush())
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(&mpath, e))?;
        match &rec.vq {
            None if rec.ae.is_some() => println!(
                "epoch {:>3}  train {:.4}  test {:.4} (rec {:.4}, penalty {:.4}{})  {:.1}s",
                rec.epoch,
                rec.train_loss,
                rec.test_loss,
                rec.test_rec,
                rec.test_kl,
                mean_act.map_or(String::new(), |a| format!(", mean |a| {a:.4}")),
                rec.epoch_seconds
            ),
            None => println!(
                "epoch {:>3}  train {:.3}  test {:.3} (rec {:.3}, kl {:.3})  {:.1}s",
                rec.epoch, rec.train_loss, rec.test_loss, rec.test_rec, rec.test_kl, rec.epoch_seconds
            ),
            Some(v) => {
                let levels: Vec<String> = v
                    .levels
                    .iter()
                    .map(|l| format!("perplexity {:.1}, used {}/{}", l.test_perplexity, l.test_used, l.codes))
                    .collect();
                println!(
                    "epoch {:>3}  train {:.4}  test mse {:.5} (/var {:.4}), vq {:.4}; {}  {:.1}s",
                    rec.epoch,
                    rec.train_loss,
                    v.test_mse,
                    v.test_mse_norm,
                    v.test_vq,
                    levels.join("; "),
                    rec.epoch_seconds
                );
            }
        }
        // The metrics line first: a run killed before the checkpoint is complete resumes from the one
        // before, and drops this line then (truncate_metrics).
        let saved = session.save_checkpoint(gpu, &root)?;
        last_good = Some(saved.clone());
        records.push(rec);
        if let Some(signal) = signalled() {
            return Err(Error::Interrupted { signal, checkpoint: saved, root });
        }
    }
    session.write_pictures(gpu, &out)?;
    if let Some(signal) = signalled() {
        let checkpoint = match last_good {
            Some(p) => p,
            None => session.save_checkpoint(gpu, &root)?,
        };
        return Err(Error::Interrupted { signal, checkpoint, root });
    }
    Ok(records)
}
