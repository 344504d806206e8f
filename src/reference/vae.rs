//! CPU twin of the whole VAE step (models/vae.rs, MLP or conv), composed from the reference ops, in f64.

use super::elbo::elbo;
use super::net::{net_backward, net_forward};
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
    let nets = cfg.nets().expect("valid config");
    let z_dim = cfg.latent;
    let m = cfg.samples;
    let mb = m * batch;

    // encoder
    let enc = net_forward(&nets.encoder, layout, params, x, batch);
    let head = enc.outs.last().unwrap().clone();
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
    let dec = net_forward(&nets.decoder, layout, params, &z, mb);
    let out = dec.outs.last().unwrap().clone();
    let e = elbo(&out, x, &head, batch, cfg.input_dim, z_dim, m, cfg.likelihood, cfg.beta as f64, cfg.sigma as f64);

    let mut grads = vec![0.0; layout.total];
    let dz = net_backward(&nets.decoder, layout, params, &z, &dec, &e.dout, mb, Identity, &mut grads, true).unwrap();
    // sampling backward + KL
    let path = sample_backward(&head, eps, &dz, batch, z_dim, m);
    let dhead: Vec<f64> = e.dhead.iter().zip(&path).map(|(a, b)| a + b).collect();
    net_backward(&nets.encoder, layout, params, x, &enc, &dhead, batch, Identity, &mut grads, false);
    let rec = e.rows.iter().map(|r| r.0).sum::<f64>() / batch as f64;
    let kl = e.rows.iter().map(|r| r.1).sum::<f64>() / batch as f64;
    StepOut { loss: e.loss, rec, kl, grads, head, out }
}
