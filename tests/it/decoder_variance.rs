//! The Gaussian decoder with a learned variance (`variance = "global" | "pixel"`, block `dec.logvar`
//! holding s = log σ², clamped to [2·ln σ_min, 20] in the kernels): the config (serde defaults,
//! validation, layout, initialisation, checkpoint names); elbo.wgsl (`elbo` with the learned s and
//! `logvar_grad` under the ELBO's weights 1/(B·M) and under per-row weights wt) and iwae.wgsl
//! (`logw_rows`, `logw_grad_out`) against the f64 reference on awkward sizes with NaN-poisoned outputs,
//! including s below and above the clamp (zero gradient there); and the learned variance at s = ln σ²
//! against the fixed σ through the whole GPU model.
//!
//! Tolerances (f32 kernels against f64): sums are bounded by their term magnitudes, |err| ≤
//! c·Σ|term| with c = 2e-6 (ELBO rows), 3e-6 (log-weight rows), 1e-5 (the s gradient, whose terms
//! ½(1 − (x − μ)²e^{−s}) cancel); elementwise gradients (μ − x)·e^{−s}·w to 1e-5 relative.

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::elbo::{DecoderVariance, Elbo, LearnedVar, Likelihood, DEC_LOGVAR_MAX};
use vaegpu::kernels::iwae::Weighted;
use vaegpu::kernels::optim::Adam;
use vaegpu::kernels::Act;
use vaegpu::models::latent_prior::{LatentPriorConfig, PriorKind};
use vaegpu::models::vae::{Vae, VaeConfig};
use vaegpu::reference::elbo::{elbo_var, logvar_grad, nll_var, Var};
use vaegpu::reference::iwae::{self, Shape};
use vaegpu::reference::sample::{LOGVAR_MAX, LOGVAR_MIN};
use vaegpu::testing::{f32_round, normals, poisoned, shared_gpu, to_f32, uniform, Tol};

fn gpu() -> &'static Gpu {
    shared_gpu()
}

fn up(g: &Gpu, label: &str, v: &[f64]) -> wgpu::Buffer {
    g.upload(label, &to_f32(v))
}

fn assert_tail_poisoned(what: &str, buf: &wgpu::Buffer, n: usize) {
    let all = gpu().read_f32(buf).unwrap();
    assert!(all[n..].iter().all(|v| v.is_nan()), "{what}: wrote past element {n}");
}

/// σ_min of the kernel tests: lv_min = 2·ln 0.05 ≈ −5.99.
const SIGMA_MIN: f64 = 0.05;

fn lv_min() -> f64 {
    (2.0 * SIGMA_MIN.ln()) as f32 as f64
}

/// The learned s ([1] or [D], f32-rounded): inside the clamp, except (pixel, D ≥ 4) one value below
/// and one above it; `global_outside` puts a global s below the clamp.
fn logvars(seed: u64, mode: DecoderVariance, dim: usize, global_outside: bool) -> Vec<f64> {
    let mut s = uniform(seed, mode.len(dim), -2.5, 1.0);
    if mode == DecoderVariance::Pixel && dim >= 4 {
        s[1] = lv_min() - 1.0;
        s[3] = DEC_LOGVAR_MAX as f64 + 0.5;
    }
    if mode == DecoderVariance::Global && global_outside {
        s[0] = lv_min() - 0.25;
    }
    f32_round(&s)
}

/// Gaussian means and targets: [M·B, D] and [B, D].
fn means_targets(seed: u64, rows: usize, batch: usize, dim: usize) -> (Vec<f64>, Vec<f64>) {
    (f32_round(&uniform(seed, rows * dim, -0.5, 1.5)), f32_round(&uniform(seed + 1, batch * dim, 0.0, 1.0)))
}

fn var_of<'a>(s: &'a [f64]) -> Var<'a> {
    Var::Learned { s, lv_min: lv_min() }
}

