//! A [`Net`] on the GPU: one output buffer and one gradient buffer per layer, built once, and the
//! launches of its forward and backward passes recorded over them.
//!
//! Every gradient buffer holds the gradient with respect to the PRE-activation output of its layer: the
//! input-gradient launch of layer i multiplies by act'(output of layer i−1) in its epilogue (DACT), so
//! no separate elementwise pass is needed.

use std::sync::Mutex;

use super::net::{Layer, Net, Op};
use super::{Linear, ParamLayout};
use crate::gpu::{Gpu, GpuError, Launch, Result, View};
use crate::kernels::conv::{partials_len, sum_partials, ConvGather, ConvWgrad, Resid};
use crate::kernels::matmul::{epilogue_k_splits, k_splits, split_k, Matmul};
use crate::kernels::Act;

/// Options of [`GpuNet::backward_with`].
#[derive(Clone, Copy, Default)]
pub struct Backward<'a> {
    /// Read the output gradient from here instead of `d_output()`.
    pub d_output: Option<&'a wgpu::Buffer>,
    /// Add this (already multiplied by the input's act') into the input gradient; the first layer
    /// must be a conv, and the buffer must differ from the input-gradient buffer.
    pub add_to_input: Option<&'a wgpu::Buffer>,
}

pub struct GpuNet {
    pub net: Net,
    /// Examples per pass.
    pub rows: usize,
    /// Output of each layer, [rows, output.len()], after its activation.
    pub outs: Vec<wgpu::Buffer>,
    /// Gradient with respect to each layer's pre-activation output.
    pub grads: Vec<wgpu::Buffer>,
    /// Residual blocks: the hidden activation and its gradient.
    pub inner: Vec<Option<(wgpu::Buffer, wgpu::Buffer)>>,
    /// Split-K partials of the conv parameter gradients, or their im2col matrices (shared by every
    /// layer, used one at a time; as large as the launches that use it need: `conv_buffer_needs`).
    pub scratch: wgpu::Buffer,
    /// The im2col path's products before they are copied into place (shared the same way).
    pub product: wgpu::Buffer,
    /// Per layer, for a conv (a residual block's 3×3 conv) whose forward and weight gradient gather
    /// the same im2col matrix of the layer input: the forward gathers it here, and the weight gradient
    /// reads it instead of gathering it again.
    cols: Vec<Option<wgpu::Buffer>>,
    /// Per layer: the input buffer whose matrix the forward built last gathered into `cols`. A
    /// backward built for another input gathers its own (the launches replay in build order).
    kept: Vec<Mutex<Option<wgpu::Buffer>>>,
}

/// The weight gradient of a conv layer (its last launch group: the weights) on `s` where the forward
/// `k` gathers the same im2col matrix as it does, else None.
fn kept_gradient(
    gpu: &Gpu,
    k: &ConvGather,
    geom: &crate::kernels::conv::ConvGeom,
    rows: usize,
    s: super::Shape,
    pre_relu: bool,
) -> Result<Option<ConvWgrad>> {
    let w = ConvWgrad::for_layer(geom, rows, s.h, s.w, pre_relu)?.pop().map(|(w, _)| w);
    Ok(w.filter(|w| k.gathers_as(gpu, w)))
}

