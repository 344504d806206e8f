//! The MLP VAE: encoder MLP → (μ, logσ²) → z = μ + σ·ε (M samples) → decoder MLP → fused ELBO.
//!
//! Built once into fixed programs over fixed buffers:
//!   train: gather → encoder → sample → decoder → elbo → decoder backward → sample backward →
//!          encoder backward → gradient norm → Adam → metrics+advance (one launch)
//!   eval:  gather → encoder → sample → decoder → elbo → metrics+advance_eval
//! A learned Gaussian decoder variance (`variance = "global" | "pixel"`) is the last parameter block,
//! `dec.logvar`: the loss kernels read it, and the backward starts with its gradient (elbo.wgsl's
//! logvar_grad, weighted like the loss's rows).
//! Every gradient buffer holds the gradient with respect to the PRE-activation of its layer's output:
//! the dX launch of layer i multiplies by act'(X_i) in its epilogue (DACT), so no elementwise pass is
//! needed.

use serde::{Deserialize, Serialize};

use super::core::Core;
pub use super::core::{Metrics, SlotMetrics};
use super::latent_prior::{LatentPrior, LatentPriorConfig, LatentPriorNets, PriorKind};
use crate::gpu::{Gpu, GpuError, Launch, Program, Result, View};
use crate::kernels::data::{self as kdata, Gather, W_EVAL_BATCH, W_TRAIN_BATCH};
pub use crate::kernels::elbo::DecoderVariance;
use crate::kernels::elbo::{Elbo, LearnedVar, Likelihood, DEC_LOGVAR_MAX};
use crate::kernels::iwae::Weighted;
use crate::kernels::optim::Adam;
use crate::kernels::reduce::{self, MetricsAt, SLOT_EVAL, SLOT_TRAIN};
use crate::kernels::sample::{Sample, STREAM_EVAL, STREAM_TRAIN};
use crate::kernels::Act;
use crate::nn::gpu::GpuNet;
use crate::nn::{Linear, Net, NetBuilder, Op, ParamLayout, Shape};
use crate::reference::conv::ConvGeom;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VaeConfig {
    /// Values per example (set from the data: height · width · channels).
    pub input_dim: usize,
    /// Image shape [height, width, channels] (set from the data); the conv VAE needs it, the MLP VAE
    /// only uses it to draw pictures.
    pub image: [usize; 3],
    /// Encoder hidden widths of the MLP VAE; the decoder mirrors them.
    pub hidden: Vec<usize>,
    pub latent: usize,
    pub act: Act,
    pub likelihood: Likelihood,
    /// Weight of the KL term (β-VAE); 1 is the ELBO.
    pub beta: f32,
    /// σ of the Gaussian likelihood (with a learned variance: its initial value).
    pub sigma: f32,
    /// The Gaussian likelihood's variance: `fixed` (σ above), or learned (block `dec.logvar` holding
    /// s = log σ², initialised to ln σ²): one value (`global`) or one per pixel (`pixel`).
    pub variance: DecoderVariance,
    /// Floor of a learned σ: s is used clamped to [2·ln sigma_min, 20] (zero gradient outside).
    pub sigma_min: f32,
    /// Monte-Carlo samples M per input (k for IWAE).
    pub samples: usize,
    /// The training objective: the ELBO, or the importance-weighted bound L_k with k = `samples`.
    pub objective: Objective,
    /// The encoder's gradient estimator: pathwise (reparameterization) or score function.
    pub gradient: Gradient,
    /// The prior p(z): N(0, I), or learned jointly (a RealNVP flow or a Gaussian mixture); a learned
    /// prior makes the KL term a Monte-Carlo estimate E_q[log q(z|x) − log p_λ(z)].
    pub prior: LatentPriorConfig,
    /// Convolutional encoder and decoder (the conv VAE); none = the MLP VAE.
    pub conv: Option<ConvArch>,
}

/// What a VAE maximises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The ELBO: M-sample reconstruction term plus the closed-form KL (times β).
    #[default]
    Elbo,
    /// The importance-weighted bound L_k = E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)], k = `samples`.
    Iwae,
}

/// How the encoder's gradient is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Gradient {
    /// Through z = μ + σ·ε (reparameterization).
    #[default]
    Pathwise,
    /// The likelihood-ratio estimator E_q[log p(x|z) ∇ log q(z|x)] for the reconstruction term (the KL
    /// stays closed-form), with a leave-one-out baseline when M > 1.
    Score,
}

/// The conv VAE's encoder; the decoder mirrors it with transposed convs.
///
/// Encoder: per stage i, a conv (kernel strides\[i\] + 2, padding 1: the size is divided by the stride)
/// to channels\[i\], then `blocks` residual blocks; the features are flattened (NHWC) into the dense
/// layers `fc` and the head (μ | logσ²). Decoder: dense layers back to the last stage's feature map,
/// then per stage in reverse `blocks` residual blocks and a transposed conv (the size is multiplied by
/// the stride), the last one to the image's channels (logits or means, no activation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConvArch {
    pub channels: Vec<usize>,
    pub strides: Vec<usize>,
    /// Residual blocks per stage.
    pub blocks: usize,
    /// Hidden channels of a residual block (0 = half the stage's channels, at least 1).
    pub res_hidden: usize,
    /// Dense hidden widths between the flattened features and the head.
    pub fc: Vec<usize>,
}

impl Default for ConvArch {
    fn default() -> Self {
        ConvArch { channels: vec![32, 64], strides: vec![2, 2], blocks: 0, res_hidden: 0, fc: vec![] }
    }
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            input_dim: 784,
            image: [28, 28, 1],
            hidden: vec![400],
            latent: 20,
            act: Act::Relu,
            likelihood: Likelihood::Bernoulli,
            beta: 1.0,
            sigma: 1.0,
            variance: DecoderVariance::Fixed,
            sigma_min: 1e-3,
            samples: 1,
            objective: Objective::Elbo,
            gradient: Gradient::Pathwise,
            prior: LatentPriorConfig::default(),
            conv: None,
        }
    }
}

