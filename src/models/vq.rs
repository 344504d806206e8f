//! VQ-VAE: conv encoder with residual blocks → grid of D-dim vectors → nearest of K codes (EMA or
//! gradient-trained codebook, straight-through gradient, commitment loss β) → conv decoder → MSE.
//! VQ-VAE-2 (levels = 2) adds a top level at 1/8 whose decoded codes condition the bottom quantiser;
//! see [`TopNets`]. Each level ([`Level`]) has its own codebook, commitment loss and usage metrics.
//!
//! The training step, recorded once:
//!   gather → encoder → assign (argmin + gather of the codes) → decoder → recon MSE → decoder backward →
//!   straight-through + commitment → code counts → EMA statistics and finish (or codebook gradient) →
//!   usage (perplexity, used codes) → encoder backward → gradient norm → Adam → metrics+advance
//! The loss is mse / var(data) + β·mean((z_e − sg\[e\])²) (+ mean((sg\[z_e\] − e)²) for a gradient-trained
//! codebook). Images are zero-padded to a multiple of the total stride; the loss ignores the padding.
//!
//! Parameters, in one flat layout: the conv blocks, then the codebook `vq.embed` [K, D] (trained by
//! Adam only without EMA; two levels: `vq.bottom.embed`, `vq.top.embed`), then the EMA state
//! `vq.cluster_size` \[K\] and `vq.embed_avg` [K, D] per level (never touched by Adam). The EMA state starts at N = 1, m = e, so e = m / N holds from step 0.

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::vae::{GpuDataset, NamedTensor};
use crate::gpu::{Gpu, GpuError, Launch, Program, Result, View};
use crate::kernels::data::{Gather, W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::optim::Adam;
use crate::kernels::reduce::{self, MetricsAt, SLOT_EVAL, SLOT_TRAIN};
use crate::kernels::vq::{ReconMse, TableLayout, Valid, Vq, VQM_EVAL, VQM_LEVEL_WORDS, VQM_TRAIN};
use crate::kernels::Act;
use crate::nn::gpu::{Backward, GpuNet};
use crate::nn::{Linear, Net, NetBuilder, ParamLayout, Shape, BLOCK_ALIGN};

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
    /// Residual blocks after each encoder stage and before each decoder's transposed convs.
    pub blocks: usize,
    /// 1: VQ-VAE (codes at 1/4 of the input); 2: VQ-VAE-2 (a top level at 1/8 too).
    pub levels: usize,
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
            levels: 1,
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

/// Layout blocks of one level's codebook, EMA count and EMA sum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tables {
    pub embed: usize,
    pub count: usize,
    pub sum: usize,
}

/// The extra networks of VQ-VAE-2 (a top level at 1/8 of the input on top of the bottom at 1/4).
///   h = encoder(x);  z_t = top.encoder(h);  q_t = quantise_t(z_t)
///   z_b = top.pre_vq(h) + top.decoder(q_t);  q_b = quantise_b(z_b)      (the top code conditions z_b)
///   x̂ = decoder(top.dec_in(q_b) + top.up(q_t))                        (the decoder sees both levels)
/// A sum of two convs equals one conv over the concatenated channels, so this is VQ-VAE-2's
/// concatenations without a concat kernel.
pub struct TopNets {
    pub encoder: Net,
    pub decoder: Net,
    pub pre_vq: Net,
    pub dec_in: Net,
    pub up: Net,
}

/// The networks and the codebook blocks of a VQ model.
pub struct VqNets {
    pub layout: ParamLayout,
    /// x → z (one level) or x → h, the bottom features (two levels).
    pub encoder: Net,
    /// zq → x̂ (one level) or top.dec_in(q_b) + top.up(q_t) → x̂ (two levels).
    pub decoder: Net,
    pub top: Option<TopNets>,
    /// Per level, bottom first.
    pub tables: Vec<Tables>,
}