/// The shared scratch and product elements a net's conv launches use, at least `least`: what each
/// uses given the buffers it reads ([`ConvGather::needs`], [`ConvWgrad::scratch_needed`]: none of a
/// matrix or product an in-place form leaves unused, on lavapipe). The net's input, and the last layer's
/// output gradient (which [`Backward::d_output`] may read from elsewhere), are not known here: the
/// launches that read them count in full. Each forward and input gradient counts with and without the
/// residual sum `forward_add` and `backward_with` may give it (which can change its form).
fn conv_buffer_needs(
    gpu: &Gpu,
    net: &Net,
    rows: usize,
    outs: &[wgpu::Buffer],
    grads: &[wgpu::Buffer],
    inner: &[Option<(wgpu::Buffer, wgpu::Buffer)>],
    least: (usize, usize),
) -> Result<(usize, usize)> {
    let (mut scratch, mut product) = least;
    let last = net.layers.len() - 1;
    let mut add = |(s, p): (usize, usize)| {
        scratch = scratch.max(s);
        product = product.max(p);
    };
    let gather_needs = |k: &ConvGather, x: Option<&View>| match x {
        Some(x) => k.needs(gpu, x),
        None => (k.scratch_len(gpu), k.product_len(gpu)),
    };
    for (i, l) in net.layers.iter().enumerate() {
        let s = l.input;
        let input = (i > 0).then(|| View::whole(&outs[i - 1]));
        let dy = (i < last).then(|| View::whole(&grads[i]));
        let (geom, pre_relu, dy) = match &l.op {
            Op::Linear { .. } => continue,
            Op::Conv { geom, .. } => (*geom, false, dy),
            Op::Res { hidden, .. } => {
                let dh = inner[i].as_ref().map(|(_, dh)| View::whole(dh));
                (Layer::res_geoms(s.c, *hidden).0, true, dh)
            }
        };
        for (k, _) in ConvWgrad::for_layer(&geom, rows, s.h, s.w, pre_relu)? {
            let image = if k.gather_b { dy.as_ref() } else { input.as_ref() };
            add((image.map_or_else(|| k.scratch_len(gpu), |v| k.scratch_needed(gpu, v)), k.product_len(gpu)));
        }
        // The activations do not change the forms; a residual sum can.
        let act = if pre_relu { Act::Relu } else { Act::Identity };
        let mut kf = ConvGather::forward(&geom, rows, s.h, s.w, act)?;
        kf.pre_relu = pre_relu;
        let mut kd = ConvGather::input_grad(&geom, rows, s.h, s.w, act)?;
        for (k, resid, x) in [(&mut kf, Resid::BeforeAct, input.as_ref()), (&mut kd, Resid::AfterDact, dy.as_ref())] {
            add(gather_needs(k, x));
            k.resid = resid;
            add(gather_needs(k, x));
        }
    }
    Ok((scratch, product))
}

/// A 1×1, stride-1, unpadded conv: a linear layer over the pixels (its block, [Cin + 1, Cout] with the
/// bias row last, is laid out as a linear layer's), run as the linear layer's matmuls on every adapter.
fn pointwise(g: &crate::kernels::conv::ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0 && !g.transposed
}

fn block<'a>(buf: &'a wgpu::Buffer, l: &Linear) -> View<'a> {
    View::new(buf, (l.offset * 4) as u64, l.len())
}

/// A linear layer's forward over `m` rows (or a pointwise conv's over the pixels): act(x·W + b), with
/// `r` added before the activation; K split through `partials` where [`epilogue_k_splits`] says.
#[allow(clippy::too_many_arguments)]
fn dense_forward(
    gpu: &Gpu,
    name: &str,
    m: usize,
    p: &Linear,
    act: Act,
    x: &wgpu::Buffer,
    params: &wgpu::Buffer,
    y: &wgpu::Buffer,
    r: Option<&wgpu::Buffer>,
    partials: &wgpu::Buffer,
) -> Result<Vec<Launch>> {
    let mm = Matmul { m, n: p.dout, k: p.din, bias: true, act, resid: r.is_some(), ..Default::default() };
    let splits = epilogue_k_splits(gpu, m, p.dout, p.din);
    mm.launch_split(gpu, name, x.into(), block(params, p), y.into(), r.map(Into::into), partials.into(), splits)
}

