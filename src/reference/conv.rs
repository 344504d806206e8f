//! CPU twin of shaders/conv.wgsl: 2-D convolution and transposed convolution, NHWC, in f64.
//!
//! Tensors are [B, H, W, C] row-major (channels innermost). A layer's parameters are one
//! [(K·K·Cin + 1), Cout] block, as for a Linear layer: row (kh·K + kw)·Cin + ci holds the weights from
//! input channel ci at tap (kh, kw) to every output channel, and the last row is the bias.
//!
//! Both layer kinds are sums over (small pixel, tap) pairs linked by the convolution geometry
//!     big = small · stride − pad + tap          (per axis; pairs with big outside the image are skipped)
//! For a convolution the small image is its output and the big one its input; a transposed convolution
//! swaps the roles (its input is small). Forward, input gradient and weight gradient of both kinds are
//! the three ways to contract that relation, which is what [`for_each_pair`] enumerates.

use super::elementwise::{act_forward, act_grad_from_y};
use crate::kernels::Act;

/// Geometry of a conv or transposed-conv layer (square kernel, equal stride and padding on both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub cin: usize,
    pub cout: usize,
    pub transposed: bool,
}

impl ConvGeom {
    /// Output height/width for an input of h×w, or an error when the layer does not divide the size
    /// evenly (a conv whose windows do not tile the padded input exactly) or the output would be empty.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize), String> {
        let (k, s, p) = (self.k, self.stride, self.pad);
        if k == 0 || s == 0 {
            return Err("kernel size and stride must be >= 1".into());
        }
        let f = |n: usize| -> Result<usize, String> {
            if self.transposed {
                let full = (n - 1) * s + k;
                if full <= 2 * p {
                    return Err(format!("transposed conv k={k} s={s} p={p} gives an empty output from size {n}"));
                }
                Ok(full - 2 * p)
            } else {
                let padded = n + 2 * p;
                if padded < k || (padded - k) % s != 0 {
                    return Err(format!(
                        "conv k={k} s={s} p={p} does not divide size {n} evenly: (n + 2p − k) = {} is not a \
                         non-negative multiple of the stride",
                        padded as i64 - k as i64
                    ));
                }
                Ok((padded - k) / s + 1)
            }
        };
        if h == 0 || w == 0 {
            return Err("empty input image".into());
        }
        Ok((f(h)?, f(w)?))
    }

    /// Rows of the parameter block (weights K·K·Cin, then the bias row).
    pub fn block_rows(&self) -> usize {
        self.k * self.k * self.cin + 1
    }

    /// Multiply-adds of the forward pass for `batch` images of h×w input, times 2.
    pub fn flops_forward(&self, batch: usize, h: usize, w: usize) -> f64 {
        let (oh, ow) = self.out_hw(h, w).unwrap_or((0, 0));
        let small = if self.transposed { h * w } else { oh * ow };
        2.0 * (batch * small * self.k * self.k * self.cin * self.cout) as f64
    }
}