impl VqNets {
    /// Every net, in layout order (for checkpoints and FLOP counts).
    pub fn all(&self) -> Vec<&Net> {
        let mut v = vec![&self.encoder];
        if let Some(t) = &self.top {
            v.extend([&t.encoder, &t.decoder, &t.pre_vq, &t.dec_in, &t.up]);
        }
        v.push(&self.decoder);
        v
    }

    /// The code grid of each level, bottom first.
    pub fn grids(&self) -> Vec<Shape> {
        let mut v = vec![self.top.as_ref().map_or(self.encoder.output(), |t| t.pre_vq.output())];
        if let Some(t) = &self.top {
            v.push(t.encoder.output());
        }
        v
    }
}

impl VqConfig {
    /// The encoder's total stride (images must be a multiple of it): 4, or 8 with a top level.
    pub fn stride(&self) -> usize {
        1 << (self.channels.len() + self.levels - 1)
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
        if !(1..=2).contains(&self.levels) {
            return Err(format!("levels must be 1 (VQ-VAE) or 2 (VQ-VAE-2), got {}", self.levels));
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
        let (c0, c1, dd) = (self.channels[0], self.channels[1], self.dim);
        let last = |j: usize| if j + 1 == self.blocks { Act::Relu } else { Act::Identity };
        let mid = if self.blocks > 0 { Act::Identity } else { Act::Relu };
        fn add_res<'a>(
            mut b: NetBuilder<'a>,
            cfg: &VqConfig,
            last: impl Fn(usize) -> Act,
        ) -> std::result::Result<NetBuilder<'a>, String> {
            for j in 0..cfg.blocks {
                b = b.res(&format!("res{}", j + 1), cfg.res_hidden, last(j))?;
            }
            Ok(b)
        }
        let two = self.levels == 2;
        let e = NetBuilder::new(&mut layout, "enc", image)
            .conv("conv1", c0, 4, 2, 1, false, Act::Relu)?
            .conv("conv2", c1, 4, 2, 1, false, mid)?;
        let e = add_res(e, self, last)?;
        let encoder = if two { e.finish() } else { e.conv("pre_vq", dd, 1, 1, 0, false, Act::Identity)?.finish() };
        let grid = if two { Shape::new(encoder.output().h, encoder.output().w, dd) } else { encoder.output() };
        let top = if two {
            let hb = encoder.output();
            let t = NetBuilder::new(&mut layout, "enc_t", hb).conv("conv", c1, 4, 2, 1, false, mid)?;
            let t_encoder = add_res(t, self, last)?.conv("pre_vq", dd, 1, 1, 0, false, Act::Identity)?.finish();
            let t =
                NetBuilder::new(&mut layout, "dec_t", t_encoder.output()).conv("conv_in", c1, 3, 1, 1, false, mid)?;
            let t_decoder = add_res(t, self, last)?.conv("deconv", dd, 4, 2, 1, true, Act::Identity)?.finish();
            let id = Act::Identity;
            let pre_vq = NetBuilder::new(&mut layout, "pre_vq_b", hb).conv("conv", dd, 1, 1, 0, false, id)?.finish();
            let dec_in = NetBuilder::new(&mut layout, "dec_in", grid).conv("conv", c1, 3, 1, 1, false, id)?.finish();
            let up = NetBuilder::new(&mut layout, "up_t", t_encoder.output())
                .conv("deconv", c1, 4, 2, 1, true, id)?
                .finish();
            let top = TopNets { encoder: t_encoder, decoder: t_decoder, pre_vq, dec_in, up };
            if top.decoder.output() != grid || top.up.output() != top.dec_in.output() {
                return Err(format!(
                    "the top level's grid {} does not upsample to the bottom's {grid}",
                    top.encoder.output()
                ));
            }
            Some(top)
        } else {
            None
        };
        let d = if two {
            NetBuilder::new(&mut layout, "dec", Shape::new(grid.h, grid.w, c1))
        } else {
            NetBuilder::new(&mut layout, "dec", grid).conv("conv_in", c1, 3, 1, 1, false, mid)?
        };
        let decoder = add_res(d, self, last)?.conv("deconv2", c0, 4, 2, 1, true, Act::Relu)?.conv(
            "deconv1",
            c,
            4,
            2,
            1,
            true,
            Act::Identity,
        )?;
        let decoder = decoder.finish();
        if decoder.output() != image {
            return Err(format!("the decoder gives {} images, the data has {image}", decoder.output()));
        }
        let k = self.codes;
        let names: &[&str] = if two { &["vq.bottom", "vq.top"] } else { &["vq"] };
        // Tables: a block of R rows is a (din = R − 1, dout = cols) block. The codebooks start in
        // U(−1/K, 1/K) (fan-in K²). Codebooks first, then the EMA state, so that Adam's range is one prefix.
        let embeds: Vec<usize> = names
            .iter()
            .map(|n| layout.push_with_fan_in(&format!("{n}.embed"), k - 1, dd, Act::Identity, k * k))
            .collect();
        let mut tables = Vec::new();
        for (n, &embed) in names.iter().zip(&embeds) {
            let count = layout.push_with_fan_in(&format!("{n}.cluster_size"), 0, k, Act::Identity, 1);
            let sum = layout.push_with_fan_in(&format!("{n}.embed_avg"), k - 1, dd, Act::Identity, 1);
            tables.push(Tables { embed, count, sum });
        }
        Ok(VqNets { layout, encoder, decoder, top, tables })
    }

    /// Initial parameters: the layout's seeded init, then N = 1 and m = e for the EMA state.
    pub fn init(&self, nets: &VqNets, seed: u64) -> Vec<f32> {
        let mut p = nets.layout.init(seed);
        for t in &nets.tables {
            let l = &nets.layout.layers;
            let (e, c, s) = (&l[t.embed], &l[t.count], &l[t.sum]);
            p[c.offset..c.offset + c.len()].fill(1.0);
            p.copy_within(e.offset..e.offset + e.len(), s.offset);
        }
        p
    }

    /// Parameters Adam trains: everything before the codebooks (EMA) or before the EMA state.
    pub fn trainable(&self, nets: &VqNets) -> usize {
        let l = &nets.layout.layers;
        if self.ema {
            l[nets.tables[0].embed].offset
        } else {
            l[nets.tables[0].count].offset
        }
    }

    /// FLOPs of one training step at batch `b` (convs forward and backward, plus the distances).
    pub fn step_flops(&self, b: usize) -> f64 {
        self.nets().map_or(0.0, |n| {
            let convs: f64 = n.all().iter().map(|net| net.flops_step(b)).sum();
            let dist: f64 = n.grids().iter().map(|g| 3.0 * (b * g.h * g.w * self.codes * self.dim) as f64).sum();
            convs + dist
        })
    }
}

