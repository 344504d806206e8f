//! CPU twins of shaders/vq.wgsl in f64: assignment, straight-through/commitment backward, per-code
//! statistics, the EMA update with dead-code restart, code usage and the reconstruction MSE; plus the
//! losses whose gradients those kernels compute, for finite-difference checks.

use super::optim::flush_subnormal;
use super::sample::{philox, seed_key};

/// Nearest code per vector (ties to the lowest index): (idx, zq, dist).
pub fn assign(z: &[f64], code: &[f64], n: usize, d: usize, k: usize) -> (Vec<u32>, Vec<f64>, Vec<f64>) {
    let mut idx = vec![0u32; n];
    let mut zq = vec![0.0; n * d];
    let mut dist = vec![0.0; n];
    for r in 0..n {
        let zr = &z[r * d..(r + 1) * d];
        let (mut best, mut bd) = (0usize, f64::INFINITY);
        for c in 0..k {
            let s: f64 = zr.iter().zip(&code[c * d..(c + 1) * d]).map(|(a, b)| (a - b) * (a - b)).sum();
            if c == 0 || s < bd {
                best = c;
                bd = s;
            }
        }
        idx[r] = best as u32;
        dist[r] = bd;
        zq[r * d..(r + 1) * d].copy_from_slice(&code[best * d..(best + 1) * d]);
    }
    (idx, zq, dist)
}

/// Squared distances of z\[r\] to every code (for near-tie checks).
pub fn distances(z: &[f64], code: &[f64], r: usize, d: usize, k: usize) -> Vec<f64> {
    (0..k).map(|c| (0..d).map(|j| (z[r * d + j] - code[c * d + j]).powi(2)).sum()).collect()
}

/// dz = dzq + scale·(z − code\[idx\]).
pub fn backward(z: &[f64], code: &[f64], idx: &[u32], dzq: &[f64], d: usize, scale: f64) -> Vec<f64> {
    (0..z.len()).map(|i| dzq[i] + scale * (z[i] - code[idx[i / d] as usize * d + i % d])).collect()
}

/// Vectors per code among the first `valid` vectors.
pub fn counts(idx: &[u32], k: usize, valid: usize) -> Vec<f64> {
    let mut c = vec![0.0; k];
    for &i in &idx[..valid.min(idx.len())] {
        c[i as usize] += 1.0;
    }
    c
}

/// Σ z over the vectors assigned to each code: [K, D].
pub fn sums(z: &[f64], idx: &[u32], d: usize, k: usize) -> Vec<f64> {
    let mut s = vec![0.0; k * d];
    for (r, &i) in idx.iter().enumerate() {
        for j in 0..d {
            s[i as usize * d + j] += z[r * d + j];
        }
    }
    s
}

/// The EMA state of one codebook.
#[derive(Clone, Debug, PartialEq)]
pub struct Ema {
    pub count: Vec<f64>,
    pub sum: Vec<f64>,
    pub code: Vec<f64>,
}

/// N ← γN + (1−γ)n, m ← γm + (1−γ)Σz (each 0 where below f32's least normal); then e = m / Ns with
/// Ns = (N + ε)/(ΣN + Kε)·ΣN, or (restart = Some(threshold)) for a code with N < threshold: e = m =
/// z\[r\], N = 1, r drawn as the kernel does.
/// Returns the codes reset.
#[allow(clippy::too_many_arguments)]
pub fn ema_update(
    ema: &mut Ema,
    z: &[f64],
    idx: &[u32],
    d: usize,
    decay: f64,
    eps: f64,
    restart: Option<f64>,
    step: u32,
    seed: u64,
) -> Vec<usize> {
    let k = ema.count.len();
    let n = idx.len();
    let cnt = counts(idx, k, n);
    let s = sums(z, idx, d, k);
    for c in 0..k {
        ema.count[c] = flush_subnormal(decay * ema.count[c] + (1.0 - decay) * cnt[c]);
        for j in 0..d {
            ema.sum[c * d + j] = flush_subnormal(decay * ema.sum[c * d + j] + (1.0 - decay) * s[c * d + j]);
        }
    }
    let total: f64 = ema.count.iter().sum();
    let mut reset = Vec::new();
    for c in 0..k {
        if restart.is_some_and(|t| ema.count[c] < t) {
            let r = restart_row(c, step, seed, n);
            for j in 0..d {
                ema.code[c * d + j] = z[r * d + j];
                ema.sum[c * d + j] = z[r * d + j];
            }
            ema.count[c] = 1.0;
            reset.push(c);
        } else {
            let ns = (ema.count[c] + eps) / (total + k as f64 * eps) * total;
            for j in 0..d {
                ema.code[c * d + j] = ema.sum[c * d + j] / ns;
            }
        }
    }
    reset
}

