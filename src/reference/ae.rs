//! CPU twins of shaders/ae.wgsl (corruption, reconstruction loss, sparsity penalties) and of the whole
//! autoencoder step of models/ae.rs, in f64.

use super::elementwise::act_grad_from_y;
use super::net::{net_backward, net_forward};
use super::sample::{box_muller, philox, u32_to_unit};
use crate::kernels::ae::{Noise, RecLoss, Sparsity, KL_EPS};
use crate::kernels::Act;
use crate::models::ae::AeConfig;
use crate::nn::ParamLayout;

/// x̃\[i\] for x [B·D] values: the draws of ae_corrupt for counter (i, c1, stream, 0) and `key`.
/// Gaussian: x + level·n (n from Box–Muller on words 0 and 1); mask: 0 where u32_to_unit(word 0) < level
/// (the same comparison as the GPU's in f32: u is exact in f32 and level is an f32).
pub fn corrupt(x: &[f64], noise: Noise, level: f32, c1: u32, stream: u32, key: [u32; 2]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if noise == Noise::None {
                return v;
            }
            let r = philox([i as u32, c1, stream, 0], key);
            match noise {
                Noise::Gaussian => v + level as f64 * box_muller(r[0], r[1]),
                _ => {
                    if u32_to_unit(r[0]) < level as f64 {
                        0.0
                    } else {
                        v
                    }
                }
            }
        })
        .collect()
}

/// The loss of one value and its derivative with respect to the output.
pub fn rec_value(loss: RecLoss, out: f64, x: f64) -> (f64, f64) {
    match loss {
        RecLoss::Mse => ((out - x) * (out - x), 2.0 * (out - x)),
        RecLoss::Bce => {
            let v = out.max(0.0) - out * x + (-out.abs()).exp().ln_1p();
            (v, 1.0 / (1.0 + (-out).exp()) - x)
        }
    }
}

pub struct LossOut {
    /// rec_b per example.
    pub rec: Vec<f64>,
    /// d mean_b(rec_b) / d out, [B, D] (1/B included).
    pub dout: Vec<f64>,
}

/// The reconstruction loss of decoder outputs `out` [B, D] against `x` [B, D] (ae_loss).
pub fn rec_loss(out: &[f64], x: &[f64], batch: usize, dim: usize, loss: RecLoss) -> LossOut {
    let mut rec = vec![0.0; batch];
    let mut dout = vec![0.0; batch * dim];
    for (b, rec_b) in rec.iter_mut().enumerate() {
        for d in 0..dim {
            let i = b * dim + d;
            let (v, g) = rec_value(loss, out[i], x[i]);
            *rec_b += v;
            dout[i] = g / batch as f64;
        }
    }
    LossOut { rec, dout }
}

pub struct PenaltyOut {
    /// pen_b per example (for kl the batch penalty, the same in every row).
    pub pen: Vec<f64>,
    /// d (mean_b pen_b) / d pre-activation of the layer, [B, U] (to ADD to the layer's gradient).
    pub dpre: Vec<f64>,
    /// kl: ρ̂_j (unclamped) and KL(ρ ‖ ρ̂c_j) per unit; empty for l1.
    pub rho_hat: Vec<f64>,
    pub kl: Vec<f64>,
}

/// λ·Σ_j |a_bj| per example (ae_l1); a is the layer's output after `act`.
pub fn l1_penalty(a: &[f64], batch: usize, units: usize, act: Act, weight: f64) -> PenaltyOut {
    let mut pen = vec![0.0; batch];
    let mut dpre = vec![0.0; batch * units];
    for (b, pen_b) in pen.iter_mut().enumerate() {
        for j in 0..units {
            let i = b * units + j;
            *pen_b += a[i].abs();
            let sign = if a[i] > 0.0 {
                1.0
            } else if a[i] < 0.0 {
                -1.0
            } else {
                0.0
            };
            dpre[i] = weight * sign * act_grad_from_y(act, a[i]) / batch as f64;
        }
        *pen_b *= weight;
    }
    PenaltyOut { pen, dpre, rho_hat: Vec::new(), kl: Vec::new() }
}

