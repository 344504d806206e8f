//! VQ-VAE: conv encoder with residual blocks → grid of D-dim vectors → nearest of K codes (EMA or
//! gradient-trained codebook, straight-through gradient, commitment loss β) → conv decoder → MSE.
//!
//! The training step, recorded once:
//!   gather → encoder → assign (argmin + gather of the codes) → decoder → recon MSE → decoder backward →
//!   straight-through + commitment → code counts → EMA statistics and finish (or codebook gradient) →
//!   usage (perplexity, used codes) → encoder backward → gradient norm → Adam → metrics → advance
//! The loss is mse / var(data) + β·mean((z_e − sg[e])²) (+ mean((sg[z_e] − e)²) for a gradient-trained
//! codebook). Images are zero-padded to a multiple of the total stride; the loss ignores the padding.
//!
//! Parameters, in one flat layout: the encoder and decoder blocks, then the codebook `vq.embed` [K, D]
//! (trained by Adam only without EMA), then the EMA state `vq.cluster_size` [K] and `vq.embed_avg`
//! [K, D] (never touched by Adam). The EMA state starts at N = 1, m = e, so e = m / N holds from step 0.

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::vae::{GpuDataset, NamedTensor};
use crate::gpu::{Gpu, GpuError, Launch, Needs, Program, Result, View};
use crate::kernels::data::{self as kdata, Gather, W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::optim::Adam;
use crate::kernels::reduce::{self, SLOT_EVAL, SLOT_TRAIN};
use crate::kernels::vq::{ReconMse, TableLayout, Valid, Vq, VQM_EVAL, VQM_LEVEL_WORDS, VQM_TRAIN};
use crate::kernels::Act;
use crate::nn::gpu::GpuNet;
use crate::nn::{Linear, Net, NetBuilder, ParamLayout, Shape};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VqConfig {
    /// Image shape [height, width, channels] after padding (set from the data).
    pub image: [usize; 3],
    /// The data's own size [height, width] inside the padded image (set from the data).
    pub valid: [usize; 2],
    /// Images are zero-padded (centred) to a multiple of this; 0 = the encoder's total stride.
    pub pad_multiple: usize,
    /// Channels of the two stride-2 encoder stages (kernel 4, padding 1); the decoder mirrors them.
    pub channels: Vec<usize>,
    /// Residual blocks after the encoder stages and before the decoder's transposed convs.
    pub blocks: usize,
    /// Hidden channels of a residual block.
    pub res_hidden: usize,
    /// Code vector size D.
    pub dim: usize,
    /// Codebook size K.
    pub codes: usize,
    /// Commitment weight β.
    pub beta: f32,
    /// EMA codebook (true) or codebook trained by the codebook loss through Adam (false).
    pub ema: bool,
    /// EMA decay γ.
    pub decay: f32,
    /// Laplace smoothing ε of the EMA counts.
    pub eps: f32,
    /// Reset codes whose EMA count falls below `restart_threshold` to encoder outputs of the batch.
    pub restart: bool,
    pub restart_threshold: f32,
}

impl Default for VqConfig {
    fn default() -> Self {
        VqConfig {
            image: [32, 32, 1],
            valid: [28, 28],
            pad_multiple: 0,
            channels: vec![64, 128],
            blocks: 2,
            res_hidden: 32,
            dim: 64,
            codes: 512,
            beta: 0.25,
            ema: true,
            decay: 0.99,
            eps: 1e-5,
            restart: false,
            restart_threshold: 1.0,
        }
    }
}

/// The networks and the codebook blocks of a VQ model.
pub struct VqNets {
    pub layout: ParamLayout,
    pub encoder: Net,
    pub decoder: Net,
    /// Layout blocks of the codebook, the EMA count and the EMA sum.
    pub embed: usize,
    pub count: usize,
    pub sum: usize,
}

impl VqConfig {
    /// The encoder's total stride (images must be a multiple of it).
    pub fn stride(&self) -> usize {
        1 << self.channels.len()
    }

    /// Padding on each side (top, left) for data of `h`×`w`: to a multiple of pad_multiple (or the stride).
    pub fn padding(&self, h: usize, w: usize) -> (usize, usize, usize, usize) {
        let m = if self.pad_multiple > 0 { self.pad_multiple } else { self.stride() };
        let (ph, pw) = (h.next_multiple_of(m), w.next_multiple_of(m));
        ((ph - h) / 2, (pw - w) / 2, ph, pw)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channels.len() != 2 || self.channels.contains(&0) {
            return Err(format!("need two encoder stages with channels > 0, got {:?}", self.channels));
        }
        if self.dim == 0 || self.codes < 2 || self.codes > 65536 || self.res_hidden == 0 {
            return Err("need dim >= 1, 2 <= codes <= 65536 and res_hidden >= 1".into());
        }
        if self.blocks > 16 {
            return Err("at most 16 residual blocks".into());
        }
        let ok = self.beta >= 0.0 && self.beta.is_finite() && self.decay > 0.0 && self.decay < 1.0 && self.eps > 0.0;
        if !ok {
            return Err("need beta >= 0, 0 < decay < 1 and eps > 0".into());
        }
        if self.restart && !self.ema {
            return Err("dead-code restart needs the EMA codebook (ema = true)".into());
        }
        if !(self.restart_threshold >= 0.0 && self.restart_threshold.is_finite()) {
            return Err("restart_threshold must be a finite number >= 0".into());
        }
        self.nets().map(|_| ())
    }

    pub fn nets(&self) -> std::result::Result<VqNets, String> {
        let [h, w, c] = self.image;
        let image = Shape::new(h, w, c);
        let mut layout = ParamLayout::default();
        let (c0, c1) = (self.channels[0], self.channels[1]);
        let last = |j: usize| if j + 1 == self.blocks { Act::Relu } else { Act::Identity };
        let mid = if self.blocks > 0 { Act::Identity } else { Act::Relu };
        let mut e = NetBuilder::new(&mut layout, "enc", image)
            .conv("conv1", c0, 4, 2, 1, false, Act::Relu)?
            .conv("conv2", c1, 4, 2, 1, false, mid)?;
        for j in 0..self.blocks {
            e = e.res(&format!("res{}", j + 1), self.res_hidden, last(j))?;
        }
        let encoder = e.conv("pre_vq", self.dim, 1, 1, 0, false, Act::Identity)?.finish();
        let grid = encoder.output();
        let mut d = NetBuilder::new(&mut layout, "dec", grid).conv("conv_in", c1, 3, 1, 1, false, mid)?;
        for j in 0..self.blocks {
            d = d.res(&format!("res{}", j + 1), self.res_hidden, last(j))?;
        }
        let decoder =
            d.conv("deconv2", c0, 4, 2, 1, true, Act::Relu)?.conv("deconv1", c, 4, 2, 1, true, Act::Identity)?;
        let decoder = decoder.finish();
        if decoder.output() != image {
            return Err(format!("the decoder gives {} images, the data has {image}", decoder.output()));
        }
        let (k, dd) = (self.codes, self.dim);
        // Tables: a block of R rows is a (din = R − 1, dout = cols) block. The codebook starts in
        // U(−1/K, 1/K) (fan-in K²).
        let embed = layout.push_with_fan_in("vq.embed", k - 1, dd, Act::Identity, k * k);
        let count = layout.push_with_fan_in("vq.cluster_size", 0, k, Act::Identity, 1);
        let sum = layout.push_with_fan_in("vq.embed_avg", k - 1, dd, Act::Identity, 1);
        Ok(VqNets { layout, encoder, decoder, embed, count, sum })
    }

    /// Initial parameters: the layout's seeded init, then N = 1 and m = e for the EMA state.
    pub fn init(&self, nets: &VqNets, seed: u64) -> Vec<f32> {
        let mut p = nets.layout.init(seed);
        let (e, c, s) =
            (&nets.layout.layers[nets.embed], &nets.layout.layers[nets.count], &nets.layout.layers[nets.sum]);
        p[c.offset..c.offset + c.len()].fill(1.0);
        p.copy_within(e.offset..e.offset + e.len(), s.offset);
        p
    }

    /// Parameters Adam trains: everything before the codebook (EMA) or before the EMA state.
    pub fn trainable(&self, nets: &VqNets) -> usize {
        let l = &nets.layout.layers;
        if self.ema {
            l[nets.embed].offset
        } else {
            l[nets.count].offset
        }
    }

    /// FLOPs of one training step at batch `b` (convs forward and backward, plus the distances).
    pub fn step_flops(&self, b: usize) -> f64 {
        self.nets().map_or(0.0, |n| {
            let g = n.encoder.output();
            n.encoder.flops_step(b) + n.decoder.flops_step(b) + 3.0 * (b * g.h * g.w * self.codes * self.dim) as f64
        })
    }
}

/// A VQ model's buffers and programs on the GPU.
pub struct VqVae {
    pub cfg: VqConfig,
    pub batch: usize,
    pub core: Core,
    pub nets: VqNets,
    pub trainable: usize,
    /// Input batch [B, H·W·C] (padded images).
    pub x: wgpu::Buffer,
    pub enc: GpuNet,
    pub dec: GpuNet,
    pub q: Vq,
    pub idx: wgpu::Buffer,
    pub zq: wgpu::Buffer,
    pub dzq: wgpu::Buffer,
    pub dist: wgpu::Buffer,
    /// Assignment scratch (‖e‖², z·eᵀ) and the vectors sorted by code (starts, order).
    pub scratch: wgpu::Buffer,
    pub members: wgpu::Buffer,
    pub counts: wgpu::Buffer,
    /// Per code, the vectors assigned since the last reset (the host resets it before evaluation).
    pub usage: wgpu::Buffer,
    /// Perplexity, used codes and restarts (see kernels::vq::VQM_*).
    pub vqm: wgpu::Buffer,
    pub rows: wgpu::Buffer,
}

fn block<'a>(buf: &'a wgpu::Buffer, l: &Linear) -> View<'a> {
    View::new(buf, (l.offset * 4) as u64, l.len())
}