/// Elements of the partial products a dense layer over `m` rows, din → dout, splits K into: its
/// forward's and input gradient's ([`epilogue_k_splits`]) and its weight gradient's
/// ([`dense_dw_splits`]), the most of them (0 without a split).
fn dense_partials_len(gpu: &Gpu, m: usize, din: usize, dout: usize) -> usize {
    let epi = |n: usize, k: usize| match epilogue_k_splits(gpu, m, n, k) {
        1 => 0,
        s => s * m * n,
    };
    epi(dout, din).max(epi(din, dout)).max(dense_dw_splits(gpu, m, din, dout).1)
}

/// Splits of the rows (K) of a dense layer's weight gradient over `m` rows, din → dout ([`k_splits`]:
/// on GPUs, where a large batch's few output tiles would leave the device idle), and the elements
/// their partial products need (0 without a split).
fn dense_dw_splits(gpu: &Gpu, m: usize, din: usize, dout: usize) -> (usize, usize) {
    let s = k_splits(gpu, din + 1, dout, m);
    if s > 1 {
        let s = split_k(m, s).1;
        (s, partials_len(s, (din + 1) * dout))
    } else {
        (1, 0)
    }
}

/// Its backward from `g`: [dW; db] into `grads` (split over the rows through `partials` where
/// [`dense_dw_splits`] says), and with `dx` the input gradient ⊙ act'(x) into it.
#[allow(clippy::too_many_arguments)]
fn dense_backward(
    gpu: &Gpu,
    name: &str,
    m: usize,
    p: &Linear,
    x: &wgpu::Buffer,
    g: &wgpu::Buffer,
    params: &wgpu::Buffer,
    grads: &wgpu::Buffer,
    dx: Option<(&wgpu::Buffer, Act)>,
    partials: &wgpu::Buffer,
    out: &mut Vec<Launch>,
) -> Result<()> {
    let dw = Matmul { m: p.din + 1, n: p.dout, k: m, trans_a: true, ones_row: true, ..Default::default() };
    let label = format!("{name}.dW");
    let (splits, _) = dense_dw_splits(gpu, m, p.din, p.dout);
    if splits > 1 {
        let dw = Matmul { splits, ..dw };
        out.push(dw.launch(gpu, &label, x.into(), g.into(), partials.into(), None)?);
        let len = (p.din + 1) * p.dout;
        out.extend(sum_partials(gpu, &label, partials.into(), block(grads, p), 0, splits, len)?);
    } else {
        out.push(dw.launch(gpu, &label, x.into(), g.into(), block(grads, p), None)?);
    }
    if let Some((dx, prev_act)) = dx {
        let mm = Matmul { m, n: p.din, k: p.dout, trans_b: true, dact: prev_act, ..Default::default() };
        let w = View::new(params, (p.offset * 4) as u64, p.din * p.dout);
        let splits = epilogue_k_splits(gpu, m, p.din, p.dout);
        let label = format!("{name}.dX");
        out.extend(mm.launch_split(gpu, &label, g.into(), w, dx.into(), Some(x.into()), partials.into(), splits)?);
    }
    Ok(())
}

fn shape_err(e: String) -> GpuError {
    GpuError::Shape { op: "net", message: e }
}

impl GpuNet {
    /// Largest buffer (bytes) the net needs for `rows` examples, for the adapter-limit check.
    pub fn largest_buffer(net: &Net, rows: usize) -> u64 {
        net.layers
            .iter()
            .map(|l| {
                let hidden = match l.op {
                    Op::Res { hidden, .. } => l.input.h * l.input.w * hidden,
                    _ => 0,
                };
                rows * l.output.len().max(hidden)
            })
            .max()
            .unwrap_or(0) as u64
            * 4
    }

