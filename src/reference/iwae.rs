//! CPU twin of shaders/iwae.wgsl: log-weights, L_k / Monte-Carlo ELBO with their weights, the weighted
//! output gradient, the latent backward and the score-function gradient. Rows r = m·B + b.

use super::elbo::{nll_var, Var};
use super::sample::{LOGVAR_MAX, LOGVAR_MIN};
use crate::kernels::elbo::Likelihood;

const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// The shapes and settings of [`crate::kernels::iwae::Weighted`].
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub dim: usize,
    pub latent: usize,
    pub samples: usize,
    pub likelihood: Likelihood,
    pub sigma: f64,
    pub beta: f64,
    pub iwae: bool,
}

/// The reference shape of a GPU launch description (the tests compare the two).
impl From<&crate::kernels::iwae::Weighted> for Shape {
    fn from(w: &crate::kernels::iwae::Weighted) -> Shape {
        Shape {
            batch: w.batch,
            dim: w.dim,
            latent: w.latent,
            samples: w.samples,
            likelihood: w.likelihood,
            sigma: w.sigma as f64,
            beta: w.beta as f64,
            iwae: w.iwae,
        }
    }
}

fn lv(head: &[f64], b: usize, z: usize, j: usize) -> (f64, bool) {
    let raw = head[b * 2 * z + z + j];
    (raw.clamp(LOGVAR_MIN, LOGVAR_MAX), (LOGVAR_MIN..=LOGVAR_MAX).contains(&raw))
}

/// Per row: (log p(x|z_r), log p(z_r) − log q(z_r|x)); log p(z) is N(0, I) or `logpz[r]`.
pub fn logw_terms(
    s: &Shape,
    out: &[f64],
    x: &[f64],
    head: &[f64],
    eps: &[f64],
    zs: &[f64],
    logpz: Option<&[f64]>,
) -> Vec<(f64, f64)> {
    logw_terms_var(s, Var::Fixed, out, x, head, eps, zs, logpz)
}

/// [`logw_terms`] with the decoder variance `var` (`s.sigma` when fixed).
#[allow(clippy::too_many_arguments)]
pub fn logw_terms_var(
    s: &Shape,
    var: Var,
    out: &[f64],
    x: &[f64],
    head: &[f64],
    eps: &[f64],
    zs: &[f64],
    logpz: Option<&[f64]>,
) -> Vec<(f64, f64)> {
    let (bs, d, z) = (s.batch, s.dim, s.latent);
    (0..s.samples * bs)
        .map(|r| {
            let b = r % bs;
            let px: f64 = (0..d).map(|i| -nll_var(s.likelihood, s.sigma, var, i, out[r * d + i], x[b * d + i]).0).sum();
            let mut lat = 0.0;
            for j in 0..z {
                let e = eps[r * z + j];
                lat += 0.5 * e * e + 0.5 * lv(head, b, z, j).0 + HALF_LOG_2PI;
                if logpz.is_none() {
                    let v = zs[r * z + j];
                    lat -= 0.5 * v * v + HALF_LOG_2PI;
                }
            }
            (px, lat + logpz.map_or(0.0, |l| l[r]))
        })
        .collect()
}

/// log (1/n) Σ exp(v_i), stably.
pub fn log_mean_exp(v: &[f64]) -> f64 {
    let mx = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    mx + (v.iter().map(|a| (a - mx).exp()).sum::<f64>() / v.len() as f64).ln()
}

