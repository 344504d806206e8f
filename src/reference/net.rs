//! CPU twin of nn/gpu.rs: a [`Net`]'s forward and backward passes in f64, composed from the reference
//! ops exactly as the GPU composes its launches (same gradient conventions).

use super::conv::{conv_backward_input, conv_backward_params, conv_forward};
use super::matmul::{linear_backward, linear_forward};
use crate::kernels::Act;
use crate::nn::{Layer, Net, Op, ParamLayout};

/// Every layer's output (after activation) and, for residual blocks, the hidden activation.
pub struct Acts {
    pub outs: Vec<Vec<f64>>,
    pub inner: Vec<Option<Vec<f64>>>,
}

fn block<'a>(layout: &ParamLayout, params: &'a [f64], b: usize) -> &'a [f64] {
    let l = &layout.layers[b];
    &params[l.offset..l.offset + l.len()]
}

pub fn net_forward(net: &Net, layout: &ParamLayout, params: &[f64], input: &[f64], rows: usize) -> Acts {
    net_forward_add(net, layout, params, input, rows, None)
}

/// The forward pass with `add` summed into the last layer's output before its activation (a conv).
pub fn net_forward_add(
    net: &Net,
    layout: &ParamLayout,
    params: &[f64],
    input: &[f64],
    rows: usize,
    add: Option<&[f64]>,
) -> Acts {
    let mut outs: Vec<Vec<f64>> = Vec::new();
    let mut inner = Vec::new();
    let last = net.layers.len() - 1;
    for (i, l) in net.layers.iter().enumerate() {
        let r = add.filter(|_| i == last);
        let x = outs.last().map_or(input, |v| &v[..]);
        let s = l.input;
        let (y, h) = match &l.op {
            Op::Linear { block: b } => {
                assert!(r.is_none(), "only a conv output takes a sum");
                let p = &layout.layers[*b];
                (linear_forward(x, block(layout, params, *b), rows, p.din, p.dout, l.act), None)
            }
            Op::Conv { block: b, geom } => {
                (conv_forward(geom, x, block(layout, params, *b), rows, s.h, s.w, l.act, false, r), None)
            }
            Op::Res { conv3, conv1, hidden } => {
                assert!(r.is_none(), "only a conv output takes a sum");
                let (g3, g1) = Layer::res_geoms(s.c, *hidden);
                let h = conv_forward(&g3, x, block(layout, params, *conv3), rows, s.h, s.w, Act::Relu, true, None);
                let y = conv_forward(&g1, &h, block(layout, params, *conv1), rows, s.h, s.w, l.act, false, Some(x));
                (y, Some(h))
            }
        };
        outs.push(y);
        inner.push(h);
    }
    Acts { outs, inner }
}

/// Backward from `d_out`, the gradient with respect to the last layer's pre-activation output. Writes
/// every parameter block's gradient into `grads` (flat layout) and returns the input gradient
/// ⊙ input_act'(input) when `want_dx`.
#[allow(clippy::too_many_arguments)]
pub fn net_backward(
    net: &Net,
    layout: &ParamLayout,
    params: &[f64],
    input: &[f64],
    acts: &Acts,
    d_out: &[f64],
    rows: usize,
    input_act: Act,
    grads: &mut [f64],
    want_dx: bool,
) -> Option<Vec<f64>> {
    let mut g = d_out.to_vec();
    let mut put = |b: usize, v: &[f64]| {
        let l = &layout.layers[b];
        grads[l.offset..l.offset + l.len()].copy_from_slice(v);
    };
    for (i, l) in net.layers.iter().enumerate().rev() {
        let x = if i == 0 { input } else { &acts.outs[i - 1][..] };
        let prev_act = if i == 0 { input_act } else { net.layers[i - 1].act };
        let need_dx = i > 0 || want_dx;
        let s = l.input;
        let dx = match &l.op {
            Op::Linear { block: b } => {
                let p = &layout.layers[*b];
                let w = block(layout, params, *b);
                // g is already the pre-activation gradient: act = Identity here.
                let (dx, dw) = linear_backward(x, w, &acts.outs[i], &g, rows, p.din, p.dout, Act::Identity, prev_act);
                put(*b, &dw);
                dx
            }
            Op::Conv { block: b, geom } => {
                let w = block(layout, params, *b);
                put(*b, &conv_backward_params(geom, x, &g, rows, s.h, s.w, false));
                if need_dx {
                    conv_backward_input(geom, &g, w, rows, s.h, s.w, prev_act, Some(x), None)
                } else {
                    Vec::new()
                }
            }
            Op::Res { conv3, conv1, hidden } => {
                let (g3, g1) = Layer::res_geoms(s.c, *hidden);
                let h = acts.inner[i].as_ref().unwrap();
                put(*conv1, &conv_backward_params(&g1, h, &g, rows, s.h, s.w, false));
                let w1 = block(layout, params, *conv1);
                let dh = conv_backward_input(&g1, &g, w1, rows, s.h, s.w, Act::Relu, Some(h), None);
                put(*conv3, &conv_backward_params(&g3, x, &dh, rows, s.h, s.w, true));
                let w3 = block(layout, params, *conv3);
                let dx = conv_backward_input(&g3, &dh, w3, rows, s.h, s.w, Act::Relu, Some(x), Some(&g));
                debug_assert_eq!(prev_act, Act::Identity, "residual block input with an activation");
                dx
            }
        };
        g = dx;
    }
    want_dx.then_some(g)
}
