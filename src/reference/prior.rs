//! CPU twins of shaders/prior.wgsl in f64: the gated activation and its backward, the code lookup, the
//! softmax cross-entropy (nll, correct, gradient) and its per-image sums, the categorical draw (same
//! Philox stream as the kernel) and the weight mask.

use super::sample::{philox, u32_to_unit};
use crate::kernels::prior::STREAM_PRIOR_SAMPLE;

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// y [n, C] = tanh(a)·σ(g) for pre [n, 2C] (each row: C values a, then C values g).
pub fn gate_forward(pre: &[f64], n: usize, c: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * c];
    for r in 0..n {
        for j in 0..c {
            y[r * c + j] = pre[r * 2 * c + j].tanh() * sigmoid(pre[r * 2 * c + c + j]);
        }
    }
    y
}

/// dpre [n, 2C]: da = dy·σ(g)·(1 − tanh²a), dg = dy·tanh(a)·σ(g)·(1 − σ(g)).
pub fn gate_backward(pre: &[f64], dy: &[f64], n: usize, c: usize) -> Vec<f64> {
    let mut d = vec![0.0; n * 2 * c];
    for r in 0..n {
        for j in 0..c {
            let t = pre[r * 2 * c + j].tanh();
            let s = sigmoid(pre[r * 2 * c + c + j]);
            let g = dy[r * c + j];
            d[r * 2 * c + j] = g * s * (1.0 - t * t);
            d[r * 2 * c + c + j] = g * t * s * (1.0 - s);
        }
    }
    d
}

/// out[r, :] = table[idx\[r\], :] (NaN when idx\[r\] >= K) for the rows r < idx.len(), or with
/// `position = Some((P, pos))` only the rows r = b·P + pos; the other rows of `out` are left alone.
pub fn code_lookup(idx: &[u32], table: &[f64], k: usize, d: usize, position: Option<(usize, usize)>, out: &mut [f64]) {
    for (r, &i) in idx.iter().enumerate() {
        if position.is_some_and(|(per_row, pos)| r % per_row != pos) {
            continue;
        }
        for j in 0..d {
            out[r * d + j] = if (i as usize) < k { table[i as usize * d + j] } else { f64::NAN };
        }
    }
}

/// Per-row results of the softmax cross-entropy.
#[derive(Clone, Debug)]
pub struct Ce {
    /// −log softmax(l)\[target\] per row (NaN for a target >= K).
    pub nll: Vec<f64>,
    /// 1 when the lowest-index argmax is the target, else 0.
    pub correct: Vec<f64>,
    /// scale·(softmax(l) − onehot(target)) [n, K].
    pub dlogits: Vec<f64>,
}

/// The softmax cross-entropy of logits [n, K] against target \[n\], max-subtracted.
pub fn ce(logits: &[f64], target: &[u32], n: usize, k: usize, scale: f64) -> Ce {
    let mut out = Ce { nll: vec![0.0; n], correct: vec![0.0; n], dlogits: vec![0.0; n * k] };
    for r in 0..n {
        let l = &logits[r * k..(r + 1) * k];
        let mut am = 0;
        for (i, &v) in l.iter().enumerate() {
            if v > l[am] {
                am = i;
            }
        }
        let m = l[am];
        let s: f64 = l.iter().map(|&v| (v - m).exp()).sum();
        let t = target[r] as usize;
        out.nll[r] = if t < k { m + s.ln() - l[t] } else { f64::NAN };
        out.correct[r] = if am == t { 1.0 } else { 0.0 };
        for (i, &v) in l.iter().enumerate() {
            out.dlogits[r * k + i] = scale * ((v - m).exp() / s - if i == t { 1.0 } else { 0.0 });
        }
    }
    out
}

/// rows [B, 2]: per image (Σ_p nll, Σ_p correct) over its P = per_row rows.
pub fn ce_rows(nll: &[f64], correct: &[f64], batch: usize, per_row: usize) -> Vec<f64> {
    let mut rows = vec![0.0; 2 * batch];
    for b in 0..batch {
        for q in 0..per_row {
            rows[2 * b] += nll[b * per_row + q];
            rows[2 * b + 1] += correct[b * per_row + q];
        }
    }
    rows
}

/// The uniform of image b's draw at `pos`: u32_to_unit(philox((b, pos, step, 12), key).x).
pub fn sample_unit(b: usize, pos: usize, step: u32, key: [u32; 2]) -> f64 {
    u32_to_unit(philox([b as u32, pos as u32, step, STREAM_PRIOR_SAMPLE], key)[0])
}

