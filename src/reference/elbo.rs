//! CPU twin of shaders/elbo.wgsl: the fused ELBO, and the gradient of a learned decoder variance.

use super::sample::{LOGVAR_MAX, LOGVAR_MIN};
use crate::kernels::elbo::{Likelihood, DEC_LOGVAR_MAX};

const LOG_2PI: f64 = 1.837_877_066_409_345_3;

/// The Gaussian decoder's variance: σ fixed (the `sigma` argument), or the learned s = log σ²: one
/// value (`s.len() == 1`) or one per pixel, used clamped to [`lv_min`, 20].
#[derive(Clone, Copy, Debug)]
pub enum Var<'a> {
    Fixed,
    Learned { s: &'a [f64], lv_min: f64 },
}

impl Var<'_> {
    /// (clamped s_d, whether s_d lies inside the clamp) of pixel d; None when fixed.
    pub fn at(&self, d: usize) -> Option<(f64, bool)> {
        match *self {
            Var::Fixed => None,
            Var::Learned { s, lv_min } => {
                let raw = s[if s.len() == 1 { 0 } else { d }];
                Some((raw.clamp(lv_min, DEC_LOGVAR_MAX as f64), (lv_min..=DEC_LOGVAR_MAX as f64).contains(&raw)))
            }
        }
    }
}

pub struct ElboOut {
    /// d loss / d s of a learned variance (\[1\] or \[D\]; empty when fixed).
    pub dlogvar: Vec<f64>,
    /// Per example: (rec_b, kl_b).
    pub rows: Vec<(f64, f64)>,
    /// d loss / d out, [M·B, D].
    pub dout: Vec<f64>,
    /// KL part of d loss / d head, [B, 2Z].
    pub dhead: Vec<f64>,
    /// loss = mean_b (rec_b + β·kl_b).
    pub loss: f64,
}

pub fn nll(likelihood: Likelihood, sigma: f64, l: f64, x: f64) -> (f64, f64) {
    match likelihood {
        Likelihood::Bernoulli => {
            let v = l.max(0.0) - l * x + (-l.abs()).exp().ln_1p();
            let s = 1.0 / (1.0 + (-l).exp());
            (v, s - x)
        }
        Likelihood::Gaussian => {
            let var = sigma * sigma;
            let d = l - x;
            (0.5 * d * d / var + 0.5 * (std::f64::consts::TAU * var).ln(), d / var)
        }
    }
}

/// (nll, d nll / d l) of pixel d with the variance `var` (the Gaussian's learned s, or σ).
pub fn nll_var(likelihood: Likelihood, sigma: f64, var: Var, d: usize, l: f64, x: f64) -> (f64, f64) {
    match (likelihood, var.at(d)) {
        (Likelihood::Gaussian, Some((s, _))) => {
            let iv = (-s).exp();
            let diff = l - x;
            (0.5 * diff * diff * iv + 0.5 * (LOG_2PI + s), diff * iv)
        }
        _ => nll(likelihood, sigma, l, x),
    }
}

/// d loss / d s of a learned variance for the loss Σ_r w_r Σ_d nll(out[r, d], x[b(r), d]) (rows
/// r = m·B + b): Σ_r w_r·½(1 − (x − out)²·e^{−s_d}), summed over d too for a global s; 0 outside the
/// clamp. Empty when `var` is fixed.
pub fn logvar_grad(out: &[f64], x: &[f64], batch: usize, dim: usize, var: Var, w: &[f64]) -> Vec<f64> {
    let Var::Learned { s, .. } = var else { return Vec::new() };
    let mut g = vec![0.0; s.len()];
    for (r, &wr) in w.iter().enumerate() {
        let b = r % batch;
        for d in 0..dim {
            let (sd, _) = var.at(d).unwrap();
            let diff = out[r * dim + d] - x[b * dim + d];
            g[if s.len() == 1 { 0 } else { d }] += wr * 0.5 * (1.0 - diff * diff * (-sd).exp());
        }
    }
    for (k, gk) in g.iter_mut().enumerate() {
        if !var.at(k).unwrap().1 {
            *gk = 0.0;
        }
    }
    g
}

#[allow(clippy::too_many_arguments)]
pub fn elbo(
    out: &[f64],
    x: &[f64],
    head: &[f64],
    batch: usize,
    dim: usize,
    latent: usize,
    samples: usize,
    likelihood: Likelihood,
    beta: f64,
    sigma: f64,
) -> ElboOut {
    elbo_var(out, x, head, (batch, dim, latent, samples), likelihood, beta, sigma, Var::Fixed)
}

/// [`elbo`] with the decoder variance `var` (`sigma` is used when fixed); also d loss / d s.
#[allow(clippy::too_many_arguments)]
pub fn elbo_var(
    out: &[f64],
    x: &[f64],
    head: &[f64],
    (batch, dim, latent, samples): (usize, usize, usize, usize),
    likelihood: Likelihood,
    beta: f64,
    sigma: f64,
    var: Var,
) -> ElboOut {
    let scale = 1.0 / batch as f64;
    let mut dout = vec![0.0; samples * batch * dim];
    let mut dhead = vec![0.0; batch * 2 * latent];
    let mut rows = Vec::with_capacity(batch);
    let mut loss = 0.0;
    for b in 0..batch {
        let mut rec = 0.0;
        for m in 0..samples {
            let r = (m * batch + b) * dim;
            for d in 0..dim {
                let (v, g) = nll_var(likelihood, sigma, var, d, out[r + d], x[b * dim + d]);
                rec += v;
                dout[r + d] = g * scale / samples as f64;
            }
        }
        rec /= samples as f64;
        let mut kl = 0.0;
        for j in 0..latent {
            let mu = head[b * 2 * latent + j];
            let raw = head[b * 2 * latent + latent + j];
            let lv = raw.clamp(LOGVAR_MIN, LOGVAR_MAX);
            kl += 0.5 * (mu * mu + lv.exp() - 1.0 - lv);
            dhead[b * 2 * latent + j] = beta * mu * scale;
            dhead[b * 2 * latent + latent + j] =
                if (LOGVAR_MIN..=LOGVAR_MAX).contains(&raw) { beta * 0.5 * (lv.exp() - 1.0) * scale } else { 0.0 };
        }
        rows.push((rec, kl));
        loss += (rec + beta * kl) * scale;
    }
    let w = vec![scale / samples as f64; samples * batch];
    let dlogvar = logvar_grad(out, x, batch, dim, var, &w);
    ElboOut { dlogvar, rows, dout, dhead, loss }
}
