//! CPU twin of the whole VAE step (models/vae.rs, MLP or conv), composed from the reference ops, in f64.

use super::elbo::{elbo_var, logvar_grad, Var};
use super::iwae::{self, Shape};
use super::latent_prior;
use super::net::{net_backward, net_forward};
use super::sample::{sample_backward, LOGVAR_MAX, LOGVAR_MIN};
use crate::kernels::Act::Identity;
use crate::models::vae::{Gradient, Objective, VaeConfig};
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
    let mut grads = vec![0.0; layout.total];
    // a learned decoder variance: its block of params and of grads
    let lv_block = nets.logvar.map(|b| {
        let l = &layout.layers[b];
        l.offset..l.offset + l.len()
    });
    let var = match &lv_block {
        Some(r) => Var::Learned { s: &params[r.clone()], lv_min: cfg.dec_lv_min() as f64 },
        None => Var::Fixed,
    };
    let put_dvar = |grads: &mut [f64], g: Vec<f64>| {
        if let Some(r) = &lv_block {
            grads[r.clone()].copy_from_slice(&g);
        }
    };
    if cfg.objective == Objective::Iwae || nets.prior.is_some() {
        let s = Shape {
            batch,
            dim: cfg.input_dim,
            latent: z_dim,
            samples: m,
            likelihood: cfg.likelihood,
            sigma: cfg.sigma as f64,
            beta: cfg.beta as f64,
            iwae: cfg.objective == Objective::Iwae,
        };
        let logpz = nets.prior.as_ref().map(|p| latent_prior::logp(p, layout, params, &z, mb));
        let terms = iwae::logw_terms_var(&s, var, &out, x, &head, eps, &z, logpz.as_deref());
        let (rows, wt) = iwae::combine(&s, &terms);
        let dzp = nets.prior.as_ref().map(|p| {
            let c: Vec<f64> = wt.iter().map(|w| w * s.beta).collect();
            latent_prior::backward(p, layout, params, &z, &c, mb, &mut grads).1
        });
        let dout = iwae::grad_out_var(&s, var, &out, x, &wt);
        put_dvar(&mut grads, logvar_grad(&out, x, batch, cfg.input_dim, var, &wt));
        let dz = net_backward(&nets.decoder, layout, params, &z, &dec, &dout, mb, Identity, &mut grads, true).unwrap();
        let dhead = iwae::latent_backward(&s, &head, eps, &z, &wt, &dz, dzp.as_deref());
        net_backward(&nets.encoder, layout, params, x, &enc, &dhead, batch, Identity, &mut grads, false);
        let mean = |c: usize| rows.iter().map(|r| r[c]).sum::<f64>() / batch as f64;
        return StepOut { loss: mean(2), rec: mean(0), kl: mean(1), grads, head, out };
    }
    let shape = (batch, cfg.input_dim, z_dim, m);
    let e = elbo_var(&out, x, &head, shape, cfg.likelihood, cfg.beta as f64, cfg.sigma as f64, var);
    put_dvar(&mut grads, e.dlogvar.clone());
    let dz = net_backward(&nets.decoder, layout, params, &z, &dec, &e.dout, mb, Identity, &mut grads, true).unwrap();
    // sampling backward (pathwise, or the score function of the reconstruction term) + KL
    let path = if cfg.gradient == Gradient::Score {
        let s = Shape {
            batch,
            dim: cfg.input_dim,
            latent: z_dim,
            samples: m,
            likelihood: cfg.likelihood,
            sigma: cfg.sigma as f64,
            beta: cfg.beta as f64,
            iwae: false,
        };
        iwae::score_backward(&s, &head, eps, &iwae::logw_terms_var(&s, var, &out, x, &head, eps, &z, None))
    } else {
        sample_backward(&head, eps, &dz, batch, z_dim, m)
    };
    let dhead: Vec<f64> = e.dhead.iter().zip(&path).map(|(a, b)| a + b).collect();
    net_backward(&nets.encoder, layout, params, x, &enc, &dhead, batch, Identity, &mut grads, false);
    let rec = e.rows.iter().map(|r| r.0).sum::<f64>() / batch as f64;
    let kl = e.rows.iter().map(|r| r.1).sum::<f64>() / batch as f64;
    StepOut { loss: e.loss, rec, kl, grads, head, out }
}
