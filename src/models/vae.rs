//! The MLP VAE: encoder MLP → (μ, logσ²) → z = μ + σ·ε (M samples) → decoder MLP → fused ELBO.
//!
//! Built once into fixed programs over fixed buffers:
//!   train: gather → encoder → sample → decoder → elbo → decoder backward → sample backward →
//!          encoder backward → gradient norm → Adam → metrics → advance
//!   eval:  gather → encoder → sample → decoder → elbo → metrics → advance_eval
//! Every gradient buffer holds the gradient with respect to the PRE-activation of its layer's output:
//! the dX launch of layer i multiplies by act'(X_i) in its epilogue (DACT), so no elementwise pass is
//! needed.

use serde::{Deserialize, Serialize};

use crate::gpu::{Gpu, GpuError, Launch, Needs, Program, Result, View};
use crate::kernels::data::{self as kdata, Gather, STATE_WORDS, W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::elbo::{Elbo, Likelihood};
use crate::kernels::matmul::Matmul;
use crate::kernels::optim::Adam;
use crate::kernels::reduce::{self, METRICS_WORDS, PARTIALS, SLOT_EVAL, SLOT_TRAIN};
use crate::kernels::sample::{Sample, STREAM_EVAL, STREAM_TRAIN};
use crate::kernels::Act;
use crate::nn::{Linear, ParamLayout};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VaeConfig {
    /// Pixels per image (set from the data).
    pub input_dim: usize,
    /// Encoder hidden widths; the decoder mirrors them.
    pub hidden: Vec<usize>,
    pub latent: usize,
    pub act: Act,
    pub likelihood: Likelihood,
    /// Weight of the KL term (β-VAE); 1 is the ELBO.
    pub beta: f32,
    /// σ of the Gaussian likelihood.
    pub sigma: f32,
    /// Monte-Carlo samples M per input.
    pub samples: usize,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            input_dim: 784,
            hidden: vec![400],
            latent: 20,
            act: Act::Relu,
            likelihood: Likelihood::Bernoulli,
            beta: 1.0,
            sigma: 1.0,
            samples: 1,
        }
    }
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
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(format!("beta must be a finite number >= 0, got {}", self.beta));
        }
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(format!("sigma must be a finite number > 0, got {}", self.sigma));
        }
        Ok(())
    }

    /// enc.fc1.. (act), enc.head (2Z outputs: μ | logσ²), dec.fc1.. (act), dec.out (logits or means).
    pub fn layout(&self) -> ParamLayout {
        let mut p = ParamLayout::default();
        let mut din = self.input_dim;
        for (i, &h) in self.hidden.iter().enumerate() {
            p.push(&format!("enc.fc{}", i + 1), din, h, self.act);
            din = h;
        }
        p.push("enc.head", din, 2 * self.latent, Act::Identity);
        let mut din = self.latent;
        for (i, &h) in self.hidden.iter().rev().enumerate() {
            p.push(&format!("dec.fc{}", i + 1), din, h, self.act);
            din = h;
        }
        p.push("dec.out", din, self.input_dim, Act::Identity);
        p
    }

    /// (encoder layers, decoder layers) of a layout made by `layout`.
    pub fn split<'a>(&self, layout: &'a ParamLayout) -> (&'a [Linear], &'a [Linear]) {
        layout.layers.split_at(self.hidden.len() + 1)
    }

    /// FLOPs of one training step (forward + backward matmuls) at batch `b`.
    pub fn step_flops(&self, b: usize) -> f64 {
        let layout = self.layout();
        let (enc, dec) = self.split(&layout);
        let f = |ls: &[Linear], rows: usize| ls.iter().map(|l| 3.0 * l.flops_forward(rows)).sum::<f64>();
        f(enc, b) + f(dec, b * self.samples)
    }
}

/// A dataset resident on the GPU: u8 pixels packed into u32 words, and an order (permutation).
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
        gpu.check_needs(&Needs {
            max_buffer_bytes: pixels.len() as u64,
            max_binding_bytes: pixels.len() as u64,
            max_storage_buffers_per_stage: 8,
        })?;
        let mut packed = pixels.to_vec();
        packed.resize(pixels.len().next_multiple_of(4), 0);
        let data = gpu.upload::<u8>(&format!("{label}.pixels[{n}x{dim}]"), &packed);
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
    pub layout: ParamLayout,
    pub batch: usize,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub adam_m: wgpu::Buffer,
    pub adam_v: wgpu::Buffer,
    pub state: wgpu::Buffer,
    pub metrics: wgpu::Buffer,
    pub clip: wgpu::Buffer,
    pub partials: wgpu::Buffer,
    /// Input batch [B, D].
    pub x: wgpu::Buffer,
    /// Encoder layer outputs; the last is head [B, 2Z].
    pub enc_out: Vec<wgpu::Buffer>,
    pub eps: wgpu::Buffer,
    pub z: wgpu::Buffer,
    /// Decoder layer outputs; the last is the likelihood parameters [M·B, D].
    pub dec_out: Vec<wgpu::Buffer>,
    pub rows: wgpu::Buffer,
    pub d_enc: Vec<wgpu::Buffer>,
    pub dz: wgpu::Buffer,
    pub d_dec: Vec<wgpu::Buffer>,
}