/// β·Σ_j KL(ρ ‖ ρ̂_j) with ρ̂_j = (1/B) Σ_b a_bj clamped to [KL_EPS, 1 − KL_EPS] (ae_kl_columns and
/// ae_kl_total). Its gradient: d/d a_bj = β·(−ρ/ρ̂c_j + (1 − ρ)/(1 − ρ̂c_j))·(1/B) (d ρ̂_j / d a_bj = 1/B;
/// the penalty enters the loss once, as the batch mean of rows that all carry it), 0 where the clamp
/// acts, times act'(a_bj) for the pre-activation.
pub fn kl_penalty(a: &[f64], batch: usize, units: usize, act: Act, weight: f64, target: f64) -> PenaltyOut {
    let rho = target;
    let mut rho_hat = vec![0.0; units];
    let mut kl = vec![0.0; units];
    let mut dpre = vec![0.0; batch * units];
    for j in 0..units {
        let r = (0..batch).map(|b| a[b * units + j]).sum::<f64>() / batch as f64;
        let rc = r.clamp(KL_EPS, 1.0 - KL_EPS);
        rho_hat[j] = r;
        kl[j] = rho * (rho / rc).ln() + (1.0 - rho) * ((1.0 - rho) / (1.0 - rc)).ln();
        let d = if (KL_EPS..=1.0 - KL_EPS).contains(&r) {
            weight * (-rho / rc + (1.0 - rho) / (1.0 - rc)) / batch as f64
        } else {
            0.0
        };
        for b in 0..batch {
            dpre[b * units + j] = d * act_grad_from_y(act, a[b * units + j]);
        }
    }
    let total = weight * kl.iter().sum::<f64>();
    PenaltyOut { pen: vec![total; batch], dpre, rho_hat, kl }
}

/// The penalty of `kind` (zero rows and gradient for none).
#[allow(clippy::too_many_arguments)]
pub fn penalty(
    kind: Sparsity,
    a: &[f64],
    batch: usize,
    units: usize,
    act: Act,
    weight: f64,
    target: f64,
) -> PenaltyOut {
    match kind {
        Sparsity::None => {
            PenaltyOut { pen: vec![0.0; batch], dpre: vec![0.0; batch * units], rho_hat: Vec::new(), kl: Vec::new() }
        }
        Sparsity::L1 => l1_penalty(a, batch, units, act, weight),
        Sparsity::Kl => kl_penalty(a, batch, units, act, weight, target),
    }
}

pub struct AeStepOut {
    /// mean_b (rec_b + pen_b).
    pub loss: f64,
    /// Per example (rec_b, pen_b).
    pub rows: Vec<(f64, f64)>,
    /// d loss / d params in the flat layout.
    pub grads: Vec<f64>,
    /// The penalised layer's activations [B, U] (the code's without a penalty) and the code [B, Z].
    pub penalised: Vec<f64>,
    pub code: Vec<f64>,
    /// The decoder's output [B, D].
    pub out: Vec<f64>,
}

/// One forward and backward pass: the encoder reads `x_in` (x itself, or its corruption from
/// [`corrupt`]), the loss compares the decoder's output with `x`.
pub fn ae_step(
    cfg: &AeConfig,
    layout: &ParamLayout,
    params: &[f64],
    x: &[f64],
    x_in: &[f64],
    batch: usize,
) -> AeStepOut {
    let nets = cfg.nets().expect("valid config");
    let last = nets.encoder.layers.len() - 1;
    let at = if cfg.sparsity == Sparsity::None { last } else { cfg.sparse_index(&nets) };
    let (head, tail) = nets.split_encoder(at);
    let h = net_forward(&head, layout, params, x_in, batch);
    let a = h.outs.last().unwrap().clone();
    let t = tail.as_ref().map(|t| net_forward(t, layout, params, &a, batch));
    let code = t.as_ref().map_or(&a, |t| t.outs.last().unwrap()).clone();
    let dec = net_forward(&nets.decoder, layout, params, &code, batch);
    let out = dec.outs.last().unwrap().clone();
    let l = rec_loss(&out, x, batch, cfg.input_dim, cfg.loss);
    let act_s = head.output_act();
    let units = head.output().len();
    let p = penalty(cfg.sparsity, &a, batch, units, act_s, cfg.sparse_weight as f64, cfg.sparse_target as f64);

    let mut grads = vec![0.0; layout.total];
    let dcode =
        net_backward(&nets.decoder, layout, params, &code, &dec, &l.dout, batch, cfg.code_act, &mut grads, true)
            .unwrap();
    let mut da = match (&tail, &t) {
        (Some(tn), Some(ta)) => {
            net_backward(tn, layout, params, &a, ta, &dcode, batch, act_s, &mut grads, true).unwrap()
        }
        _ => dcode,
    };
    for (g, d) in da.iter_mut().zip(&p.dpre) {
        *g += d;
    }
    net_backward(&head, layout, params, x_in, &h, &da, batch, Act::Identity, &mut grads, false);
    let rows: Vec<(f64, f64)> = l.rec.iter().zip(&p.pen).map(|(&r, &q)| (r, q)).collect();
    let loss = rows.iter().map(|(r, q)| r + q).sum::<f64>() / batch as f64;
    AeStepOut { loss, rows, grads, penalised: a, code, out }
}