/// Σ_r w_r·½(1 + (x − μ)²e^{−s}) per s value: the magnitude the f32 sum of the s gradient is rounded
/// against.
fn logvar_grad_scale(out: &[f64], x: &[f64], batch: usize, dim: usize, s: &[f64], w: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; s.len()];
    for (r, &wr) in w.iter().enumerate() {
        for d in 0..dim {
            let k = if s.len() == 1 { 0 } else { d };
            let sd = s[k].clamp(lv_min(), DEC_LOGVAR_MAX as f64);
            let diff = out[r * dim + d] - x[(r % batch) * dim + d];
            g[k] += wr.abs() * 0.5 * (1.0 + diff * diff * (-sd).exp());
        }
    }
    g
}

/// Runs logvar_grad (weights 1/(B·M) when `wt` is None) and checks it against the reference, on both
/// of its widths (`Gpu::row_lanes` 8: 8 lanes; 64: 256 lanes).
fn check_logvar_grad(e: &Elbo, out: &[f64], x: &[f64], s: &[f64], wt: Option<&[f64]>) {
    for g in [gpu(), vaegpu::testing::shared_gpu_other_rows()] {
        check_logvar_grad_on(g, e, out, x, s, wt);
    }
}

fn check_logvar_grad_on(g: &Gpu, e: &Elbo, out: &[f64], x: &[f64], s: &[f64], wt: Option<&[f64]>) {
    let (b, d, m) = (e.batch, e.dim, e.samples);
    let n = m * b;
    let w: Vec<f64> = wt.map_or_else(|| vec![1.0 / n as f64; n], |w| w.to_vec());
    let want = logvar_grad(out, x, b, d, var_of(s), &w);
    let scale = logvar_grad_scale(out, x, b, d, s, &w);
    let (ob, xb, sb, wb) = (up(g, "out", out), up(g, "x", x), up(g, "s", s), up(g, "wt", &w));
    let db = poisoned(g, "dlogvar", s.len() + 3);
    let var = LearnedVar { logvar: (&sb).into(), lv_min: lv_min() as f32 };
    let wv = wt.map(|_| (&wb).into());
    let l = e.logvar_grad(g, "test", (&ob).into(), (&xb).into(), var, wv, View::new(&db, 0, s.len())).unwrap();
    g.run(&l).unwrap();
    let got: Vec<f32> = g.read(&db, 0, s.len()).unwrap();
    let what = format!("logvar_grad {e:?} s{} weighted {} row_lanes {}", s.len(), wt.is_some(), g.row_lanes);
    for (k, ((gv, wv), sc)) in got.iter().zip(&want).zip(&scale).enumerate() {
        let err = (*gv as f64 - wv).abs();
        assert!(err <= 1e-5 * sc + 1e-9, "{what}: [{k}] got {gv} want {wv} (scale {sc})");
        let raw = s[k];
        if !(lv_min()..=DEC_LOGVAR_MAX as f64).contains(&raw) {
            assert_eq!(*gv, 0.0, "{what}: gradient through the clamp at [{k}]");
        }
    }
    let all = g.read_f32(&db).unwrap();
    assert!(all[s.len()..].iter().all(|v| v.is_nan()), "{what}: wrote past element {}", s.len());
}

