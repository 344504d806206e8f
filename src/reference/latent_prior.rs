//! CPU twins of shaders/latent_prior.wgsl and of models::latent_prior in f64: log p(z) of the standard,
//! flow (RealNVP) and mixture priors, the gradients of Σ_r c_r·(−log p(z_r)) with respect to z and to
//! every parameter block, the flow's inverse and the mixture's draws (same Philox stream as the kernel).
//! The flow's MLPs run through reference::net, as the GPU runs them through nn::gpu.

use super::net::{net_backward, net_forward, Acts};
use super::sample::{philox, u32_to_unit};
use crate::kernels::latent_prior::{LOGVAR_MAX, LOGVAR_MIN, STREAM_LATENT_PRIOR};
use crate::kernels::Act;
use crate::models::latent_prior::{LatentPriorNets, PriorKind};
use crate::nn::ParamLayout;

const LOG_2PI: f64 = 1.837_877_066_409_345_5;

fn conditioning(j: usize, parity: usize) -> bool {
    j % 2 == parity
}

/// h = m⊙x for x [n, Z] with the mask of `parity`.
pub fn mask(x: &[f64], z: usize, parity: usize) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &v)| if conditioning(i % z, parity) { v } else { 0.0 }).collect()
}

/// One coupling layer forward: (y [n, Z], log-determinant \[n\]) from x and st [n, 2Z] = (ŝ | t).
pub fn coupling_forward(x: &[f64], st: &[f64], n: usize, z: usize, parity: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; n * z];
    let mut ld = vec![0.0; n];
    for r in 0..n {
        for j in 0..z {
            let i = r * z + j;
            if conditioning(j, parity) {
                y[i] = x[i];
            } else {
                let s = st[r * 2 * z + j].tanh();
                y[i] = x[i] * s.exp() + st[r * 2 * z + z + j];
                ld[r] += s;
            }
        }
    }
    (y, ld)
}

/// One coupling layer backward from g = ∂L/∂y: (dx direct path [n, Z], dst [n, 2Z]); the
/// log-determinant's term −c_r·s_j of L is included in dst (see shaders/latent_prior.wgsl).
pub fn coupling_backward(
    x: &[f64],
    st: &[f64],
    c: &[f64],
    g: &[f64],
    n: usize,
    z: usize,
    parity: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; n * z];
    let mut dst = vec![0.0; n * 2 * z];
    for (r, &cr) in c[..n].iter().enumerate() {
        for j in 0..z {
            let i = r * z + j;
            let si = r * 2 * z + j;
            if conditioning(j, parity) {
                dx[i] = g[i];
            } else {
                let s = st[si].tanh();
                let e = s.exp();
                dx[i] = g[i] * e;
                dst[si + z] = g[i];
                dst[si] = (g[i] * x[i] * e - cr) * (1.0 - s * s);
            }
        }
    }
    (dx, dst)
}

/// The inverse coupling: x from y and st (the MLP's output for m⊙y).
pub fn coupling_inverse(y: &[f64], st: &[f64], n: usize, z: usize, parity: usize) -> Vec<f64> {
    let mut x = vec![0.0; n * z];
    for r in 0..n {
        for j in 0..z {
            let i = r * z + j;
            x[i] = if conditioning(j, parity) {
                y[i]
            } else {
                let si = r * 2 * z + j;
                (y[i] - st[si + z]) * (-st[si].tanh()).exp()
            };
        }
    }
    x
}

/// log N(u_r; 0, I) per row.
pub fn base_logp(u: &[f64], n: usize, z: usize) -> Vec<f64> {
    (0..n).map(|r| -0.5 * u[r * z..(r + 1) * z].iter().map(|v| v * v).sum::<f64>() - 0.5 * z as f64 * LOG_2PI).collect()
}

/// Everything a flow's forward pass computes.
pub struct FlowPass {
    /// x_0 = z, x_1, ..., x_L = u, each [n, Z].
    pub xs: Vec<Vec<f64>>,
    /// The MLP inputs m_l⊙x_l.
    pub hs: Vec<Vec<f64>>,
    /// The MLP activations (the last layer's output is st).
    pub acts: Vec<Acts>,
    /// Σ_l log|det_l| per row.
    pub logdet: Vec<f64>,
    pub logp: Vec<f64>,
}

pub fn flow_forward(nets: &LatentPriorNets, layout: &ParamLayout, params: &[f64], z: &[f64], n: usize) -> FlowPass {
    let zd = nets.latent;
    let mut xs = vec![z.to_vec()];
    let (mut hs, mut acts) = (Vec::new(), Vec::new());
    let mut logdet = vec![0.0; n];
    for (l, net) in nets.flows.iter().enumerate() {
        let h = mask(xs.last().unwrap(), zd, l % 2);
        let a = net_forward(net, layout, params, &h, n);
        let (y, ld) = coupling_forward(xs.last().unwrap(), a.outs.last().unwrap(), n, zd, l % 2);
        for (t, d) in logdet.iter_mut().zip(&ld) {
            *t += d;
        }
        xs.push(y);
        hs.push(h);
        acts.push(a);
    }
    let logp = base_logp(xs.last().unwrap(), n, zd).iter().zip(&logdet).map(|(b, d)| b + d).collect();
    FlowPass { xs, hs, acts, logdet, logp }
}