/// (rows \[B\] = (−mean lpx, −mean lat, −L_b), wt [M·B] = w̃_r / B).
pub fn combine(s: &Shape, terms: &[(f64, f64)]) -> (Vec<[f64; 3]>, Vec<f64>) {
    let (bs, m) = (s.batch, s.samples);
    let mut rows = Vec::with_capacity(bs);
    let mut wt = vec![0.0; m * bs];
    for b in 0..bs {
        let lw: Vec<f64> = (0..m).map(|k| terms[k * bs + b].0 + s.beta * terms[k * bs + b].1).collect();
        let px = (0..m).map(|k| terms[k * bs + b].0).sum::<f64>() / m as f64;
        let lat = (0..m).map(|k| terms[k * bs + b].1).sum::<f64>() / m as f64;
        let bound = if s.iwae { log_mean_exp(&lw) } else { lw.iter().sum::<f64>() / m as f64 };
        for k in 0..m {
            let w = if s.iwae { (lw[k] - bound).exp() / m as f64 } else { 1.0 / m as f64 };
            wt[k * bs + b] = w / bs as f64;
        }
        rows.push([-px, -lat, -bound]);
    }
    (rows, wt)
}

/// dout[r, d] = wt_r · d nll / d out.
pub fn grad_out(s: &Shape, out: &[f64], x: &[f64], wt: &[f64]) -> Vec<f64> {
    grad_out_var(s, Var::Fixed, out, x, wt)
}

/// [`grad_out`] with the decoder variance `var`. (The gradient of a learned s under the weights wt is
/// [`super::elbo::logvar_grad`] with w = wt.)
pub fn grad_out_var(s: &Shape, var: Var, out: &[f64], x: &[f64], wt: &[f64]) -> Vec<f64> {
    let d = s.dim;
    (0..out.len())
        .map(|i| wt[i / d] * nll_var(s.likelihood, s.sigma, var, i % d, out[i], x[(i / d) % s.batch * d + i % d]).1)
        .collect()
}

/// dhead (=) from dz, the prior term (N(0, I), or `dzp` already weighted by β·wt) and log q.
pub fn latent_backward(
    s: &Shape,
    head: &[f64],
    eps: &[f64],
    zs: &[f64],
    wt: &[f64],
    dz: &[f64],
    dzp: Option<&[f64]>,
) -> Vec<f64> {
    let (bs, z) = (s.batch, s.latent);
    let mut dhead = vec![0.0; bs * 2 * z];
    for b in 0..bs {
        for j in 0..z {
            let (l, inside) = lv(head, b, z, j);
            let (mut dmu, mut dlv, mut wsum) = (0.0, 0.0, 0.0);
            for m in 0..s.samples {
                let r = m * bs + b;
                let k = r * z + j;
                let g = dz[k] + dzp.map_or(s.beta * wt[r] * zs[k], |p| p[k]);
                dmu += g;
                dlv += g * eps[k];
                wsum += wt[r];
            }
            dhead[b * 2 * z + j] = dmu;
            dhead[b * 2 * z + z + j] = if inside { dlv * 0.5 * (0.5 * l).exp() - 0.5 * s.beta * wsum } else { 0.0 };
        }
    }
    dhead
}

/// The score-function gradient of the mean reconstruction term −(1/B) Σ_b E_q[log p(x_b|z)] with
/// respect to head (to ADD to the KL gradient), with the leave-one-out baseline when M > 1.
pub fn score_backward(s: &Shape, head: &[f64], eps: &[f64], terms: &[(f64, f64)]) -> Vec<f64> {
    let (bs, z, m) = (s.batch, s.latent, s.samples);
    let mut dhead = vec![0.0; bs * 2 * z];
    for b in 0..bs {
        let total: f64 = (0..m).map(|k| terms[k * bs + b].0).sum();
        for j in 0..z {
            let (l, inside) = lv(head, b, z, j);
            let (mut gmu, mut glv) = (0.0, 0.0);
            for k in 0..m {
                let r = k * bs + b;
                let mut f = terms[r].0;
                if m > 1 {
                    f -= (total - f) / (m - 1) as f64;
                }
                let e = eps[r * z + j];
                gmu += f * e * (-0.5 * l).exp();
                glv += f * 0.5 * (e * e - 1.0);
            }
            let scale = 1.0 / (bs * m) as f64;
            dhead[b * 2 * z + j] = -gmu * scale;
            dhead[b * 2 * z + z + j] = if inside { -glv * scale } else { 0.0 };
        }
    }
    dhead
}