/// A model's parameter layout and its two networks.
pub struct VaeNets {
    pub layout: ParamLayout,
    pub encoder: Net,
    pub decoder: Net,
    /// A learned prior's networks (their blocks come after the decoder's in the layout).
    pub prior: Option<LatentPriorNets>,
    /// The block `dec.logvar` of a learned decoder variance (\[1\] or \[D\] values; the last block).
    pub logvar: Option<usize>,
}

impl VaeConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.input_dim == 0 {
            return Err("input_dim must be > 0".into());
        }
        if self.latent == 0 {
            return Err("latent must be > 0".into());
        }
        if self.hidden.contains(&0) {
            return Err("hidden widths must be > 0".into());
        }
        if self.samples == 0 || self.samples > 4096 {
            return Err(format!("samples must be in 1..=4096, got {}", self.samples));
        }
        if self.gradient == Gradient::Score && (self.objective != Objective::Elbo || self.learned_prior()) {
            return Err("the score-function gradient is implemented for the ELBO with the N(0, I) prior only".into());
        }
        self.prior.validate()?;
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(format!("beta must be a finite number >= 0, got {}", self.beta));
        }
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(format!("sigma must be a finite number > 0, got {}", self.sigma));
        }
        if !(self.sigma_min > 0.0 && self.sigma_min.is_finite()) {
            return Err(format!("sigma_min must be a finite number > 0, got {}", self.sigma_min));
        }
        if self.variance != DecoderVariance::Fixed {
            let name = format!("{:?}", self.variance).to_lowercase();
            if self.likelihood != Likelihood::Gaussian {
                return Err(format!(
                    "variance = \"{name}\" (a learned decoder variance) needs likelihood = \"gaussian\""
                ));
            }
            if self.dec_lv_min() >= DEC_LOGVAR_MAX {
                return Err(format!("sigma_min must be < e^10 (log σ² is clamped to 20), got {}", self.sigma_min));
            }
            if self.sigma < self.sigma_min || self.dec_lv_init() > DEC_LOGVAR_MAX {
                return Err(format!(
                    "a learned variance starts at sigma = {}, which must lie in [sigma_min = {}, e^10]",
                    self.sigma, self.sigma_min
                ));
            }
        }
        if let Some(c) = &self.conv {
            let [h, w, ch] = self.image;
            if h * w * ch != self.input_dim {
                return Err(format!("image {h}x{w}x{ch} does not hold input_dim {} values", self.input_dim));
            }
            if c.channels.is_empty() || c.channels.len() != c.strides.len() {
                return Err(format!(
                    "conv: need one stride per stage: {} channel counts, {} strides",
                    c.channels.len(),
                    c.strides.len()
                ));
            }
            if c.channels.contains(&0) || c.strides.contains(&0) || c.fc.contains(&0) {
                return Err("conv: channels, strides and fc widths must be > 0".into());
            }
            if c.strides.iter().any(|&s| s > 8) || c.blocks > 64 {
                return Err("conv: strides must be at most 8 and blocks at most 64".into());
            }
        }
        self.nets().map(|_| ())
    }

    /// Whether p(z) has parameters (a flow or a mixture).
    pub fn learned_prior(&self) -> bool {
        self.prior.kind != PriorKind::Standard
    }

    /// The encoder and decoder networks, with their parameter blocks placed in one layout:
    /// MLP: enc.fc1.. (act), enc.head (2Z outputs: μ | logσ²), dec.fc1.. (act), dec.out.
    /// Conv: see [`ConvArch`]. A learned prior's blocks (`prior.*`) follow.
    pub fn nets(&self) -> std::result::Result<VaeNets, String> {
        let mut nets = self.body_nets()?;
        if self.learned_prior() {
            nets.prior = Some(LatentPrior::build(&self.prior, &mut nets.layout, self.latent)?);
        }
        let n = self.variance.len(self.input_dim);
        if n > 0 {
            // A [(0 + 1), n] block: n values (fan-in 1 keeps layout.init finite; init_params sets it).
            nets.logvar = Some(nets.layout.push_with_fan_in("dec.logvar", 0, n, Act::Identity, 1));
        }
        Ok(nets)
    }

    /// Initial parameters: the layout's initialisation, then the learned prior's (see
    /// [`LatentPriorNets::init`]) and a learned decoder variance's s = ln σ².
    pub fn init_params(&self, seed: u64) -> std::result::Result<Vec<f32>, String> {
        let nets = self.nets()?;
        let mut p = nets.layout.init(seed);
        if let Some(pr) = &nets.prior {
            pr.init(&nets.layout, &mut p, seed);
        }
        if let Some(b) = nets.logvar {
            let l = &nets.layout.layers[b];
            p[l.offset..l.offset + l.len()].fill(self.dec_lv_init());
        }
        Ok(p)
    }

    /// The lower clamp 2·ln σ_min of a learned decoder log-variance.
    pub fn dec_lv_min(&self) -> f32 {
        (2.0 * (self.sigma_min as f64).ln()) as f32
    }

    /// The initial learned decoder log-variance ln σ².
    pub fn dec_lv_init(&self) -> f32 {
        (2.0 * (self.sigma as f64).ln()) as f32
    }

    fn body_nets(&self) -> std::result::Result<VaeNets, String> {
        let mut layout = ParamLayout::default();
        let act = self.act;
        let Some(c) = &self.conv else {
            let mut e = NetBuilder::new(&mut layout, "enc", Shape::flat(self.input_dim));
            for (i, &h) in self.hidden.iter().enumerate() {
                e = e.linear(&format!("fc{}", i + 1), h, act)?;
            }
            let encoder = e.linear("head", 2 * self.latent, Act::Identity)?.finish();
            let mut d = NetBuilder::new(&mut layout, "dec", Shape::flat(self.latent));
            for (i, &h) in self.hidden.iter().rev().enumerate() {
                d = d.linear(&format!("fc{}", i + 1), h, act)?;
            }
            let decoder = d.linear("out", self.input_dim, Act::Identity)?.finish();
            return Ok(VaeNets { layout, encoder, decoder, prior: None, logvar: None });
        };
        let [h, w, ch] = self.image;
        let image = Shape::new(h, w, ch);
        let stage_act = |blocks: usize| if blocks > 0 { Act::Identity } else { act };
        let res_hidden = |c_stage: usize| if c.res_hidden > 0 { c.res_hidden } else { (c_stage / 2).max(1) };
        let mut e = NetBuilder::new(&mut layout, "enc", image);
        for (i, (&cs, &s)) in c.channels.iter().zip(&c.strides).enumerate() {
            e = e.conv(&format!("conv{}", i + 1), cs, s + 2, s, 1, false, stage_act(c.blocks))?;
            for j in 0..c.blocks {
                let a = if j + 1 == c.blocks { act } else { Act::Identity };
                e = e.res(&format!("res{}_{}", i + 1, j + 1), res_hidden(cs), a)?;
            }
        }
        let features = e.shape();
        for (i, &f) in c.fc.iter().enumerate() {
            e = e.linear(&format!("fc{}", i + 1), f, act)?;
        }
        let encoder = e.linear("head", 2 * self.latent, Act::Identity)?.finish();
        let mut d = NetBuilder::new(&mut layout, "dec", Shape::flat(self.latent));
        for (i, &f) in c.fc.iter().rev().enumerate() {
            d = d.linear(&format!("fc{}", i + 1), f, act)?;
        }
        d = d.linear("proj", features.len(), stage_act(c.blocks))?.reshape(features)?;
        let stages = c.channels.len();
        for i in (0..stages).rev() {
            for j in 0..c.blocks {
                let a = if j + 1 == c.blocks { act } else { Act::Identity };
                d = d.res(&format!("res{}_{}", i + 1, j + 1), res_hidden(c.channels[i]), a)?;
            }
            let (cout, a) = if i == 0 { (ch, Act::Identity) } else { (c.channels[i - 1], stage_act(c.blocks)) };
            let s = c.strides[i];
            d = d.conv(&format!("deconv{}", i + 1), cout, s + 2, s, 1, true, a)?;
        }
        let decoder = d.finish();
        if decoder.output() != image {
            return Err(format!("the decoder gives {} images, the data has {image}", decoder.output()));
        }
        Ok(VaeNets { layout, encoder, decoder, prior: None, logvar: None })
    }

    /// The flat parameter layout (see [`VaeConfig::nets`]); panics on a config `validate` refuses.
    pub fn layout(&self) -> ParamLayout {
        self.nets().unwrap_or_else(|e| panic!("invalid model config: {e}")).layout
    }

    /// (encoder blocks, the rest: decoder blocks, then a learned prior's and `dec.logvar`) of a layout
    /// made by `layout`.
    pub fn split<'a>(&self, layout: &'a ParamLayout) -> (&'a [Linear], &'a [Linear]) {
        let n = layout.layers.iter().take_while(|l| l.name.starts_with("enc.")).count();
        layout.layers.split_at(n)
    }

    /// FLOPs of one training step (forward and backward of both networks) at batch `b`.
    pub fn step_flops(&self, b: usize) -> f64 {
        self.nets().map_or(0.0, |n| n.encoder.flops_step(b) + n.decoder.flops_step(b * self.samples))
    }
}