impl Vae {
    pub fn new(gpu: &Gpu, cfg: &VaeConfig, batch: usize) -> Result<Vae> {
        cfg.validate().map_err(|m| GpuError::Shape { op: "vae", message: m })?;
        if batch == 0 {
            return Err(GpuError::Shape { op: "vae", message: "batch must be > 0".into() });
        }
        let layout = cfg.layout();
        let (enc, dec) = cfg.split(&layout);
        let mb = batch * cfg.samples;
        let largest = [layout.total * 4, mb * cfg.input_dim * 4]
            .into_iter()
            .chain(dec.iter().map(|l| mb * l.dout * 4))
            .max()
            .unwrap() as u64;
        gpu.check_needs(&Needs {
            max_buffer_bytes: largest,
            max_binding_bytes: largest,
            max_storage_buffers_per_stage: 8,
        })?;
        let n = layout.total;
        let params = gpu.upload("params", &layout.init(0));
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let vae = Vae {
            grads: f(format!("grads[{n}]"), n),
            adam_m: f(format!("adam.m[{n}]"), n),
            adam_v: f(format!("adam.v[{n}]"), n),
            state: gpu.upload("state", &[0u32; STATE_WORDS]),
            metrics: f("metrics".into(), METRICS_WORDS),
            clip: gpu.upload("clip", &[1.0f32]),
            partials: f("gradnorm.partials".into(), PARTIALS),
            x: f(format!("x[{batch}x{}]", cfg.input_dim), batch * cfg.input_dim),
            enc_out: enc.iter().map(|l| f(format!("{}.out[{batch}x{}]", l.name, l.dout), batch * l.dout)).collect(),
            eps: f(format!("eps[{mb}x{}]", cfg.latent), mb * cfg.latent),
            z: f(format!("z[{mb}x{}]", cfg.latent), mb * cfg.latent),
            dec_out: dec.iter().map(|l| f(format!("{}.out[{mb}x{}]", l.name, l.dout), mb * l.dout)).collect(),
            rows: f(format!("rows[{batch}x2]"), batch * 2),
            d_enc: enc.iter().map(|l| f(format!("{}.grad[{batch}x{}]", l.name, l.dout), batch * l.dout)).collect(),
            dz: f(format!("dz[{mb}x{}]", cfg.latent), mb * cfg.latent),
            d_dec: dec.iter().map(|l| f(format!("{}.grad[{mb}x{}]", l.name, l.dout), mb * l.dout)).collect(),
            params,
            cfg: cfg.clone(),
            layout,
            batch,
        };
        gpu.check()?;
        Ok(vae)
    }

