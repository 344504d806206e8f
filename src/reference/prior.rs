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

/// out[r, :] = table[idx[r], :] (NaN when idx[r] >= K) for the rows r < idx.len(), or with
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
    /// −log softmax(l)[target] per row (NaN for a target >= K).
    pub nll: Vec<f64>,
    /// 1 when the lowest-index argmax is the target, else 0.
    pub correct: Vec<f64>,
    /// scale·(softmax(l) − onehot(target)) [n, K].
    pub dlogits: Vec<f64>,
}

/// The softmax cross-entropy of logits [n, K] against target [n], max-subtracted.
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
/// (step = state[0], key = (state[3], state[4])). Returns the B indices.
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