/// A dataset resident on the GPU: u8 pixels packed into u32 words ([`GpuDataset::upload`]) or u32 words
/// ([`GpuDataset::upload_words`], `dim` words per item), and an order (permutation).
pub struct GpuDataset {
    pub data: wgpu::Buffer,
    pub perm: wgpu::Buffer,
    pub n: usize,
    pub dim: usize,
}

impl GpuDataset {
    pub fn upload(gpu: &Gpu, label: &str, pixels: &[u8], n: usize, dim: usize) -> Result<GpuDataset> {
        if n == 0 || pixels.len() != n * dim {
            return Err(GpuError::Shape {
                op: "dataset",
                message: format!("{} bytes for {n} items of {dim}", pixels.len()),
            });
        }
        gpu.check_buffers([pixels.len() as u64])?;
        let mut packed = pixels.to_vec();
        packed.resize(pixels.len().next_multiple_of(4), 0);
        let data = gpu.upload::<u8>(&format!("{label}.pixels[{n}x{dim}]"), &packed);
        let ident: Vec<u32> = (0..n as u32).collect();
        let perm = gpu.upload(&format!("{label}.perm[{n}]"), &ident);
        gpu.check()?;
        Ok(GpuDataset { data, perm, n, dim })
    }

    /// A dataset of `n` items of `dim` u32 words each (code maps, read by
    /// [`GatherWords`](crate::kernels::data::GatherWords)), item-major, in the identity order.
    pub fn upload_words(gpu: &Gpu, label: &str, words: &[u32], n: usize, dim: usize) -> Result<GpuDataset> {
        if n == 0 || words.len() != n * dim {
            return Err(GpuError::Shape {
                op: "dataset",
                message: format!("{} words for {n} items of {dim}", words.len()),
            });
        }
        let bytes = 4 * words.len() as u64;
        gpu.check_buffers([bytes])?;
        let data = gpu.upload(&format!("{label}.words[{n}x{dim}]"), words);
        let ident: Vec<u32> = (0..n as u32).collect();
        let perm = gpu.upload(&format!("{label}.perm[{n}]"), &ident);
        gpu.check()?;
        Ok(GpuDataset { data, perm, n, dim })
    }