impl VqVae {
    pub fn new(gpu: &Gpu, cfg: &VqConfig, batch: usize, seed: u64) -> Result<VqVae> {
        let shape = |m: String| GpuError::Shape { op: "vq-vae", message: m };
        cfg.validate().map_err(shape)?;
        if batch == 0 {
            return Err(shape("batch must be > 0".into()));
        }
        let nets = cfg.nets().map_err(shape)?;
        let grid = nets.encoder.output();
        let n = batch * grid.h * grid.w;
        let q = Vq { n, d: cfg.dim, k: cfg.codes };
        let [h, w, c] = cfg.image;
        let largest = [
            (nets.layout.total * 4) as u64,
            (batch * h * w * c * 4) as u64,
            GpuNet::largest_buffer(&nets.encoder, batch),
            GpuNet::largest_buffer(&nets.decoder, batch),
        ]
        .into_iter()
        .max()
        .unwrap();
        gpu.check_needs(&Needs {
            max_buffer_bytes: largest,
            max_binding_bytes: largest,
            max_storage_buffers_per_stage: 8,
        })?;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let m = VqVae {
            core: Core::new(gpu, nets.layout.clone(), &cfg.init(&nets, seed)),
            trainable: cfg.trainable(&nets),
            x: f(format!("x[{batch}x{h}x{w}x{c}]"), batch * h * w * c),
            enc: GpuNet::new(gpu, &nets.encoder, batch)?,
            dec: GpuNet::new(gpu, &nets.decoder, batch)?,
            idx: gpu.storage(&format!("vq.idx[{n}]"), (n * 4) as u64),
            zq: f(format!("vq.zq[{n}x{}]", cfg.dim), n * cfg.dim),
            dzq: f(format!("vq.dzq[{n}x{}]", cfg.dim), n * cfg.dim),
            dist: f(format!("vq.dist[{n}]"), n),
            scratch: f(format!("vq.scratch[{}]", q.scratch_len()), q.scratch_len()),
            members: gpu.storage(&format!("vq.members[{}]", q.members_len()), (q.members_len() * 4) as u64),
            counts: f(format!("vq.counts[{}]", cfg.codes), cfg.codes),
            usage: f(format!("vq.usage[{}]", cfg.codes), cfg.codes),
            vqm: f("vq.metrics".into(), VQM_LEVEL_WORDS),
            rows: f(format!("rows[{batch}x2]"), batch * 2),
            q,
            nets,
            cfg: cfg.clone(),
            batch,
        };
        gpu.check()?;
        Ok(m)
    }

