//! CPU twin of shaders/elbo.wgsl.

use super::sample::{LOGVAR_MAX, LOGVAR_MIN};
use crate::kernels::elbo::Likelihood;

pub struct ElboOut {
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
                let (v, g) = nll(likelihood, sigma, out[r + d], x[b * dim + d]);
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
    ElboOut { rows, dout, dhead, loss }
}