    pub fn set_order(&self, gpu: &Gpu, order: &[u32]) {
        gpu.write(&self.perm, 0, order);
    }
}

/// The model's buffers on the GPU.
pub struct Vae {
    pub cfg: VaeConfig,
    pub batch: usize,
    /// Parameters, gradients, Adam moments, state and metrics.
    pub core: Core,
    /// Input batch [B, D].
    pub x: wgpu::Buffer,
    /// Encoder on B rows; its output is the head [B, 2Z] (μ | logσ²).
    pub enc: GpuNet,
    pub eps: wgpu::Buffer,
    pub z: wgpu::Buffer,
    /// Decoder on M·B rows; its output is the likelihood parameters [M·B, D].
    pub dec: GpuNet,
    /// Per-example loss rows: [B, 2] = (rec, kl) from the ELBO kernel, or [B, 3] = (rec, kl, loss) from
    /// the weighted objectives.
    pub rows: wgpu::Buffer,
    pub dz: wgpu::Buffer,
    /// Per sample row: (log p(x|z), log p(z) − log q(z|x)) [M·B, 2], and the gradient weights wt, β·wt.
    pub terms: wgpu::Buffer,
    pub wt: wgpu::Buffer,
    pub wtp: wgpu::Buffer,
    /// A learned prior over the M·B sample rows.
    pub prior: Option<LatentPrior>,
}

impl Vae {
    pub fn new(gpu: &Gpu, cfg: &VaeConfig, batch: usize) -> Result<Vae> {
        cfg.validate().map_err(|m| GpuError::Shape { op: "vae", message: m })?;
        if batch == 0 {
            return Err(GpuError::Shape { op: "vae", message: "batch must be > 0".into() });
        }
        let VaeNets { layout, encoder, decoder, prior, .. } =
            cfg.nets().map_err(|m| GpuError::Shape { op: "vae", message: m })?;
        let mb = batch * cfg.samples;
        gpu.check_buffers([
            (layout.total * 4) as u64,
            (mb * cfg.input_dim * 4) as u64,
            GpuNet::largest_buffer(&encoder, batch),
            GpuNet::largest_buffer(&decoder, mb),
            prior.as_ref().map_or(0, |p| LatentPrior::largest_buffer(p, mb)),
        ])?;
        let init = cfg.init_params(0).map_err(|m| GpuError::Shape { op: "vae", message: m })?;

        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let vae = Vae {
            core: Core::new(gpu, layout.clone(), &init),
            x: f(format!("x[{batch}x{}]", cfg.input_dim), batch * cfg.input_dim),
            enc: GpuNet::new(gpu, &encoder, batch)?,
            eps: f(format!("eps[{mb}x{}]", cfg.latent), mb * cfg.latent),
            z: f(format!("z[{mb}x{}]", cfg.latent), mb * cfg.latent),
            dec: GpuNet::new(gpu, &decoder, mb)?,
            rows: f(format!("rows[{batch}x3]"), batch * 3),
            dz: f(format!("dz[{mb}x{}]", cfg.latent), mb * cfg.latent),
            terms: f(format!("terms[{mb}x2]"), mb * 2),
            wt: f(format!("wt[{mb}]"), mb),
            wtp: f(format!("wtp[{mb}]"), mb),
            prior: prior.as_ref().map(|p| LatentPrior::new(gpu, p, mb)).transpose()?,
            cfg: cfg.clone(),
            batch,
        };
        gpu.check()?;
        Ok(vae)
    }

    /// The encoder output [B, 2Z]: μ | logσ² per row.
    pub fn head(&self) -> &wgpu::Buffer {
        self.enc.output()
    }

    /// The decoder output [M·B, D]: logits (Bernoulli) or means (Gaussian).
    pub fn decoded(&self) -> &wgpu::Buffer {
        self.dec.output()
    }

    fn sampler(&self, counter_word: u32, stream: u32, given_eps: bool) -> Sample {
        Sample {
            batch: self.batch,
            latent: self.cfg.latent,
            samples: self.cfg.samples,
            counter_word,
            stream,
            given_eps,
        }
    }

    fn elbo_kernel(&self) -> Elbo {
        Elbo {
            batch: self.batch,
            dim: self.cfg.input_dim,
            latent: self.cfg.latent,
            samples: self.cfg.samples,
            likelihood: self.cfg.likelihood,
            beta: self.cfg.beta,
            sigma: self.cfg.sigma,
        }
    }

    /// The sample-weighted objective's kernels (IWAE, or the Monte-Carlo ELBO).
    pub fn weighted(&self) -> Weighted {
        Weighted {
            batch: self.batch,
            dim: self.cfg.input_dim,
            latent: self.cfg.latent,
            samples: self.cfg.samples,
            likelihood: self.cfg.likelihood,
            sigma: self.cfg.sigma,
            beta: self.cfg.beta,
            iwae: self.cfg.objective == Objective::Iwae,
            ext_prior: self.prior.is_some(),
        }
    }