fn check_elbo_var(e: Elbo, mode: DecoderVariance, seed: u64) {
    let g = gpu();
    let (b, d, z, m) = (e.batch, e.dim, e.latent, e.samples);
    let (out, x) = means_targets(seed, m * b, b, d);
    let mut head = uniform(seed + 2, b * 2 * z, -2.0, 2.0);
    head[z] = LOGVAR_MIN - 2.0;
    let head = f32_round(&head);
    let s = logvars(seed + 3, mode, d, seed % 2 == 0);
    let var = var_of(&s);
    let want = elbo_var(&out, &x, &head, (b, d, z, m), Likelihood::Gaussian, e.beta as f64, 1.0, var);
    let (ob, xb, hb, sb) = (up(g, "out", &out), up(g, "x", &x), up(g, "head", &head), up(g, "s", &s));
    let doutb = poisoned(g, "dout", m * b * d + 3);
    let dheadb = poisoned(g, "dhead", b * 2 * z + 3);
    let rowsb = poisoned(g, "rows", 2 * b + 3);
    let lv = LearnedVar { logvar: (&sb).into(), lv_min: lv_min() as f32 };
    let l = e
        .launch_var(
            g,
            "test",
            ((&ob).into(), (&xb).into(), (&hb).into()),
            Some(lv),
            View::new(&doutb, 0, m * b * d),
            View::new(&dheadb, 0, b * 2 * z),
            View::new(&rowsb, 0, 2 * b),
        )
        .unwrap();
    g.run(&l).unwrap();
    let what = format!("elbo {e:?} {mode:?}");
    let rows: Vec<f32> = g.read(&rowsb, 0, 2 * b).unwrap();
    for bb in 0..b {
        let mut mag = 0.0;
        for mm in 0..m {
            for dd in 0..d {
                let i = (mm * b + bb) * d + dd;
                mag += nll_var(Likelihood::Gaussian, 1.0, var, dd, out[i], x[bb * d + dd]).0.abs() + out[i].abs();
            }
        }
        let (rec, kl) = (rows[2 * bb] as f64, rows[2 * bb + 1] as f64);
        let err = (rec - want.rows[bb].0).abs();
        assert!(err <= 2e-6 * mag / m as f64 + 1e-6, "{what}: rec[{bb}] {rec} want {}", want.rows[bb].0);
        let err = (kl - want.rows[bb].1).abs();
        assert!(err <= 2e-6 * (want.rows[bb].1.abs() + z as f64) + 1e-6, "{what}: kl[{bb}] {kl}");
    }
    let dout: Vec<f32> = g.read(&doutb, 0, m * b * d).unwrap();
    Tol::new(1e-5, 1e-9).check(&format!("{what} dout"), &dout, &want.dout).unwrap();
    let dhead: Vec<f32> = g.read(&dheadb, 0, b * 2 * z).unwrap();
    Tol::new(1e-5, 1e-7).check(&format!("{what} dhead"), &dhead, &want.dhead).unwrap();
    assert_tail_poisoned("dout", &doutb, m * b * d);
    assert_tail_poisoned("dhead", &dheadb, b * 2 * z);
    assert_tail_poisoned("rows", &rowsb, 2 * b);
    // its s gradient under the ELBO's weights 1/(B·M)
    check_logvar_grad(&e, &out, &x, &s, None);
}

const SIZES: [(usize, usize, usize); 5] = [(1, 1, 1), (5, 37, 3), (3, 300, 2), (70, 5, 4), (2, 784, 1)];

#[test]
fn elbo_kernel_and_logvar_grad_with_learned_variance_match_reference() {
    let mut seed = 40;
    for mode in [DecoderVariance::Global, DecoderVariance::Pixel] {
        for (batch, dim, samples) in SIZES {
            for latent in [1, 20] {
                seed += 5;
                let e = Elbo { batch, dim, latent, samples, likelihood: Likelihood::Gaussian, beta: 0.7, sigma: 0.3 };
                check_elbo_var(e, mode, seed);
            }
        }
    }
}

#[test]
fn logvar_grad_splits_the_grid_past_32768_pixels() {
    // 32800 per-pixel values: the dispatch is 2-D and every value is written once.
    let (batch, dim, samples) = (1, 32800, 1);
    let e = Elbo { batch, dim, latent: 1, samples, likelihood: Likelihood::Gaussian, beta: 1.0, sigma: 1.0 };
    let (out, x) = means_targets(7, batch * samples, batch, dim);
    let s = logvars(8, DecoderVariance::Pixel, dim, false);
    check_logvar_grad(&e, &out, &x, &s, None);
}

fn shape(w: &Weighted) -> Shape {
    Shape::from(w)
}

