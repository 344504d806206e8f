//! A network as a chain of layers (dense, conv, transposed conv, residual block) over per-example shapes,
//! with every parameter block placed in the model's [`ParamLayout`]. The same description drives the GPU
//! recording (nn::gpu), the CPU reference (reference::net) and the checkpoint tensor names.
//!
//! Activations are NHWC per example; a dense layer reads its input flattened in that order, so conv and
//! dense layers chain with no copy (a reshape only changes the shape the next layer sees).

use super::ParamLayout;
use crate::kernels::Act;
use crate::reference::conv::ConvGeom;

/// The shape of one example: height, width, channels (a vector of n features is 1×1×n).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    pub const fn new(h: usize, w: usize, c: usize) -> Shape {
        Shape { h, w, c }
    }
    pub const fn flat(n: usize) -> Shape {
        Shape { h: 1, w: 1, c: n }
    }
    pub const fn len(&self) -> usize {
        self.h * self.w * self.c
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.h == 1 && self.w == 1 {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.h, self.w, self.c)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// y = act(x·W + b) on the flattened input; `block` indexes `ParamLayout::layers`.
    Linear { block: usize },
    /// Conv or transposed conv (geom.transposed), y = act(conv(x) + b).
    Conv { block: usize, geom: ConvGeom },
    /// Pre-activation residual block: y = act(x + conv1×1(relu(conv3×3(relu(x))))), with `hidden`
    /// channels between the two convs. Its input must not carry an activation of its own (the block's
    /// input gradient has no act' factor for it), which the builder enforces.
    Res { conv3: usize, conv1: usize, hidden: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    pub op: Op,
    /// Activation of the layer's output.
    pub act: Act,
    pub input: Shape,
    pub output: Shape,
}

impl Layer {
    /// The conv geometries of a residual block: 3×3 (C → hidden), then 1×1 (hidden → C).
    pub fn res_geoms(c: usize, hidden: usize) -> (ConvGeom, ConvGeom) {
        (
            ConvGeom { k: 3, stride: 1, pad: 1, cin: c, cout: hidden, transposed: false },
            ConvGeom { k: 1, stride: 1, pad: 0, cin: hidden, cout: c, transposed: false },
        )
    }

    /// Forward FLOPs (multiply-adds × 2) for `rows` examples.
    pub fn flops_forward(&self, rows: usize) -> f64 {
        let i = self.input;
        match &self.op {
            Op::Linear { .. } => 2.0 * (rows * i.len() * self.output.len()) as f64,
            Op::Conv { geom, .. } => geom.flops_forward(rows, i.h, i.w),
            Op::Res { hidden, .. } => {
                let (g3, g1) = Layer::res_geoms(i.c, *hidden);
                g3.flops_forward(rows, i.h, i.w) + g1.flops_forward(rows, i.h, i.w)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Net {
    pub input: Shape,
    pub layers: Vec<Layer>,
}

impl Net {
    pub fn output(&self) -> Shape {
        self.layers.last().map_or(self.input, |l| l.output)
    }

    /// The activation of the last layer's output.
    pub fn output_act(&self) -> Act {
        self.layers.last().map_or(Act::Identity, |l| l.act)
    }

    pub fn flops_forward(&self, rows: usize) -> f64 {
        self.layers.iter().map(|l| l.flops_forward(rows)).sum()
    }

    /// Forward + backward FLOPs (backward ≈ 2× forward: input and parameter gradients).
    pub fn flops_step(&self, rows: usize) -> f64 {
        3.0 * self.flops_forward(rows)
    }
}

/// Appends layers to a net, placing their parameters in `layout`.
pub struct NetBuilder<'a> {
    layout: &'a mut ParamLayout,
    prefix: String,
    net: Net,
    shape: Shape,
}

impl<'a> NetBuilder<'a> {
    pub fn new(layout: &'a mut ParamLayout, prefix: &str, input: Shape) -> Self {
        NetBuilder { layout, prefix: prefix.to_string(), net: Net { input, layers: Vec::new() }, shape: input }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    fn push(&mut self, name: &str, op: Op, act: Act, output: Shape) {
        self.net.layers.push(Layer { name: format!("{}.{name}", self.prefix), op, act, input: self.shape, output });
        self.shape = output;
    }

    /// Dense layer on the flattened input.
    pub fn linear(mut self, name: &str, dout: usize, act: Act) -> Result<Self, String> {
        if dout == 0 {
            return Err(format!("{}.{name}: a dense layer needs at least one output", self.prefix));
        }
        let block = self.layout.push(&format!("{}.{name}", self.prefix), self.shape.len(), dout, act);
        self.push(name, Op::Linear { block }, act, Shape::flat(dout));
        Ok(self)
    }

    /// Conv (or, with `transposed`, transposed conv) with a k×k kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        mut self,
        name: &str,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        transposed: bool,
        act: Act,
    ) -> Result<Self, String> {
        let full = format!("{}.{name}", self.prefix);
        let s = self.shape;
        if cout == 0 || k == 0 || stride == 0 || pad >= k {
            return Err(format!("{full}: need channels >= 1, kernel >= 1, stride >= 1 and padding < kernel"));
        }
        let geom = ConvGeom { k, stride, pad, cin: s.c, cout, transposed };
        let (oh, ow) = geom.out_hw(s.h, s.w).map_err(|e| format!("{full} on a {s} input: {e}"))?;
        // PyTorch's fan-in: Cin·K² for a conv, Cout·K² for a transposed conv (its weight is [Cin, Cout, K, K]).
        let fan_in = if transposed { cout * k * k } else { s.c * k * k };
        let block = self.layout.push_with_fan_in(&full, k * k * s.c, cout, act, fan_in);
        self.push(name, Op::Conv { block, geom }, act, Shape::new(oh, ow, cout));
        Ok(self)
    }

    /// Residual block keeping the shape (see [`Op::Res`]).
    pub fn res(mut self, name: &str, hidden: usize, act: Act) -> Result<Self, String> {
        let full = format!("{}.{name}", self.prefix);
        if hidden == 0 {
            return Err(format!("{full}: a residual block needs hidden channels >= 1"));
        }
        if self.net.layers.last().is_some_and(|l| l.act != Act::Identity) {
            return Err(format!("{full}: a residual block must follow a layer without activation"));
        }
        let c = self.shape.c;
        let conv3 = self.layout.push_with_fan_in(&format!("{full}.conv3"), 9 * c, hidden, Act::Relu, 9 * c);
        let conv1 = self.layout.push_with_fan_in(&format!("{full}.conv1"), hidden, c, Act::Identity, hidden);
        let shape = self.shape;
        self.push(name, Op::Res { conv3, conv1, hidden }, act, shape);
        Ok(self)
    }

    /// Reinterprets the current features as `shape` (same element count; no data moves).
    pub fn reshape(mut self, shape: Shape) -> Result<Self, String> {
        if shape.len() != self.shape.len() {
            return Err(format!("{}: cannot reshape {} to {}", self.prefix, self.shape, shape));
        }
        if let Some(l) = self.net.layers.last_mut() {
            l.output = shape;
        } else {
            self.net.input = shape;
        }
        self.shape = shape;
        Ok(self)
    }

    pub fn finish(self) -> Net {
        self.net
    }
}