    /// The block `dec.logvar` of `buf` (params or grads) as the kernels read a learned decoder variance;
    /// None when the variance is fixed.
    pub fn learned_var<'a>(&self, buf: &'a wgpu::Buffer) -> Option<LearnedVar<'a>> {
        if self.cfg.variance == DecoderVariance::Fixed {
            return None;
        }
        let l = self.core.layout.layer("dec.logvar")?;
        Some(LearnedVar { logvar: View::new(buf, (l.offset * 4) as u64, l.len()), lv_min: self.cfg.dec_lv_min() })
    }

    /// Whether the loss goes through the per-sample weights (iwae.wgsl) rather than elbo.wgsl: IWAE,
    /// or a learned prior (whose KL has no closed form).
    pub fn is_weighted(&self) -> bool {
        self.cfg.objective == Objective::Iwae || self.prior.is_some()
    }

    /// log p(z) of a learned prior for the rows in `z` (nothing for N(0, I)).
    fn prior_forward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        match &self.prior {
            Some(p) => p.forward(gpu, &self.core.layout, &self.core.params, &self.z),
            None => Ok(Vec::new()),
        }
    }

    /// The buffer logw_rows reads log p(z) from (z itself, unread, for N(0, I)).
    fn logpz(&self) -> &wgpu::Buffer {
        self.prior.as_ref().map_or(&self.z, |p| p.logp())
    }

    /// Columns of `rows`: 3 for the weighted objectives, 2 for the ELBO kernel.
    /// The batch's metrics into `slot`, then its cursor (`word`) advances.
    fn metrics(&self, gpu: &Gpu, label: &str, n_items: usize, (word, slot): (u32, u32)) -> Result<Launch> {
        let (state, rows, metrics) = ((&self.core.state).into(), (&self.rows).into(), (&self.core.metrics).into());
        let at = MetricsAt { batch: self.batch, n_items, batch_word: word, slot, advance: true };
        if self.is_weighted() {
            reduce::metrics_accumulate3(gpu, label, at, state, rows, metrics)
        } else {
            reduce::metrics_accumulate(gpu, label, at, self.cfg.beta, state, rows, metrics)
        }
    }

    /// Encoder → sample → decoder → loss (and the output gradient when `grads`), from the batch in `x`.
    pub fn forward(&self, gpu: &Gpu, sample: Sample, grads: bool) -> Result<Vec<Launch>> {
        let mut out = self.enc.forward(gpu, &self.core.layout, &self.core.params, &self.x)?;
        let head = self.head();
        out.push(sample.forward(
            gpu,
            "z",
            (&self.core.state).into(),
            head.into(),
            (&self.eps).into(),
            (&self.z).into(),
        )?);
        out.extend(self.decode(gpu)?);
        out.extend(self.prior_forward(gpu)?);
        let w = self.weighted();
        let var = self.learned_var(&self.core.params);
        let rows_launch = |gpu: &Gpu| {
            let (z, lp) = ((&self.z).into(), self.logpz().into());
            let inputs = (self.decoded().into(), (&self.x).into(), head.into(), (&self.eps).into(), z, lp);
            w.rows_launch_var(gpu, "loss", inputs, var, (&self.terms).into(), 0, self.cfg.samples)
        };
        if self.is_weighted() {
            out.push(rows_launch(gpu)?);
            let weights = ((&self.wt).into(), (&self.wtp).into());
            out.push(w.combine(gpu, "loss", (&self.terms).into(), (&self.rows).into(), weights, grads)?);
            if grads {
                let (dout, wt) = (self.dec.d_output().into(), (&self.wt).into());
                out.push(w.grad_out_var(gpu, "loss", (self.decoded().into(), (&self.x).into(), wt), var, dout)?);
            }
            return Ok(out);
        }
        out.push(self.elbo_kernel().launch_var(
            gpu,
            "loss",
            (self.decoded().into(), (&self.x).into(), head.into()),
            var,
            self.dec.d_output().into(),
            self.enc.d_output().into(),
            (&self.rows).into(),
        )?);
        if grads && self.cfg.gradient == Gradient::Score {
            out.push(rows_launch(gpu)?);
        }
        Ok(out)
    }

    /// z ~ p(z) from the standard normals in `eps` into `z` (a learned prior's sampler; a copy for
    /// N(0, I)); `counter_word` seeds a mixture's component draws.
    pub fn sample_prior(&self, gpu: &Gpu, counter_word: u32) -> Result<Vec<Launch>> {
        let Some(p) = &self.prior else {
            let (n, z) = (self.batch * self.cfg.samples, self.cfg.latent);
            return Ok(vec![crate::kernels::latent_prior::copy(
                gpu,
                "prior",
                n,
                z,
                (&self.eps).into(),
                (&self.z).into(),
            )?]);
        };
        p.sample(gpu, &self.core.layout, &self.core.params, &self.core.state, counter_word, &self.eps, &self.z)
    }

    /// The decoder alone: z → likelihood parameters (prior samples, manifolds, interpolations).
    pub fn decode(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        self.dec.forward(gpu, &self.core.layout, &self.core.params, &self.z)
    }

    /// Backward through decoder, sampling and encoder into `grads` (and a learned decoder variance's
    /// gradient into its block, weighted like the loss's rows: wt, or 1/(B·M) for the ELBO kernel).
    pub fn backward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let mut out = Vec::new();
        if let (Some(var), Some(dvar)) = (self.learned_var(&self.core.params), self.learned_var(&self.core.grads)) {
            let wt = self.is_weighted().then(|| (&self.wt).into());
            let (o, x) = (self.decoded().into(), (&self.x).into());
            out.push(self.elbo_kernel().logvar_grad(gpu, "dec.logvar", o, x, var, wt, dvar.logvar)?);
        }
        out.extend(self.dec.backward(
            gpu,
            &self.core.layout,
            &self.core.params,
            &self.core.grads,
            &self.z,
            Some((&self.dz, Act::Identity)),
        )?);
        let (head, eps, dhead) = (self.head().into(), (&self.eps).into(), self.enc.d_output().into());
        let w = self.weighted();
        if self.is_weighted() {
            let (z, wt, dz) = ((&self.z).into(), (&self.wt).into(), (&self.dz).into());
            let dzp = match &self.prior {
                Some(p) => {
                    let (layout, params, grads) = (&self.core.layout, &self.core.params, &self.core.grads);
                    out.extend(p.backward(gpu, layout, params, grads, &self.z, &self.wtp)?);
                    p.dz().into()
                }
                None => dz,
            };
            out.push(w.latent_backward(gpu, "z", (head, eps, z, wt), dz, dzp, dhead)?);
        } else if self.cfg.gradient == Gradient::Score {
            out.push(w.score_backward(gpu, "z", head, eps, (&self.terms).into(), dhead)?);
        } else {
            out.push(self.sampler(0, 0, false).backward(gpu, "z", head, eps, (&self.dz).into(), dhead)?);
        }
        out.extend(self.enc.backward(gpu, &self.core.layout, &self.core.params, &self.core.grads, &self.x, None)?);
        Ok(out)
    }

    /// Gradient norm (and clip scale, finite flag), then Adam.
    pub fn update(&self, gpu: &Gpu, adam: &Adam, max_norm: f32) -> Result<Vec<Launch>> {
        self.core.update(gpu, adam, max_norm, self.core.layout.total)
    }

    /// One whole training step over the dataset's next batch.
    pub fn train_program(
        &self,
        gpu: &Gpu,
        data: &GpuDataset,
        adam: &Adam,
        max_norm: f32,
        binarize: bool,
    ) -> Result<Program> {
        self.check_data(data)?;
        let mut p = Program::new("train_step");
        let g = Gather { batch: self.batch, dim: data.dim, n_items: data.n, batch_word: W_TRAIN_BATCH, binarize };
        p.push(g.launch(
            gpu,
            "train",
            (&self.core.state).into(),
            (&data.data).into(),
            (&data.perm).into(),
            (&self.x).into(),
        )?);
        p.extend(self.forward(gpu, self.sampler(kdata::W_STEP, STREAM_TRAIN, false), true)?);
        p.extend(self.backward(gpu)?);
        p.extend(self.update(gpu, adam, max_norm)?);
        p.push(self.metrics(gpu, "train", data.n, (W_TRAIN_BATCH, SLOT_TRAIN))?);
        Ok(p)
    }

    /// One evaluation batch (forward and loss only) over the dataset in its stored order.
    pub fn eval_program(&self, gpu: &Gpu, data: &GpuDataset, binarize: bool) -> Result<Program> {
        self.check_data(data)?;
        let mut p = Program::new("eval_batch");
        let g = Gather { batch: self.batch, dim: data.dim, n_items: data.n, batch_word: W_EVAL_BATCH, binarize };
        p.push(g.launch(
            gpu,
            "eval",
            (&self.core.state).into(),
            (&data.data).into(),
            (&data.perm).into(),
            (&self.x).into(),
        )?);
        p.extend(self.forward(gpu, self.sampler(W_EVAL_BATCH, STREAM_EVAL, false), false)?);
        p.push(self.metrics(gpu, "eval", data.n, (W_EVAL_BATCH, SLOT_EVAL))?);
        Ok(p)
    }

    /// Forward and backward (no update) on the batch already in `x`, ε drawn from the step word: the
    /// gradient of one step into `core.grads` (gradient-variance reports).
    pub fn grad_program(&self, gpu: &Gpu) -> Result<Program> {
        let mut p = Program::new("grad_only");
        p.extend(self.forward(gpu, self.sampler(kdata::W_STEP, STREAM_TRAIN, false), true)?);
        p.extend(self.backward(gpu)?);
        Ok(p)
    }

    /// Gather and encoder only, over the dataset in its stored order (then the eval cursor advances):
    /// the encoder output of each batch stays in `head()`.
    pub fn encode_program(&self, gpu: &Gpu, data: &GpuDataset) -> Result<Program> {
        self.check_data(data)?;
        let mut p = Program::new("encode_batch");
        let g = Gather { batch: self.batch, dim: data.dim, n_items: data.n, batch_word: W_EVAL_BATCH, binarize: false };
        let state = (&self.core.state).into();
        p.push(g.launch(gpu, "encode", state, (&data.data).into(), (&data.perm).into(), (&self.x).into())?);
        p.extend(self.enc.forward(gpu, &self.core.layout, &self.core.params, &self.x)?);
        p.push(kdata::advance_eval(gpu, state)?);
        Ok(p)
    }

    /// A step on the batch the host wrote into `x` with the ε it wrote into `eps` (fixture tests).
    pub fn step_program_given(&self, gpu: &Gpu, adam: &Adam, max_norm: f32) -> Result<Program> {
        let mut p = Program::new("given_step");
        p.extend(self.forward(gpu, self.sampler(kdata::W_STEP, STREAM_TRAIN, true), true)?);
        p.extend(self.backward(gpu)?);
        p.extend(self.update(gpu, adam, max_norm)?);
        Ok(p)
    }

    fn check_data(&self, data: &GpuDataset) -> Result<()> {
        if data.dim != self.cfg.input_dim {
            return Err(GpuError::Shape {
                op: "vae",
                message: format!("data has {} pixels per item, the model expects {}", data.dim, self.cfg.input_dim),
            });
        }
        Ok(())
    }
}