#[test]
fn weighted_kernels_with_learned_variance_match_reference() {
    let g = gpu();
    let mut seed = 900;
    for mode in [DecoderVariance::Global, DecoderVariance::Pixel] {
        for (batch, dim, samples) in SIZES {
            for iwae_mode in [true, false] {
                seed += 11;
                let latent = 3;
                let w = Weighted {
                    batch,
                    dim,
                    latent,
                    samples,
                    likelihood: Likelihood::Gaussian,
                    sigma: 0.6,
                    beta: 0.8,
                    iwae: iwae_mode,
                    ext_prior: false,
                };
                let sh = shape(&w);
                let n = samples * batch;
                let (out, x) = means_targets(seed, n, batch, dim);
                let head = f32_round(&uniform(seed + 2, batch * 2 * latent, -1.0, 1.0));
                let eps = f32_round(&normals(seed + 3, n * latent));
                let mut zs = vec![0.0; n * latent];
                for r in 0..n {
                    for j in 0..latent {
                        let (mu, lv) =
                            (head[(r % batch) * 2 * latent + j], head[(r % batch) * 2 * latent + latent + j]);
                        zs[r * latent + j] = mu + (0.5 * lv.clamp(LOGVAR_MIN, LOGVAR_MAX)).exp() * eps[r * latent + j];
                    }
                }
                let zs = f32_round(&zs);
                let s = logvars(seed + 4, mode, dim, seed % 3 == 0);
                let var = var_of(&s);
                let what = format!("{w:?} {mode:?}");
                // logw_rows at a row offset
                let want = iwae::logw_terms_var(&sh, var, &out, &x, &head, &eps, &zs, None);
                let (ob, xb, hb, eb, zb, sb) = (
                    up(g, "out", &out),
                    up(g, "x", &x),
                    up(g, "head", &head),
                    up(g, "eps", &eps),
                    up(g, "z", &zs),
                    up(g, "s", &s),
                );
                let offset = batch;
                let tb = poisoned(g, "terms", 2 * (offset + n) + 3);
                let views = ((&ob).into(), (&xb).into(), (&hb).into(), (&eb).into(), (&zb).into(), (&zb).into());
                let lv = LearnedVar { logvar: (&sb).into(), lv_min: lv_min() as f32 };
                let terms = View::new(&tb, 0, 2 * (offset + n));
                g.run(&w.rows_launch_var(g, "test", views, Some(lv), terms, offset, samples).unwrap()).unwrap();
                let all = g.read_f32(&tb).unwrap();
                assert!(all[..2 * offset].iter().all(|v| v.is_nan()), "{what}: wrote before the offset");
                assert_tail_poisoned(&what, &tb, 2 * (offset + n));
                for r in 0..n {
                    let b = r % batch;
                    let mag: f64 = (0..dim)
                        .map(|d| {
                            let o = out[r * dim + d];
                            nll_var(Likelihood::Gaussian, 1.0, var, d, o, x[b * dim + d]).0.abs() + o.abs()
                        })
                        .sum();
                    let (px, lat) = (all[2 * (offset + r)] as f64, all[2 * (offset + r) + 1] as f64);
                    assert!((px - want[r].0).abs() <= 3e-6 * mag + 1e-5, "{what}: lpx[{r}] {px} want {}", want[r].0);
                    assert!((lat - want[r].1).abs() <= 1e-5 * (1.0 + want[r].1.abs()), "{what}: lat[{r}] {lat}");
                }
                // weights from the reference terms, as the combine kernel would give them
                let t32: Vec<(f64, f64)> = want.iter().map(|&(a, b)| (a as f32 as f64, b as f32 as f64)).collect();
                let wt = f32_round(&iwae::combine(&sh, &t32).1);
                let wb = up(g, "wt", &wt);
                // logw_grad_out
                let want_dout = iwae::grad_out_var(&sh, var, &out, &x, &wt);
                let db = poisoned(g, "dout", n * dim + 5);
                let l = w.grad_out_var(
                    g,
                    "test",
                    ((&ob).into(), (&xb).into(), (&wb).into()),
                    Some(lv),
                    View::new(&db, 0, n * dim),
                );
                g.run(&l.unwrap()).unwrap();
                let got: Vec<f32> = g.read(&db, 0, n * dim).unwrap();
                Tol::new(1e-5, 1e-9).check(&format!("{what} dout"), &got, &want_dout).unwrap();
                assert_tail_poisoned("dout", &db, n * dim);
                // the s gradient under the weights wt
                let e = Elbo { batch, dim, latent, samples, likelihood: Likelihood::Gaussian, beta: 0.8, sigma: 0.6 };
                check_logvar_grad(&e, &out, &x, &s, Some(&wt));
            }
        }
    }
}