    pub fn new(gpu: &Gpu, net: &Net, rows: usize) -> Result<GpuNet> {
        if net.layers.is_empty() {
            return Err(shape_err("a net needs at least one layer".into()));
        }
        let f = |label: String, len: usize| gpu.storage_f32(&label, len.max(1));
        let mut outs = Vec::new();
        let mut grads = Vec::new();
        let mut inner = Vec::new();
        let mut cols = Vec::new();
        // A layer's kept im2col matrix: as large as its weight gradient's gathered one.
        let keep = |name: String, w: &ConvWgrad| f(format!("{name}[{}]", w.scratch_len(gpu)), w.scratch_len(gpu));
        let mut product = 1usize;
        for l in &net.layers {
            let n = rows * l.output.len();
            outs.push(f(format!("{}.out[{rows}x{}]", l.name, l.output), n));
            grads.push(f(format!("{}.grad[{rows}x{}]", l.name, l.output), n));
            let i = l.input;
            let px = rows * i.h * i.w;
            match &l.op {
                Op::Linear { .. } => {
                    product = product.max(dense_partials_len(gpu, rows, i.len(), l.output.len()));
                    inner.push(None);
                    cols.push(None);
                }
                Op::Conv { geom, .. } => {
                    if pointwise(geom) {
                        product = product.max(dense_partials_len(gpu, px, geom.cin, geom.cout));
                    }
                    let kf = ConvGather::forward(geom, rows, i.h, i.w, Act::Identity)?;
                    let kept = if pointwise(geom) { None } else { kept_gradient(gpu, &kf, geom, rows, i, false)? };
                    cols.push(kept.map(|w| keep(format!("{}.cols", l.name), &w)));
                    inner.push(None);
                }
                Op::Res { hidden, .. } => {
                    // The 3×3 conv's weight gradient, forward (im2col path) and input gradient (col2im
                    // path); the 1×1 conv runs as a linear layer (its weight gradient's partials where
                    // split).
                    let (g3, g1) = Layer::res_geoms(i.c, *hidden);
                    product = product.max(dense_partials_len(gpu, px, g1.cin, g1.cout));
                    let mut k3 = ConvGather::forward(&g3, rows, i.h, i.w, Act::Relu)?;
                    k3.pre_relu = true;
                    let kept = kept_gradient(gpu, &k3, &g3, rows, i, true)?;
                    cols.push(kept.map(|w| keep(format!("{}.conv3.cols", l.name), &w)));
                    let n = rows * i.h * i.w * hidden;
                    inner.push(Some((
                        f(format!("{}.hidden[{rows}x{}x{}x{hidden}]", l.name, i.h, i.w), n),
                        f(format!("{}.hidden.grad[{rows}x{}x{}x{hidden}]", l.name, i.h, i.w), n),
                    )));
                }
            }
        }
        let (scratch, product) = conv_buffer_needs(gpu, net, rows, &outs, &grads, &inner, (1, product))?;
        Ok(GpuNet {
            net: net.clone(),
            rows,
            outs,
            grads,
            inner,
            scratch: f(format!("net.scratch[{scratch}]"), scratch),
            product: f(format!("net.product[{product}]"), product),
            kept: cols.iter().map(|_| Mutex::new(None)).collect(),
            cols,
        })
    }

    pub fn output(&self) -> &wgpu::Buffer {
        self.outs.last().unwrap()
    }

    /// Gradient with respect to the last layer's pre-activation output (what the loss writes).
    pub fn d_output(&self) -> &wgpu::Buffer {
        self.grads.last().unwrap()
    }

    /// The forward pass from `input` [rows, net.input.len()].
    pub fn forward(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        input: &wgpu::Buffer,
    ) -> Result<Vec<Launch>> {
        self.forward_add(gpu, layout, params, input, None)
    }