/// The unnormalised weights exp((l − max l)/τ) of a logits row.
pub fn weights(l: &[f64], temperature: f64) -> Vec<f64> {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    l.iter().map(|&v| ((v - m) / temperature).exp()).collect()
}

/// The CDF of softmax(l / τ) in index order (last value 1 up to rounding).
pub fn cdf(l: &[f64], temperature: f64) -> Vec<f64> {
    let e = weights(l, temperature);
    let s: f64 = e.iter().sum();
    let mut cum = 0.0;
    e.iter()
        .map(|&v| {
            cum += v;
            cum / s
        })
        .collect()
}

/// Inverse CDF in index order: the first k with e_k > 0 and u·S < e_0 + ... + e_k, else (u·S above the
/// total by rounding) the last k with e_k > 0.
pub fn inverse_cdf(l: &[f64], temperature: f64, u: f64) -> u32 {
    let e = weights(l, temperature);
    let s: f64 = e.iter().sum();
    let target = u * s;
    let (mut cum, mut last) = (0.0, 0);
    for (i, &v) in e.iter().enumerate() {
        if v > 0.0 {
            last = i;
            cum += v;
            if target < cum {
                return i as u32;
            }
        }
    }
    last as u32
}

/// For each image b of logits [B, P, K]: k ~ softmax(logits[b, pos, :] / τ) with the kernel's uniform
/// (step = state\[0\], key = (state\[3\], state\[4\])). Returns the B indices.
#[allow(clippy::too_many_arguments)]
pub fn categorical_sample(
    logits: &[f64],
    batch: usize,
    per_row: usize,
    k: usize,
    pos: usize,
    temperature: f64,
    step: u32,
    key: [u32; 2],
) -> Vec<u32> {
    (0..batch)
        .map(|b| {
            let row = (b * per_row + pos) * k;
            inverse_cdf(&logits[row..row + k], temperature, sample_unit(b, pos, step, key))
        })
        .collect()
}

/// x ⊙ mask.
pub fn mask_mul(x: &[f64], mask: &[f64]) -> Vec<f64> {
    x.iter().zip(mask).map(|(a, m)| a * m).collect()
}

/// One step of the gated PixelCNN prior (models/prior.rs) in f64.
pub struct PriorStepOut {
    /// d loss / d params, flat layout, masked taps zero (multiplied by nets.mask).
    pub grads: Vec<f64>,
    /// [B·P, K]
    pub logits: Vec<f64>,
    /// Per image (Σ_p nll, Σ_p correct).
    pub rows: Vec<(f64, f64)>,
    /// mean nll per code (nats): the loss whose gradient `grads` is.
    pub loss: f64,
}

/// The forward values of one gated layer that its backward pass reads.
struct LayerActs {
    vin: Vec<f64>,
    hin: Vec<f64>,
    v: super::net::Acts,
    v_pre: Vec<f64>,
    u: super::net::Acts,
    h: super::net::Acts,
    h_pre: Vec<f64>,
    g: Vec<f64>,
    res: super::net::Acts,
}