/// A parameter tensor as a PyTorch user names and shapes it ([out, in] weights), with the place of each
/// of its elements (row-major in `shape`) in the flat buffer.
#[derive(Clone, Debug)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub index: Vec<usize>,
}

fn linear_tensors(l: &Linear, name: &str, cols: std::ops::Range<usize>) -> [NamedTensor; 2] {
    let w = NamedTensor {
        name: format!("{name}.weight"),
        shape: vec![cols.len(), l.din],
        index: cols.clone().flat_map(|o| (0..l.din).map(move |i| l.offset + i * l.dout + o)).collect(),
    };
    let b = NamedTensor {
        name: format!("{name}.bias"),
        shape: vec![cols.len()],
        index: cols.map(|o| l.bias_offset() + o).collect(),
    };
    [w, b]
}

fn conv_tensors(l: &Linear, g: &ConvGeom) -> [NamedTensor; 2] {
    let (k, ci, co) = (g.k, g.cin, g.cout);
    let at = move |i: usize, o: usize, t: usize| l.offset + (t * ci + i) * co + o;
    let index: Vec<usize> = if g.transposed {
        (0..ci).flat_map(|i| (0..co).flat_map(move |o| (0..k * k).map(move |t| at(i, o, t)))).collect()
    } else {
        (0..co).flat_map(|o| (0..ci).flat_map(move |i| (0..k * k).map(move |t| at(i, o, t)))).collect()
    };
    let shape = if g.transposed { vec![ci, co, k, k] } else { vec![co, ci, k, k] };
    let w = NamedTensor { name: format!("{}.weight", l.name), shape, index };
    let b = NamedTensor {
        name: format!("{}.bias", l.name),
        shape: vec![co],
        index: (0..co).map(|o| l.bias_offset() + o).collect(),
    };
    [w, b]
}

