//! A gated PixelCNN prior over the code maps of a trained VQ model (van den Oord et al. 2016, "Conditional
//! Image Generation with PixelCNN Decoders"), built from the conv kernels with masked weights.
//!
//! Input: a code map [H, W] of indices < K, embedded with the VQ model's (frozen) codebook as E [H, W, D].
//! Optionally a conditioning code map (VQ-VAE-2's top codes) [h, w], embedded with the top codebook.
//! Layer l = 0..L, with k×k convs (padding k/2) whose weights are masked (c = k/2 the centre tap):
//!   v_pre = convV_l(v_{l−1}) (+ cond(E_top) at l = 0)   vertical stack, 2C channels
//!           mask: rows kh < c at l = 0 (strictly above), kh ≤ c after
//!   v_l   = gate(v_pre) = tanh(v_pre\[:C\]) · σ(v_pre\[C:\])      (not computed for the last layer)
//!   h_pre = convH_l(h_{l−1}) + v2h_l(v_pre)              horizontal stack, 2C channels; v2h is 1×1
//!           mask: row kh = c and kw < c at l = 0 (strictly left), kw ≤ c after
//!   h_l   = res_l(gate(h_pre)) (+ h_{l−1} for l > 0)      res is 1×1, C → C
//! with v_{−1} = h_{−1} = E. v_l at (i, j) sees the input only in rows < i, and h_l only there and at
//! (i, < j), so the logits at (i, j) never see the code they predict (no blind spot either).
//! Head: logits = conv1×1(relu(conv1×1(h_{L−1}) → hidden)) → K; loss: the softmax cross-entropy per code.
//! cond (bottom prior of VQ-VAE-2): a transposed conv (kernel 4, stride 2, padding 1) from the top codes'
//! embedding [h, w, D] to [2h, 2w, 2C] = the bottom grid, unmasked (the top codes are given).
//!
//! Every weight lives in one flat [`ParamLayout`]; masked taps are zero at initialisation and their
//! gradients are zeroed each step (the `mask` of [`PriorNets`]), so Adam never moves them.

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::vae::{GpuDataset, NamedTensor};
use crate::gpu::{Gpu, GpuError, Launch, Program, Result};
use crate::kernels::data::{GatherWords, W_EVAL_BATCH, W_TRAIN_BATCH};
use crate::kernels::optim::Adam;
use crate::kernels::prior::{self, Categorical, Rows};
use crate::kernels::reduce::{self, SLOT_EVAL, SLOT_TRAIN};
use crate::kernels::Act;
use crate::nn::gpu::{Backward, GpuNet};
use crate::nn::{Net, NetBuilder, ParamLayout, Shape};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PriorConfig {
    /// The code map [H, W] (set from the VQ model's level).
    pub grid: [usize; 2],
    /// Codes K and code size D of the modelled level (set from the VQ model).
    pub codes: usize,
    pub dim: usize,
    /// The conditioning code map [h, w] (VQ-VAE-2's top level, for the bottom prior), if any.
    pub cond: Option<[usize; 2]>,
    /// Channels C of both stacks (the convs give 2C for the gate).
    pub channels: usize,
    /// Gated layers L (the first with the strict masks).
    pub layers: usize,
    /// Odd kernel size k >= 3 of the masked convs.
    pub kernel: usize,
    /// Hidden channels of the output head.
    pub hidden: usize,
}

impl Default for PriorConfig {
    fn default() -> Self {
        PriorConfig { grid: [8, 8], codes: 512, dim: 64, cond: None, channels: 64, layers: 6, kernel: 3, hidden: 256 }
    }
}

/// One gated layer's convs (single-layer nets whose blocks sit in the layout).
pub struct GatedLayer {
    pub conv_v: Net,
    pub v2h: Net,
    pub conv_h: Net,
    pub res: Net,
}

pub struct PriorNets {
    pub layout: ParamLayout,
    pub layers: Vec<GatedLayer>,
    /// conv1×1 → hidden (relu), conv1×1 → K.
    pub head: Net,
    /// The conditioning transposed conv (bottom prior of VQ-VAE-2).
    pub cond: Option<Net>,
    /// 1.0 per parameter, 0.0 on the masked taps (layout.total values).
    pub mask: Vec<f32>,
}

