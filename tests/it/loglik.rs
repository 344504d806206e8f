//! The importance-sampled log-likelihood estimator (models::vae::Loglik): against the f64 reference on
//! the same Philox draws (several chunks, a partial last chunk and a partial last batch), and against the
//! exact log p(x) of a linear-Gaussian model whose posterior the diagonal encoder represents exactly
//! (then every importance weight equals p(x) and L_k = log p(x) for any k).

use vaegpu::kernels::elbo::Likelihood;
use vaegpu::kernels::Act;
use vaegpu::models::vae::{GpuDataset, Loglik, VaeConfig, STREAM_LOGLIK};
use vaegpu::nn::ParamLayout;
use vaegpu::reference::elbo::Var;
use vaegpu::reference::iwae::{log_mean_exp, logw_terms_var, Shape};
use vaegpu::reference::net::net_forward;
use vaegpu::reference::sample::{normal, seed_key, LOGVAR_MAX, LOGVAR_MIN};
use vaegpu::testing::{shared_gpu, uniform};

fn pixels(seed: u64, n: usize) -> Vec<u8> {
    uniform(seed, n, 0.0, 256.0).iter().map(|&v| v as u8).collect()
}

/// L_k per image in f64 with the estimator's draws: chunk c of eval batch e uses Philox counters
/// (i, e, STREAM_LOGLIK + c) for element i = (m·B_e + b)·Z + j of the chunk.
fn reference_lk(cfg: &VaeConfig, layout: &ParamLayout, params: &[f64], x: &[f64], est: &Loglik) -> Vec<f64> {
    let nets = cfg.nets().unwrap();
    // a learned decoder variance: its block of params
    let var = match nets.logvar.map(|b| &layout.layers[b]) {
        Some(l) => Var::Learned { s: &params[l.offset..l.offset + l.len()], lv_min: cfg.dec_lv_min() as f64 },
        None => Var::Fixed,
    };
    let (d, z, be, s) = (cfg.input_dim, cfg.latent, est.images, est.chunk);
    let n = x.len() / d;
    let key = seed_key(11);
    let mut out = Vec::new();
    for e in 0..n.div_ceil(be) {
        // the batch wraps around the items like the gather does (rows past n are not counted)
        let xb: Vec<f64> = (0..be).flat_map(|b| x[((e * be + b) % n) * d..][..d].to_vec()).collect();
        let head = net_forward(&nets.encoder, layout, params, &xb, be).outs.last().unwrap().clone();
        let mut lw = vec![Vec::new(); be];
        for c in 0..est.k.div_ceil(s) {
            let mut eps = vec![0.0; s * be * z];
            let mut zs = vec![0.0; s * be * z];
            for (i, (ep, zv)) in eps.iter_mut().zip(zs.iter_mut()).enumerate() {
                let (b, j) = ((i / z) % be, i % z);
                *ep = normal(i as u32, e as u32, STREAM_LOGLIK + c as u32, key) as f32 as f64;
                let lv = head[b * 2 * z + z + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
                *zv = head[b * 2 * z + j] + (0.5 * lv).exp() * *ep;
            }
            let dec = net_forward(&nets.decoder, layout, params, &zs, s * be).outs.last().unwrap().clone();
            let shape = Shape {
                batch: be,
                dim: d,
                latent: z,
                samples: s,
                likelihood: cfg.likelihood,
                sigma: cfg.sigma as f64,
                beta: 1.0,
                iwae: true,
            };
            let t = logw_terms_var(&shape, var, &dec, &xb, &head, &eps, &zs, None);
            for m in 0..s.min(est.k - c * s) {
                for (b, l) in lw.iter_mut().enumerate() {
                    l.push(t[m * be + b].0 + t[m * be + b].1);
                }
            }
        }
        for (b, l) in lw.iter().enumerate() {
            if e * be + b < n {
                out.push(log_mean_exp(l));
            }
        }
    }
    out
}

#[test]
fn estimator_matches_the_reference_over_chunks_and_batches() {
    let gpu = shared_gpu();
    use vaegpu::kernels::elbo::DecoderVariance::{Fixed, Pixel};
    for (lik, variance, k, rows) in [
        (Likelihood::Bernoulli, Fixed, 37, 40),
        (Likelihood::Gaussian, Fixed, 10, 64),
        (Likelihood::Bernoulli, Fixed, 1, 8192),
        // a learned per-pixel variance (layout.init draws its s from U(−1.5, 1.5) here)
        (Likelihood::Gaussian, Pixel, 10, 32),
    ] {
        let cfg = VaeConfig {
            input_dim: 13,
            hidden: vec![9],
            latent: 3,
            act: Act::Tanh,
            likelihood: lik,
            sigma: 0.4,
            variance,
            ..Default::default()
        };
        let layout = cfg.layout();
        let params: Vec<f32> = layout.init(4).iter().map(|v| 1.5 * v).collect();
        let n = 7;
        let px = pixels(3, n * cfg.input_dim);
        let data = GpuDataset::upload(gpu, "test", &px, n, cfg.input_dim).unwrap();
        let est = Loglik::with_rows(gpu, &cfg, &params, k, rows).unwrap();
        let m = est.run(gpu, &data, n, 11).unwrap();
        let x: Vec<f64> = px.iter().map(|&p| p as f64 / 255.0).collect();
        let p64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
        let want = reference_lk(&cfg, &layout, &p64, &x, &est);
        let want_mean = want.iter().sum::<f64>() / n as f64;
        let what = format!("{lik:?} {variance:?} k {k}: {} images x {} samples per chunk", est.images, est.chunk);
        assert_eq!(m.rows as usize, n, "{what}: images counted");
        assert!(
            (m.mean_loss() + want_mean).abs() < 2e-4 * want_mean.abs() + 1e-4,
            "{what}: −L_k {} vs {}",
            m.mean_loss(),
            -want_mean
        );
        // −ELBO estimate ≥ −L_k (Jensen), equal for k = 1.
        let elbo = m.mean_rec() + m.mean_kl();
        if k == 1 {
            assert!((elbo - m.mean_loss()).abs() < 1e-4 * elbo.abs(), "{what}");
        } else {
            assert!(elbo > m.mean_loss(), "{what}: −ELBO {elbo} vs −L_k {}", m.mean_loss());
        }
    }
}

/// log N(x; b, W Wᵀ + σ²I) in f64 (Cholesky).
fn exact_logpx(x: &[f64], w: &[Vec<f64>], b: &[f64], sigma: f64) -> f64 {
    let d = x.len();
    let mut c = vec![vec![0.0; d]; d];
    for (i, ci) in c.iter_mut().enumerate() {
        for (j, cij) in ci.iter_mut().enumerate() {
            *cij = w[i].iter().zip(&w[j]).map(|(a, b)| a * b).sum::<f64>() + if i == j { sigma * sigma } else { 0.0 };
        }
    }
    let mut l = vec![vec![0.0; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = c[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    // solve L y = x − b
    let mut y = vec![0.0; d];
    for i in 0..d {
        y[i] = (x[i] - b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let logdet: f64 = (0..d).map(|i| 2.0 * l[i][i].ln()).sum();
    -0.5 * (y.iter().map(|v| v * v).sum::<f64>() + logdet + d as f64 * std::f64::consts::TAU.ln())
}

#[test]
fn linear_gaussian_model_gives_the_exact_log_likelihood() {
    // Decoder x = W z + b + σ·noise with orthogonal columns of W: the posterior is N(A(x − b), Σ) with a
    // diagonal Σ = diag(1 / (1 + |w_j|²/σ²)) and A = Σ Wᵀ / σ², which the linear encoder represents.
    let gpu = shared_gpu();
    let (d, z, sigma) = (6, 2, 0.5f64);
    let cfg = VaeConfig {
        input_dim: d,
        hidden: vec![],
        latent: z,
        likelihood: Likelihood::Gaussian,
        sigma: sigma as f32,
        ..Default::default()
    };
    let layout = cfg.layout();
    let w: Vec<Vec<f64>> =
        vec![vec![0.6, 0.0], vec![0.3, 0.0], vec![0.0, -0.5], vec![0.0, 0.4], vec![-0.2, 0.0], vec![0.0, 0.1]];
    let b = [0.5, 0.4, 0.6, 0.3, 0.5, 0.45];
    let var: Vec<f64> =
        (0..z).map(|j| 1.0 / (1.0 + (0..d).map(|i| w[i][j] * w[i][j]).sum::<f64>() / (sigma * sigma))).collect();
    let mut p = vec![0.0f32; layout.total];
    let (enc, dec) = (&layout.layers[0], &layout.layers[1]);
    for j in 0..z {
        let mut bias = 0.0;
        for i in 0..d {
            let a = var[j] * w[i][j] / (sigma * sigma);
            p[enc.offset + i * enc.dout + j] = a as f32; // μ_j = Σ_i a_ji (x_i − b_i)
            bias -= a * b[i];
        }
        p[enc.bias_offset() + j] = bias as f32;
        p[enc.bias_offset() + z + j] = var[j].ln() as f32; // logσ²_j
        for i in 0..d {
            p[dec.offset + j * dec.dout + i] = w[i][j] as f32;
        }
    }
    for i in 0..d {
        p[dec.bias_offset() + i] = b[i] as f32;
    }
    let n = 9;
    let px = pixels(8, n * d);
    let data = GpuDataset::upload(gpu, "test", &px, n, d).unwrap();
    let x: Vec<f64> = px.iter().map(|&v| v as f64 / 255.0).collect();
    let exact = (0..n).map(|i| exact_logpx(&x[i * d..(i + 1) * d], &w, &b, sigma)).sum::<f64>() / n as f64;
    for k in [1, 50, 5000] {
        let est = Loglik::new(gpu, &cfg, &p, k).unwrap();
        let m = est.run(gpu, &data, n, 0).unwrap();
        assert!((-m.mean_loss() - exact).abs() < 2e-3, "k {k}: L_k {} vs exact log p(x) {exact}", -m.mean_loss());
    }
    // A worse (wider, shifted) encoder: L_1 < L_5000 ≤ log p(x), and L_5000 much closer.
    for j in 0..z {
        p[enc.bias_offset() + z + j] += 1.0;
        p[enc.bias_offset() + j] += 0.3;
    }
    let lk = |k| -Loglik::new(gpu, &cfg, &p, k).unwrap().run(gpu, &data, n, 0).unwrap().mean_loss();
    let (l1, l5000) = (lk(1), lk(5000));
    assert!(l1 < l5000 && l5000 < exact + 5e-3, "L_1 {l1}, L_5000 {l5000}, exact {exact}");
    assert!(exact - l5000 < 0.1 * (exact - l1), "L_5000 {l5000} should close most of the gap from L_1 {l1} to {exact}");
}
