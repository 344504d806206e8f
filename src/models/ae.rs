//! The autoencoder family: undercomplete, sparse (L1 or KL) and denoising autoencoders, MLP or conv.
//!
//! Encoder: the VAE's encoder (MLP: `hidden` widths with `act`; conv: [`ConvArch`]) whose head is a code
//! layer `enc.code` of `latent` units with `code_act` (identity by default); the decoder mirrors it to the
//! input (`dec.out`, no activation: x̂ for MSE, logits for BCE). The networks are VaeConfig::nets with
//! the head replaced, so the two families share one builder.
//!
//! Objective, per batch of B examples (x clean, x̃ the encoder's input):
//!   loss = (1/B) Σ_b (rec_b + pen_b)
//!   rec_b = Σ_d (x̂ − x)² (mse) or Σ_d BCE-with-logits(x̂, x) (bce): summed over the values of an example
//!   pen_b = λ·Σ_j |a_bj| (l1) on the penalised layer's activations a (after its activation), or, for
//!   kl, pen_b = β·Σ_j KL(ρ ‖ ρ̂_j) for every b (a batch quantity: ρ̂_j = (1/B) Σ_b a_bj), with ρ̂
//!   clamped to [1e-6, 1 − 1e-6] (its gradient is zero where the clamp acts). λ and β are `sparse_weight`,
//!   ρ `sparse_target`. d loss / d a_bj = λ·sign(a_bj)/B (l1), β·(−ρ/ρ̂_j + (1 − ρ)/(1 − ρ̂_j))/B (kl).
//! The metrics rows are (rec_b, pen_b); metrics_accumulate runs with β = 1, so its "kl" column is the
//! mean penalty and its loss the objective.
//!
//! Denoising: in training the encoder reads x̃ = x + σ·n (gaussian) or x with each value zeroed with
//! probability p (mask), drawn on the GPU from Philox stream 13, counter (element, step word); the loss
//! target stays x. Evaluation reads the clean x (no corruption): eval losses are plain reconstruction.
//! A step whose gradient is non-finite does not advance the step word, so the next step redraws the
//! same noise (as the VAE's ε). In a partial last eval batch the gather repeats the last item; those
//! rows are left out of the metrics but do enter the KL penalty's batch means ρ̂.
//!
//! Programs over fixed buffers:
//!   train: gather → corrupt → encoder → decoder → loss → decoder backward → (encoder tail backward)
//!          → penalty (value and gradient) → encoder backward → gradient norm → Adam → metrics+advance
//!   eval:  gather → encoder → decoder → loss → penalty (value) → metrics+advance_eval
//! With a penalty on an inner layer s, the encoder is two GpuNets (layers 0..=s and s+1..) so that the
//! penalty's gradient is added into layer s's pre-activation gradient between their backward passes.

use serde::{Deserialize, Serialize};

