//! Central finite differences (f64, h = 1e-6) against every analytic gradient of the CPU reference.
//! A gradient passes when |fd − analytic| ≤ 1e-8 (absolute, for gradients near zero, where central
//! differences of an O(1) loss carry ~1e-10 rounding error) or ≤ 1e-6·max(|fd|, |analytic|)
//! (relative; the O(h²) truncation error is ~1e-12 for these smooth functions).

use vaegpu::kernels::elbo::Likelihood;
use vaegpu::kernels::Act;
use vaegpu::models::vae::VaeConfig;
use vaegpu::reference::elbo::elbo;
use vaegpu::reference::elementwise::{act_backward, act_forward};
use vaegpu::reference::matmul::{linear_backward, linear_forward};
use vaegpu::reference::sample::{sample_backward, sample_forward, seed_key, LOGVAR_MAX, LOGVAR_MIN};
use vaegpu::reference::vae::vae_step;
use vaegpu::testing::{normals, uniform};

const H: f64 = 1e-6;
const REL: f64 = 1e-6;
const ABS: f64 = 1e-8;
const ACTS: [Act; 5] = [Act::Identity, Act::Relu, Act::LeakyRelu, Act::Tanh, Act::Sigmoid];

/// Central difference of `f` at `x0` along coordinate `i`.
fn central(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], i: usize) -> f64 {
    let mut x = x0.to_vec();
    x[i] = x0[i] + H;
    let fp = f(&x);
    x[i] = x0[i] - H;
    let fm = f(&x);
    (fp - fm) / (2.0 * H)
}

/// Compares `grad[i]` with finite differences of `f` for every i in `coords`; returns the failures.
fn fd_errors(
    what: &str,
    f: &dyn Fn(&[f64]) -> f64,
    x0: &[f64],
    grad: &[f64],
    coords: impl IntoIterator<Item = usize>,
) -> Option<String> {
    fd_errors_abs(what, f, x0, grad, coords, ABS)
}

/// As `fd_errors` with another absolute floor (losses summed over many terms carry more rounding).
fn fd_errors_abs(
    what: &str,
    f: &dyn Fn(&[f64]) -> f64,
    x0: &[f64],
    grad: &[f64],
    coords: impl IntoIterator<Item = usize>,
    abs_tol: f64,
) -> Option<String> {
    assert_eq!(x0.len(), grad.len(), "{what}: gradient length");
    let mut bad = Vec::new();
    let mut n = 0;
    for i in coords {
        n += 1;
        let fd = central(f, x0, i);
        let an = grad[i];
        let err = (fd - an).abs();
        if !(err <= abs_tol || err <= REL * fd.abs().max(an.abs())) {
            bad.push(format!("  [{i}] fd {fd:.12e} analytic {an:.12e} (err {err:.3e})"));
        }
    }
    assert!(n > 0, "{what}: nothing checked");
    if bad.is_empty() {
        None
    } else {
        Some(format!("{what}: {} of {n} coordinates fail:\n{}", bad.len(), bad.join("\n")))
    }
}