/// The PyTorch-named tensors of the conv and dense blocks of `nets`, in layout order: conv blocks as
/// `<name>.weight` [out, in, k, k] (a transposed conv's [in, out, k, k], as PyTorch stores them) and
/// `<name>.bias`; dense blocks `<name>.weight` [out, in] and `<name>.bias`. With `split_head = Some(Z)`
/// the block `enc.head` becomes `enc.mu` and `enc.logvar` (its two halves of Z outputs).
pub fn net_tensors(layout: &ParamLayout, nets: &[&Net], split_head: Option<usize>) -> Vec<NamedTensor> {
    let mut convs = std::collections::HashMap::new();
    let mut dense = std::collections::HashSet::new();
    for l in nets.iter().flat_map(|n| n.layers.iter()) {
        match &l.op {
            Op::Conv { block, geom } => {
                convs.insert(*block, *geom);
            }
            Op::Res { conv3, conv1, hidden } => {
                let (g3, g1) = crate::nn::Layer::res_geoms(l.input.c, *hidden);
                convs.insert(*conv3, g3);
                convs.insert(*conv1, g1);
            }
            Op::Linear { block } => {
                dense.insert(*block);
            }
        }
    }
    let mut out = Vec::new();
    for (bi, l) in layout.layers.iter().enumerate() {
        if let Some(g) = convs.get(&bi) {
            out.extend(conv_tensors(l, g));
        } else if !dense.contains(&bi) {
            continue;
        } else if let (Some(z), "enc.head") = (split_head, l.name.as_str()) {
            out.extend(linear_tensors(l, "enc.mu", 0..z));
            out.extend(linear_tensors(l, "enc.logvar", z..2 * z));
        } else {
            out.extend(linear_tensors(l, &l.name, 0..l.dout));
        }
    }
    out
}