/// dz [n, Z] = c_r·∂(−log p(z_r))/∂z_r; the MLP blocks of `grads` (=) the parameter gradient of
/// Σ_r c_r·(−log p(z_r)).
pub fn flow_backward(
    nets: &LatentPriorNets,
    layout: &ParamLayout,
    params: &[f64],
    pass: &FlowPass,
    c: &[f64],
    n: usize,
    grads: &mut [f64],
) -> Vec<f64> {
    let zd = nets.latent;
    let u = pass.xs.last().unwrap();
    let mut g: Vec<f64> = (0..n * zd).map(|i| c[i / zd] * u[i]).collect();
    for (l, net) in nets.flows.iter().enumerate().rev() {
        let a = &pass.acts[l];
        let (mut dx, dst) = coupling_backward(&pass.xs[l], a.outs.last().unwrap(), c, &g, n, zd, l % 2);
        let dh = net_backward(net, layout, params, &pass.hs[l], a, &dst, n, Act::Identity, grads, true).unwrap();
        for (i, d) in dx.iter_mut().enumerate() {
            if conditioning(i % zd, l % 2) {
                *d += dh[i];
            }
        }
        g = dx;
    }
    g
}

/// z = f⁻¹(u) for u [n, Z].
pub fn flow_inverse(nets: &LatentPriorNets, layout: &ParamLayout, params: &[f64], u: &[f64], n: usize) -> Vec<f64> {
    let zd = nets.latent;
    let mut y = u.to_vec();
    for (l, net) in nets.flows.iter().enumerate().rev() {
        let h = mask(&y, zd, l % 2);
        let a = net_forward(net, layout, params, &h, n);
        y = coupling_inverse(&y, a.outs.last().unwrap(), n, zd, l % 2);
    }
    y
}

/// The mixture's parameters read from its block [K, 2Z + 1].
pub struct MogParams {
    pub mu: Vec<Vec<f64>>,
    /// Clamped log-variances.
    pub lv: Vec<Vec<f64>>,
    /// log π_c.
    pub log_pi: Vec<f64>,
}

pub fn mog_params(block: &[f64], k: usize, z: usize) -> MogParams {
    let w = 2 * z + 1;
    let logits: Vec<f64> = (0..k).map(|c| block[c * w + 2 * z]).collect();
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
    MogParams {
        mu: (0..k).map(|c| block[c * w..c * w + z].to_vec()).collect(),
        lv: (0..k)
            .map(|c| {
                block[c * w + z..c * w + 2 * z].iter().map(|v| v.clamp(LOGVAR_MIN as f64, LOGVAR_MAX as f64)).collect()
            })
            .collect(),
        log_pi: logits.iter().map(|l| l - lse).collect(),
    }
}

/// (log p(z_r) \[n\], responsibilities γ [n, K]) of the mixture with block [K, 2Z + 1].
pub fn mog_forward(block: &[f64], k: usize, zd: usize, z: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let p = mog_params(block, k, zd);
    let mut logp = vec![0.0; n];
    let mut gamma = vec![0.0; n * k];
    for r in 0..n {
        let a: Vec<f64> = (0..k)
            .map(|c| {
                let q: f64 = (0..zd)
                    .map(|j| {
                        let d = z[r * zd + j] - p.mu[c][j];
                        LOG_2PI + p.lv[c][j] + d * d * (-p.lv[c][j]).exp()
                    })
                    .sum();
                p.log_pi[c] - 0.5 * q
            })
            .collect();
        let m = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lp = m + a.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        logp[r] = lp;
        for c in 0..k {
            gamma[r * k + c] = (a[c] - lp).exp();
        }
    }
    (logp, gamma)
}

/// (dz [n, Z] = c_r·∂(−log p(z_r))/∂z_r, dblock [K, 2Z + 1]) of Σ_r c_r·(−log p(z_r)).
pub fn mog_backward(
    block: &[f64],
    k: usize,
    zd: usize,
    z: &[f64],
    gamma: &[f64],
    c: &[f64],
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let p = mog_params(block, k, zd);
    let w = 2 * zd + 1;
    let mut dz = vec![0.0; n * zd];
    let mut db = vec![0.0; k * w];
    let csum: f64 = c[..n].iter().sum();
    for r in 0..n {
        for cc in 0..k {
            let gw = c[r] * gamma[r * k + cc];
            for j in 0..zd {
                let iv = (-p.lv[cc][j]).exp();
                let d = z[r * zd + j] - p.mu[cc][j];
                dz[r * zd + j] += gw * d * iv;
                db[cc * w + j] -= gw * d * iv;
                db[cc * w + zd + j] -= gw * 0.5 * (d * d * iv - 1.0);
            }
            db[cc * w + 2 * zd] -= gw;
        }
    }
    for cc in 0..k {
        db[cc * w + 2 * zd] += p.log_pi[cc].exp() * csum;
        for j in 0..zd {
            let raw = block[cc * w + zd + j];
            if !(LOGVAR_MIN as f64..=LOGVAR_MAX as f64).contains(&raw) {
                db[cc * w + zd + j] = 0.0;
            }
        }
    }
    (dz, db)
}