/// The batch vector a dead code `c` is reset to at `step`.
pub fn restart_row(c: usize, step: u32, seed: u64, n: usize) -> usize {
    let r = philox([c as u32, step, crate::kernels::vq::STREAM_RESTART, 0], seed_key(seed))[0];
    ((r as u64 * n as u64) >> 32) as usize
}

/// (perplexity exp(−Σ p ln p), used codes) of a count vector.
pub fn perplexity(counts: &[f64]) -> (f64, usize) {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return (1.0, 0);
    }
    let h: f64 = counts.iter().filter(|&&c| c > 0.0).map(|&c| -(c / total) * (c / total).ln()).sum();
    (h.exp(), counts.iter().filter(|&&c| c > 0.0).count())
}

/// Commitment loss β·mean((z − e_idx)²) over N·D elements, with the assignment held fixed.
pub fn commitment_loss(z: &[f64], code: &[f64], idx: &[u32], d: usize, beta: f64) -> f64 {
    let s: f64 = (0..z.len()).map(|i| (z[i] - code[idx[i / d] as usize * d + i % d]).powi(2)).sum();
    beta * s / z.len() as f64
}

/// Codebook-loss gradient with respect to the codebook: scale·(counts·e − Σz).
pub fn codebook_grad(z: &[f64], code: &[f64], idx: &[u32], d: usize, k: usize, scale: f64) -> Vec<f64> {
    let c = counts(idx, k, idx.len());
    let s = sums(z, idx, d, k);
    (0..k * d).map(|i| scale * (c[i / d] * code[i] - s[i])).collect()
}

/// The reconstruction MSE of `recon_mse`: per image Σ e² inside the window, dxhat = scale·e inside.
#[allow(clippy::too_many_arguments)]
pub fn recon_mse(
    xhat: &[f64],
    x: &[f64],
    batch: usize,
    (h, w, c): (usize, usize, usize),
    (top, left, vh, vw): (usize, usize, usize, usize),
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let per = h * w * c;
    let mut sse = vec![0.0; batch];
    let mut dx = vec![0.0; batch * per];
    for b in 0..batch {
        for i in 0..per {
            let (y, xx) = (i / c / w, i / c % w);
            if y >= top && y < top + vh && xx >= left && xx < left + vw {
                let e = xhat[b * per + i] - x[b * per + i];
                sse[b] += e * e;
                dx[b * per + i] = scale * e;
            }
        }
    }
    (sse, dx)
}

/// One VQ-VAE (or VQ-VAE-2) forward and backward pass (models/vq.rs) in f64.
pub struct VqStepOut {
    /// d loss / d params (flat layout; the codebook blocks only without EMA).
    pub grads: Vec<f64>,
    /// Per level (bottom first), the chosen codes.
    pub idx: Vec<Vec<u32>>,
    /// Per image: Σ squared error inside the window, Σ VQ distances (every level).
    pub rows: Vec<(f64, f64)>,
    /// Per level, the EMA state after the update (EMA codebooks; empty otherwise).
    pub ema: Vec<Ema>,
    /// Per level, the encoder output z that was quantised.
    pub z: Vec<Vec<f64>>,
}