    fn layer(&self, i: usize) -> &Linear {
        &self.core.layout.layers[i]
    }

    /// The codebook, EMA count and EMA sum as one slice of the parameter buffer.
    fn table(&self) -> (View<'_>, TableLayout) {
        let (e, c, s) = (self.layer(self.nets.embed), self.layer(self.nets.count), self.layer(self.nets.sum));
        let start = e.offset;
        let end = s.offset + s.len();
        let at = TableLayout { count: c.offset - start, sum: s.offset - start, code: 0 };
        (View::new(&self.core.params, (start * 4) as u64, end - start), at)
    }

    /// Vectors per image.
    pub fn per_row(&self) -> usize {
        self.q.n / self.batch
    }

    /// Pixels per image that the loss counts.
    pub fn valid_pixels(&self) -> usize {
        self.cfg.valid[0] * self.cfg.valid[1] * self.cfg.image[2]
    }

    pub fn window(&self) -> (usize, usize, usize, usize) {
        let [vh, vw] = self.cfg.valid;
        let (top, left, _, _) = self.cfg.padding(vh, vw);
        (top, left, vh, vw)
    }

    /// The decoder output [B, H, W, C].
    pub fn decoded(&self) -> &wgpu::Buffer {
        self.dec.output()
    }

    /// Encoder → assign → decoder → recon MSE (gradient scaled for mse / `variance`).
    pub fn forward(&self, gpu: &Gpu, variance: f32) -> Result<Vec<Launch>> {
        let l = &self.core.layout;
        let mut out = self.enc.forward(gpu, l, &self.core.params, &self.x)?;
        out.extend(self.q.assign(
            gpu,
            "vq",
            self.enc.output().into(),
            block(&self.core.params, self.layer(self.nets.embed)),
            (&self.idx).into(),
            (&self.zq).into(),
            (&self.dist).into(),
            (&self.scratch).into(),
        )?);
        out.extend(self.decode(gpu)?);
        let [h, w, c] = self.cfg.image;
        let mse = ReconMse {
            batch: self.batch,
            h,
            w,
            c,
            window: self.window(),
            scale: 2.0 / ((self.batch * self.valid_pixels()) as f32 * variance),
            per_row: self.per_row(),
            second: None,
        };
        out.push(mse.launch(
            gpu,
            "recon",
            self.decoded().into(),
            (&self.x).into(),
            self.dec.d_output().into(),
            (&self.rows).into(),
            (&self.dist).into(),
        )?);
        Ok(out)
    }