/// The block index of a single-conv net.
pub fn conv_block(net: &Net) -> usize {
    match net.layers[0].op {
        crate::nn::Op::Conv { block, .. } => block,
        _ => unreachable!("prior nets are single convs"),
    }
}

impl PriorConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [h, w] = self.grid;
        if h == 0 || w == 0 || self.codes < 2 || self.dim == 0 {
            return Err(format!("need a non-empty grid, codes >= 2 and dim >= 1, got {self:?}"));
        }
        if self.channels == 0 || self.layers == 0 || self.hidden == 0 || self.layers > 64 {
            return Err("need channels, hidden >= 1 and 1 <= layers <= 64".into());
        }
        if self.kernel < 3 || self.kernel % 2 == 0 {
            return Err(format!("the masked kernel must be odd and >= 3, got {}", self.kernel));
        }
        if let Some([ch, cw]) = self.cond {
            if 2 * ch != h || 2 * cw != w {
                return Err(format!("the conditioning map {ch}x{cw} must be half the grid {h}x{w}"));
            }
        }
        self.nets().map(|_| ())
    }

    /// Positions per code map.
    pub fn positions(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    pub fn nets(&self) -> std::result::Result<PriorNets, String> {
        let [h, w] = self.grid;
        let (c, k, id) = (self.channels, self.kernel, Act::Identity);
        let mut layout = ParamLayout::default();
        let one = |layout: &mut ParamLayout, name: &str, input: Shape, cout: usize, k: usize| {
            NetBuilder::new(layout, name, input).conv("conv", cout, k, 1, k / 2, false, id).map(|b| b.finish())
        };
        let mut layers = Vec::new();
        for l in 0..self.layers {
            let cin = if l == 0 { self.dim } else { c };
            let x = Shape::new(h, w, cin);
            let conv_v = one(&mut layout, &format!("gated{l}.v"), x, 2 * c, k)?;
            let v2h = one(&mut layout, &format!("gated{l}.v2h"), Shape::new(h, w, 2 * c), 2 * c, 1)?;
            let conv_h = one(&mut layout, &format!("gated{l}.h"), x, 2 * c, k)?;
            let res = one(&mut layout, &format!("gated{l}.res"), Shape::new(h, w, c), c, 1)?;
            layers.push(GatedLayer { conv_v, v2h, conv_h, res });
        }
        let head = NetBuilder::new(&mut layout, "head", Shape::new(h, w, c))
            .conv("hidden", self.hidden, 1, 1, 0, false, Act::Relu)?
            .conv("logits", self.codes, 1, 1, 0, false, id)?
            .finish();
        let cond = match self.cond {
            None => None,
            Some([ch, cw]) => Some(
                NetBuilder::new(&mut layout, "cond", Shape::new(ch, cw, self.dim))
                    .conv("deconv", 2 * c, 4, 2, 1, true, id)?
                    .finish(),
            ),
        };
        let mut mask = vec![1.0f32; layout.total];
        let centre = k / 2;
        for (l, g) in layers.iter().enumerate() {
            let cin = g.conv_v.input.c;
            let keep_v = |kh: usize, _kw: usize| if l == 0 { kh < centre } else { kh <= centre };
            let keep_h = |kh: usize, kw: usize| kh == centre && if l == 0 { kw < centre } else { kw <= centre };
            for (net, keep) in [(&g.conv_v, &keep_v as &dyn Fn(usize, usize) -> bool), (&g.conv_h, &keep_h)] {
                let b = &layout.layers[conv_block(net)];
                for tap in 0..k * k {
                    if !keep(tap / k, tap % k) {
                        // Rows (tap·Cin + ci) of the [k·k·Cin + 1, 2C] block.
                        let start = b.offset + tap * cin * b.dout;
                        mask[start..start + cin * b.dout].fill(0.0);
                    }
                }
            }
        }
        Ok(PriorNets { layout, layers, head, cond, mask })
    }

    /// Initial parameters: the layout's seeded init with the masked taps zeroed.
    pub fn init(&self, nets: &PriorNets, seed: u64) -> Vec<f32> {
        let mut p = nets.layout.init(seed);
        for (v, m) in p.iter_mut().zip(&nets.mask) {
            *v *= m;
        }
        p
    }

    /// FLOPs of one training step at batch `b` (every conv forward and backward; masked taps included,
    /// as the kernels compute them).
    pub fn step_flops(&self, b: usize) -> f64 {
        self.nets().map_or(0.0, |n| {
            let mut f: f64 =
                n.layers.iter().flat_map(|g| [&g.conv_v, &g.v2h, &g.conv_h, &g.res]).map(|x| x.flops_step(b)).sum();
            f += n.head.flops_step(b) + n.cond.as_ref().map_or(0.0, |c| c.flops_step(b));
            f
        })
    }
}

