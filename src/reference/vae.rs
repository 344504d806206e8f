//! CPU twin of the whole MLP VAE step (models/vae.rs), composed from the reference ops, in f64.

use super::elbo::elbo;
use super::matmul::{linear_backward, linear_forward};
use super::sample::{sample_backward, LOGVAR_MAX, LOGVAR_MIN};
use crate::kernels::Act::Identity;
use crate::models::vae::VaeConfig;
use crate::nn::ParamLayout;

pub struct StepOut {
    pub loss: f64,
    /// Mean over the batch of rec_b and kl_b.
    pub rec: f64,
    pub kl: f64,
    /// d loss / d params in the flat layout.
    pub grads: Vec<f64>,
    pub head: Vec<f64>,
    pub out: Vec<f64>,
}

/// One forward and backward pass with the given ε ([M·B, Z], rows m·B + b).
pub fn vae_step(
    cfg: &VaeConfig,
    layout: &ParamLayout,
    params: &[f64],
    x: &[f64],
    eps: &[f64],
    batch: usize,
) -> StepOut {
    let (enc, dec) = cfg.split(layout);
    let z_dim = cfg.latent;
    let m = cfg.samples;
    let mb = m * batch;
    let block = |l: &crate::nn::Linear| params[l.offset..l.offset + l.len()].to_vec();

    // encoder
    let mut acts: Vec<Vec<f64>> = vec![x.to_vec()];
    for l in enc {
        let y = linear_forward(acts.last().unwrap(), &block(l), batch, l.din, l.dout, l.act);
        acts.push(y);
    }
    let head = acts.last().unwrap().clone();
    // reparameterize with the given eps
    let mut z = vec![0.0; mb * z_dim];
    for r in 0..mb {
        let b = r % batch;
        for j in 0..z_dim {
            let mu = head[b * 2 * z_dim + j];
            let lv = head[b * 2 * z_dim + z_dim + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
            z[r * z_dim + j] = mu + (0.5 * lv).exp() * eps[r * z_dim + j];
        }
    }
    let mut dacts: Vec<Vec<f64>> = vec![z];
    for l in dec {
        let y = linear_forward(dacts.last().unwrap(), &block(l), mb, l.din, l.dout, l.act);
        dacts.push(y);
    }
    let out = dacts.last().unwrap().clone();
    let e = elbo(&out, x, &head, batch, cfg.input_dim, z_dim, m, cfg.likelihood, cfg.beta as f64, cfg.sigma as f64);

    let mut grads = vec![0.0; layout.total];
    // decoder backward
    let mut dy = e.dout.clone();
    for (i, l) in dec.iter().enumerate().rev() {
        let prev_act = if i == 0 { Identity } else { dec[i - 1].act };
        // dy is already the pre-activation gradient (the next layer's dX carried act'), hence Identity.
        let (dx, dw) = linear_backward(&dacts[i], &block(l), &dacts[i + 1], &dy, mb, l.din, l.dout, Identity, prev_act);
        grads[l.offset..l.offset + l.len()].copy_from_slice(&dw);
        dy = dx;
    }
    // sampling backward + KL
    let path = sample_backward(&head, eps, &dy, batch, z_dim, m);
    let mut dhead: Vec<f64> = e.dhead.iter().zip(&path).map(|(a, b)| a + b).collect();
    for (i, l) in enc.iter().enumerate().rev() {
        let prev_act = if i == 0 { Identity } else { enc[i - 1].act };
        let (dx, dw) =
            linear_backward(&acts[i], &block(l), &acts[i + 1], &dhead, batch, l.din, l.dout, Identity, prev_act);
        grads[l.offset..l.offset + l.len()].copy_from_slice(&dw);
        dhead = dx;
    }
    let rec = e.rows.iter().map(|r| r.0).sum::<f64>() / batch as f64;
    let kl = e.rows.iter().map(|r| r.1).sum::<f64>() / batch as f64;
    StepOut { loss: e.loss, rec, kl, grads, head, out }
}