use super::core::Core;
pub use super::core::{Metrics, SlotMetrics};
use super::vae::{net_tensors, ConvArch, GpuDataset, NamedTensor, VaeConfig};
use crate::gpu::{Gpu, GpuError, Launch, Program, Result};
use crate::kernels::ae::{AeLoss, Corrupt, Noise, RecLoss, Sparse, Sparsity, STREAM_CORRUPT};
use crate::kernels::data::{self as kdata, Gather, W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::optim::Adam;
use crate::kernels::reduce::{self, MetricsAt, SLOT_EVAL, SLOT_TRAIN};
use crate::kernels::Act;
use crate::nn::gpu::GpuNet;
use crate::nn::{Net, Op, ParamLayout, Shape};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AeConfig {
    /// Values per example (set from the data: height · width · channels).
    pub input_dim: usize,
    /// Image shape [height, width, channels] (set from the data); the conv AE needs it.
    pub image: [usize; 3],
    /// Encoder hidden widths of the MLP AE; the decoder mirrors them.
    pub hidden: Vec<usize>,
    /// Code size.
    pub latent: usize,
    /// Activation of the hidden layers.
    pub act: Act,
    /// Activation of the code layer.
    pub code_act: Act,
    pub loss: RecLoss,
    pub sparsity: Sparsity,
    /// λ (l1) or β (kl).
    pub sparse_weight: f32,
    /// ρ, the target mean activation of the kl penalty, in (0, 1).
    pub sparse_target: f32,
    /// The penalised layer: an index into the encoder's layers (MLP: 0..hidden.len() are fc1.., then the
    /// code layer); none = the code layer.
    pub sparse_layer: Option<usize>,
    /// Corruption of the training input (denoising AE).
    pub noise: Noise,
    /// σ of the Gaussian noise, or the fraction of values zeroed (mask).
    pub noise_level: f32,
    /// Convolutional encoder and decoder; none = the MLP AE.
    pub conv: Option<ConvArch>,
}

impl Default for AeConfig {
    fn default() -> Self {
        AeConfig {
            input_dim: 784,
            image: [28, 28, 1],
            hidden: vec![400],
            latent: 32,
            act: Act::Relu,
            code_act: Act::Identity,
            loss: RecLoss::Bce,
            sparsity: Sparsity::None,
            sparse_weight: 1e-3,
            sparse_target: 0.05,
            sparse_layer: None,
            noise: Noise::None,
            noise_level: 0.3,
            conv: None,
        }
    }
}

/// A model's parameter layout and its two networks.
pub struct AeNets {
    pub layout: ParamLayout,
    pub encoder: Net,
    pub decoder: Net,
}

impl AeNets {
    /// The encoder cut after layer `at`: (layers 0..=at, the rest or none when `at` is the last).
    pub fn split_encoder(&self, at: usize) -> (Net, Option<Net>) {
        let e = &self.encoder;
        let head = Net { input: e.input, layers: e.layers[..=at].to_vec() };
        let tail =
            (at + 1 < e.layers.len()).then(|| Net { input: e.layers[at].output, layers: e.layers[at + 1..].to_vec() });
        (head, tail)
    }
}

impl AeConfig {
    /// The VAE configuration with the same encoder body and decoder (its head is replaced by `nets`).
    fn vae_body(&self) -> VaeConfig {
        VaeConfig {
            input_dim: self.input_dim,
            image: self.image,
            hidden: self.hidden.clone(),
            latent: self.latent,
            act: self.act,
            conv: self.conv.clone(),
            ..VaeConfig::default()
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.latent == 0 {
            return Err("latent must be > 0".into());
        }
        self.vae_body().validate()?;
        if !(self.sparse_weight >= 0.0 && self.sparse_weight.is_finite()) {
            return Err(format!("sparse_weight must be a finite number >= 0, got {}", self.sparse_weight));
        }
        if !(self.sparse_target > 0.0 && self.sparse_target < 1.0) {
            return Err(format!("sparse_target must be in (0, 1), got {}", self.sparse_target));
        }
        match self.noise {
            Noise::Mask if !(0.0..=1.0).contains(&self.noise_level) => {
                return Err(format!("noise_level (the masked fraction) must be in [0, 1], got {}", self.noise_level));
            }
            _ if !(self.noise_level >= 0.0 && self.noise_level.is_finite()) => {
                return Err(format!("noise_level must be a finite number >= 0, got {}", self.noise_level));
            }
            _ => {}
        }
        let nets = self.nets()?;
        let n = nets.encoder.layers.len();
        if let Some(s) = self.sparse_layer {
            if s >= n {
                return Err(format!("sparse_layer {s} is past the encoder's last layer ({})", n - 1));
            }
        }
        if self.sparsity == Sparsity::Kl {
            let l = &nets.encoder.layers[self.sparse_index(&nets)];
            if l.act != Act::Sigmoid {
                return Err(format!(
                    "sparsity = \"kl\" needs a sigmoid layer (mean activations in (0, 1)): {} uses {:?}",
                    l.name, l.act
                ));
            }
        }
        Ok(())
    }

    /// The index of the penalised encoder layer (the code layer unless `sparse_layer` is set).
    pub fn sparse_index(&self, nets: &AeNets) -> usize {
        self.sparse_layer.unwrap_or(nets.encoder.layers.len() - 1)
    }

    /// The encoder and decoder with their parameter blocks in one layout: VaeConfig::nets of the same
    /// body, its head block `enc.head` (2Z outputs) replaced by `enc.code` (`latent` outputs, `code_act`).
    /// MLP: enc.fc1.. (act), enc.code, dec.fc1.. (act), dec.out. Conv: see [`ConvArch`].
    pub fn nets(&self) -> std::result::Result<AeNets, String> {
        let v = self.vae_body().nets()?;
        let head = v.layout.layers.iter().position(|l| l.name == "enc.head").ok_or("no encoder head")?;
        let mut layout = ParamLayout::default();
        for (i, l) in v.layout.layers.iter().enumerate() {
            if i == head {
                layout.push_with_fan_in("enc.code", l.din, self.latent, self.code_act, l.fan_in);
            } else {
                layout.push_with_fan_in(&l.name, l.din, l.dout, l.act, l.fan_in);
            }
        }
        let mut encoder = v.encoder;
        let last = encoder.layers.last_mut().ok_or("empty encoder")?;
        if last.op != (Op::Linear { block: head }) {
            return Err("the encoder does not end in its head".into());
        }
        last.name = "enc.code".into();
        last.output = Shape::flat(self.latent);
        last.act = self.code_act;
        Ok(AeNets { layout, encoder, decoder: v.decoder })
    }

    /// The flat parameter layout (see [`AeConfig::nets`]); panics on a config `validate` refuses.
    pub fn layout(&self) -> ParamLayout {
        self.nets().unwrap_or_else(|e| panic!("invalid model config: {e}")).layout
    }

    /// FLOPs of one training step (forward and backward of both networks) at batch `b`.
    pub fn step_flops(&self, b: usize) -> f64 {
        self.nets().map_or(0.0, |n| n.encoder.flops_step(b) + n.decoder.flops_step(b))
    }

    /// `enc.fc1.weight` [out, in], ..., `enc.code.*`, `dec.fc1.*`, ..., `dec.out.*` (PyTorch names and
    /// shapes); conv blocks as in [`net_tensors`].
    pub fn named_tensors(&self, layout: &ParamLayout) -> Vec<NamedTensor> {
        match self.nets() {
            Ok(n) => net_tensors(layout, &[&n.encoder, &n.decoder], None),
            Err(_) => Vec::new(),
        }
    }
}

/// The model's buffers on the GPU.
pub struct Ae {
    pub cfg: AeConfig,
    pub batch: usize,
    /// Parameters, gradients, Adam moments, state and metrics.
    pub core: Core,
    /// The clean input batch [B, D]: the loss target.
    pub x: wgpu::Buffer,
    /// The corrupted batch [B, D] the encoder reads in training when `noise` is not none.
    pub x_in: wgpu::Buffer,
    /// The encoder's layers 0..=s, s the penalised layer (all of them without a penalty): its output is
    /// the penalised layer's activation [B, U].
    pub enc: GpuNet,
    /// The encoder's layers after s (none when s is the code layer).
    pub enc_tail: Option<GpuNet>,
    /// Decoder on B rows; its output is x̂ or the logits [B, D].
    pub dec: GpuNet,
    /// [B, 2] = (rec_b, pen_b).
    pub rows: wgpu::Buffer,
    /// The KL penalty's per-unit values \[U\] then ρ̂ \[U\] (written by `penalty` with sparsity = kl).
    pub stats: wgpu::Buffer,
}

fn err(m: String) -> GpuError {
    GpuError::Shape { op: "ae", message: m }
}

impl Ae {
    pub fn new(gpu: &Gpu, cfg: &AeConfig, batch: usize) -> Result<Ae> {
        cfg.validate().map_err(err)?;
        if batch == 0 {
            return Err(err("batch must be > 0".into()));
        }
        let nets = cfg.nets().map_err(err)?;
        let at = if cfg.sparsity == Sparsity::None { nets.encoder.layers.len() - 1 } else { cfg.sparse_index(&nets) };
        let (head, tail) = nets.split_encoder(at);
        let units = head.output().len();
        gpu.check_buffers([
            (nets.layout.total * 4) as u64,
            (batch * cfg.input_dim * 4) as u64,
            GpuNet::largest_buffer(&nets.encoder, batch),
            GpuNet::largest_buffer(&nets.decoder, batch),
        ])?;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let d = cfg.input_dim;
        let ae = Ae {
            core: Core::new(gpu, nets.layout.clone(), &nets.layout.init(0)),
            x: f(format!("x[{batch}x{d}]"), batch * d),
            x_in: f(format!("x_in[{batch}x{d}]"), batch * d),
            enc: GpuNet::new(gpu, &head, batch)?,
            enc_tail: tail.map(|t| GpuNet::new(gpu, &t, batch)).transpose()?,
            dec: GpuNet::new(gpu, &nets.decoder, batch)?,
            rows: f(format!("rows[{batch}x2]"), batch * 2),
            stats: f(format!("sparse.stats[2x{units}]"), 2 * units),
            cfg: cfg.clone(),
            batch,
        };
        gpu.check()?;
        Ok(ae)
    }

    /// The code [B, latent] (the encoder's output, after `code_act`).
    pub fn code(&self) -> &wgpu::Buffer {
        self.enc_tail.as_ref().unwrap_or(&self.enc).output()
    }

    /// The gradient with respect to the code's pre-activation [B, latent].
    fn d_code(&self) -> &wgpu::Buffer {
        self.enc_tail.as_ref().unwrap_or(&self.enc).d_output()
    }

    /// The decoder output [B, D]: x̂ (mse) or logits (bce).
    pub fn decoded(&self) -> &wgpu::Buffer {
        self.dec.output()
    }

    /// The penalised layer's activations [B, U] (the code when no layer is penalised).
    pub fn penalised(&self) -> &wgpu::Buffer {
        self.enc.output()
    }

    /// Units of the penalised layer.
    pub fn penalised_units(&self) -> usize {
        self.enc.net.output().len()
    }

    /// x_in = corrupt(x), the noise counted by state word `counter_word`; no launch without noise.
    pub fn corrupt(&self, gpu: &Gpu, counter_word: u32) -> Result<Vec<Launch>> {
        if self.cfg.noise == Noise::None {
            return Ok(Vec::new());
        }
        let c = Corrupt {
            batch: self.batch,
            dim: self.cfg.input_dim,
            noise: self.cfg.noise,
            level: self.cfg.noise_level,
            counter_word,
            stream: STREAM_CORRUPT,
        };
        Ok(vec![c.launch(gpu, "ae", (&self.core.state).into(), (&self.x).into(), (&self.x_in).into())?])
    }

    /// Encoder (from `x_in` when `corrupted` and the model has noise, else from `x`) → decoder → loss
    /// (rows[·, 0] and the decoder's output gradient; rows[·, 1] = 0 until `penalty` runs).
    pub fn forward(&self, gpu: &Gpu, corrupted: bool) -> Result<Vec<Launch>> {
        let (layout, params) = (&self.core.layout, &self.core.params);
        let input = if corrupted && self.cfg.noise != Noise::None { &self.x_in } else { &self.x };
        let mut out = self.enc.forward(gpu, layout, params, input)?;
        if let Some(t) = &self.enc_tail {
            out.extend(t.forward(gpu, layout, params, self.enc.output())?);
        }
        out.extend(self.decode(gpu)?);
        let loss = AeLoss { batch: self.batch, dim: self.cfg.input_dim, loss: self.cfg.loss };
        out.push(loss.launch(
            gpu,
            "loss",
            self.decoded().into(),
            (&self.x).into(),
            self.dec.d_output().into(),
            (&self.rows).into(),
        )?);
        Ok(out)
    }

    /// The decoder alone, from the code buffer.
    pub fn decode(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        self.dec.forward(gpu, &self.core.layout, &self.core.params, self.code())
    }

    /// The penalty's value into rows[·, 1] and, with `with_grad`, its gradient added into the penalised
    /// layer's pre-activation gradient (so it must run after that gradient is written: see `backward`).
    pub fn penalty(&self, gpu: &Gpu, with_grad: bool) -> Result<Vec<Launch>> {
        let l = self.enc.net.layers.last().unwrap();
        let s = Sparse {
            batch: self.batch,
            units: self.penalised_units(),
            kind: self.cfg.sparsity,
            weight: self.cfg.sparse_weight,
            target: self.cfg.sparse_target,
            act: l.act,
            with_grad,
        };
        s.launch(
            gpu,
            "sparse",
            self.enc.output().into(),
            self.enc.d_output().into(),
            (&self.stats).into(),
            (&self.rows).into(),
        )
    }

    /// Backward through decoder, encoder tail, penalty and encoder into `grads` (after `forward(true)`:
    /// the encoder's input is read again).
    pub fn backward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (layout, params, grads) = (&self.core.layout, &self.core.params, &self.core.grads);
        let mut out =
            self.dec.backward(gpu, layout, params, grads, self.code(), Some((self.d_code(), self.cfg.code_act)))?;
        if let Some(t) = &self.enc_tail {
            let act = self.enc.net.output_act();
            out.extend(t.backward(gpu, layout, params, grads, self.enc.output(), Some((self.enc.d_output(), act)))?);
        }
        out.extend(self.penalty(gpu, true)?);
        let input = if self.cfg.noise != Noise::None { &self.x_in } else { &self.x };
        out.extend(self.enc.backward(gpu, layout, params, grads, input, None)?);
        Ok(out)
    }

    /// Gradient norm (and clip scale, finite flag), then Adam.
    pub fn update(&self, gpu: &Gpu, adam: &Adam, max_norm: f32) -> Result<Vec<Launch>> {
        self.core.update(gpu, adam, max_norm, self.core.layout.total)
    }

    /// The batch's metrics into `slot`, then its cursor (`word`) advances.
    fn metrics(&self, gpu: &Gpu, data: &GpuDataset, label: &str, word: u32, slot: u32) -> Result<Launch> {
        let at = MetricsAt { batch: self.batch, n_items: data.n, batch_word: word, slot, advance: true };
        reduce::metrics_accumulate(
            gpu,
            label,
            at,
            1.0,
            (&self.core.state).into(),
            (&self.rows).into(),
            (&self.core.metrics).into(),
        )
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
        let mut p = Program::new("ae_train_step");
        let g = Gather { batch: self.batch, dim: data.dim, n_items: data.n, batch_word: W_TRAIN_BATCH, binarize };
        p.push(g.launch(
            gpu,
            "train",
            (&self.core.state).into(),
            (&data.data).into(),
            (&data.perm).into(),
            (&self.x).into(),
        )?);
        p.extend(self.corrupt(gpu, kdata::W_STEP)?);
        p.extend(self.forward(gpu, true)?);
        p.extend(self.backward(gpu)?);
        p.extend(self.update(gpu, adam, max_norm)?);
        p.push(self.metrics(gpu, data, "train", W_TRAIN_BATCH, SLOT_TRAIN)?);
        Ok(p)
    }

    /// One evaluation batch (clean input, forward, loss and penalty) over the dataset in its stored order.
    pub fn eval_program(&self, gpu: &Gpu, data: &GpuDataset, binarize: bool) -> Result<Program> {
        self.check_data(data)?;
        let mut p = Program::new("ae_eval_batch");
        let g = Gather { batch: self.batch, dim: data.dim, n_items: data.n, batch_word: W_EVAL_BATCH, binarize };
        p.push(g.launch(
            gpu,
            "eval",
            (&self.core.state).into(),
            (&data.data).into(),
            (&data.perm).into(),
            (&self.x).into(),
        )?);
        p.extend(self.forward(gpu, false)?);
        p.extend(self.penalty(gpu, false)?);
        p.push(self.metrics(gpu, data, "eval", W_EVAL_BATCH, SLOT_EVAL)?);
        Ok(p)
    }

    /// A step on the batch the host wrote into `x` (corrupted with the state's step word and seed when
    /// the model has noise): corrupt → forward → backward → update (tests).
    pub fn step_program_given(&self, gpu: &Gpu, adam: &Adam, max_norm: f32) -> Result<Program> {
        let mut p = Program::new("ae_given_step");
        p.extend(self.corrupt(gpu, kdata::W_STEP)?);
        p.extend(self.forward(gpu, true)?);
        p.extend(self.backward(gpu)?);
        p.extend(self.update(gpu, adam, max_norm)?);
        Ok(p)
    }

    fn check_data(&self, data: &GpuDataset) -> Result<()> {
        if data.dim != self.cfg.input_dim {
            return Err(err(format!(
                "data has {} pixels per item, the model expects {}",
                data.dim, self.cfg.input_dim
            )));
        }
        Ok(())
    }
}