/// One gated layer on the GPU: its four convs, the gated activations and their gradients.
pub struct GpuGated {
    pub conv_v: GpuNet,
    pub v2h: GpuNet,
    pub conv_h: GpuNet,
    pub res: GpuNet,
    /// v_l = gate(v_pre) and its gradient (written by the next layer); absent for the last layer.
    pub v: Option<(wgpu::Buffer, wgpu::Buffer)>,
    /// gate(v_pre)'s input gradient [N, 2C] (added into v2h's input gradient).
    pub dv_gate: Option<wgpu::Buffer>,
    /// gate(h_pre) and its gradient [N, C].
    pub g: wgpu::Buffer,
    pub dg: wgpu::Buffer,
}

/// The prior's buffers and programs on the GPU.
pub struct Prior {
    pub cfg: PriorConfig,
    pub batch: usize,
    pub core: Core,
    pub nets: PriorNets,
    /// The code maps [B, P] (targets; the sampler writes its draws here).
    pub idx: wgpu::Buffer,
    /// The frozen codebook [K, D] and the embedded maps E [B, P, D].
    pub codebook: wgpu::Buffer,
    pub emb: wgpu::Buffer,
    /// Conditioning: the top codes [B, p], their codebook and embedding, and the conditioning net.
    pub cond: Option<CondGpu>,
    pub layers: Vec<GpuGated>,
    pub head: GpuNet,
    pub mask: wgpu::Buffer,
    /// (nll, correct) per position, and per image.
    pub stats: wgpu::Buffer,
    pub rows: wgpu::Buffer,
}

pub struct CondGpu {
    pub idx: wgpu::Buffer,
    pub codebook: wgpu::Buffer,
    pub emb: wgpu::Buffer,
    pub net: GpuNet,
}

impl Prior {
    /// A prior for `batch` maps; `codebook` [K, D] (and the top level's for a conditioned prior) are
    /// the VQ model's, frozen.
    pub fn new(
        gpu: &Gpu,
        cfg: &PriorConfig,
        batch: usize,
        seed: u64,
        codebook: &[f32],
        cond_codebook: Option<&[f32]>,
    ) -> Result<Prior> {
        let shape = |m: String| GpuError::Shape { op: "prior", message: m };
        cfg.validate().map_err(shape)?;
        if batch == 0 {
            return Err(shape("batch must be > 0".into()));
        }
        let (k, d) = (cfg.codes, cfg.dim);
        if codebook.len() != k * d || cond_codebook.is_some_and(|c| c.len() != k * d) {
            return Err(shape(format!("codebooks must be [{k}, {d}]")));
        }
        if cfg.cond.is_some() != cond_codebook.is_some() {
            return Err(shape("a conditioned prior needs the top codebook (and only then)".into()));
        }
        let nets = cfg.nets().map_err(shape)?;
        let p = cfg.positions();
        let n = batch * p;
        let c = cfg.channels;
        gpu.check_buffers([nets.layout.total, n * k, n * 2 * c, n * d].map(|len| (len * 4) as u64))?;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        let last = nets.layers.len() - 1;
        let mut layers = Vec::new();
        for (l, g) in nets.layers.iter().enumerate() {
            layers.push(GpuGated {
                conv_v: GpuNet::new(gpu, &g.conv_v, batch)?,
                v2h: GpuNet::new(gpu, &g.v2h, batch)?,
                conv_h: GpuNet::new(gpu, &g.conv_h, batch)?,
                res: GpuNet::new(gpu, &g.res, batch)?,
                v: (l < last).then(|| (f(format!("gated{l}.v[{n}x{c}]"), n * c), f(format!("gated{l}.dv"), n * c))),
                dv_gate: (l < last).then(|| f(format!("gated{l}.dv_gate[{n}x{}]", 2 * c), n * 2 * c)),
                g: f(format!("gated{l}.g[{n}x{c}]"), n * c),
                dg: f(format!("gated{l}.dg[{n}x{c}]"), n * c),
            });
        }
        let cond = match (&nets.cond, cfg.cond, cond_codebook) {
            (Some(net), Some([ch, cw]), Some(cb)) => Some(CondGpu {
                idx: gpu.storage(&format!("cond.idx[{batch}x{}]", ch * cw), (batch * ch * cw * 4) as u64),
                codebook: gpu.upload("cond.codebook", cb),
                emb: f(format!("cond.emb[{batch}x{}x{d}]", ch * cw), batch * ch * cw * d),
                net: GpuNet::new(gpu, net, batch)?,
            }),
            _ => None,
        };
        let m = Prior {
            core: Core::new(gpu, nets.layout.clone(), &cfg.init(&nets, seed)),
            idx: gpu.storage(&format!("prior.idx[{batch}x{p}]"), (n * 4) as u64),
            codebook: gpu.upload("prior.codebook", codebook),
            emb: f(format!("prior.emb[{batch}x{p}x{d}]"), n * d),
            cond,
            layers,
            head: GpuNet::new(gpu, &nets.head, batch)?,
            mask: gpu.upload("prior.mask", &nets.mask),
            stats: f(format!("prior.stats[{n}x2]"), n * 2),
            rows: f(format!("rows[{batch}x2]"), batch * 2),
            nets,
            cfg: cfg.clone(),
            batch,
        };
        gpu.check()?;
        Ok(m)
    }