    fn block<'a>(&self, buf: &'a wgpu::Buffer, l: &Linear) -> View<'a> {
        View::new(buf, (l.offset * 4) as u64, l.len())
    }

    /// Weight part only ([din, dout]), for the dX product.
    fn weight(&self, l: &Linear) -> View<'_> {
        View::new(&self.params, (l.offset * 4) as u64, l.din * l.dout)
    }

    fn linear_forward(&self, gpu: &Gpu, l: &Linear, rows: usize, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Launch> {
        let mm = Matmul { m: rows, n: l.dout, k: l.din, bias: true, act: l.act, ..Default::default() };
        mm.launch(gpu, &l.name, x.into(), self.block(&self.params, l), y.into(), None)
    }

    /// dW (with db) and, when `dx` is given, dX ⊙ act_prev'(X).
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        gpu: &Gpu,
        l: &Linear,
        rows: usize,
        x: &wgpu::Buffer,
        g: &wgpu::Buffer,
        dx: Option<(&wgpu::Buffer, Act)>,
        out: &mut Vec<Launch>,
    ) -> Result<()> {
        let dw = Matmul { m: l.din + 1, n: l.dout, k: rows, trans_a: true, ones_row: true, ..Default::default() };
        out.push(dw.launch(gpu, &format!("{}.dW", l.name), x.into(), g.into(), self.block(&self.grads, l), None)?);
        if let Some((dx, prev_act)) = dx {
            let mm = Matmul { m: rows, n: l.din, k: l.dout, trans_b: true, dact: prev_act, ..Default::default() };
            out.push(mm.launch(gpu, &format!("{}.dX", l.name), g.into(), self.weight(l), dx.into(), Some(x.into()))?);
        }
        Ok(())
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

    /// Encoder → sample → decoder → elbo, from the batch already in `x`.
    pub fn forward(&self, gpu: &Gpu, sample: Sample) -> Result<Vec<Launch>> {
        let (enc, _) = self.cfg.split(&self.layout);
        let mut out = Vec::new();
        let mut input = &self.x;
        for (l, y) in enc.iter().zip(&self.enc_out) {
            out.push(self.linear_forward(gpu, l, self.batch, input, y)?);
            input = y;
        }
        let head = self.enc_out.last().unwrap();
        out.push(sample.forward(gpu, "z", (&self.state).into(), head.into(), (&self.eps).into(), (&self.z).into())?);
        out.extend(self.decode(gpu)?);
        let logits = self.dec_out.last().unwrap();
        let dlogits = self.d_dec.last().unwrap();
        let dhead = self.d_enc.last().unwrap();
        out.push(self.elbo_kernel().launch(
            gpu,
            "loss",
            logits.into(),
            (&self.x).into(),
            head.into(),
            dlogits.into(),
            dhead.into(),
            (&self.rows).into(),
        )?);
        Ok(out)
    }

    /// The decoder alone: z → likelihood parameters (prior samples, manifolds, interpolations).
    pub fn decode(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (_, dec) = self.cfg.split(&self.layout);
        let rows = self.batch * self.cfg.samples;
        let mut out = Vec::new();
        let mut input = &self.z;
        for (l, y) in dec.iter().zip(&self.dec_out) {
            out.push(self.linear_forward(gpu, l, rows, input, y)?);
            input = y;
        }
        Ok(out)
    }

    /// Backward through decoder, sampling and encoder into `grads`.
    pub fn backward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (enc, dec) = self.cfg.split(&self.layout);
        let mb = self.batch * self.cfg.samples;
        let mut out = Vec::new();
        for i in (0..dec.len()).rev() {
            let x = if i == 0 { &self.z } else { &self.dec_out[i - 1] };
            let dx = if i == 0 { (&self.dz, Act::Identity) } else { (&self.d_dec[i - 1], dec[i - 1].act) };
            self.linear_backward(gpu, &dec[i], mb, x, &self.d_dec[i], Some(dx), &mut out)?;
        }
        let head = self.enc_out.last().unwrap();
        let dhead = self.d_enc.last().unwrap();
        out.push(self.sampler(0, 0, false).backward(
            gpu,
            "z",
            head.into(),
            (&self.eps).into(),
            (&self.dz).into(),
            dhead.into(),
        )?);
        for i in (0..enc.len()).rev() {
            let x = if i == 0 { &self.x } else { &self.enc_out[i - 1] };
            let dx = if i == 0 { None } else { Some((&self.d_enc[i - 1], enc[i - 1].act)) };
            self.linear_backward(gpu, &enc[i], self.batch, x, &self.d_enc[i], dx, &mut out)?;
        }
        Ok(out)
    }

    /// Gradient norm (and clip scale, finite flag), then Adam.
    pub fn update(&self, gpu: &Gpu, adam: &Adam, max_norm: f32) -> Result<Vec<Launch>> {
        let n = self.layout.total;
        let [a, b] = reduce::grad_norm(
            gpu,
            n,
            max_norm,
            (&self.grads).into(),
            (&self.partials).into(),
            (&self.state).into(),
            (&self.metrics).into(),
            (&self.clip).into(),
        )?;
        let c = adam.launch(
            gpu,
            n,
            (&self.state).into(),
            (&self.params).into(),
            (&self.grads).into(),
            (&self.adam_m).into(),
            (&self.adam_v).into(),
            (&self.clip).into(),
        )?;
        Ok(vec![a, b, c])
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
            (&self.state).into(),
            (&data.data).into(),
            (&data.perm).into(),
            (&self.x).into(),
        )?);
        p.extend(self.forward(gpu, self.sampler(kdata::W_STEP, STREAM_TRAIN, false))?);
        p.extend(self.backward(gpu)?);
        p.extend(self.update(gpu, adam, max_norm)?);
        p.push(reduce::metrics_accumulate(
            gpu,
            "train",
            self.batch,
            data.n,
            W_TRAIN_BATCH,
            SLOT_TRAIN,
            self.cfg.beta,
            (&self.state).into(),
            (&self.rows).into(),
            (&self.metrics).into(),
        )?);
        p.push(kdata::advance(gpu, (&self.state).into())?);
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
            (&self.state).into(),
            (&data.data).into(),
            (&data.perm).into(),
            (&self.x).into(),
        )?);
        p.extend(self.forward(gpu, self.sampler(W_EVAL_BATCH, STREAM_EVAL, false))?);
        p.push(reduce::metrics_accumulate(
            gpu,
            "eval",
            self.batch,
            data.n,
            W_EVAL_BATCH,
            SLOT_EVAL,
            self.cfg.beta,
            (&self.state).into(),
            (&self.rows).into(),
            (&self.metrics).into(),
        )?);
        p.push(kdata::advance_eval(gpu, (&self.state).into())?);
        Ok(p)
    }

    /// A step on the batch the host wrote into `x` with the ε it wrote into `eps` (fixture tests).
    pub fn step_program_given(&self, gpu: &Gpu, adam: &Adam, max_norm: f32) -> Result<Program> {
        let mut p = Program::new("given_step");
        p.extend(self.forward(gpu, self.sampler(kdata::W_STEP, STREAM_TRAIN, true))?);
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

    /// Seeds the Philox key and sets the step counter.
    pub fn set_state(&self, gpu: &Gpu, seed: u64, step: u32) {
        let mut s = [0u32; STATE_WORDS];
        s[0] = step;
        s[kdata::W_SEED_LO] = seed as u32;
        s[kdata::W_SEED_HI] = (seed >> 32) as u32;
        gpu.write(&self.state, 0, &s);
    }

    pub fn set_cursor(&self, gpu: &Gpu, word: u32, value: u32) {
        gpu.write(&self.state, word as u64 * 4, &[value]);
    }

    pub fn reset_metrics(&self, gpu: &Gpu) {
        gpu.write(&self.metrics, 0, &[0f32; METRICS_WORDS]);
    }

    pub fn read_metrics(&self, gpu: &Gpu) -> Result<Metrics> {
        let m: Vec<f32> = gpu.read(&self.metrics, 0, METRICS_WORDS)?;
        Ok(Metrics::from_words(&m))
    }

    pub fn read_state(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        gpu.read(&self.state, 0, STATE_WORDS)
    }
}