    /// The decoder alone, from the code vectors in `zq`.
    pub fn decode(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        self.dec.forward(gpu, &self.core.layout, &self.core.params, &self.zq)
    }

    /// Backward through the decoder, the quantiser and the encoder; the codebook update or gradient.
    pub fn backward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (l, p, g) = (&self.core.layout, &self.core.params, &self.core.grads);
        let mut out = self.dec.backward(gpu, l, p, g, &self.zq, Some((&self.dzq, Act::Identity)))?;
        let code = block(p, self.layer(self.nets.embed));
        let z = self.enc.output();
        let nd = (self.q.n * self.q.d) as f32;
        out.push(self.q.backward(
            gpu,
            "vq",
            2.0 * self.cfg.beta / nd,
            z.into(),
            code,
            (&self.idx).into(),
            (&self.dzq).into(),
            self.enc.d_output().into(),
        )?);
        out.push(self.q.counts(
            gpu,
            "train",
            None,
            (&self.core.state).into(),
            (&self.idx).into(),
            (&self.counts).into(),
        )?);
        out.extend(self.q.sort(gpu, "vq", (&self.counts).into(), (&self.idx).into(), (&self.members).into())?);
        if self.cfg.ema {
            let (table, at) = self.table();
            out.push(self.q.stats_ema(
                gpu,
                "vq",
                self.cfg.decay,
                at,
                z.into(),
                (&self.members).into(),
                (&self.counts).into(),
                table,
            )?);
            let (table, at) = self.table();
            out.push(self.q.ema_finish(
                gpu,
                "vq",
                self.cfg.eps,
                self.cfg.restart.then_some(self.cfg.restart_threshold),
                VQM_TRAIN,
                at,
                z.into(),
                table,
                (&self.core.state).into(),
                (&self.vqm).into(),
            )?);
        } else {
            out.push(self.q.stats_grad(
                gpu,
                "vq",
                2.0 / nd,
                z.into(),
                code,
                (&self.members).into(),
                (&self.counts).into(),
                block(g, self.layer(self.nets.embed)),
            )?);
        }
        out.push(self.q.usage(
            gpu,
            "train",
            VQM_TRAIN,
            (&self.counts).into(),
            (&self.vqm).into(),
            (&self.usage).into(),
        )?);
        out.extend(self.enc.backward(gpu, l, p, g, &self.x, None)?);
        Ok(out)
    }

    fn gather(&self, gpu: &Gpu, data: &GpuDataset, word: u32, label: &str) -> Result<Launch> {
        if data.dim != self.x.size() as usize / 4 / self.batch {
            return Err(GpuError::Shape {
                op: "vq-vae",
                message: format!("data has {} values per item, the model expects {:?}", data.dim, self.cfg.image),
            });
        }
        let g = Gather { batch: self.batch, dim: data.dim, n_items: data.n, batch_word: word, binarize: false };
        g.launch(gpu, label, (&self.core.state).into(), (&data.data).into(), (&data.perm).into(), (&self.x).into())
    }

    fn metrics(&self, gpu: &Gpu, data: &GpuDataset, word: u32, slot: u32, label: &str) -> Result<Launch> {
        reduce::metrics_accumulate(
            gpu,
            label,
            self.batch,
            data.n,
            word,
            slot,
            1.0,
            (&self.core.state).into(),
            (&self.rows).into(),
            (&self.core.metrics).into(),
        )
    }

    /// One training step over the dataset's next batch (`variance`: of the data, for the loss scale).
    pub fn train_program(
        &self,
        gpu: &Gpu,
        data: &GpuDataset,
        adam: &Adam,
        max_norm: f32,
        variance: f32,
    ) -> Result<Program> {
        let mut p = Program::new("vq_train_step");
        p.push(self.gather(gpu, data, W_TRAIN_BATCH, "train")?);
        p.extend(self.forward(gpu, variance)?);
        p.extend(self.backward(gpu)?);
        p.extend(self.core.update(gpu, adam, max_norm, self.trainable)?);
        p.push(self.metrics(gpu, data, W_TRAIN_BATCH, SLOT_TRAIN, "train")?);
        p.push(kdata::advance(gpu, (&self.core.state).into())?);
        Ok(p)
    }

    /// One evaluation batch: forward, loss, code usage of the rows inside the dataset.
    pub fn eval_program(&self, gpu: &Gpu, data: &GpuDataset) -> Result<Program> {
        let mut p = Program::new("vq_eval_batch");
        p.push(self.gather(gpu, data, W_EVAL_BATCH, "eval")?);
        p.extend(self.forward(gpu, 1.0)?);
        let valid = Valid { batch: self.batch, n_items: data.n, batch_word: W_EVAL_BATCH, per_row: self.per_row() };
        let st = (&self.core.state).into();
        p.push(self.q.counts(gpu, "eval", Some(valid), st, (&self.idx).into(), (&self.counts).into())?);
        p.push(self.q.usage(gpu, "eval", VQM_EVAL, (&self.counts).into(), (&self.vqm).into(), (&self.usage).into())?);
        p.push(self.metrics(gpu, data, W_EVAL_BATCH, SLOT_EVAL, "eval")?);
        p.push(kdata::advance_eval(gpu, (&self.core.state).into())?);
        Ok(p)
    }

    pub fn reset_vq_metrics(&self, gpu: &Gpu) {
        gpu.write(&self.vqm, 0, &[0f32; VQM_LEVEL_WORDS]);
        gpu.write(&self.usage, 0, &vec![0f32; self.cfg.codes]);
    }

    /// (vq metrics words, usage per code).
    pub fn read_vq_metrics(&self, gpu: &Gpu) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((gpu.read(&self.vqm, 0, VQM_LEVEL_WORDS)?, gpu.read(&self.usage, 0, self.cfg.codes)?))
    }

    /// Checkpoint tensors: convs as PyTorch [out, in, k, k] (transposed [in, out, k, k]), tables [K, D].
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let nets = &self.nets;
        let mut out = super::vae::net_tensors(&nets.layout, [&nets.encoder, &nets.decoder], None);
        for (b, shape) in [
            (nets.embed, vec![self.cfg.codes, self.cfg.dim]),
            (nets.count, vec![self.cfg.codes]),
            (nets.sum, vec![self.cfg.codes, self.cfg.dim]),
        ] {
            let l = &nets.layout.layers[b];
            out.push(NamedTensor { name: l.name.clone(), shape, index: (l.offset..l.offset + l.len()).collect() });
        }
        out
    }
}