    fn n(&self) -> usize {
        self.batch * self.cfg.positions()
    }

    /// The logits [B, P, K].
    pub fn logits(&self) -> &wgpu::Buffer {
        self.head.output()
    }

    /// E = codebook\[idx\] (and the conditioning embedding), then the stacks and the head.
    pub fn forward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (k, d) = (self.cfg.codes, self.cfg.dim);
        let mut out = vec![prior::code_lookup(
            gpu,
            "prior",
            self.n(),
            k,
            d,
            Rows::All,
            (&self.idx).into(),
            (&self.codebook).into(),
            (&self.emb).into(),
        )?];
        out.extend(self.forward_from_emb(gpu)?);
        Ok(out)
    }

    /// The conditioning embedding and net (from the top codes in `cond.idx`).
    pub fn condition(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let Some(c) = &self.cond else { return Ok(Vec::new()) };
        let n = c.idx.size() as usize / 4;
        let (l, p) = (&self.core.layout, &self.core.params);
        let (k, d) = (self.cfg.codes, self.cfg.dim);
        let e = (&c.emb).into();
        let mut out =
            vec![prior::code_lookup(gpu, "cond", n, k, d, Rows::All, (&c.idx).into(), (&c.codebook).into(), e)?];
        out.extend(c.net.forward(gpu, l, p, &c.emb)?);
        Ok(out)
    }

    /// The stacks and the head from the embedding in `emb` (the conditioning first, if any).
    pub fn forward_from_emb(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (l, p) = (&self.core.layout, &self.core.params);
        let (n, c) = (self.n(), self.cfg.channels);
        let mut out = self.condition(gpu)?;
        for (i, g) in self.layers.iter().enumerate() {
            let (vin, hin) = if i == 0 {
                (&self.emb, &self.emb)
            } else {
                let prev = &self.layers[i - 1];
                (&prev.v.as_ref().unwrap().0, prev.res.output())
            };
            let add = if i == 0 { self.cond.as_ref().map(|c| c.net.output()) } else { None };
            out.extend(g.conv_v.forward_add(gpu, l, p, vin, add)?);
            let v_pre = g.conv_v.output();
            if let Some((v, _)) = &g.v {
                out.push(prior::gate_forward(gpu, &format!("gated{i}.v"), n, c, v_pre.into(), v.into())?);
            }
            out.extend(g.v2h.forward(gpu, l, p, v_pre)?);
            out.extend(g.conv_h.forward_add(gpu, l, p, hin, Some(g.v2h.output()))?);
            out.push(prior::gate_forward(gpu, &format!("gated{i}.h"), n, c, g.conv_h.output().into(), (&g.g).into())?);
            let skip = (i > 0).then_some(hin);
            out.extend(g.res.forward_add(gpu, l, p, &g.g, skip)?);
        }
        out.extend(self.head.forward(gpu, l, p, self.layers.last().unwrap().res.output())?);
        Ok(out)
    }

    /// The cross-entropy against `idx` (mean over positions; its gradient into the head) and per-image sums.
    pub fn loss(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (n, k) = (self.n(), self.cfg.codes);
        let ce = prior::ce_forward(
            gpu,
            "prior",
            n,
            k,
            1.0 / n as f32,
            self.logits().into(),
            (&self.idx).into(),
            self.head.d_output().into(),
            (&self.stats).into(),
        )?;
        let rows =
            prior::ce_rows(gpu, "prior", self.batch, self.cfg.positions(), (&self.stats).into(), (&self.rows).into())?;
        Ok(vec![ce, rows])
    }

    /// Backward through the head, the stacks and the conditioning net; masked gradients zeroed.
    pub fn backward(&self, gpu: &Gpu) -> Result<Vec<Launch>> {
        let (l, p, gr) = (&self.core.layout, &self.core.params, &self.core.grads);
        let (n, c, id) = (self.n(), self.cfg.channels, Act::Identity);
        let top = self.layers.last().unwrap();
        let mut out = self.head.backward(gpu, l, p, gr, top.res.output(), Some((top.res.d_output(), id)))?;
        for (i, g) in self.layers.iter().enumerate().rev() {
            // d h_i is in res.d_output(); d v_i (if used) in v.1.
            out.extend(g.res.backward(gpu, l, p, gr, &g.g, Some((&g.dg, id)))?);
            let name = format!("gated{i}");
            let h_pre = g.conv_h.output();
            out.push(prior::gate_backward(gpu, &name, n, c, h_pre.into(), (&g.dg).into(), g.conv_h.d_output().into())?);
            let v_pre = g.conv_v.output();
            if let (Some((_, dv)), Some(dvg)) = (&g.v, &g.dv_gate) {
                out.push(prior::gate_backward(gpu, &name, n, c, v_pre.into(), dv.into(), dvg.into())?);
            }
            let opt = Backward { d_output: Some(g.conv_h.d_output()), add_to_input: g.dv_gate.as_ref() };
            out.extend(g.v2h.backward_with(gpu, l, p, gr, v_pre, Some((g.conv_v.d_output(), id)), opt)?);
            if i == 0 {
                out.extend(g.conv_h.backward(gpu, l, p, gr, &self.emb, None)?);
                out.extend(g.conv_v.backward(gpu, l, p, gr, &self.emb, None)?);
                if let Some(cn) = &self.cond {
                    let opt = Backward { d_output: Some(g.conv_v.d_output()), add_to_input: None };
                    out.extend(cn.net.backward_with(gpu, l, p, gr, &cn.emb, None, opt)?);
                }
            } else {
                let prev = &self.layers[i - 1];
                let opt = Backward { d_output: None, add_to_input: Some(g.res.d_output()) };
                let dh = Some((prev.res.d_output(), id));
                out.extend(g.conv_h.backward_with(gpu, l, p, gr, prev.res.output(), dh, opt)?);
                let (v, dv) = prev.v.as_ref().unwrap();
                out.extend(g.conv_v.backward(gpu, l, p, gr, v, Some((dv, id)))?);
            }
        }
        out.push(prior::mask_mul(gpu, "prior.grads", l.total, (&self.mask).into(), gr.into())?);
        Ok(out)
    }
}