/// Host view of the metrics buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    pub train: SlotMetrics,
    pub eval: SlotMetrics,
    pub grad_norm: f32,
    pub nonfinite_steps: u32,
    pub grad_norm_mean: f32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SlotMetrics {
    pub rec: f64,
    pub kl: f64,
    pub loss: f64,
    pub rows: f64,
}

impl SlotMetrics {
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.rows.max(1.0)
    }
    pub fn mean_rec(&self) -> f64 {
        self.rec / self.rows.max(1.0)
    }
    pub fn mean_kl(&self) -> f64 {
        self.kl / self.rows.max(1.0)
    }
}

impl Metrics {
    pub fn from_words(m: &[f32]) -> Metrics {
        let slot = |s: usize| SlotMetrics {
            rec: m[4 * s] as f64,
            kl: m[4 * s + 1] as f64,
            loss: m[4 * s + 2] as f64,
            rows: m[4 * s + 3] as f64,
        };
        Metrics {
            train: slot(0),
            eval: slot(1),
            grad_norm: m[reduce::M_GRAD_NORM],
            nonfinite_steps: m[reduce::M_NONFINITE] as u32,
            grad_norm_mean: m[reduce::M_GRAD_NORM_SUM] / m[reduce::M_GRAD_NORM_COUNT].max(1.0),
        }
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

impl VaeConfig {
    /// `enc.fc1.weight` [400, 784], ..., `enc.mu.*`, `enc.logvar.*` (the two halves of enc.head),
    /// `dec.fc1.*`, ..., `dec.out.*`: the names of the fixtures and of a PyTorch VAE.
    pub fn named_tensors(&self, layout: &ParamLayout) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for l in &layout.layers {
            if l.name == "enc.head" {
                out.extend(linear_tensors(l, "enc.mu", 0..self.latent));
                out.extend(linear_tensors(l, "enc.logvar", self.latent..2 * self.latent));
            } else {
                out.extend(linear_tensors(l, &l.name, 0..l.dout));
            }
        }
        out
    }
}
