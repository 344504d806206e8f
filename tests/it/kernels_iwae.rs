//! shaders/iwae.wgsl against src/reference/iwae.rs on awkward sizes, outputs poisoned with NaN:
//! per-sample log-weights (N(0, I) or an external log p(z), chunk offsets, the valid-sample cut),
//! L_k / Monte-Carlo ELBO with their weights, the weighted output gradient, the latent backward and
//! the score-function gradient; plus properties of the bound itself (L_1 = ELBO sample, L_k ≥ mean).

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::elbo::Likelihood;
use vaegpu::kernels::iwae::Weighted;
use vaegpu::reference::iwae::{self, Shape};
use vaegpu::reference::sample::{LOGVAR_MAX, LOGVAR_MIN};
use vaegpu::testing::{f32_round, normals, poisoned, shared_gpu, shared_gpu_other_rows, to_f32, uniform, Tol};

fn gpu() -> &'static Gpu {
    shared_gpu()
}

struct Case {
    w: Weighted,
    out: Vec<f64>,
    x: Vec<f64>,
    head: Vec<f64>,
    eps: Vec<f64>,
    z: Vec<f64>,
    logpz: Vec<f64>,
}

fn shape(w: &Weighted) -> Shape {
    Shape::from(w)
}

fn case(w: Weighted, seed: u64) -> Case {
    let (b, d, z, m) = (w.batch, w.dim, w.latent, w.samples);
    let out = match w.likelihood {
        Likelihood::Bernoulli => uniform(seed, m * b * d, -6.0, 6.0),
        Likelihood::Gaussian => uniform(seed, m * b * d, -0.5, 1.5),
    };
    let x = uniform(seed + 1, b * d, 0.0, 1.0);
    let mut head = uniform(seed + 2, b * 2 * z, -1.5, 1.5);
    // one logσ² below and one above the clamp: no gradient through them
    head[z] = LOGVAR_MIN - 2.0;
    if b > 1 {
        head[2 * z + z + z / 2] = LOGVAR_MAX + 1.0;
    }
    let eps = f32_round(&normals(seed + 3, m * b * z));
    let head = f32_round(&head);
    let mut zs = vec![0.0; m * b * z];
    for r in 0..m * b {
        let bb = r % b;
        for j in 0..z {
            let lv = head[bb * 2 * z + z + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
            zs[r * z + j] = head[bb * 2 * z + j] + (0.5 * lv).exp() * eps[r * z + j];
        }
    }
    let logpz = f32_round(&uniform(seed + 4, m * b, -9.0, -1.0));
    Case { w, out: f32_round(&out), x: f32_round(&x), head, eps, z: f32_round(&zs), logpz }
}

fn up(g: &Gpu, label: &str, v: &[f64]) -> wgpu::Buffer {
    g.upload(label, &to_f32(v))
}

fn assert_tail_poisoned(what: &str, buf: &wgpu::Buffer, n: usize) {
    let all = gpu().read_f32(buf).unwrap();
    assert!(all[n..].iter().all(|v| v.is_nan()), "{what}: wrote past element {n}");
}

/// Σ_d |nll| + |out| per row (the magnitude the f32 sum of a row's lpx is rounded against).
fn row_scale(c: &Case) -> Vec<f64> {
    let s = shape(&c.w);
    (0..c.w.samples * c.w.batch)
        .map(|r| {
            let b = r % c.w.batch;
            (0..c.w.dim)
                .map(|d| {
                    let o = c.out[r * c.w.dim + d];
                    vaegpu::reference::elbo::nll(s.likelihood, s.sigma, o, c.x[b * c.w.dim + d]).0.abs() + o.abs()
                })
                .sum::<f64>()
        })
        .collect()
}

/// Runs logw_rows (at a row offset, with a valid cut) and checks it; returns the GPU terms.
fn check_rows(c: &Case, offset: usize, valid: usize) -> Vec<f32> {
    check_rows_on(gpu(), c, offset, valid)
}

fn check_rows_on(g: &Gpu, c: &Case, offset: usize, valid: usize) -> Vec<f32> {
    let w = c.w;
    let n = w.samples * w.batch;
    let s = shape(&w);
    let ext = w.ext_prior.then_some(&c.logpz[..]);
    let want = iwae::logw_terms(&s, &c.out, &c.x, &c.head, &c.eps, &c.z, ext);
    let (ob, xb, hb, eb, zb, lb) = (
        up(g, "out", &c.out),
        up(g, "x", &c.x),
        up(g, "head", &c.head),
        up(g, "eps", &c.eps),
        up(g, "z", &c.z),
        up(g, "logpz", &c.logpz),
    );
    let tb = poisoned(g, "terms", 2 * (offset + n) + 3);
    let views = ((&ob).into(), (&xb).into(), (&hb).into(), (&eb).into(), (&zb).into(), (&lb).into());
    let l = w.rows_launch(g, "test", views, View::new(&tb, 0, 2 * (offset + n)), offset, valid).unwrap();
    // Four pixels per invocation where rows are whole vec4s.
    let entry = if w.dim % 4 == 0 { "logw_rows_v4[" } else { "logw_rows[" };
    assert!(l.label.contains(entry), "{}", l.label);
    g.run(&l).unwrap();
    let all = g.read_f32(&tb).unwrap();
    let what = format!("{w:?} offset {offset} valid {valid}");
    assert!(all[..2 * offset].iter().all(|v| v.is_nan()), "{what}: wrote before the offset");
    let cut = valid.min(w.samples) * w.batch;
    assert!(all[2 * (offset + cut)..].iter().all(|v| v.is_nan()), "{what}: wrote rows past the valid cut");
    let got = &all[2 * offset..2 * (offset + cut)];
    let scale = row_scale(c);
    let mut want_flat = Vec::new();
    let mut scale_flat = Vec::new();
    for r in 0..cut {
        want_flat.extend([want[r].0, want[r].1]);
        let lat_scale: f64 =
            (0..w.latent).map(|j| c.eps[r * w.latent + j].powi(2) + c.z[r * w.latent + j].powi(2) + 5.0).sum();
        scale_flat.extend([scale[r], lat_scale + c.logpz[r].abs()]);
    }
    for (i, ((gv, wv), sc)) in got.iter().zip(&want_flat).zip(&scale_flat).enumerate() {
        let err = (*gv as f64 - wv).abs();
        assert!(err <= 3e-6 * sc + 1e-5, "{what}: terms[{i}] got {gv} want {wv} (scale {sc})");
    }
    got.to_vec()
}

#[test]
fn logw_rows_match_reference() {
    let mut seed = 10;
    for likelihood in [Likelihood::Bernoulli, Likelihood::Gaussian] {
        for (batch, dim, latent, samples) in [(5, 37, 3, 7), (1, 1, 1, 1), (3, 130, 70, 2), (2, 784, 20, 5)] {
            for ext_prior in [false, true] {
                seed += 7;
                let w =
                    Weighted { batch, dim, latent, samples, likelihood, sigma: 0.6, beta: 0.7, iwae: true, ext_prior };
                let c = case(w, seed);
                check_rows(&c, 0, samples);
                // A chunk of the estimator: written after `offset` rows, the last samples cut off; on
                // the other width of the per-row reduction (`Gpu::row_lanes`).
                check_rows_on(shared_gpu_other_rows(), &c, 3 * batch, samples.saturating_sub(2).max(1));
            }
        }
    }
}

#[test]
fn logw_rows_split_the_grid_past_32768_rows() {
    // 33005 rows: the dispatch is 2-D and every row is still written once.
    let w = Weighted {
        batch: 5,
        dim: 2,
        latent: 1,
        samples: 6601,
        likelihood: Likelihood::Bernoulli,
        sigma: 1.0,
        beta: 1.0,
        iwae: true,
        ext_prior: false,
    };
    let c = case(w, 3);
    check_rows(&c, 0, w.samples);
}

/// terms in f32 as the kernels would read them, from the reference.
fn terms_f32(c: &Case) -> Vec<(f64, f64)> {
    let ext = c.w.ext_prior.then_some(&c.logpz[..]);
    let t = iwae::logw_terms(&shape(&c.w), &c.out, &c.x, &c.head, &c.eps, &c.z, ext);
    t.iter().map(|&(a, b)| (a as f32 as f64, b as f32 as f64)).collect()
}

#[test]
fn combine_matches_reference_in_both_modes() {
    let g = gpu();
    let mut seed = 100;
    for iwae_mode in [true, false] {
        for (batch, samples, beta) in [(5, 7, 1.0), (1, 1, 1.0), (70, 3, 0.5), (2, 300, 1.0)] {
            seed += 1;
            let w = Weighted {
                batch,
                dim: 11,
                latent: 4,
                samples,
                likelihood: Likelihood::Bernoulli,
                sigma: 1.0,
                beta,
                iwae: iwae_mode,
                ext_prior: false,
            };
            let c = case(w, seed);
            let terms = terms_f32(&c);
            let (rows, wt) = iwae::combine(&shape(&w), &terms);
            let n = samples * batch;
            let flat: Vec<f64> = terms.iter().flat_map(|&(a, b)| [a, b]).collect();
            let tb = up(g, "terms", &flat);
            let (rb, wb, pb) =
                (poisoned(g, "rows", 3 * batch + 2), poisoned(g, "wt", n + 2), poisoned(g, "wtp", n + 2));
            let weights = (View::new(&wb, 0, n), View::new(&pb, 0, n));
            g.run(&w.combine(g, "test", (&tb).into(), View::new(&rb, 0, 3 * batch), weights, true).unwrap()).unwrap();
            let what = format!("{w:?}");
            let got_rows: Vec<f32> = g.read(&rb, 0, 3 * batch).unwrap();
            let want_rows: Vec<f64> = rows.iter().flatten().cloned().collect();
            // sums of M terms of magnitude ~|lpx| in f32
            let mag = terms.iter().map(|t| t.0.abs() + t.1.abs()).fold(0.0, f64::max);
            Tol::new(1e-6, 2e-7 * mag * (samples as f64).sqrt() + 1e-6)
                .check(&format!("{what} rows"), &got_rows, &want_rows)
                .unwrap();
            let got_wt: Vec<f32> = g.read(&wb, 0, n).unwrap();
            Tol::new(2e-5, 1e-9).check(&format!("{what} wt"), &got_wt, &wt).unwrap();
            let got_wtp: Vec<f32> = g.read(&pb, 0, n).unwrap();
            let want_wtp: Vec<f64> = wt.iter().map(|v| v * beta as f64).collect();
            Tol::new(2e-5, 1e-9).check(&format!("{what} wtp"), &got_wtp, &want_wtp).unwrap();
            // The weights of one example sum to 1/B.
            for b in 0..batch {
                let s: f64 = (0..samples).map(|m| got_wt[m * batch + b] as f64).sum();
                assert!((s * batch as f64 - 1.0).abs() < 1e-4, "{what}: weights of example {b} sum to {s}");
            }
            assert_tail_poisoned("rows", &rb, 3 * batch);
            assert_tail_poisoned("wt", &wb, n);
        }
    }
}

#[test]
fn combine_without_weights_leaves_them_untouched() {
    let g = gpu();
    let w = Weighted {
        batch: 3,
        dim: 5,
        latent: 2,
        samples: 4,
        likelihood: Likelihood::Gaussian,
        sigma: 0.5,
        beta: 1.0,
        iwae: true,
        ext_prior: false,
    };
    let c = case(w, 5);
    let flat: Vec<f64> = terms_f32(&c).iter().flat_map(|&(a, b)| [a, b]).collect();
    let tb = up(g, "terms", &flat);
    let (rb, wb) = (poisoned(g, "rows", 9), poisoned(g, "wt", 12));
    g.run(&w.combine(g, "test", (&tb).into(), (&rb).into(), ((&wb).into(), (&wb).into()), false).unwrap()).unwrap();
    assert!(g.read_f32(&wb).unwrap().iter().all(|v| v.is_nan()));
    assert!(g.read_f32(&rb).unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn grad_out_and_latent_backward_match_reference() {
    let g = gpu();
    let mut seed = 300;
    for likelihood in [Likelihood::Bernoulli, Likelihood::Gaussian] {
        for (batch, dim, latent, samples) in [(5, 37, 3, 7), (1, 1, 1, 1), (4, 70, 66, 3), (3, 132, 5, 2)] {
            for ext_prior in [false, true] {
                seed += 1;
                let w =
                    Weighted { batch, dim, latent, samples, likelihood, sigma: 0.8, beta: 0.6, iwae: true, ext_prior };
                let c = case(w, seed);
                let s = shape(&w);
                let n = samples * batch;
                let (_, wt) = iwae::combine(&s, &terms_f32(&c));
                let wt = f32_round(&wt);
                let what = format!("{w:?}");
                // grad_out
                let want = iwae::grad_out(&s, &c.out, &c.x, &wt);
                let (ob, xb, wb) = (up(g, "out", &c.out), up(g, "x", &c.x), up(g, "wt", &wt));
                let db = poisoned(g, "dout", n * dim + 5);
                let l = w
                    .grad_out(g, "test", (&ob).into(), (&xb).into(), (&wb).into(), View::new(&db, 0, n * dim))
                    .unwrap();
                let entry = if dim % 4 == 0 { "logw_grad_out_v4[" } else { "logw_grad_out[" };
                assert!(l.label.contains(entry), "{}", l.label);
                g.run(&l).unwrap();
                let got: Vec<f32> = g.read(&db, 0, n * dim).unwrap();
                // wt · (σ(l) − x): the difference cancels, so the error scales with wt, not the product.
                let wmax = wt.iter().cloned().fold(0.0, f64::max);
                Tol::new(1e-5, 1e-6 * wmax).check(&format!("{what} dout"), &got, &want).unwrap();
                assert_tail_poisoned("dout", &db, n * dim);
                // latent_backward
                let dz = f32_round(&uniform(seed + 9, n * latent, -0.3, 0.3));
                let dzp = f32_round(&uniform(seed + 10, n * latent, -0.2, 0.2));
                let want = iwae::latent_backward(&s, &c.head, &c.eps, &c.z, &wt, &dz, ext_prior.then_some(&dzp[..]));
                let (hb, eb, zb, dzb, dpb) = (
                    up(g, "head", &c.head),
                    up(g, "eps", &c.eps),
                    up(g, "z", &c.z),
                    up(g, "dz", &dz),
                    up(g, "dzp", &dzp),
                );
                let hd = poisoned(g, "dhead", batch * 2 * latent + 5);
                let views = ((&hb).into(), (&eb).into(), (&zb).into(), (&wb).into());
                let l = w.latent_backward(
                    g,
                    "test",
                    views,
                    (&dzb).into(),
                    (&dpb).into(),
                    View::new(&hd, 0, batch * 2 * latent),
                );
                g.run(&l.unwrap()).unwrap();
                let got: Vec<f32> = g.read(&hd, 0, batch * 2 * latent).unwrap();
                // sums of M products of magnitude ≤ ~1
                Tol::new(1e-5, 2e-7 * samples as f64).check(&format!("{what} dhead"), &got, &want).unwrap();
                assert_eq!(got[latent], 0.0, "{what}: gradient through the logσ² clamp");
                assert_tail_poisoned("dhead", &hd, batch * 2 * latent);
            }
        }
    }
}

#[test]
fn score_backward_adds_the_reference() {
    let g = gpu();
    for (seed, (batch, latent, samples)) in [(5, 3, 7), (1, 1, 1), (3, 65, 2)].into_iter().enumerate() {
        let w = Weighted {
            batch,
            dim: 9,
            latent,
            samples,
            likelihood: Likelihood::Bernoulli,
            sigma: 1.0,
            beta: 1.0,
            iwae: false,
            ext_prior: false,
        };
        let c = case(w, 500 + seed as u64);
        let terms = terms_f32(&c);
        let want = iwae::score_backward(&shape(&w), &c.head, &c.eps, &terms);
        let base = f32_round(&uniform(77, batch * 2 * latent, -1.0, 1.0));
        let flat: Vec<f64> = terms.iter().flat_map(|&(a, b)| [a, b]).collect();
        let (hb, eb, tb, db) =
            (up(g, "head", &c.head), up(g, "eps", &c.eps), up(g, "terms", &flat), up(g, "dhead", &base));
        g.run(&w.score_backward(g, "test", (&hb).into(), (&eb).into(), (&tb).into(), (&db).into()).unwrap()).unwrap();
        let got = g.read_f32(&db).unwrap();
        let want: Vec<f64> = want.iter().zip(&base).map(|(a, b)| a + b).collect();
        let mag = terms.iter().map(|t| t.0.abs()).fold(0.0, f64::max);
        Tol::new(1e-5, 1e-6 * mag).check(&format!("{w:?} score"), &got, &want).unwrap();
    }
}

#[test]
fn the_bound_properties_hold_in_the_reference() {
    // L_1 is the one-sample ELBO; L_k ≥ the mean of log w (Jensen); L_k with equal weights is their mean;
    // the weights are d L_k / d log w_r (checked by central differences).
    let s1 = Shape {
        batch: 1,
        dim: 1,
        latent: 1,
        samples: 1,
        likelihood: Likelihood::Bernoulli,
        sigma: 1.0,
        beta: 1.0,
        iwae: true,
    };
    let (rows, _) = iwae::combine(&s1, &[(-3.0, -0.5)]);
    assert!((rows[0][2] - 3.5).abs() < 1e-12 && (rows[0][0] + rows[0][1] - rows[0][2]).abs() < 1e-12);
    let s = Shape { batch: 2, samples: 5, ..s1 };
    let terms: Vec<(f64, f64)> = uniform(8, 20, -30.0, -1.0).chunks(2).map(|p| (p[0], p[1])).collect();
    let (rows, wt) = iwae::combine(&s, &terms);
    let (erows, _) = iwae::combine(&Shape { iwae: false, ..s }, &terms);
    for b in 0..2 {
        assert!(rows[b][2] < erows[b][2], "−L_k must be below −ELBO");
        assert_eq!(rows[b][0], erows[b][0]);
    }
    let loss = |t: &[(f64, f64)]| iwae::combine(&s, t).0.iter().map(|r| r[2]).sum::<f64>() / 2.0;
    for r in 0..10 {
        let h = 1e-5;
        let mut tp = terms.clone();
        tp[r].0 += h;
        let mut tm = terms.clone();
        tm[r].0 -= h;
        let fd = (loss(&tp) - loss(&tm)) / (2.0 * h);
        assert!((fd + wt[r]).abs() < 1e-8, "row {r}: d loss / d log w = {fd}, weight {}", wt[r]);
    }
}