impl VaeConfig {
    /// `enc.fc1.weight` [400, 784], ..., `enc.mu.*`, `enc.logvar.*` (the two halves of enc.head),
    /// `dec.fc1.*`, ..., `dec.out.*`: the names of the fixtures and of a PyTorch VAE; conv blocks as in
    /// [`net_tensors`]; a learned prior's tensors, then a learned decoder variance's `dec.logvar` \[1\] or
    /// \[D\] (s = log σ², unclamped).
    pub fn named_tensors(&self, layout: &ParamLayout) -> Vec<NamedTensor> {
        match self.nets() {
            Ok(n) => {
                let mut t = net_tensors(layout, &[&n.encoder, &n.decoder], Some(self.latent));
                t.extend(n.prior.iter().flat_map(|p| p.named_tensors(layout)));
                if let Some(b) = n.logvar {
                    let l = &layout.layers[b];
                    let index: Vec<usize> = (l.offset..l.offset + l.len()).collect();
                    t.push(NamedTensor { name: "dec.logvar".into(), shape: vec![index.len()], index });
                }
                t
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Philox streams of the log-likelihood estimator: chunk c of an eval batch draws its ε with stream
/// `STREAM_LOGLIK + c` (and the eval batch index as the second counter word).
pub const STREAM_LOGLIK: u32 = 1 << 16;
/// Decoder rows the estimator aims to run at once (bounded again by the adapter's buffer limits).
const LOGLIK_ROWS: usize = 8192;

/// The importance-sampled log-likelihood estimate log p(x) ≈ L_k = log (1/k) Σ_i p(x, z_i) / q(z_i|x),
/// z_i ~ q(z|x), per test image (Burda et al. 2016, eq. 8): a model over B_e images and S samples per
/// chunk, ⌈k / S⌉ chunks per eval batch, all log-weights of a batch kept on the GPU ([k·B_e, 2]) and
/// combined by one stable log-mean-exp. One program per eval batch; the metrics' eval slot gets
/// (−mean log p(x|z), mean log q(z|x) − log p(z), −L_k) per image (the first two sum to −ELBO with k
/// samples).
pub struct Loglik {
    pub vae: Vae,
    pub k: usize,
    /// Images per eval batch (B_e) and samples per chunk (S).
    pub images: usize,
    pub chunk: usize,
    terms: wgpu::Buffer,
    wt: wgpu::Buffer,
    rows: wgpu::Buffer,
}

impl Loglik {
    /// An estimator for a model of `cfg` with parameters `params` (the flat layout's values).
    pub fn new(gpu: &Gpu, cfg: &VaeConfig, params: &[f32], k: usize) -> Result<Loglik> {
        Loglik::with_rows(gpu, cfg, params, k, LOGLIK_ROWS)
    }

    /// As [`Loglik::new`], running at most `rows` decoder rows at once (tests use it to force chunks).
    pub fn with_rows(gpu: &Gpu, cfg: &VaeConfig, params: &[f32], k: usize, rows: usize) -> Result<Loglik> {
        if k == 0 || k > 1 << 20 {
            return Err(GpuError::Shape { op: "loglik", message: format!("k must be in 1..=1048576, got {k}") });
        }
        let nets = cfg.nets().map_err(|m| GpuError::Shape { op: "loglik", message: m })?;
        // Rows that fit: the decoder's largest activation per row against the binding limit (a quarter
        // of it, so several such buffers fit comfortably).
        let per_row = GpuNet::largest_buffer(&nets.decoder, 1).max(4 * cfg.input_dim as u64);
        let fit = (gpu.limits.max_storage_buffer_binding_size / 4 / per_row).max(1) as usize;
        let rows = rows.clamp(1, fit);
        let images = (rows / k).clamp(1, 64);
        let chunk = k.min((rows / images).max(1)).min(4096);
        let samples_cfg =
            VaeConfig { samples: chunk, objective: Objective::Elbo, gradient: Gradient::Pathwise, ..cfg.clone() };
        let vae = Vae::new(gpu, &samples_cfg, images)?;
        if params.len() != vae.core.layout.total {
            return Err(GpuError::Shape {
                op: "loglik",
                message: format!("{} parameters for a layout of {}", params.len(), vae.core.layout.total),
            });
        }
        gpu.write(&vae.core.params, 0, params);
        // room for whole chunks (the last one's rows past k are skipped, not written)
        let padded = k.div_ceil(chunk) * chunk;
        gpu.check_buffers([(2 * padded * images * 4) as u64])?;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let est = Loglik {
            terms: f(format!("loglik.terms[{padded}x{images}x2]"), 2 * padded * images),
            wt: f(format!("loglik.wt[{k}x{images}]"), k * images),
            rows: f(format!("loglik.rows[{images}x3]"), 3 * images),
            vae,
            k,
            images,
            chunk,
        };
        gpu.check()?;
        Ok(est)
    }

    fn weighted(&self, samples: usize) -> Weighted {
        Weighted { samples, iwae: true, beta: 1.0, ..self.vae.weighted() }
    }

    /// The program of one eval batch over the first `n_items` items of `data` (in its stored order).
    pub fn program(&self, gpu: &Gpu, data: &GpuDataset, n_items: usize) -> Result<Program> {
        let v = &self.vae;
        v.check_data(data)?;
        let n_items = n_items.clamp(1, data.n);
        let mut p = Program::new("loglik_batch");
        let g = Gather { batch: self.images, dim: data.dim, n_items, batch_word: W_EVAL_BATCH, binarize: false };
        let state = (&v.core.state).into();
        p.push(g.launch(gpu, "loglik", state, (&data.data).into(), (&data.perm).into(), (&v.x).into())?);
        p.extend(v.enc.forward(gpu, &v.core.layout, &v.core.params, &v.x)?);
        let head = v.head();
        let w = self.weighted(self.chunk);
        for c in 0..self.k.div_ceil(self.chunk) {
            let s = Sample {
                batch: self.images,
                latent: v.cfg.latent,
                samples: self.chunk,
                counter_word: W_EVAL_BATCH,
                stream: STREAM_LOGLIK + c as u32,
                given_eps: false,
            };
            p.push(s.forward(gpu, "loglik z", state, head.into(), (&v.eps).into(), (&v.z).into())?);
            p.extend(v.decode(gpu)?);
            p.extend(v.prior_forward(gpu)?);
            let (z, lp) = ((&v.z).into(), v.logpz().into());
            let inputs = (v.decoded().into(), (&v.x).into(), head.into(), (&v.eps).into(), z, lp);
            let offset = c * self.chunk * self.images;
            let (terms, var) = ((&self.terms).into(), v.learned_var(&v.core.params));
            p.push(w.rows_launch_var(gpu, "loglik", inputs, var, terms, offset, self.k - c * self.chunk)?);
        }
        let all = self.weighted(self.k);
        let weights = ((&self.wt).into(), (&self.wt).into());
        p.push(all.combine(gpu, "loglik", (&self.terms).into(), (&self.rows).into(), weights, false)?);
        let metrics = (&v.core.metrics).into();
        let at = MetricsAt { batch: self.images, n_items, batch_word: W_EVAL_BATCH, slot: SLOT_EVAL, advance: true };
        p.push(reduce::metrics_accumulate3(gpu, "loglik", at, state, (&self.rows).into(), metrics)?);
        Ok(p)
    }

    /// Runs the estimator over the first `n_items` items of `data`: the eval slot's sums.
    pub fn run(&self, gpu: &Gpu, data: &GpuDataset, n_items: usize, seed: u64) -> Result<SlotMetrics> {
        let n_items = n_items.clamp(1, data.n);
        let p = self.program(gpu, data, n_items)?;
        let core = &self.vae.core;
        core.set_state(gpu, seed, 0);
        core.reset_metrics(gpu);
        core.set_cursor(gpu, W_EVAL_BATCH, 0);
        for _ in 0..n_items.div_ceil(self.images) {
            gpu.submit(&p, 1);
            gpu.check()?;
        }
        Ok(core.read_metrics(gpu)?.eval)
    }
}