/// Asserts that `grad[i]` matches finite differences of `f` for every i in `coords`.
fn fd_check(what: &str, f: &dyn Fn(&[f64]) -> f64, x0: &[f64], grad: &[f64], coords: impl IntoIterator<Item = usize>) {
    if let Some(msg) = fd_errors(what, f, x0, grad, coords) {
        panic!("{msg}");
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Values in ±[lo, hi) (so never within `lo` of 0, the ReLU kink).
fn away_from_zero(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mag = uniform(seed, n, lo, hi);
    let sign = uniform(seed + 1000, n, -1.0, 1.0);
    mag.iter().zip(&sign).map(|(m, s)| if *s < 0.0 { -m } else { *m }).collect()
}

fn is_kinked(act: Act) -> bool {
    matches!(act, Act::Relu | Act::LeakyRelu)
}

#[test]
fn act_backward_matches_finite_differences() {
    for (k, act) in ACTS.into_iter().enumerate() {
        let n = 40;
        let x0 = away_from_zero(10 + k as u64, n, 0.05, 3.0);
        let dy = uniform(20 + k as u64, n, -1.0, 1.0);
        let y: Vec<f64> = x0.iter().map(|v| act_forward(act, *v)).collect();
        let dx = act_backward(act, &y, &dy);
        let f = |x: &[f64]| x.iter().zip(&dy).map(|(v, g)| g * act_forward(act, *v)).sum::<f64>();
        fd_check(&format!("act_backward {act:?}"), &f, &x0, &dx, 0..n);
    }
}

/// L(u, W) = Σ c ⊙ linear_forward(prev(u), W, act): dx from linear_backward with dact_x = prev is
/// d L / d u (the gradient w.r.t. the previous layer's PRE-activation), and dw is d L / d W.
fn check_linear(act: Act, prev: Act, seed: u64) {
    let (rows, din, dout) = (3, 4, 5);
    // Pick inputs whose pre-activations all stay clear of the ReLU kink (|pre| > 1e-3 ≫ h).
    let mut s = seed;
    let (u0, w0) = loop {
        let u0 = away_from_zero(s, rows * din, 0.1, 2.0);
        let w0 = uniform(s + 1, (din + 1) * dout, -1.0, 1.0);
        let x: Vec<f64> = u0.iter().map(|v| act_forward(prev, *v)).collect();
        let pre = linear_forward(&x, &w0, rows, din, dout, Act::Identity);
        if !is_kinked(act) || pre.iter().all(|p| p.abs() > 1e-3) {
            break (u0, w0);
        }
        s += 17;
    };
    let c = uniform(seed + 2, rows * dout, -1.0, 1.0);
    let x: Vec<f64> = u0.iter().map(|v| act_forward(prev, *v)).collect();
    let y = linear_forward(&x, &w0, rows, din, dout, act);
    let (dx, dw) = linear_backward(&x, &w0, &y, &c, rows, din, dout, act, prev);
    let loss = |u: &[f64], w: &[f64]| {
        let x: Vec<f64> = u.iter().map(|v| act_forward(prev, *v)).collect();
        dot(&c, &linear_forward(&x, w, rows, din, dout, act))
    };
    let what = format!("linear_backward act {act:?} dact_x {prev:?}");
    fd_check(&format!("{what} dx"), &|u: &[f64]| loss(u, &w0), &u0, &dx, 0..rows * din);
    // Every entry of dw, the bias row (row din) included.
    fd_check(&format!("{what} dw"), &|w: &[f64]| loss(&u0, w), &w0, &dw, 0..(din + 1) * dout);
}

#[test]
fn linear_backward_without_dact() {
    for (k, act) in ACTS.into_iter().enumerate() {
        check_linear(act, Act::Identity, 100 + 10 * k as u64);
    }
}

#[test]
fn linear_backward_with_dact_of_previous_layer() {
    let mut seed = 500;
    for act in ACTS {
        for prev in ACTS {
            seed += 10;
            check_linear(act, prev, seed);
        }
    }
}

#[test]
fn linear_backward_dact_factor_is_the_previous_activation_derivative() {
    // dx(dact = prev) = dx(dact = Identity) ⊙ prev'(u), elementwise, with x = prev(u).
    let (rows, din, dout) = (2, 3, 4);
    for (k, prev) in ACTS.into_iter().enumerate() {
        let u = away_from_zero(900 + k as u64, rows * din, 0.1, 2.0);
        let x: Vec<f64> = u.iter().map(|v| act_forward(prev, *v)).collect();
        let w = uniform(910 + k as u64, (din + 1) * dout, -1.0, 1.0);
        let c = uniform(920 + k as u64, rows * dout, -1.0, 1.0);
        let y = linear_forward(&x, &w, rows, din, dout, Act::Tanh);
        let (plain, dw0) = linear_backward(&x, &w, &y, &c, rows, din, dout, Act::Tanh, Act::Identity);
        let (fused, dw1) = linear_backward(&x, &w, &y, &c, rows, din, dout, Act::Tanh, prev);
        assert_eq!(dw0, dw1, "dact must not change dw");
        for i in 0..rows * din {
            let d = (act_forward(prev, u[i] + H) - act_forward(prev, u[i] - H)) / (2.0 * H);
            let want = plain[i] * d;
            let err = (fused[i] - want).abs();
            assert!(err <= ABS || err <= REL * want.abs(), "{prev:?} [{i}]: fused {} want {want}", fused[i]);
        }
    }
}

#[test]
fn elbo_gradients_match_finite_differences() {
    let (batch, dim, latent, samples) = (3, 5, 4, 2);
    let mut seed = 2000;
    for likelihood in [Likelihood::Bernoulli, Likelihood::Gaussian] {
        for beta in [1.0, 0.5] {
            seed += 10;
            let out0 = match likelihood {
                Likelihood::Bernoulli => uniform(seed, samples * batch * dim, -4.0, 4.0),
                Likelihood::Gaussian => uniform(seed, samples * batch * dim, -0.5, 1.5),
            };
            let x = uniform(seed + 1, batch * dim, 0.0, 1.0);
            let mut head0 = uniform(seed + 2, batch * 2 * latent, -2.0, 2.0);
            // A logσ² below the clamp: its gradient is 0 and so is the finite difference.
            head0[latent] = LOGVAR_MIN - 3.0;
            let sigma = 0.7;
            let e = elbo(&out0, &x, &head0, batch, dim, latent, samples, likelihood, beta, sigma);
            let what = format!("elbo {likelihood:?} beta {beta}");
            let f_out = |o: &[f64]| elbo(o, &x, &head0, batch, dim, latent, samples, likelihood, beta, sigma).loss;
            fd_check(&format!("{what} dout"), &f_out, &out0, &e.dout, 0..out0.len());
            // With out (hence z) held fixed the loss depends on head only through the KL term.
            let f_head = |h: &[f64]| elbo(&out0, &x, h, batch, dim, latent, samples, likelihood, beta, sigma).loss;
            fd_check(&format!("{what} dhead (KL)"), &f_head, &head0, &e.dhead, 0..head0.len());
            assert_eq!(e.dhead[latent], 0.0);
            // Above the clamp (exp(20)/2 ≈ 2.4e8 in the loss, too large for the other coordinates'
            // differences): the loss is bitwise unchanged by the step, so the difference is exactly 0.
            let mut high = head0.clone();
            let at = 2 * latent + latent + 1;
            high[at] = LOGVAR_MAX + 2.0;
            let e = elbo(&out0, &x, &high, batch, dim, latent, samples, likelihood, beta, sigma);
            assert_eq!(e.dhead[at], 0.0);
            assert_eq!(central(&f_head, &high, at), 0.0);
        }
    }
}

#[test]
fn sample_backward_matches_finite_differences() {
    let key = seed_key(0x1234_5678_9abc);
    for &(batch, latent, samples) in &[(1, 1, 1), (3, 4, 2), (2, 5, 3)] {
        let mut head0 = uniform(3000 + latent as u64, batch * 2 * latent, -2.0, 2.0);
        if latent > 1 {
            head0[latent + 1] = LOGVAR_MIN - 1.0; // clamped: zero gradient
        }
        let c = uniform(3100 + latent as u64, samples * batch * latent, -1.0, 1.0);
        let (eps, _) = sample_forward(&head0, batch, latent, samples, 7, 0, key);
        let dhead = sample_backward(&head0, &eps, &c, batch, latent, samples);
        // ε does not depend on head (same counters, same key), so this is Σ c·z with ε fixed.
        let f = |h: &[f64]| dot(&c, &sample_forward(h, batch, latent, samples, 7, 0, key).1);
        fd_check(&format!("sample_backward B{batch} Z{latent} M{samples}"), &f, &head0, &dhead, 0..head0.len());
        if latent > 1 {
            assert_eq!(dhead[latent + 1], 0.0);
        }
    }
}

fn vae_case(act: Act, likelihood: Likelihood, seed: u64) -> (VaeConfig, Vec<f64>, Vec<f64>, Vec<f64>, usize) {
    let cfg = VaeConfig {
        input_dim: 6,
        hidden: vec![5],
        latent: 3,
        act,
        likelihood,
        beta: 1.0,
        sigma: 0.8,
        samples: 2,
        ..Default::default()
    };
    cfg.validate().unwrap();
    let batch = 3;
    // PyTorch-style init scaled up so that every layer carries gradients of a useful size.
    let p0: Vec<f64> = cfg.layout().init(seed).iter().map(|&v| 2.0 * v as f64).collect();
    let x = uniform(seed + 1, batch * cfg.input_dim, 0.0, 1.0);
    let eps = normals(seed + 2, cfg.samples * batch * cfg.latent);
    (cfg, p0, x, eps, batch)
}

/// Checks `grads` layer block by layer block (padding skipped) against differences of `loss`;
/// returns the failing layers.
fn layer_errors(what: &str, cfg: &VaeConfig, loss: &dyn Fn(&[f64]) -> f64, p0: &[f64], grads: &[f64]) -> Vec<String> {
    let layout = cfg.layout();
    assert_eq!(grads.len(), layout.total);
    // Padding never receives a gradient.
    for (i, g) in grads.iter().enumerate() {
        if !layout.layers.iter().any(|l| (l.offset..l.offset + l.len()).contains(&i)) {
            assert_eq!(*g, 0.0, "{what}: padding [{i}] has gradient {g}");
        }
    }
    layout
        .layers
        .iter()
        .filter_map(|l| fd_errors(&format!("{what} {}", l.name), loss, p0, grads, l.offset..l.offset + l.len()))
        .collect()
}

fn vae_errors(act: Act, likelihood: Likelihood, seed: u64) -> Vec<String> {
    let (cfg, p0, x, eps, batch) = vae_case(act, likelihood, seed);
    let layout = cfg.layout();
    let step = vae_step(&cfg, &layout, &p0, &x, &eps, batch);
    assert!((step.loss - (step.rec + cfg.beta as f64 * step.kl)).abs() < 1e-12);
    let f = |p: &[f64]| vae_step(&cfg, &layout, p, &x, &eps, batch).loss;
    layer_errors(&format!("vae_step {act:?} {likelihood:?}"), &cfg, &f, &p0, &step.grads)
}

#[test]
fn vae_step_gradients_match_finite_differences() {
    // Every parameter of every layer block, for tanh and ReLU, both likelihoods.
    let mut failures = Vec::new();
    failures.extend(vae_errors(Act::Tanh, Likelihood::Bernoulli, 40));
    failures.extend(vae_errors(Act::Relu, Likelihood::Bernoulli, 41));
    failures.extend(vae_errors(Act::Tanh, Likelihood::Gaussian, 42));
    failures.extend(vae_errors(Act::Relu, Likelihood::Gaussian, 43));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The same MLP VAE backward pass composed so that each layer's act' is applied exactly once:
/// every linear_backward receives the gradient w.r.t. its OUTPUT (after activation) and is called
/// with dact_x = Identity. Used to localise a failure of vae_step to its composition.
fn vae_grads_single_act_factor(cfg: &VaeConfig, p: &[f64], x: &[f64], eps: &[f64], batch: usize) -> Vec<f64> {
    let layout = cfg.layout();
    let (enc, dec) = cfg.split(&layout);
    let (zd, m) = (cfg.latent, cfg.samples);
    let mb = m * batch;
    let block = |l: &vaegpu::nn::Linear| p[l.offset..l.offset + l.len()].to_vec();
    let mut acts = vec![x.to_vec()];
    for l in enc {
        acts.push(linear_forward(acts.last().unwrap(), &block(l), batch, l.din, l.dout, l.act));
    }
    let head = acts.last().unwrap().clone();
    let mut z = vec![0.0; mb * zd];
    for r in 0..mb {
        let b = r % batch;
        for j in 0..zd {
            let lv = head[b * 2 * zd + zd + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
            z[r * zd + j] = head[b * 2 * zd + j] + (0.5 * lv).exp() * eps[r * zd + j];
        }
    }
    let mut dacts = vec![z];
    for l in dec {
        dacts.push(linear_forward(dacts.last().unwrap(), &block(l), mb, l.din, l.dout, l.act));
    }
    let e = elbo(
        dacts.last().unwrap(),
        x,
        &head,
        batch,
        cfg.input_dim,
        zd,
        m,
        cfg.likelihood,
        cfg.beta as f64,
        cfg.sigma as f64,
    );
    let mut grads = vec![0.0; layout.total];
    let mut dy = e.dout.clone();
    for (i, l) in dec.iter().enumerate().rev() {
        let (dx, dw) =
            linear_backward(&dacts[i], &block(l), &dacts[i + 1], &dy, mb, l.din, l.dout, l.act, Act::Identity);
        grads[l.offset..l.offset + l.len()].copy_from_slice(&dw);
        dy = dx;
    }
    let path = sample_backward(&head, eps, &dy, batch, zd, m);
    let mut dh: Vec<f64> = e.dhead.iter().zip(&path).map(|(a, b)| a + b).collect();
    for (i, l) in enc.iter().enumerate().rev() {
        let (dx, dw) =
            linear_backward(&acts[i], &block(l), &acts[i + 1], &dh, batch, l.din, l.dout, l.act, Act::Identity);
        grads[l.offset..l.offset + l.len()].copy_from_slice(&dw);
        dh = dx;
    }
    grads
}

#[test]
fn vae_composition_of_reference_ops_matches_finite_differences() {
    // The building blocks (linear_backward, sample_backward, elbo) composed with one act' per layer
    // give the true gradient of vae_step's loss.
    for (k, (act, likelihood)) in
        [(Act::Tanh, Likelihood::Bernoulli), (Act::Relu, Likelihood::Gaussian)].into_iter().enumerate()
    {
        let (cfg, p0, x, eps, batch) = vae_case(act, likelihood, 40 + 3 * k as u64);
        let layout = cfg.layout();
        let grads = vae_grads_single_act_factor(&cfg, &p0, &x, &eps, batch);
        let f = |p: &[f64]| vae_step(&cfg, &layout, p, &x, &eps, batch).loss;
        let failures = layer_errors(&format!("single-act composition {act:?} {likelihood:?}"), &cfg, &f, &p0, &grads);
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }
}

/// Conv and transposed conv: L = Σ c ⊙ act(layer(x) + b [+ r]), the input gradient and the parameter
/// gradient (weights and bias) of reference/conv.rs against central differences, with stride 1 and 2,
/// padding 0 to 2, 1 and 3 channels, odd sizes, and the residual block's relu-on-read input.
#[test]
fn conv_layers_gradcheck() {
    use vaegpu::reference::conv::{conv_backward_input, conv_backward_params, conv_forward, ConvGeom};
    use vaegpu::reference::elementwise::act_grad_from_y;
    // (batch, h, w, cin, cout, k, stride, pad, transposed, pre_relu)
    let cases = [
        (2, 5, 7, 1, 3, 3, 1, 1, false, false),
        (1, 7, 5, 3, 2, 3, 2, 1, false, false),
        (2, 6, 6, 2, 3, 4, 2, 1, false, true),
        (1, 5, 9, 3, 1, 5, 2, 2, false, false),
        (1, 3, 4, 3, 1, 4, 2, 1, true, false),
        (2, 3, 3, 2, 3, 3, 2, 0, true, true),
        (1, 4, 5, 1, 3, 3, 1, 2, true, false),
    ];
    for (i, &(batch, h, w, cin, cout, k, s, p, t, pre_relu)) in cases.iter().enumerate() {
        let g = ConvGeom { k, stride: s, pad: p, cin, cout, transposed: t };
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let seed = 900 + 10 * i as u64;
        let x0 = away_from_zero(seed, batch * h * w * cin, 0.05, 1.0);
        let w0 = uniform(seed + 1, g.block_rows() * cout, -0.5, 0.5);
        let c = uniform(seed + 2, batch * oh * ow * cout, -1.0, 1.0);
        let act = Act::Tanh;
        let loss = |x: &[f64], wb: &[f64]| dot(&c, &conv_forward(&g, x, wb, batch, h, w, act, pre_relu, None));
        let y = conv_forward(&g, &x0, &w0, batch, h, w, act, pre_relu, None);
        let dpre: Vec<f64> = c.iter().zip(&y).map(|(ci, yi)| ci * act_grad_from_y(act, *yi)).collect();
        // relu-on-read: dL/dx gets relu'(x), which the GPU applies as dact = Relu with z = x.
        let (dact, z) = if pre_relu { (Act::Relu, Some(&x0[..])) } else { (Act::Identity, None) };
        let dx = conv_backward_input(&g, &dpre, &w0, batch, h, w, dact, z, None);
        let dw = conv_backward_params(&g, &x0, &dpre, batch, h, w, pre_relu);
        let name = format!("conv case {i} {g:?} pre_relu={pre_relu}");
        fd_check(&format!("{name} dx"), &|x| loss(x, &w0), &x0, &dx, 0..x0.len());
        fd_check(&format!("{name} dW"), &|wb| loss(&x0, wb), &w0, &dw, 0..w0.len());
    }
}

/// The whole conv VAE step (conv, residual blocks, transposed convs, dense head) of the reference
/// against central differences, every parameter.
#[test]
fn conv_vae_step_gradients_match_finite_differences() {
    use vaegpu::models::vae::ConvArch;
    for (k, (act, lik, blocks)) in
        [(Act::Tanh, Likelihood::Bernoulli, 1), (Act::Tanh, Likelihood::Gaussian, 2)].into_iter().enumerate()
    {
        let cfg = VaeConfig {
            input_dim: 4 * 4 * 3,
            image: [4, 4, 3],
            latent: 2,
            act,
            likelihood: lik,
            beta: 1.0,
            sigma: 0.8,
            samples: 2,
            conv: Some(ConvArch { channels: vec![2, 3], strides: vec![2, 1], blocks, res_hidden: 2, fc: vec![3] }),
            ..Default::default()
        };
        cfg.validate().unwrap();
        let batch = 2;
        let seed = 70 + k as u64;
        let layout = cfg.layout();
        let p0: Vec<f64> = layout.init(seed).iter().map(|&v| 2.0 * v as f64).collect();
        let x = uniform(seed + 1, batch * cfg.input_dim, 0.0, 1.0);
        let eps = normals(seed + 2, cfg.samples * batch * cfg.latent);
        let step = vae_step(&cfg, &layout, &p0, &x, &eps, batch);
        let f = |p: &[f64]| vae_step(&cfg, &layout, p, &x, &eps, batch).loss;
        // The loss sums 2·48 pixel terms (~30 nats): central differences carry a rounding error of a few
        // ε·|L|/h ≈ 1e-8 here, so the absolute floor is 1e-9·|L| (≈ 9 ε|L|/h) instead of 1e-8.
        let abs_tol = 1e-9 * step.loss.abs();
        let what = format!("conv vae_step {act:?} {lik:?} blocks={blocks}");
        let failures: Vec<String> = layout
            .layers
            .iter()
            .filter_map(|l| {
                fd_errors_abs(
                    &format!("{what} {}", l.name),
                    &f,
                    &p0,
                    &step.grads,
                    l.offset..l.offset + l.len(),
                    abs_tol,
                )
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }
}

/// The IWAE objective (k = 4; β = 1, and β = 0.5) through the whole reference model: the gradient
/// through the normalised importance weights against central differences of −L_k, every parameter.
#[test]
fn iwae_step_gradients_match_finite_differences() {
    use vaegpu::models::vae::Objective;
    let mut failures = Vec::new();
    for (act, lik, beta, seed) in [
        (Act::Tanh, Likelihood::Bernoulli, 1.0, 50),
        (Act::Relu, Likelihood::Gaussian, 1.0, 51),
        (Act::Tanh, Likelihood::Gaussian, 0.5, 52),
    ] {
        let (mut cfg, p0, x, _, batch) = vae_case(act, lik, seed);
        cfg.objective = Objective::Iwae;
        cfg.samples = 4;
        cfg.beta = beta;
        let eps = normals(seed + 7, cfg.samples * batch * cfg.latent);
        let layout = cfg.layout();
        let step = vae_step(&cfg, &layout, &p0, &x, &eps, batch);
        // L_k ≥ the k-sample ELBO: −L_k ≤ rec + kl (Jensen), strictly for unequal weights.
        assert!(step.loss < step.rec + beta as f64 * step.kl, "{act:?}: {} vs {}", step.loss, step.rec + step.kl);
        let f = |p: &[f64]| vae_step(&cfg, &layout, p, &x, &eps, batch).loss;
        failures.extend(layer_errors(&format!("iwae_step {act:?} {lik:?} beta {beta}"), &cfg, &f, &p0, &step.grads));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The score-function estimator is unbiased: averaged over many draws of ε it agrees with the average
/// pathwise gradient (both estimate the gradient of the same expectation), within 5 standard errors;
/// and its variance is far higher. Reference model, f64.
#[test]
fn score_function_gradient_is_unbiased() {
    use vaegpu::models::vae::Gradient;
    let (cfg, p0, x, _, batch) = vae_case(Act::Tanh, Likelihood::Bernoulli, 60);
    let layout = cfg.layout();
    let score_cfg = VaeConfig { gradient: Gradient::Score, ..cfg.clone() };
    let enc = &layout.layers[0];
    let coords: Vec<usize> = (enc.offset..enc.offset + enc.len()).step_by(3).collect();
    let draws = 6000;
    let (mut sp, mut sp2, mut ss, mut ss2) =
        (vec![0.0; coords.len()], vec![0.0; coords.len()], vec![0.0; coords.len()], vec![0.0; coords.len()]);
    for d in 0..draws {
        let eps = normals(10_000 + d, cfg.samples * batch * cfg.latent);
        let p = vae_step(&cfg, &layout, &p0, &x, &eps, batch).grads;
        let s = vae_step(&score_cfg, &layout, &p0, &x, &eps, batch).grads;
        for (k, &i) in coords.iter().enumerate() {
            sp[k] += p[i];
            sp2[k] += p[i] * p[i];
            ss[k] += s[i];
            ss2[k] += s[i] * s[i];
        }
    }
    let n = draws as f64;
    let (mut var_p, mut var_s) = (0.0, 0.0);
    for k in 0..coords.len() {
        let (mp, ms) = (sp[k] / n, ss[k] / n);
        let (vp, vs) = (sp2[k] / n - mp * mp, ss2[k] / n - ms * ms);
        var_p += vp;
        var_s += vs;
        let se = ((vp + vs) / n).sqrt();
        assert!((mp - ms).abs() <= 5.0 * se + 1e-9, "coordinate {}: pathwise {mp} score {ms} (se {se})", coords[k]);
    }
    assert!(var_s > 2.0 * var_p, "score variance {var_s} vs pathwise {var_p}");
}

/// A VAE with a learned prior (RealNVP flow, Gaussian mixture) under the Monte-Carlo ELBO and under
/// IWAE: every parameter (encoder, decoder and prior) against central differences of the loss.
#[test]
fn learned_prior_vae_step_gradients_match_finite_differences() {
    use vaegpu::models::latent_prior::{LatentPriorConfig, PriorKind};
    use vaegpu::models::vae::Objective;
    let mut failures = Vec::new();
    for (kind, objective, beta, seed) in [
        (PriorKind::Flow, Objective::Elbo, 1.0, 70),
        (PriorKind::Mog, Objective::Elbo, 0.5, 71),
        (PriorKind::Flow, Objective::Iwae, 1.0, 72),
    ] {
        let (mut cfg, _, x, _, batch) = vae_case(Act::Tanh, Likelihood::Bernoulli, seed);
        cfg.prior = LatentPriorConfig { kind, flow_layers: 2, flow_hidden: 4, mog_components: 3, ..Default::default() };
        cfg.objective = objective;
        cfg.beta = beta;
        // random (not identity) flow layers: scale the initialisation, out layers included
        let p0: Vec<f64> = cfg
            .init_params(seed)
            .unwrap()
            .iter()
            .map(|&v| 2.0 * v as f64)
            .map(|v| if v == 0.0 { 0.1 } else { v })
            .collect();
        let layout = cfg.layout();
        let eps = normals(seed + 7, cfg.samples * batch * cfg.latent);
        let step = vae_step(&cfg, &layout, &p0, &x, &eps, batch);
        let f = |p: &[f64]| vae_step(&cfg, &layout, p, &x, &eps, batch).loss;
        failures.extend(layer_errors(&format!("{kind:?} prior {objective:?} beta {beta}"), &cfg, &f, &p0, &step.grads));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A learned Gaussian decoder variance s = log σ² (global or per pixel, some values outside the clamp
/// [2·ln σ_min, 20] where the gradient is 0): the reference ELBO's gradients with respect to s, the
/// means and the encoder head, and the weighted objectives' (IWAE and the Monte-Carlo ELBO, through
/// the log-weights and their combination) with respect to s and the means, against central differences.
#[test]
fn learned_variance_elbo_and_iwae_gradients_match_finite_differences() {
    use vaegpu::reference::elbo::{elbo_var, logvar_grad, Var};
    use vaegpu::reference::iwae::{self, Shape};
    let (batch, dim, latent, samples) = (3, 5, 4, 2);
    let lv_min = 2.0 * 0.05f64.ln();
    let mut seed = 2500;
    for pixel in [false, true] {
        seed += 10;
        let out0 = uniform(seed, samples * batch * dim, -0.5, 1.5);
        let x = uniform(seed + 1, batch * dim, 0.0, 1.0);
        let head0 = uniform(seed + 2, batch * 2 * latent, -2.0, 2.0);
        let mut s0 = uniform(seed + 3, if pixel { dim } else { 1 }, -2.5, 1.0);
        if pixel {
            s0[1] = lv_min - 0.5; // below the clamp: gradient 0, and so is the difference
            s0[3] = 20.5; // above it
        }
        let what = format!("learned variance (pixel {pixel})");
        let shape = (batch, dim, latent, samples);
        let run = |o: &[f64], h: &[f64], s: &[f64]| {
            elbo_var(o, &x, h, shape, Likelihood::Gaussian, 0.7, 1.0, Var::Learned { s, lv_min })
        };
        let e = run(&out0, &head0, &s0);
        fd_check(&format!("{what} elbo ds"), &|s: &[f64]| run(&out0, &head0, s).loss, &s0, &e.dlogvar, 0..s0.len());
        fd_check(&format!("{what} elbo dout"), &|o: &[f64]| run(o, &head0, &s0).loss, &out0, &e.dout, 0..out0.len());
        fd_check(&format!("{what} elbo dhead"), &|h: &[f64]| run(&out0, h, &s0).loss, &head0, &e.dhead, 0..head0.len());
        if pixel {
            assert_eq!((e.dlogvar[1], e.dlogvar[3]), (0.0, 0.0), "{what}: gradient through the clamp");
        }
        // The weighted objectives: loss = −(1/B) Σ_b L_b from the log-weights of (out, s).
        let eps = normals(seed + 4, samples * batch * latent);
        let zs = uniform(seed + 5, samples * batch * latent, -1.0, 1.0);
        for iwae_mode in [true, false] {
            let sh = Shape {
                batch,
                dim,
                latent,
                samples,
                likelihood: Likelihood::Gaussian,
                sigma: 1.0,
                beta: 0.8,
                iwae: iwae_mode,
            };
            let loss = |o: &[f64], s: &[f64]| {
                let t = iwae::logw_terms_var(&sh, Var::Learned { s, lv_min }, o, &x, &head0, &eps, &zs, None);
                iwae::combine(&sh, &t).0.iter().map(|r| r[2]).sum::<f64>() / batch as f64
            };
            let var = Var::Learned { s: &s0, lv_min };
            let t = iwae::logw_terms_var(&sh, var, &out0, &x, &head0, &eps, &zs, None);
            let (_, wt) = iwae::combine(&sh, &t);
            let dout = iwae::grad_out_var(&sh, var, &out0, &x, &wt);
            let ds = logvar_grad(&out0, &x, batch, dim, var, &wt);
            let w = format!("{what} weighted (iwae {iwae_mode})");
            fd_check(&format!("{w} ds"), &|s: &[f64]| loss(&out0, s), &s0, &ds, 0..s0.len());
            fd_check(&format!("{w} dout"), &|o: &[f64]| loss(o, &s0), &out0, &dout, 0..out0.len());
        }
    }
}

/// The whole reference VAE step with a learned decoder variance (global and per pixel) under the
/// ELBO, IWAE and with a learned prior: every parameter, `dec.logvar` included, against central
/// differences; with the score-function gradient, every block but the encoder's (whose gradient is an
/// unbiased estimate, not the derivative).
#[test]
fn learned_variance_vae_step_gradients_match_finite_differences() {
    use vaegpu::kernels::elbo::DecoderVariance;
    use vaegpu::models::latent_prior::{LatentPriorConfig, PriorKind};
    use vaegpu::models::vae::{Gradient, Objective};
    let mut failures = Vec::new();
    for (variance, objective, gradient, prior, seed) in [
        (DecoderVariance::Pixel, Objective::Elbo, Gradient::Pathwise, PriorKind::Standard, 80),
        (DecoderVariance::Global, Objective::Elbo, Gradient::Pathwise, PriorKind::Standard, 81),
        (DecoderVariance::Pixel, Objective::Iwae, Gradient::Pathwise, PriorKind::Standard, 82),
        (DecoderVariance::Global, Objective::Elbo, Gradient::Pathwise, PriorKind::Mog, 83),
        (DecoderVariance::Pixel, Objective::Elbo, Gradient::Score, PriorKind::Standard, 84),
    ] {
        let (mut cfg, _, x, eps, batch) = vae_case(Act::Tanh, Likelihood::Gaussian, seed);
        cfg.variance = variance;
        cfg.objective = objective;
        cfg.gradient = gradient;
        cfg.prior = LatentPriorConfig { kind: prior, mog_components: 3, ..Default::default() };
        cfg.validate().unwrap();
        let layout = cfg.layout();
        // layout.init draws dec.logvar from U(−1, 1): s of different sizes per pixel
        let p0: Vec<f64> = layout.init(seed).iter().map(|&v| 2.0 * v as f64).collect();
        let step = vae_step(&cfg, &layout, &p0, &x, &eps, batch);
        let lv = layout.layer("dec.logvar").unwrap();
        assert!(step.grads[lv.offset..lv.offset + lv.len()].iter().all(|g| *g != 0.0));
        let f = |p: &[f64]| vae_step(&cfg, &layout, p, &x, &eps, batch).loss;
        let what = format!("{variance:?} {objective:?} {gradient:?} {prior:?}");
        if gradient == Gradient::Score {
            let (_, rest) = cfg.split(&layout);
            failures.extend(rest.iter().filter_map(|l| {
                fd_errors(&format!("{what} {}", l.name), &f, &p0, &step.grads, l.offset..l.offset + l.len())
            }));
        } else {
            failures.extend(layer_errors(&what, &cfg, &f, &p0, &step.grads));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