#[test]
fn learned_variance_launches_refuse_bad_inputs() {
    let g = gpu();
    let (out, x) = means_targets(1, 6, 3, 4);
    let (ob, xb) = (up(g, "out", &out), up(g, "x", &x));
    let s3 = up(g, "s", &[0.0, 0.0, 0.0]);
    let e = Elbo { batch: 3, dim: 4, latent: 1, samples: 2, likelihood: Likelihood::Gaussian, beta: 1.0, sigma: 1.0 };
    // 3 values for 4 pixels: neither global nor per pixel
    let bad = LearnedVar { logvar: (&s3).into(), lv_min: -5.0 };
    let err = e.logvar_grad(g, "t", (&ob).into(), (&xb).into(), bad, None, (&s3).into()).err().unwrap();
    assert!(err.to_string().contains("need 1 (global) or 4 (per pixel)"), "{err}");
    // a learned variance with the Bernoulli likelihood
    let b = Elbo { likelihood: Likelihood::Bernoulli, ..e };
    let s1 = up(g, "s1", &[0.0]);
    let ok = LearnedVar { logvar: (&s1).into(), lv_min: -5.0 };
    let err = b.logvar_grad(g, "t", (&ob).into(), (&xb).into(), ok, None, (&s1).into()).err().unwrap();
    assert!(err.to_string().contains("Gaussian"), "{err}");
}

fn small_cfg(variance: DecoderVariance) -> VaeConfig {
    VaeConfig {
        input_dim: 11,
        hidden: vec![7],
        latent: 3,
        act: Act::Tanh,
        likelihood: Likelihood::Gaussian,
        sigma: 0.6,
        samples: 2,
        variance,
        ..Default::default()
    }
}

#[test]
fn config_parses_validates_and_lays_out_the_variance() {
    // defaults: fixed, sigma_min 1e-3; old configs (without the keys) load unchanged
    let old: VaeConfig = toml::from_str("likelihood = \"gaussian\"\nsigma = 0.5").unwrap();
    assert_eq!(old.variance, DecoderVariance::Fixed);
    assert_eq!(old.sigma_min, 1e-3);
    let c: VaeConfig = toml::from_str("likelihood = \"gaussian\"\nvariance = \"pixel\"\nsigma_min = 0.01").unwrap();
    assert_eq!((c.variance, c.sigma_min), (DecoderVariance::Pixel, 0.01));
    let c: VaeConfig = toml::from_str("likelihood = \"gaussian\"\nvariance = \"global\"").unwrap();
    assert_eq!(c.variance, DecoderVariance::Global);
    assert!(toml::from_str::<VaeConfig>("variance = \"learned\"").is_err());
    let t = vaegpu::train::config::TrainConfig::from_toml("[vae]\nlikelihood = \"gaussian\"\nvariance = \"pixel\"")
        .unwrap();
    assert_eq!(t.vae.variance, DecoderVariance::Pixel);

    // validation: errors, never panics
    let err =
        VaeConfig { likelihood: Likelihood::Bernoulli, ..small_cfg(DecoderVariance::Pixel) }.validate().unwrap_err();
    assert!(err.contains("needs likelihood = \"gaussian\""), "{err}");
    assert!(VaeConfig { likelihood: Likelihood::Bernoulli, ..small_cfg(DecoderVariance::Fixed) }.validate().is_ok());
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = VaeConfig { sigma_min: bad, ..small_cfg(DecoderVariance::Global) }.validate().unwrap_err();
        assert!(err.contains("sigma_min"), "{err}");
    }
    let err = VaeConfig { sigma: 1e-4, ..small_cfg(DecoderVariance::Pixel) }.validate().unwrap_err();
    assert!(err.contains("sigma_min"), "{err}");
    let err =
        Vae::new(gpu(), &VaeConfig { likelihood: Likelihood::Bernoulli, ..small_cfg(DecoderVariance::Global) }, 2)
            .err()
            .unwrap();
    assert!(err.to_string().contains("gaussian"), "{err}");

    // layout: dec.logvar is the last block ([1] or [D]), after a learned prior's; initialised to ln σ²
    let fixed = small_cfg(DecoderVariance::Fixed);
    assert!(fixed.layout().layer("dec.logvar").is_none());
    assert!(!fixed.named_tensors(&fixed.layout()).iter().any(|t| t.name == "dec.logvar"));
    for (mode, len) in [(DecoderVariance::Global, 1), (DecoderVariance::Pixel, 11)] {
        for kind in [PriorKind::Standard, PriorKind::Mog] {
            let cfg = VaeConfig {
                prior: LatentPriorConfig { kind, mog_components: 3, ..Default::default() },
                ..small_cfg(mode)
            };
            cfg.validate().unwrap();
            let layout = cfg.layout();
            let last = layout.layers.last().unwrap();
            assert_eq!((last.name.as_str(), last.len()), ("dec.logvar", len), "{mode:?} {kind:?}");
            // the other blocks are where a fixed-variance model has them
            let base = VaeConfig { variance: DecoderVariance::Fixed, ..cfg.clone() }.layout();
            assert_eq!(&layout.layers[..layout.layers.len() - 1], &base.layers[..]);
            let p = cfg.init_params(5).unwrap();
            let want = (2.0 * (0.6f32 as f64).ln()) as f32;
            assert!(p[last.offset..last.offset + len].iter().all(|&v| v == want));
            assert_eq!(
                &p[..base.total],
                &VaeConfig { variance: DecoderVariance::Fixed, ..cfg.clone() }.init_params(5).unwrap()[..]
            );
            let t = cfg.named_tensors(&layout);
            let nt = t.last().unwrap();
            assert_eq!((nt.name.as_str(), nt.shape.clone()), ("dec.logvar", vec![len]));
            assert_eq!(nt.index, (last.offset..last.offset + len).collect::<Vec<_>>());
        }
    }
}

