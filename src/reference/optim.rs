//! CPU twin of shaders/optim.wgsl: one Adam step (t = 1-based step number).

use crate::kernels::optim::Adam;

pub fn adam(cfg: &Adam, t: u32, params: &mut [f64], grads: &[f64], m: &mut [f64], v: &mut [f64], clip: f64) {
    let (b1, b2) = (cfg.beta1 as f64, cfg.beta2 as f64);
    let (lr, eps, wd) = (cfg.lr as f64, cfg.eps as f64, cfg.weight_decay as f64);
    for i in 0..params.len() {
        let g = grads[i] * clip;
        m[i] = flush_subnormal(b1 * m[i] + (1.0 - b1) * g);
        v[i] = flush_subnormal(b2 * v[i] + (1.0 - b2) * g * g);
        let mhat = m[i] / (1.0 - b1.powi(t as i32));
        let vhat = v[i] / (1.0 - b2.powi(t as i32));
        let w = params[i] - lr * wd * params[i];
        params[i] = w - lr * mhat / (vhat.sqrt() + eps);
    }
}

/// `x`, or 0 where it lies below f32's least normal (2^-126) in magnitude: the kernels keep no
/// subnormal state (shaders/optim_common.wgsl, flush_subnormal; shaders/vq.wgsl, vq_stats_ema).
pub fn flush_subnormal(x: f64) -> f64 {
    if x.abs() < f32::MIN_POSITIVE as f64 {
        0.0
    } else {
        x
    }
}

/// Clip scale for a global norm limit (0 = no clipping).
pub fn clip_scale(grads: &[f64], max_norm: f64) -> (f64, f64) {
    let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
    let scale = if max_norm > 0.0 { (max_norm / (norm + 1e-6)).min(1.0) } else { 1.0 };
    (norm, scale)
}