/// One level's quantisation: (idx, zq, dist), following `over` where given.
fn quantise(z: &[f64], code: &[f64], d: usize, k: usize, over: Option<&[u32]>) -> (Vec<u32>, Vec<f64>, Vec<f64>) {
    let n = z.len() / d;
    let (mut own, _, _) = assign(z, code, n, d, k);
    if let Some(i) = over {
        own = i.to_vec();
    }
    let zq: Vec<f64> = (0..n * d).map(|i| code[own[i / d] as usize * d + i % d]).collect();
    let dist = (0..n).map(|r| (0..d).map(|j| (z[r * d + j] - zq[r * d + j]).powi(2)).sum()).collect();
    (own, zq, dist)
}

/// One level's backward: dz = dzq + commitment, and the EMA update or the codebook gradient.
#[allow(clippy::too_many_arguments)]
fn level_backward(
    cfg: &crate::models::vq::VqConfig,
    layout: &crate::nn::ParamLayout,
    t: &crate::models::vq::Tables,
    params: &[f64],
    z: &[f64],
    own: &[u32],
    dzq: &[f64],
    grads: &mut [f64],
    ema: &mut Vec<Ema>,
    step: u32,
    seed: u64,
) -> Vec<f64> {
    let (d, k) = (cfg.dim, cfg.codes);
    let n = z.len() / d;
    let e = &layout.layers[t.embed];
    let code = &params[e.offset..e.offset + k * d];
    let dz = backward(z, code, own, dzq, d, 2.0 * cfg.beta as f64 / (n * d) as f64);
    if cfg.ema {
        let (cn, sm) = (&layout.layers[t.count], &layout.layers[t.sum]);
        let mut st = Ema {
            count: params[cn.offset..cn.offset + k].to_vec(),
            sum: params[sm.offset..sm.offset + k * d].to_vec(),
            code: code.to_vec(),
        };
        let restart = cfg.restart.then_some(cfg.restart_threshold as f64);
        ema_update(&mut st, z, own, d, cfg.decay as f64, cfg.eps as f64, restart, step, seed);
        ema.push(st);
    } else {
        let g = codebook_grad(z, code, own, d, k, 2.0 / (n * d) as f64);
        grads[e.offset..e.offset + k * d].copy_from_slice(&g);
    }
    dz
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// The step of a VQ model on the padded batch `x` [B, H·W·C]; `idx` (per level) overrides the
/// assignment (to follow the GPU through float near-ties); `step` and `seed` drive the restart draws.
#[allow(clippy::too_many_arguments)]
pub fn vq_step(
    cfg: &crate::models::vq::VqConfig,
    params: &[f64],
    x: &[f64],
    batch: usize,
    variance: f64,
    idx: Option<&[Vec<u32>]>,
    step: u32,
    seed: u64,
) -> VqStepOut {
    use super::net::{net_backward, net_forward, net_forward_add};
    let nets = cfg.nets().expect("valid config");
    let layout = &nets.layout;
    let (d, k) = (cfg.dim, cfg.codes);
    let code = |l: usize| {
        let e = &layout.layers[nets.tables[l].embed];
        &params[e.offset..e.offset + k * d]
    };
    let over = |l: usize| idx.map(|v| &v[l][..]);
    let last = |a: &super::net::Acts| a.outs.last().unwrap().clone();
    let id = crate::kernels::Act::Identity;
    let enc = net_forward(&nets.encoder, layout, params, x, batch);
    let h = last(&enc);
    let mut grads = vec![0.0; layout.total];
    let mut ema = Vec::new();
    let [hh, w, c] = cfg.image;
    let [vh, vw] = cfg.valid;
    let (top, left, _, _) = cfg.padding(vh, vw);
    let scale = 2.0 / ((batch * vh * vw * c) as f64 * variance);
    let (idx, z, sse, dist) = match &nets.top {
        None => {
            let (own, zq, dist) = quantise(&h, code(0), d, k, over(0));
            let dec = net_forward(&nets.decoder, layout, params, &zq, batch);
            let (sse, dxhat) = recon_mse(&last(&dec), x, batch, (hh, w, c), (top, left, vh, vw), scale);
            let dzq = net_backward(&nets.decoder, layout, params, &zq, &dec, &dxhat, batch, id, &mut grads, true);
            let t = &nets.tables[0];
            let dz = level_backward(cfg, layout, t, params, &h, &own, &dzq.unwrap(), &mut grads, &mut ema, step, seed);
            net_backward(&nets.encoder, layout, params, x, &enc, &dz, batch, id, &mut grads, false);
            let per = own.len() / batch;
            let dist = (0..batch).map(|b| dist[b * per..][..per].iter().sum()).collect();
            (vec![own], vec![h], sse, dist)
        }
        Some(t) => {
            let h_act = nets.encoder.output_act();
            let et = net_forward(&t.encoder, layout, params, &h, batch);
            let zt = last(&et);
            let (own_t, zq_t, dist_t) = quantise(&zt, code(1), d, k, over(1));
            let dt = net_forward(&t.decoder, layout, params, &zq_t, batch);
            let pre = net_forward_add(&t.pre_vq, layout, params, &h, batch, Some(&last(&dt)));
            let zb = last(&pre);
            let (own_b, zq_b, dist_b) = quantise(&zb, code(0), d, k, over(0));
            let up = net_forward(&t.up, layout, params, &zq_t, batch);
            let din = net_forward_add(&t.dec_in, layout, params, &zq_b, batch, Some(&last(&up)));
            let s = last(&din);
            let dec = net_forward(&nets.decoder, layout, params, &s, batch);
            let (sse, dxhat) = recon_mse(&last(&dec), x, batch, (hh, w, c), (top, left, vh, vw), scale);
            let g = &mut grads;
            let ds = net_backward(&nets.decoder, layout, params, &s, &dec, &dxhat, batch, id, g, true).unwrap();
            let dzq_b = net_backward(&t.dec_in, layout, params, &zq_b, &din, &ds, batch, id, g, true).unwrap();
            let dq_up = net_backward(&t.up, layout, params, &zq_t, &up, &ds, batch, id, g, true).unwrap();
            let tb = &nets.tables[0];
            let dzb = level_backward(cfg, layout, tb, params, &zb, &own_b, &dzq_b, g, &mut ema, step, seed);
            let dq_dec = net_backward(&t.decoder, layout, params, &zq_t, &dt, &dzb, batch, id, g, true).unwrap();
            let dh_pre = net_backward(&t.pre_vq, layout, params, &h, &pre, &dzb, batch, h_act, g, true).unwrap();
            let dzq_t = add(&dq_dec, &dq_up);
            let tt = &nets.tables[1];
            let dzt = level_backward(cfg, layout, tt, params, &zt, &own_t, &dzq_t, g, &mut ema, step, seed);
            let dh_top = net_backward(&t.encoder, layout, params, &h, &et, &dzt, batch, h_act, g, true).unwrap();
            let dh = add(&dh_top, &dh_pre);
            net_backward(&nets.encoder, layout, params, x, &enc, &dh, batch, id, g, false);
            let per_t = own_t.len() / batch;
            let per_b = own_b.len() / batch;
            let dist: Vec<f64> = (0..batch)
                .map(|b| {
                    dist_b[b * per_b..][..per_b].iter().sum::<f64>() + dist_t[b * per_t..][..per_t].iter().sum::<f64>()
                })
                .collect();
            (vec![own_b, own_t], vec![zb, zt], sse, dist)
        }
    };
    let rows = sse.into_iter().zip(dist).collect();
    VqStepOut { grads, idx, rows, ema, z }
}