    /// The forward pass, with `add` (shaped as the output) summed into the last layer's output before
    /// its activation; the last layer must then be a conv.
    pub fn forward_add(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        input: &wgpu::Buffer,
        add: Option<&wgpu::Buffer>,
    ) -> Result<Vec<Launch>> {
        let rows = self.rows;
        let last = self.net.layers.len() - 1;
        if add.is_some() && !matches!(self.net.layers[last].op, Op::Conv { .. }) {
            return Err(shape_err(format!("{}: only a conv output can take a sum", self.net.layers[last].name)));
        }
        let mut out = Vec::new();
        let mut x = input;
        for (i, l) in self.net.layers.iter().enumerate() {
            let y = &self.outs[i];
            let s = l.input;
            match &l.op {
                Op::Linear { block: b } => {
                    let p = &layout.layers[*b];
                    out.extend(dense_forward(gpu, &l.name, rows, p, l.act, x, params, y, None, &self.product)?);
                }
                Op::Conv { block: b, geom } if pointwise(geom) => {
                    let (p, r) = (&layout.layers[*b], add.filter(|_| i == last));
                    let px = rows * s.h * s.w;
                    out.extend(dense_forward(gpu, &l.name, px, p, l.act, x, params, y, r, &self.product)?);
                }
                Op::Conv { block: b, geom } => {
                    let r = add.filter(|_| i == last);
                    let w = block(params, &layout.layers[*b]);
                    let mut k = ConvGather::forward(geom, rows, s.h, s.w, l.act)?;
                    if r.is_some() {
                        k.resid = Resid::BeforeAct;
                    }
                    let (sc, pr) = self.buffers(gpu, &k);
                    let sc = self.keep_cols(gpu, i, &k, geom, s, false, x)?.or(sc);
                    out.extend(k.launches(gpu, &l.name, x.into(), w, y.into(), None, r.map(Into::into), sc, pr)?);
                }
                Op::Res { conv3, conv1, hidden } => {
                    let (g3, g1) = Layer::res_geoms(s.c, *hidden);
                    let (h, _) = self.inner[i].as_ref().unwrap();
                    let mut k3 = ConvGather::forward(&g3, rows, s.h, s.w, Act::Relu)?;
                    k3.pre_relu = true;
                    let name = format!("{}.conv3", l.name);
                    let w3 = block(params, &layout.layers[*conv3]);
                    let (sc, pr) = self.buffers(gpu, &k3);
                    let sc = self.keep_cols(gpu, i, &k3, &g3, s, true, x)?.or(sc);
                    out.extend(k3.launches(gpu, &name, x.into(), w3, h.into(), None, None, sc, pr)?);
                    // The 1×1 conv, act(x + h · W1 + b1), is a matmul over the B·H·W pixels with a
                    // residual epilogue (W1's block is [hidden, C] with the bias row after it).
                    debug_assert!(pointwise(&g1));
                    let mm = Matmul {
                        m: rows * s.h * s.w,
                        n: s.c,
                        k: *hidden,
                        bias: true,
                        act: l.act,
                        resid: true,
                        ..Default::default()
                    };
                    let name = format!("{}.conv1", l.name);
                    let w1 = block(params, &layout.layers[*conv1]);
                    out.push(mm.launch(gpu, &name, h.into(), w1, y.into(), Some(x.into()))?);
                }
            }
            x = y;
        }
        Ok(out)
    }