impl Prior {
    fn gather(&self, gpu: &Gpu, data: &GpuDataset, cond: Option<&GpuDataset>, word: u32) -> Result<Vec<Launch>> {
        let shape = |m: String| GpuError::Shape { op: "prior", message: m };
        let p = self.cfg.positions();
        if data.dim != p {
            return Err(shape(format!("code maps have {} codes, the prior models {p}", data.dim)));
        }
        let st = (&self.core.state).into();
        let g = GatherWords { batch: self.batch, dim: p, n_items: data.n, batch_word: word };
        let mut out = vec![g.launch(gpu, "prior", st, (&data.data).into(), (&data.perm).into(), (&self.idx).into())?];
        match (cond, &self.cond) {
            (None, None) => {}
            (Some(cd), Some(c)) => {
                let pt = c.idx.size() as usize / 4 / self.batch;
                if cd.dim != pt || cd.n != data.n {
                    return Err(shape(format!("conditioning maps must be {} x {pt}", data.n)));
                }
                let g = GatherWords { batch: self.batch, dim: pt, n_items: cd.n, batch_word: word };
                out.push(g.launch(gpu, "cond", st, (&cd.data).into(), (&cd.perm).into(), (&c.idx).into())?);
            }
            _ => return Err(shape("conditioning maps are needed by a conditioned prior only".into())),
        }
        Ok(out)
    }