/// One quantiser level on the GPU.
pub struct Level {
    pub q: Vq,
    pub tables: Tables,
    pub idx: wgpu::Buffer,
    pub zq: wgpu::Buffer,
    pub dzq: wgpu::Buffer,
    /// Where the level's distances start in `dist`, its metrics in `vqm` and its usage in `usage`.
    pub dist_at: usize,
    pub vqm_at: usize,
    pub usage_at: usize,
}

/// VQ-VAE-2's extra nets, and the gradients that meet: h feeds the top encoder and the bottom pre-VQ
/// conv, q_t feeds the top decoder and the decoder's up-conv.
pub struct TopGpu {
    pub enc: GpuNet,
    pub dec: GpuNet,
    pub pre_vq: GpuNet,
    pub dec_in: GpuNet,
    pub up: GpuNet,
    /// d q_t through the up-conv, d h through the bottom pre-VQ conv.
    pub dq_up: wgpu::Buffer,
    pub dh_pre: wgpu::Buffer,
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
    pub top: Option<TopGpu>,
    /// Bottom level first.
    pub levels: Vec<Level>,
    /// ‖z − e‖² per vector, every level.
    pub dist: wgpu::Buffer,
    /// Assignment scratch (‖e‖², z·eᵀ) and the vectors sorted by code (starts, order); shared by the
    /// levels, which use them one after the other.
    pub scratch: wgpu::Buffer,
    pub members: wgpu::Buffer,
    pub counts: wgpu::Buffer,
    /// Per level and code, the vectors assigned since the last reset (the host resets it before evaluation).
    pub usage: wgpu::Buffer,
    /// Per level, perplexity, used codes and restarts (see kernels::vq::VQM_*).
    pub vqm: wgpu::Buffer,
    pub rows: wgpu::Buffer,
}