/// The prior's forward and backward pass on `batch` code maps: codebook [K, D] embeds idx [B·P]
/// (row-major code maps, P = H·W); cond = (top codebook [K_top, D], top idx [B·h·w]) for a prior with
/// a conditioning map. The parameters are used as given (the caller zeroes the masked taps); the loss
/// is the mean over the B·P positions of −log softmax(logits)\[idx\].
pub fn prior_step(
    cfg: &crate::models::prior::PriorConfig,
    params: &[f64],
    codebook: &[f64],
    idx: &[u32],
    cond: Option<(&[f64], &[u32])>,
    batch: usize,
) -> PriorStepOut {
    use super::net::{net_backward, net_forward, net_forward_add};
    use crate::kernels::Act;
    let nets = cfg.nets().expect("valid prior config");
    let layout = &nets.layout;
    let (k, d, c) = (cfg.codes, cfg.dim, cfg.channels);
    let n = batch * cfg.positions();
    assert_eq!(params.len(), layout.total, "params");
    assert_eq!(codebook.len(), k * d, "codebook [K, D]");
    assert_eq!(idx.len(), n, "idx [B·P]");
    assert_eq!(cond.is_some(), nets.cond.is_some(), "cond given iff the config has a conditioning map");
    let last = |a: &super::net::Acts| a.outs.last().unwrap().clone();
    let mut e = vec![0.0; n * d];
    code_lookup(idx, codebook, k, d, None, &mut e);
    // The conditioning net on the top codes' embedding: its output joins v_pre of layer 0.
    let cond_in = cond.map(|(table, top)| {
        assert_eq!(table.len() % d, 0, "top codebook [K, D]");
        let mut et = vec![0.0; top.len() * d];
        code_lookup(top, table, table.len() / d, d, None, &mut et);
        et
    });
    let cond_acts = nets.cond.as_ref().zip(cond_in.as_ref()).map(|(net, x)| net_forward(net, layout, params, x, batch));
    let n_layers = nets.layers.len();
    let mut acts: Vec<LayerActs> = Vec::with_capacity(n_layers);
    let (mut vin, mut hin) = (e.clone(), e);
    for (l, gl) in nets.layers.iter().enumerate() {
        let add_v = if l == 0 { cond_acts.as_ref().map(last) } else { None };
        let v = net_forward_add(&gl.conv_v, layout, params, &vin, batch, add_v.as_deref());
        let v_pre = last(&v);
        let u = net_forward(&gl.v2h, layout, params, &v_pre, batch);
        let h = net_forward_add(&gl.conv_h, layout, params, &hin, batch, Some(&last(&u)));
        let h_pre = last(&h);
        let g = gate_forward(&h_pre, n, c);
        let skip = (l > 0).then_some(&hin[..]);
        let res = net_forward_add(&gl.res, layout, params, &g, batch, skip);
        // v_l feeds layer l + 1 only.
        let v_next = if l + 1 < n_layers { gate_forward(&v_pre, n, c) } else { Vec::new() };
        let h_next = last(&res);
        acts.push(LayerActs { vin, hin, v, v_pre, u, h, h_pre, g, res });
        (vin, hin) = (v_next, h_next);
    }
    let head = net_forward(&nets.head, layout, params, &hin, batch);
    let logits = last(&head);
    let out = ce(&logits, idx, n, k, 1.0 / n as f64);
    let r = ce_rows(&out.nll, &out.correct, batch, cfg.positions());
    let rows = (0..batch).map(|b| (r[2 * b], r[2 * b + 1])).collect();
    let loss = out.nll.iter().sum::<f64>() / n as f64;

    let id = Act::Identity;
    let mut grads = vec![0.0; layout.total];
    let g = &mut grads;
    // d h_{L−1}, then per layer (last first): d h_{l−1} and d v_{l−1} for the layer below.
    let mut dh = net_backward(&nets.head, layout, params, &hin, &head, &out.dlogits, batch, id, g, true).unwrap();
    let mut dv: Option<Vec<f64>> = None;
    for (l, (gl, a)) in nets.layers.iter().zip(&acts).enumerate().rev() {
        let below = l > 0;
        let dg = net_backward(&gl.res, layout, params, &a.g, &a.res, &dh, batch, id, g, true).unwrap();
        let dh_pre = gate_backward(&a.h_pre, &dg, n, c);
        // h_pre = conv_h(h_{l−1}) + u: both take dh_pre.
        let dhin = net_backward(&gl.conv_h, layout, params, &a.hin, &a.h, &dh_pre, batch, id, g, below);
        let mut dv_pre = net_backward(&gl.v2h, layout, params, &a.v_pre, &a.u, &dh_pre, batch, id, g, true).unwrap();
        if let Some(dv) = &dv {
            // v_pre also feeds the gate that gives v_l to layer l + 1.
            for (x, y) in dv_pre.iter_mut().zip(gate_backward(&a.v_pre, dv, n, c)) {
                *x += y;
            }
        }
        dv = net_backward(&gl.conv_v, layout, params, &a.vin, &a.v, &dv_pre, batch, id, g, below);
        if l == 0 {
            if let (Some(net), Some(ca), Some(x)) = (&nets.cond, &cond_acts, &cond_in) {
                net_backward(net, layout, params, x, ca, &dv_pre, batch, id, g, false);
            }
        } else {
            // h_{l−1} feeds conv_h and the skip of res.
            dh = dhin.unwrap().iter().zip(&dh).map(|(x, y)| x + y).collect();
        }
    }
    for (x, m) in grads.iter_mut().zip(&nets.mask) {
        *x *= *m as f64;
    }
    PriorStepOut { grads, logits, rows, loss }
}