    /// The batch's metrics into `slot`, then its cursor (`word`) advances.
    fn metrics(&self, gpu: &Gpu, n_items: usize, word: u32, slot: u32) -> Result<Launch> {
        let (st, rows, m) = ((&self.core.state).into(), (&self.rows).into(), (&self.core.metrics).into());
        let at = reduce::MetricsAt { batch: self.batch, n_items, batch_word: word, slot, advance: true };
        reduce::metrics_accumulate(gpu, "prior", at, 1.0, st, rows, m)
    }

    /// One training step on the next batch of code maps (`cond`: the matching top maps).
    pub fn train_program(
        &self,
        gpu: &Gpu,
        data: &GpuDataset,
        cond: Option<&GpuDataset>,
        adam: &Adam,
        max_norm: f32,
    ) -> Result<Program> {
        let mut p = Program::new("prior_train_step");
        p.extend(self.gather(gpu, data, cond, W_TRAIN_BATCH)?);
        p.extend(self.forward(gpu)?);
        p.extend(self.loss(gpu)?);
        p.extend(self.backward(gpu)?);
        p.extend(self.core.update(gpu, adam, max_norm, self.core.layout.total)?);
        p.push(self.metrics(gpu, data.n, W_TRAIN_BATCH, SLOT_TRAIN)?);
        Ok(p)
    }

    /// One evaluation batch: the summed NLL and correct predictions per map into the eval slot.
    pub fn eval_program(&self, gpu: &Gpu, data: &GpuDataset, cond: Option<&GpuDataset>) -> Result<Program> {
        let mut p = Program::new("prior_eval_batch");
        p.extend(self.gather(gpu, data, cond, W_EVAL_BATCH)?);
        p.extend(self.forward(gpu)?);
        p.extend(self.loss(gpu)?);
        p.push(self.metrics(gpu, data.n, W_EVAL_BATCH, SLOT_EVAL)?);
        Ok(p)
    }

    /// Draws a batch of code maps into `idx`, position by position in raster order, each from the
    /// logits of the stacks over the codes drawn so far (`cond.idx` must hold the top codes). The
    /// caller zeroes `emb` first; the draws use Philox stream 12 with the step counter in state\[0\].
    pub fn sample_program(&self, gpu: &Gpu, temperature: f32) -> Result<Program> {
        let mut prog = Program::new("prior_sample");
        let (k, d) = (self.cfg.codes, self.cfg.dim);
        let cat = Categorical { batch: self.batch, per_row: self.cfg.positions(), k, temperature };
        for pos in 0..self.cfg.positions() {
            prog.extend(self.forward_from_emb(gpu)?);
            let (st, lg) = ((&self.core.state).into(), self.logits().into());
            let lookup = Some((d, (&self.codebook).into(), (&self.emb).into()));
            prog.push(cat.launch(gpu, "prior", pos, st, lg, (&self.idx).into(), lookup)?);
        }
        Ok(prog)
    }

    /// Checkpoint tensors, PyTorch-shaped ([out, in, k, k] convs, [in, out, k, k] transposed).
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let n = &self.nets;
        let mut nets: Vec<&Net> = n.layers.iter().flat_map(|g| [&g.conv_v, &g.v2h, &g.conv_h, &g.res]).collect();
        nets.push(&n.head);
        nets.extend(n.cond.as_ref());
        super::vae::net_tensors(&n.layout, &nets, None)
    }
}