/// One GPU step (lr = 0) on given inputs: (loss per example rows, dout, every gradient).
fn gpu_step(cfg: &VaeConfig, params: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = gpu();
    let vae = Vae::new(g, cfg, batch).unwrap();
    g.write(&vae.core.params, 0, params);
    g.write(&vae.x, 0, &to_f32(&uniform(5, batch * cfg.input_dim, 0.0, 1.0)));
    g.write(&vae.eps, 0, &to_f32(&normals(6, cfg.samples * batch * cfg.latent)));
    vae.core.set_state(g, 0, 0);
    let adam = Adam { lr: 0.0, ..Adam::default() };
    g.submit(&vae.step_program_given(g, &adam, 0.0).unwrap(), 1);
    (g.read_f32(&vae.rows).unwrap(), g.read_f32(vae.dec.d_output()).unwrap(), g.read_f32(&vae.core.grads).unwrap())
}

#[test]
fn learned_variance_at_its_initial_value_matches_the_fixed_sigma() {
    // s = ln σ² gives the fixed-σ model's loss and gradients (to f32 rounding: e^{−s} vs 1/σ²).
    use vaegpu::models::vae::Objective;
    for objective in [Objective::Elbo, Objective::Iwae] {
        let fixed = VaeConfig { objective, ..small_cfg(DecoderVariance::Fixed) };
        let base = fixed.init_params(2).unwrap();
        let (rows_f, dout_f, grads_f) = gpu_step(&fixed, &base, 5);
        for mode in [DecoderVariance::Global, DecoderVariance::Pixel] {
            let cfg = VaeConfig { variance: mode, ..fixed.clone() };
            let p = cfg.init_params(2).unwrap();
            let (rows, dout, grads) = gpu_step(&cfg, &p, 5);
            let what = format!("{objective:?} {mode:?}");
            Tol::new(1e-5, 1e-5).check(&format!("{what} rows"), &rows, &f32s(&rows_f)).unwrap();
            Tol::new(1e-5, 1e-9).check(&format!("{what} dout"), &dout, &f32s(&dout_f)).unwrap();
            let n = fixed.layout().total;
            let gmax = grads_f.iter().fold(0.0f32, |a, g| a.max(g.abs())) as f64;
            Tol::new(1e-4, 1e-6 * gmax).check(&format!("{what} grads"), &grads[..n], &f32s(&grads_f)).unwrap();
        }
    }
}

fn f32s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