    /// Layer `i`'s kept im2col buffer, for its forward `k` on input `x` where `k` gathers the matrix
    /// the weight gradient reads (`cols`), else None; notes which input it holds.
    #[allow(clippy::too_many_arguments)]
    fn keep_cols(
        &self,
        gpu: &Gpu,
        i: usize,
        k: &ConvGather,
        geom: &crate::kernels::conv::ConvGeom,
        s: super::Shape,
        pre_relu: bool,
        x: &wgpu::Buffer,
    ) -> Result<Option<View<'_>>> {
        let keep = match &self.cols[i] {
            Some(c) if kept_gradient(gpu, k, geom, self.rows, s, pre_relu)?.is_some() => Some(c),
            _ => None,
        };
        *self.kept[i].lock().unwrap() = keep.map(|_| x.clone());
        Ok(keep.map(Into::into))
    }

    /// Layer `i`'s kept im2col matrix when the forward built last gathered it from `x`.
    fn kept_cols(&self, i: usize, x: &wgpu::Buffer) -> Option<&wgpu::Buffer> {
        let same = self.kept[i].lock().unwrap().as_ref() == Some(x);
        self.cols[i].as_ref().filter(|_| same)
    }

    /// The shared scratch and product buffers, for a conv launch that needs them (its im2col path).
    fn buffers(&self, gpu: &Gpu, k: &ConvGather) -> (Option<View<'_>>, Option<View<'_>>) {
        (
            (k.scratch_len(gpu) > 0).then(|| (&self.scratch).into()),
            (k.product_len(gpu) > 0).then(|| (&self.product).into()),
        )
    }

    /// The launches of a conv's parameter gradient into `dst`. With `cols` (the layer's kept im2col
    /// matrix of `a`), the weights' gradient on the im2col path reads it instead of gathering it.
    #[allow(clippy::too_many_arguments)]
    fn param_grad(
        &self,
        gpu: &Gpu,
        name: &str,
        geom: &crate::kernels::conv::ConvGeom,
        s: super::Shape,
        pre_relu: bool,
        a: &wgpu::Buffer,
        g: &wgpu::Buffer,
        dst: View,
        cols: Option<&wgpu::Buffer>,
        out: &mut Vec<Launch>,
    ) -> Result<Option<ConvWgrad>> {
        let mut last = None;
        let ks = ConvWgrad::for_layer(geom, self.rows, s.h, s.w, pre_relu)?;
        let n = ks.len();
        for (j, (k, at)) in ks.into_iter().enumerate() {
            let product = (k.product_len(gpu) > 0).then(|| (&self.product).into());
            // The kept matrix (the forward checked that it gathers this one) stands in for the scratch.
            let kept = cols.filter(|_| j + 1 == n && k.uses_im2col(gpu));
            let scratch = match kept {
                Some(c) => Some(c.into()),
                None => (k.scratch_len(gpu) > 0).then(|| (&self.scratch).into()),
            };
            let kg = ConvWgrad { gathered: kept.is_some(), ..k };
            out.extend(kg.launch(gpu, &format!("{name}.dW"), a.into(), g.into(), dst, at, scratch, product)?);
            last = Some(k);
        }
        // The reduction whose launches came last: on the im2col path its matrix is in the scratch (or,
        // with `cols`, in the kept buffer).
        Ok(last)
    }

    /// The backward pass from `d_output()` (already written): every parameter gradient into `grads`
    /// (the flat gradient buffer), and, when `d_input` is given, the gradient with respect to the
    /// input ⊙ input_act'(input) into it.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        input: &wgpu::Buffer,
        d_input: Option<(&wgpu::Buffer, Act)>,
    ) -> Result<Vec<Launch>> {
        self.backward_with(gpu, layout, params, grads, input, d_input, Backward::default())
    }

    /// As `backward`, with the options of [`Backward`]: the output gradient read from another buffer,
    /// and a gradient added into the input gradient (for an input that feeds two nets).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        input: &wgpu::Buffer,
        d_input: Option<(&wgpu::Buffer, Act)>,
        opt: Backward<'_>,
    ) -> Result<Vec<Launch>> {
        let rows = self.rows;
        let mut out = Vec::new();
        let last = self.net.layers.len() - 1;
        if opt.add_to_input.is_some() && (d_input.is_none() || !matches!(self.net.layers[0].op, Op::Conv { .. })) {
            return Err(shape_err(format!("{}: only a conv input gradient can take a sum", self.net.layers[0].name)));
        }
        for (i, l) in self.net.layers.iter().enumerate().rev() {
            let x = if i == 0 { input } else { &self.outs[i - 1] };
            let g = match opt.d_output {
                Some(d) if i == last => d,
                _ => &self.grads[i],
            };
            let dx = if i == 0 { d_input } else { Some((&self.grads[i - 1], self.net.layers[i - 1].act)) };
            let s = l.input;
            match &l.op {
                Op::Linear { block: b } => {
                    let p = &layout.layers[*b];
                    dense_backward(gpu, &l.name, rows, p, x, g, params, grads, dx, &self.product, &mut out)?;
                }
                // A pointwise conv, unless its input gradient takes a sum (the matmul's epilogue has
                // act' or a residual, not both).
                Op::Conv { block: b, geom } if pointwise(geom) && (i > 0 || opt.add_to_input.is_none()) => {
                    let (p, px) = (&layout.layers[*b], rows * s.h * s.w);
                    dense_backward(gpu, &l.name, px, p, x, g, params, grads, dx, &self.product, &mut out)?;
                }
                Op::Conv { block: b, geom } => {
                    let p = &layout.layers[*b];
                    let cols = self.kept_cols(i, x);
                    let dw = self.param_grad(gpu, &l.name, geom, s, false, x, g, block(grads, p), cols, &mut out)?;
                    if let Some((dx, prev_act)) = dx {
                        let mut k = ConvGather::input_grad(geom, rows, s.h, s.w, prev_act)?;
                        let z = (prev_act != Act::Identity).then(|| x.into());
                        let r = opt.add_to_input.filter(|_| i == 0);
                        if r.is_some() {
                            k.resid = Resid::AfterDact;
                        }
                        let name = format!("{}.dX", l.name);
                        let (sc, pr) = self.buffers(gpu, &k);
                        let w = block(params, p);
                        let mut dxl = k.launches(gpu, &name, g.into(), w, dx.into(), z, r.map(Into::into), sc, pr)?;
                        // The weight gradient's last launches (a transposed conv's: bias, then weights)
                        // left dY's im2col matrix in the scratch; the input gradient's first launch
                        // (its gather, on that path) would gather the same matrix into it again.
                        if cols.is_none() && dw.is_some_and(|wg| k.gathers_as(gpu, &wg)) {
                            debug_assert!(dxl[0].label.contains(" im2col["), "{}", dxl[0].label);
                            dxl.remove(0);
                        }
                        out.extend(dxl);
                    }
                }
                Op::Res { conv3, conv1, hidden } => {
                    let (g3, g1) = Layer::res_geoms(s.c, *hidden);
                    debug_assert!(pointwise(&g1));
                    let (h, dh) = self.inner[i].as_ref().unwrap();
                    let (p3, p1) = (&layout.layers[*conv3], &layout.layers[*conv1]);
                    // The 1×1 conv as the linear layer it is (as in forward): dh = (g · W1ᵀ) ⊙ relu'(h).
                    let name = format!("{}.conv1", l.name);
                    let px = rows * s.h * s.w;
                    let d = Some((dh, Act::Relu));
                    dense_backward(gpu, &name, px, p1, h, g, params, grads, d, &self.product, &mut out)?;
                    self.param_grad(
                        gpu,
                        &format!("{}.conv3", l.name),
                        &g3,
                        s,
                        true,
                        x,
                        dh,
                        block(grads, p3),
                        self.kept_cols(i, x),
                        &mut out,
                    )?;
                    if let Some((dx, prev_act)) = dx {
                        if prev_act != Act::Identity {
                            return Err(shape_err(format!(
                                "{}: a residual block's input must have no activation",
                                l.name
                            )));
                        }
                        // dx = conv3ᵀ(dh) ⊙ relu'(x) + g: the relu read in forward, then the skip path.
                        let mut k3 = ConvGather::input_grad(&g3, rows, s.h, s.w, Act::Relu)?;
                        k3.resid = Resid::AfterDact;
                        let name = format!("{}.conv3.dX", l.name);
                        let w3 = block(params, p3);
                        let (sc, pr) = self.buffers(gpu, &k3);
                        let (z, r) = (Some(x.into()), Some(g.into()));
                        out.extend(k3.launches(gpu, &name, dh.into(), w3, dx.into(), z, r, sc, pr)?);
                    }
                }
            }
        }
        Ok(out)
    }
}