/// Calls `f(b, small_pixel, big_pixel, tap)` for every valid pair, with pixels as flat indices
/// (b·H + y)·W + x of their own image and tap = kh·K + kw.
#[allow(clippy::too_many_arguments)]
pub fn for_each_pair(
    batch: usize,
    small: (usize, usize),
    big: (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    for b in 0..batch {
        for sy in 0..small.0 {
            for sx in 0..small.1 {
                let sp = (b * small.0 + sy) * small.1 + sx;
                for kh in 0..k {
                    let by = (sy * stride + kh) as i64 - pad as i64;
                    if by < 0 || by >= big.0 as i64 {
                        continue;
                    }
                    for kw in 0..k {
                        let bx = (sx * stride + kw) as i64 - pad as i64;
                        if bx < 0 || bx >= big.1 as i64 {
                            continue;
                        }
                        let bp = (b * big.0 + by as usize) * big.1 + bx as usize;
                        f(sp, bp, kh * k + kw);
                    }
                }
            }
        }
    }
}

/// (small, big) image sizes of a layer with input h×w.
fn small_big(g: &ConvGeom, h: usize, w: usize) -> ((usize, usize), (usize, usize)) {
    let o = g.out_hw(h, w).expect("conv geometry");
    if g.transposed {
        ((h, w), o)
    } else {
        (o, (h, w))
    }
}

/// y = act(conv(x, W) + b [+ resid]) for x [B, h, w, Cin]; `pre_relu` reads relu(x) instead of x.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
    g: &ConvGeom,
    x: &[f64],
    block: &[f64],
    batch: usize,
    h: usize,
    w: usize,
    act: Act,
    pre_relu: bool,
    resid: Option<&[f64]>,
) -> Vec<f64> {
    let (small, big) = small_big(g, h, w);
    let (oh, ow) = g.out_hw(h, w).unwrap();
    let (ci, co) = (g.cin, g.cout);
    let bias = &block[(g.block_rows() - 1) * co..];
    let mut y: Vec<f64> = (0..batch * oh * ow * co).map(|i| bias[i % co]).collect();
    let xv = |i: usize| if pre_relu { x[i].max(0.0) } else { x[i] };
    for_each_pair(batch, small, big, g.k, g.stride, g.pad, |sp, bp, tap| {
        let (ip, op) = if g.transposed { (sp, bp) } else { (bp, sp) };
        for c in 0..ci {
            let xval = xv(ip * ci + c);
            let wrow = &block[(tap * ci + c) * co..(tap * ci + c + 1) * co];
            for (o, wv) in wrow.iter().enumerate() {
                y[op * co + o] += xval * wv;
            }
        }
    });
    if let Some(r) = resid {
        for (v, rv) in y.iter_mut().zip(r) {
            *v += rv;
        }
    }
    y.iter().map(|&v| act_forward(act, v)).collect()
}

/// Input gradient: dx = convᵀ(dy_pre, W) [⊙ act_prev'(z)] [+ resid], for dy_pre the gradient with
/// respect to the layer's pre-activation output. `z` holds the activation outputs act' is read from.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_input(
    g: &ConvGeom,
    dy: &[f64],
    block: &[f64],
    batch: usize,
    h: usize,
    w: usize,
    dact: Act,
    z: Option<&[f64]>,
    resid: Option<&[f64]>,
) -> Vec<f64> {
    let (small, big) = small_big(g, h, w);
    let (ci, co) = (g.cin, g.cout);
    let mut dx = vec![0.0; batch * h * w * ci];
    for_each_pair(batch, small, big, g.k, g.stride, g.pad, |sp, bp, tap| {
        let (ip, op) = if g.transposed { (sp, bp) } else { (bp, sp) };
        for c in 0..ci {
            let wrow = &block[(tap * ci + c) * co..(tap * ci + c + 1) * co];
            let s: f64 = wrow.iter().enumerate().map(|(o, wv)| dy[op * co + o] * wv).sum();
            dx[ip * ci + c] += s;
        }
    });
    for (i, v) in dx.iter_mut().enumerate() {
        if let Some(z) = z {
            *v *= act_grad_from_y(dact, z[i]);
        }
        if let Some(r) = resid {
            *v += r[i];
        }
    }
    dx
}

/// Parameter gradient [(K·K·Cin + 1), Cout] (bias last) from the layer input x and dy_pre.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_params(
    g: &ConvGeom,
    x: &[f64],
    dy: &[f64],
    batch: usize,
    h: usize,
    w: usize,
    pre_relu: bool,
) -> Vec<f64> {
    let (small, big) = small_big(g, h, w);
    let (oh, ow) = g.out_hw(h, w).unwrap();
    let (ci, co) = (g.cin, g.cout);
    let mut dw = vec![0.0; g.block_rows() * co];
    let xv = |i: usize| if pre_relu { x[i].max(0.0) } else { x[i] };
    for_each_pair(batch, small, big, g.k, g.stride, g.pad, |sp, bp, tap| {
        let (ip, op) = if g.transposed { (sp, bp) } else { (bp, sp) };
        for c in 0..ci {
            let xval = xv(ip * ci + c);
            for o in 0..co {
                dw[(tap * ci + c) * co + o] += xval * dy[op * co + o];
            }
        }
    });
    let brow = (g.block_rows() - 1) * co;
    for p in 0..batch * oh * ow {
        for o in 0..co {
            dw[brow + o] += dy[p * co + o];
        }
    }
    dw
}