/// The mixture component of row r for the draw with second counter word `c1` and Philox key `key`.
pub fn mog_component(block: &[f64], k: usize, zd: usize, r: usize, c1: u32, key: [u32; 2]) -> usize {
    let p = mog_params(block, k, zd);
    let u = u32_to_unit(philox([r as u32, c1, STREAM_LATENT_PRIOR, 0], key)[0]);
    let mut cum = 0.0;
    let mut last = 0;
    for (c, lp) in p.log_pi.iter().enumerate() {
        let pi = lp.exp();
        if pi > 0.0 {
            last = c;
            cum += pi;
            if u < cum {
                return c;
            }
        }
    }
    last
}

/// z [n, Z] = μ_c + exp(½ lv_c)⊙e_r, the component c of each row from [`mog_component`].
pub fn mog_sample(block: &[f64], k: usize, zd: usize, e: &[f64], n: usize, c1: u32, key: [u32; 2]) -> Vec<f64> {
    let p = mog_params(block, k, zd);
    let mut z = vec![0.0; n * zd];
    for r in 0..n {
        let c = mog_component(block, k, zd, r, c1, key);
        for j in 0..zd {
            z[r * zd + j] = p.mu[c][j] + (0.5 * p.lv[c][j]).exp() * e[r * zd + j];
        }
    }
    z
}

fn mog_block<'a>(nets: &LatentPriorNets, layout: &ParamLayout, params: &'a [f64]) -> &'a [f64] {
    let l = &layout.layers[nets.mog_block.expect("a mixture prior has its block")];
    &params[l.offset..l.offset + l.len()]
}

/// log p(z_r) \[n\] for any kind of prior; `params` is the whole layout.
pub fn logp(nets: &LatentPriorNets, layout: &ParamLayout, params: &[f64], z: &[f64], n: usize) -> Vec<f64> {
    match nets.kind {
        PriorKind::Standard => base_logp(z, n, nets.latent),
        PriorKind::Flow => flow_forward(nets, layout, params, z, n).logp,
        PriorKind::Mog => mog_forward(mog_block(nets, layout, params), nets.components, nets.latent, z, n).0,
    }
}

/// Σ_r c_r·(−log p(z_r)).
pub fn loss(nets: &LatentPriorNets, layout: &ParamLayout, params: &[f64], z: &[f64], c: &[f64], n: usize) -> f64 {
    logp(nets, layout, params, z, n).iter().zip(c).map(|(l, w)| -w * l).sum()
}

/// (log p \[n\], dz [n, Z]) and the prior's blocks of `grads` (=): the gradients of Σ_r c_r·(−log p(z_r)).
pub fn backward(
    nets: &LatentPriorNets,
    layout: &ParamLayout,
    params: &[f64],
    z: &[f64],
    c: &[f64],
    n: usize,
    grads: &mut [f64],
) -> (Vec<f64>, Vec<f64>) {
    let zd = nets.latent;
    match nets.kind {
        PriorKind::Standard => (base_logp(z, n, zd), (0..n * zd).map(|i| c[i / zd] * z[i]).collect()),
        PriorKind::Flow => {
            let pass = flow_forward(nets, layout, params, z, n);
            let dz = flow_backward(nets, layout, params, &pass, c, n, grads);
            (pass.logp, dz)
        }
        PriorKind::Mog => {
            let b = mog_block(nets, layout, params);
            let (lp, gamma) = mog_forward(b, nets.components, zd, z, n);
            let (dz, db) = mog_backward(b, nets.components, zd, z, &gamma, c, n);
            let l = &layout.layers[nets.mog_block.unwrap()];
            grads[l.offset..l.offset + l.len()].copy_from_slice(&db);
            (lp, dz)
        }
    }
}

/// z ~ p from standard normals e [n, Z]: the standard prior's z = e, the flow's f⁻¹(e), the mixture's
/// draw (component by Philox with second counter word `c1` and key `key`).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    nets: &LatentPriorNets,
    layout: &ParamLayout,
    params: &[f64],
    e: &[f64],
    n: usize,
    c1: u32,
    key: [u32; 2],
) -> Vec<f64> {
    match nets.kind {
        PriorKind::Standard => e[..n * nets.latent].to_vec(),
        PriorKind::Flow => flow_inverse(nets, layout, params, e, n),
        PriorKind::Mog => mog_sample(mog_block(nets, layout, params), nets.components, nets.latent, e, n, c1, key),
    }
}