fn block<'a>(buf: &'a wgpu::Buffer, l: &Linear) -> View<'a> {
    View::new(buf, (l.offset * 4) as u64, l.len())
}

fn at(buf: &wgpu::Buffer, offset: usize, len: usize) -> View<'_> {
    View::new(buf, (offset * 4) as u64, len)
}

impl VqVae {
    pub fn new(gpu: &Gpu, cfg: &VqConfig, batch: usize, seed: u64) -> Result<VqVae> {
        let shape = |m: String| GpuError::Shape { op: "vq-vae", message: m };
        cfg.validate().map_err(shape)?;
        if batch == 0 {
            return Err(shape("batch must be > 0".into()));
        }
        let nets = cfg.nets().map_err(shape)?;
        let [h, w, c] = cfg.image;
        let mut largest = vec![(nets.layout.total * 4) as u64, (batch * h * w * c * 4) as u64];
        largest.extend(nets.all().iter().map(|n| GpuNet::largest_buffer(n, batch)));
        let qs: Vec<Vq> = nets.grids().iter().map(|g| Vq { n: batch * g.h * g.w, d: cfg.dim, k: cfg.codes }).collect();
        largest.extend(qs.iter().map(|q| (q.scratch_len() * 4) as u64));
        gpu.check_buffers(largest)?;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let (k, d) = (cfg.codes, cfg.dim);
        let mut levels = Vec::new();
        let mut dist_at = 0;
        for (i, (q, t)) in qs.iter().zip(&nets.tables).enumerate() {
            let n = q.n;
            levels.push(Level {
                q: *q,
                tables: *t,
                idx: gpu.storage(&format!("vq{i}.idx[{n}]"), (n * 4) as u64),
                zq: f(format!("vq{i}.zq[{n}x{d}]"), n * d),
                dzq: f(format!("vq{i}.dzq[{n}x{d}]"), n * d),
                dist_at,
                vqm_at: i * VQM_LEVEL_WORDS,
                usage_at: i * k.next_multiple_of(BLOCK_ALIGN),
            });
            // Views start at multiples of 256 bytes (wgpu's largest storage offset alignment).
            dist_at = (dist_at + n).next_multiple_of(BLOCK_ALIGN);
        }
        let scratch = qs.iter().map(Vq::scratch_len).max().unwrap();
        let members = qs.iter().map(Vq::members_len).max().unwrap();
        let top = match &nets.top {
            None => None,
            Some(t) => Some(TopGpu {
                enc: GpuNet::new(gpu, &t.encoder, batch)?,
                dec: GpuNet::new(gpu, &t.decoder, batch)?,
                pre_vq: GpuNet::new(gpu, &t.pre_vq, batch)?,
                dec_in: GpuNet::new(gpu, &t.dec_in, batch)?,
                up: GpuNet::new(gpu, &t.up, batch)?,
                dq_up: f("vq1.dzq.up".into(), qs[1].n * d),
                dh_pre: f("enc.dh.pre_vq".into(), batch * nets.encoder.output().len()),
            }),
        };
        let nl = levels.len();
        let m = VqVae {
            core: Core::new(gpu, nets.layout.clone(), &cfg.init(&nets, seed)),
            trainable: cfg.trainable(&nets),
            x: f(format!("x[{batch}x{h}x{w}x{c}]"), batch * h * w * c),
            enc: GpuNet::new(gpu, &nets.encoder, batch)?,
            dec: GpuNet::new(gpu, &nets.decoder, batch)?,
            top,
            dist: f(format!("vq.dist[{dist_at}]"), dist_at),
            scratch: f(format!("vq.scratch[{scratch}]"), scratch),
            members: gpu.storage(&format!("vq.members[{members}]"), (members * 4) as u64),
            counts: f(format!("vq.counts[{k}]"), k),
            usage: f(format!("vq.usage[{nl}x{k}]"), nl * k.next_multiple_of(BLOCK_ALIGN)),
            vqm: f("vq.metrics".into(), nl * VQM_LEVEL_WORDS),
            rows: f(format!("rows[{batch}x2]"), batch * 2),
            levels,
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

    /// A level's codebook, EMA count and EMA sum as one slice of the parameter buffer.
    fn table(&self, t: &Tables) -> (View<'_>, TableLayout) {
        let (e, c, s) = (self.layer(t.embed), self.layer(t.count), self.layer(t.sum));
        let start = e.offset.min(c.offset).min(s.offset);
        let end = (s.offset + s.len()).max(c.offset + c.len()).max(e.offset + e.len());
        let at = TableLayout { count: c.offset - start, sum: s.offset - start, code: e.offset - start };
        (View::new(&self.core.params, (start * 4) as u64, end - start), at)
    }

    /// Vectors per image of the bottom level.
    pub fn per_row(&self) -> usize {
        self.levels[0].q.n / self.batch
    }

    /// Vectors per image, all levels.
    pub fn vectors_per_row(&self) -> usize {
        self.levels.iter().map(|l| l.q.n / self.batch).sum()
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

    /// The nearest code of every vector of `z` for level `i`.
    fn assign(&self, gpu: &Gpu, i: usize, z: View) -> Result<Vec<Launch>> {
        let lv = &self.levels[i];
        lv.q.assign(
            gpu,
            &format!("vq{i}"),
            z,
            block(&self.core.params, self.layer(lv.tables.embed)),
            (&lv.idx).into(),
            (&lv.zq).into(),
            at(&self.dist, lv.dist_at, lv.q.n),
            (&self.scratch).into(),
        )
    }

    /// Encoder → assign (top, then bottom) → decoder → recon MSE (gradient scaled for mse / `variance`).
    pub fn forward(&self, gpu: &Gpu, variance: f32) -> Result<Vec<Launch>> {
        let (l, p) = (&self.core.layout, &self.core.params);
        let mut out = self.enc.forward(gpu, l, p, &self.x)?;
        match &self.top {
            None => out.extend(self.assign(gpu, 0, self.enc.output().into())?),
            Some(t) => {
                let h = self.enc.output();
                out.extend(t.enc.forward(gpu, l, p, h)?);
                out.extend(self.assign(gpu, 1, t.enc.output().into())?);
                out.extend(t.dec.forward(gpu, l, p, &self.levels[1].zq)?);
                out.extend(t.pre_vq.forward_add(gpu, l, p, h, Some(t.dec.output()))?);
                out.extend(self.assign(gpu, 0, t.pre_vq.output().into())?);
            }
        }
        out.extend(self.decode(gpu)?);
        let [h, w, c] = self.cfg.image;
        let second = self.levels.get(1).map(|t| (t.dist_at, t.q.n / self.batch));
        let mse = ReconMse {
            batch: self.batch,
            h,
            w,
            c,
            window: self.window(),
            scale: 2.0 / ((self.batch * self.valid_pixels()) as f32 * variance),
            per_row: self.per_row(),
            second,
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

    /// The decoder alone, from the code vectors in each level's `zq`.
    pub fn decode(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (l, p) = (&self.core.layout, &self.core.params);
        match &self.top {
            None => self.dec.forward(gpu, l, p, &self.levels[0].zq),
            Some(t) => {
                let mut out = t.up.forward(gpu, l, p, &self.levels[1].zq)?;
                out.extend(t.dec_in.forward_add(gpu, l, p, &self.levels[0].zq, Some(t.up.output()))?);
                out.extend(self.dec.forward(gpu, l, p, t.dec_in.output())?);
                Ok(out)
            }
        }
    }

    /// Level `i`'s backward and codebook step: dz = dzq + the commitment gradient into `dz`, then the
    /// code counts, the sort by code, the EMA update (or the codebook gradient) and the usage metrics.
    fn level_backward(&self, gpu: &Gpu, i: usize, z: View, dz: View) -> Result<Vec<Launch>> {
        let lv = &self.levels[i];
        let (q, g) = (&lv.q, &self.core.grads);
        let name = format!("vq{i}");
        let code = block(&self.core.params, self.layer(lv.tables.embed));
        let nd = (q.n * q.d) as f32;
        let mut out =
            vec![q.backward(gpu, &name, 2.0 * self.cfg.beta / nd, z, code, (&lv.idx).into(), (&lv.dzq).into(), dz)?];
        let counts = at(&self.counts, 0, q.k);
        let st = (&self.core.state).into();
        out.push(q.counts(gpu, &name, None, st, (&lv.idx).into(), counts)?);
        out.extend(q.sort(gpu, &name, counts, (&lv.idx).into(), (&self.members).into())?);
        if self.cfg.ema {
            let (table, tl) = self.table(&lv.tables);
            let members = (&self.members).into();
            out.push(q.stats_ema(gpu, &name, self.cfg.decay, tl, z, members, counts, table)?);
            let (table, tl) = self.table(&lv.tables);
            let restart = self.cfg.restart.then_some(self.cfg.restart_threshold);
            let vqm = (&self.vqm).into();
            let slot = lv.vqm_at + VQM_TRAIN;
            out.push(q.ema_finish(gpu, &name, self.cfg.eps, restart, slot, tl, z, table, st, vqm)?);
        } else {
            let dcode = block(g, self.layer(lv.tables.embed));
            out.push(q.stats_grad(gpu, &name, 2.0 / nd, z, code, (&self.members).into(), counts, dcode)?);
        }
        out.push(self.usage(gpu, i, VQM_TRAIN)?);
        Ok(out)
    }

    fn usage(&self, gpu: &Gpu, i: usize, slot: usize) -> Result<Launch> {
        let lv = &self.levels[i];
        let k = lv.q.k;
        let label = format!("vq{i} {}", if slot == VQM_TRAIN { "train" } else { "eval" });
        lv.q.usage(
            gpu,
            &label,
            lv.vqm_at + slot,
            at(&self.counts, 0, k),
            (&self.vqm).into(),
            at(&self.usage, lv.usage_at, k),
        )
    }

    /// Backward through the decoder, the quantisers and the encoders; the codebook updates or gradients.
    pub fn backward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (l, p, g) = (&self.core.layout, &self.core.params, &self.core.grads);
        let id = Act::Identity;
        let Some(t) = &self.top else {
            let lv = &self.levels[0];
            let mut out = self.dec.backward(gpu, l, p, g, &lv.zq, Some((&lv.dzq, id)))?;
            out.extend(self.level_backward(gpu, 0, self.enc.output().into(), self.enc.d_output().into())?);
            out.extend(self.enc.backward(gpu, l, p, g, &self.x, None)?);
            return Ok(out);
        };
        let (bot, topl) = (&self.levels[0], &self.levels[1]);
        let h = self.enc.output();
        let h_act = self.nets.encoder.output_act();
        // Decoder, then its two inputs: dec_in(q_b) and up(q_t) share the output gradient.
        let mut out = self.dec.backward(gpu, l, p, g, t.dec_in.output(), Some((t.dec_in.d_output(), id)))?;
        out.extend(t.dec_in.backward(gpu, l, p, g, &bot.zq, Some((&bot.dzq, id)))?);
        let from_dec = Backward { d_output: Some(t.dec_in.d_output()), add_to_input: None };
        out.extend(t.up.backward_with(gpu, l, p, g, &topl.zq, Some((&t.dq_up, id)), from_dec)?);
        // Bottom quantiser: z_b = pre_vq(h) + top decoder(q_t) share dz_b.
        out.extend(self.level_backward(gpu, 0, t.pre_vq.output().into(), t.pre_vq.d_output().into())?);
        let from_zb = Backward { d_output: Some(t.pre_vq.d_output()), add_to_input: Some(&t.dq_up) };
        out.extend(t.dec.backward_with(gpu, l, p, g, &topl.zq, Some((&topl.dzq, id)), from_zb)?);
        out.extend(t.pre_vq.backward(gpu, l, p, g, h, Some((&t.dh_pre, h_act)))?);
        // Top quantiser, the top encoder (its input gradient adds the pre-VQ conv's), the encoder.
        out.extend(self.level_backward(gpu, 1, t.enc.output().into(), t.enc.d_output().into())?);
        let into_h = Backward { d_output: None, add_to_input: Some(&t.dh_pre) };
        out.extend(t.enc.backward_with(gpu, l, p, g, h, Some((self.enc.d_output(), h_act)), into_h)?);
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

    /// The batch's metrics into `slot`, then its cursor (`word`) advances.
    fn metrics(&self, gpu: &Gpu, data: &GpuDataset, word: u32, slot: u32, label: &str) -> Result<Launch> {
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
        Ok(p)
    }

    /// One evaluation batch: forward, loss, code usage of the rows inside the dataset.
    pub fn eval_program(&self, gpu: &Gpu, data: &GpuDataset) -> Result<Program> {
        let mut p = Program::new("vq_eval_batch");
        p.push(self.gather(gpu, data, W_EVAL_BATCH, "eval")?);
        p.extend(self.forward(gpu, 1.0)?);
        for (i, lv) in self.levels.iter().enumerate() {
            let per_row = lv.q.n / self.batch;
            let valid = Valid { batch: self.batch, n_items: data.n, batch_word: W_EVAL_BATCH, per_row };
            let st = (&self.core.state).into();
            let counts = at(&self.counts, 0, lv.q.k);
            p.push(lv.q.counts(gpu, &format!("vq{i} eval"), Some(valid), st, (&lv.idx).into(), counts)?);
            p.push(self.usage(gpu, i, VQM_EVAL)?);
        }
        p.push(self.metrics(gpu, data, W_EVAL_BATCH, SLOT_EVAL, "eval")?);
        Ok(p)
    }

    pub fn reset_vq_metrics(&self, gpu: &Gpu) {
        let nl = self.levels.len();
        gpu.write(&self.vqm, 0, &vec![0f32; nl * VQM_LEVEL_WORDS]);
        gpu.write(&self.usage, 0, &vec![0f32; self.usage.size() as usize / 4]);
    }

    /// Per level: (vq metrics words, usage per code).
    pub fn read_vq_metrics(&self, gpu: &Gpu) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let nl = self.levels.len();
        let words = gpu.read(&self.vqm, 0, nl * VQM_LEVEL_WORDS)?;
        let usage = gpu.read_f32(&self.usage)?;
        Ok(self
            .levels
            .iter()
            .map(|l| (words[l.vqm_at..][..VQM_LEVEL_WORDS].to_vec(), usage[l.usage_at..][..l.q.k].to_vec()))
            .collect())
    }

    /// Checkpoint tensors: convs as PyTorch [out, in, k, k] (transposed [in, out, k, k]), tables [K, D].
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let nets = &self.nets;
        let mut out = super::vae::net_tensors(&nets.layout, &nets.all(), None);
        let (k, d) = (self.cfg.codes, self.cfg.dim);
        for t in &nets.tables {
            for (b, shape) in [(t.embed, vec![k, d]), (t.count, vec![k]), (t.sum, vec![k, d])] {
                let l = &nets.layout.layers[b];
                out.push(NamedTensor { name: l.name.clone(), shape, index: (l.offset..l.offset + l.len()).collect() });
            }
        }
        out
    }
}
