//! The non-matmul kernels against src/reference on awkward sizes, outputs poisoned with NaN:
//! elementwise activations, Philox, sampling (forward and backward), the fused ELBO, Adam, the
//! reductions (metrics and gradient norm) and the batch gather.

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::data::{Gather, STATE_WORDS, W_EVAL_BATCH, W_NONFINITE, W_TRAIN_BATCH};
use vaegpu::kernels::elbo::{Elbo, Likelihood};
use vaegpu::kernels::optim::Adam;
use vaegpu::kernels::reduce::{
    self, METRICS_WORDS, M_GRAD_NORM, M_GRAD_NORM_COUNT, M_GRAD_NORM_SUM, M_NONFINITE, PARTIALS, SLOT_EVAL, SLOT_TRAIN,
};
use vaegpu::kernels::sample::{self, Sample, STREAM_BINARIZE, STREAM_EVAL, STREAM_TRAIN};
use vaegpu::kernels::{elementwise, Act};
use vaegpu::reference;
use vaegpu::reference::sample::{seed_key, LOGVAR_MAX, LOGVAR_MIN};
use vaegpu::testing::{normals, poisoned, shared_gpu_other_rows, to_f32, to_f64, uniform, Tol};

fn gpu() -> &'static Gpu {
    vaegpu::testing::shared_gpu()
}

const ACTS: [Act; 5] = [Act::Identity, Act::Relu, Act::LeakyRelu, Act::Tanh, Act::Sigmoid];
const SEEDS: [u64; 2] = [0, 0xdead_beef_0123_4567];

use vaegpu::testing::state_words;

use vaegpu::testing::f32_round;

#[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must fail the check
/// |got − want| ≤ rel·scale + abs per element, where `scale` bounds the magnitude of the terms that
/// were summed (so that cancellation does not make a relative tolerance meaningless).
fn check_scaled(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i]).abs();
        if !(err <= rel * scale[i] + abs) {
            bad.push(format!("[{i}] got {} want {} (scale {})", got[i], want[i], scale[i]));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {}/{} outside rel {rel} abs {abs}: {}",
        bad.len(),
        got.len(),
        bad.iter().take(8).cloned().collect::<Vec<_>>().join("; ")
    );
}

/// The elements of `buf` past `n` still hold the NaN poison (nothing was written out of bounds).
fn assert_tail_poisoned(what: &str, g: &Gpu, buf: &wgpu::Buffer, n: usize) {
    let all = g.read_f32(buf).unwrap();
    assert!(all[n..].iter().all(|v| v.is_nan()), "{what}: wrote past element {n}");
}

// ---------------------------------------------------------------------------------------------
// elementwise

/// Inputs over the interesting range, with exact zeros (the ReLU kink, where both sides take
/// act'(0) = 0 through y) and large magnitudes (saturating tanh/sigmoid, overflow of naive exp).
fn act_inputs(seed: u64, n: usize) -> Vec<f64> {
    let mut x = uniform(seed, n, -6.0, 6.0);
    let specials = [0.0, -0.0, 40.0, -40.0, 100.0, -100.0, 1e-4, -1e-4, 0.5, -0.5];
    for (i, s) in specials.iter().enumerate() {
        if 3 * i < n {
            x[3 * i] = *s;
        }
    }
    f32_round(&x)
}

#[test]
fn act_forward_all_activations() {
    let g = gpu();
    // GPU exp is specified to a few ulp; tanh/sigmoid built from it cancel (1 − t) near 0, which
    // costs an absolute ~1e-7, hence a small absolute floor on top of the relative bound.
    let tol = Tol::new(1e-5, 1e-6);
    let mut seed = 1;
    for act in ACTS {
        for n in [1, 255, 256, 257, 1000] {
            seed += 1;
            let x = act_inputs(seed, n);
            let want: Vec<f64> = x.iter().map(|v| reference::elementwise::act_forward(act, *v)).collect();
            let xb = g.upload("x", &to_f32(&x));
            let yb = poisoned(g, "y", n + 7);
            let l = elementwise::act_forward(g, act, n, (&xb).into(), View::new(&yb, 0, n)).unwrap();
            g.run(&l).unwrap();
            let got: Vec<f32> = g.read(&yb, 0, n).unwrap();
            tol.check(&format!("act_forward {act:?} n={n}"), &got, &want).unwrap();
            assert_tail_poisoned("act_forward", g, &yb, n);
        }
    }
}

/// elementwise.wgsl's act_forward launched directly with the bindings its entry point declares
/// (0 params, 1 x, 2 y), so the shader is covered independently of the launcher.
#[test]
fn act_forward_shader_direct_launch() {
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        n: u32,
        code: u32,
        slope: f32,
        _pad: u32,
    }
    let g = gpu();
    // Same tolerance and reasoning as act_forward_all_activations.
    let tol = Tol::new(1e-5, 1e-6);
    for act in ACTS {
        for n in [1, 257, 1000] {
            let x = act_inputs(40 + n as u64, n);
            let want: Vec<f64> = x.iter().map(|v| reference::elementwise::act_forward(act, *v)).collect();
            let xb = g.upload("x", &to_f32(&x));
            let yb = poisoned(g, "y", n + 7);
            let p = Params { n: n as u32, code: act.code(), slope: Act::LEAKY_SLOPE, _pad: 0 };
            let bindings = [(1, View::from(&xb)), (2, View::new(&yb, 0, n))];
            let groups = [n.div_ceil(256) as u32, 1, 1];
            let l = g
                .launch(
                    format!("direct act_forward {act:?}"),
                    "elementwise",
                    "act_forward",
                    &[],
                    Some(&p),
                    &bindings,
                    groups,
                )
                .unwrap();
            g.run(&l).unwrap();
            let got: Vec<f32> = g.read(&yb, 0, n).unwrap();
            tol.check(&format!("direct act_forward {act:?} n={n}"), &got, &want).unwrap();
            assert_tail_poisoned("act_forward", g, &yb, n);
        }
    }
}

/// dst += src, four at a time where the length and both views allow it (add_into_v4) and one at a time
/// otherwise: exact (one f32 addition per element), only the first n elements written, and the same
/// buffer on both sides refused.
#[test]
fn add_into_adds_in_place() {
    let g = gpu();
    // dst at an offset of 0 or 64 floats (256 bytes: storage-aligned on any adapter) into a buffer
    // poisoned before and after it.
    for (n, off) in [(1usize, 0usize), (7, 0), (258, 0), (1024, 64), (1030, 64)] {
        let a = f32_round(&uniform(50 + n as u64, n, -2.0, 2.0));
        let b = f32_round(&uniform(60 + n as u64, n, -2.0, 2.0));
        let mut init = vec![f32::NAN; off + n + 5];
        init[off..off + n].copy_from_slice(&to_f32(&a));
        let db = g.upload("dst", &init);
        let sb = g.upload("src", &to_f32(&b));
        let l = elementwise::add_into(g, "t", n, View::new(&db, (off * 4) as u64, n), (&sb).into()).unwrap();
        let entry = if n % 4 == 0 { "add_into_v4[" } else { "add_into[" };
        assert!(l.label.contains(entry), "{}", l.label);
        g.run(&l).unwrap();
        let all = g.read_f32(&db).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (*x as f32) + (*y as f32)).collect();
        assert_eq!(&all[off..off + n], &want[..], "add_into n={n}");
        assert!(all[..off].iter().chain(&all[off + n..]).all(|v| v.is_nan()), "add_into n={n}: wrote outside dst");
    }
    let b = g.upload("one", &[1.0f32; 8]);
    match elementwise::add_into(g, "t", 4, View::new(&b, 0, 4), View::new(&b, 16, 4)) {
        Ok(_) => panic!("add_into took the same buffer on both sides"),
        Err(e) => assert!(e.to_string().contains("share a buffer"), "{e}"),
    }
}

#[test]
fn act_backward_all_activations() {
    let g = gpu();
    // One f32 product of exact inputs (y, dy) and act'(y) (itself a product or 1 − y·y): a few ulp.
    let tol = Tol::new(1e-6, 1e-7);
    let mut seed = 100;
    for act in ACTS {
        for n in [1, 255, 256, 257, 1000] {
            seed += 2;
            let x = act_inputs(seed, n);
            let y = f32_round(&x.iter().map(|v| reference::elementwise::act_forward(act, *v)).collect::<Vec<_>>());
            let dy = f32_round(&uniform(seed + 1, n, -2.0, 2.0));
            let want = reference::elementwise::act_backward(act, &y, &dy);
            let yb = g.upload("y", &to_f32(&y));
            let dyb = g.upload("dy", &to_f32(&dy));
            let dxb = poisoned(g, "dx", n + 7);
            let l = elementwise::act_backward(g, act, n, (&yb).into(), (&dyb).into(), View::new(&dxb, 0, n)).unwrap();
            g.run(&l).unwrap();
            let got: Vec<f32> = g.read(&dxb, 0, n).unwrap();
            tol.check(&format!("act_backward {act:?} n={n}"), &got, &want).unwrap();
            assert_tail_poisoned("act_backward", g, &dxb, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Philox

#[test]
fn philox_reference_matches_random123_known_answers() {
    use reference::sample::philox;
    assert_eq!(philox([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(philox([0xffff_ffff; 4], [0xffff_ffff, 0xffff_ffff]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(
        philox([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn philox_gpu_matches_reference_bit_for_bit() {
    let g = gpu();
    let count = 4099; // more than 64 workgroups' worth, not a multiple of 64
    for seed in SEEDS {
        let state = g.upload("state", &state_words(0, seed));
        for (counter1, stream) in
            [(0, 0), (1, 0), (12345, STREAM_EVAL), (0xffff_ffff, STREAM_BINARIZE), (7, 0xffff_fffe)]
        {
            let out = poisoned(g, "words", 4 * count);
            let l = sample::philox_words(g, count, counter1, stream, (&state).into(), (&out).into()).unwrap();
            g.run(&l).unwrap();
            let got: Vec<u32> = g.read(&out, 0, 4 * count).unwrap();
            for i in 0..count {
                let want = reference::sample::philox([i as u32, counter1, stream, 0], seed_key(seed));
                assert_eq!(&got[4 * i..4 * i + 4], &want, "seed {seed:#x} counter ({i}, {counter1}, {stream}, 0)");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sampling

const SAMPLE_SHAPES: [(usize, usize, usize); 5] = [(1, 1, 1), (3, 5, 2), (13, 20, 3), (128, 20, 1), (2, 70, 4)];

/// head [B, 2Z]: μ in [−2, 2), logσ² in [−6, 4) with values at and beyond both ends of the clamp.
fn sample_head(seed: u64, batch: usize, latent: usize) -> Vec<f64> {
    let mut head = uniform(seed, batch * 2 * latent, -2.0, 2.0);
    let lv = uniform(seed + 1, batch * latent, -6.0, 4.0);
    for b in 0..batch {
        for j in 0..latent {
            head[b * 2 * latent + latent + j] = lv[b * latent + j];
        }
    }
    let specials = [LOGVAR_MIN - 5.0, LOGVAR_MAX + 5.0, LOGVAR_MIN, LOGVAR_MAX, -100.0, 35.0];
    for (k, s) in specials.iter().enumerate() {
        let (b, j) = ((k * 7) % batch, (k * 3) % latent);
        head[b * 2 * latent + latent + j] = *s;
    }
    f32_round(&head)
}

/// σ = exp(½·clamp(logσ²)) for each element i = (m·B + b)·Z + j, and μ.
fn sigma_mu(head: &[f64], batch: usize, latent: usize, i: usize) -> (f64, f64) {
    let j = i % latent;
    let b = (i / latent) % batch;
    let lv = head[b * 2 * latent + latent + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
    ((0.5 * lv).exp(), head[b * 2 * latent + j])
}

#[test]
fn sample_forward_draws_reference_eps() {
    let g = gpu();
    let mut seed_data = 300;
    for seed in SEEDS {
        for &(batch, latent, samples) in &SAMPLE_SHAPES {
            seed_data += 2;
            let step = 17 + seed_data as u32;
            let n = samples * batch * latent;
            let head = sample_head(seed_data, batch, latent);
            let (want_eps, _) =
                reference::sample::sample_forward(&head, batch, latent, samples, step, STREAM_TRAIN, seed_key(seed));
            let state = g.upload("state", &state_words(step, seed));
            let hb = g.upload("head", &to_f32(&head));
            let eb = poisoned(g, "eps", n + 5);
            let zb = poisoned(g, "z", n + 5);
            let s = Sample { batch, latent, samples, counter_word: 0, stream: STREAM_TRAIN, given_eps: false };
            let l = s
                .forward(g, "test", (&state).into(), (&hb).into(), View::new(&eb, 0, n), View::new(&zb, 0, n))
                .unwrap();
            g.run(&l).unwrap();
            let eps: Vec<f32> = g.read(&eb, 0, n).unwrap();
            let z: Vec<f32> = g.read(&zb, 0, n).unwrap();
            let what = format!("seed {seed:#x} B{batch} Z{latent} M{samples}");
            // GPU log and cos are approximations (WGSL: ~2⁻²¹ absolute on log near 1, cos within
            // 2⁻¹¹ absolute in the worst case, far better on real drivers): 1e-4 absolute on ε.
            Tol::new(0.0, 1e-4).check(&format!("{what} eps"), &eps, &want_eps).unwrap();
            // z = μ + σ·ε with the GPU's own ε: a few f32 roundings of terms of size |μ| and σ·|ε|
            // (σ up to e¹⁰ at the upper clamp).
            let mut want_z = vec![0.0; n];
            let mut scale = vec![0.0; n];
            for i in 0..n {
                let (sigma, mu) = sigma_mu(&head, batch, latent, i);
                want_z[i] = mu + sigma * eps[i] as f64;
                scale[i] = mu.abs() + sigma * (eps[i] as f64).abs();
            }
            check_scaled(&format!("{what} z"), &z, &want_z, &scale, 1e-5, 1e-7);
            assert_tail_poisoned("eps", g, &eb, n);
            assert_tail_poisoned("z", g, &zb, n);
        }
    }
}

#[test]
fn sample_forward_counter_word_and_stream_select_the_draw() {
    // counter_word 2 (the eval batch) and stream 1 give the reference's draw for those counters.
    let g = gpu();
    let (batch, latent, samples) = (5, 7, 2);
    let n = samples * batch * latent;
    let head = sample_head(400, batch, latent);
    let mut st = state_words(3, 99);
    st[W_EVAL_BATCH as usize] = 41;
    let state = g.upload("state", &st);
    let hb = g.upload("head", &to_f32(&head));
    let eb = poisoned(g, "eps", n);
    let zb = poisoned(g, "z", n);
    let s = Sample { batch, latent, samples, counter_word: W_EVAL_BATCH, stream: STREAM_EVAL, given_eps: false };
    g.run(&s.forward(g, "eval", (&state).into(), (&hb).into(), (&eb).into(), (&zb).into()).unwrap()).unwrap();
    let (want, _) = reference::sample::sample_forward(&head, batch, latent, samples, 41, STREAM_EVAL, seed_key(99));
    Tol::new(0.0, 1e-4).check("eval draw", &g.read_f32(&eb).unwrap(), &want).unwrap();
}

#[test]
fn sample_forward_with_given_eps() {
    let g = gpu();
    for (k, &(batch, latent, samples)) in SAMPLE_SHAPES.iter().enumerate() {
        let n = samples * batch * latent;
        let head = sample_head(500 + k as u64, batch, latent);
        let eps = f32_round(&normals(510 + k as u64, n));
        let state = g.upload("state", &state_words(5, 1));
        let hb = g.upload("head", &to_f32(&head));
        let eb = g.upload("eps", &to_f32(&eps));
        let zb = poisoned(g, "z", n + 3);
        let s = Sample { batch, latent, samples, counter_word: 0, stream: STREAM_TRAIN, given_eps: true };
        let l = s.forward(g, "given", (&state).into(), (&hb).into(), (&eb).into(), View::new(&zb, 0, n)).unwrap();
        g.run(&l).unwrap();
        // ε is read, never written.
        let eps_after: Vec<f32> = g.read(&eb, 0, n).unwrap();
        assert_eq!(eps_after, to_f32(&eps), "given ε was overwritten");
        let z: Vec<f32> = g.read(&zb, 0, n).unwrap();
        let mut want = vec![0.0; n];
        let mut scale = vec![0.0; n];
        for i in 0..n {
            let (sigma, mu) = sigma_mu(&head, batch, latent, i);
            want[i] = mu + sigma * eps[i];
            scale[i] = mu.abs() + sigma * eps[i].abs();
        }
        // Same bound as above: exp and one fma-able product and sum in f32.
        check_scaled(&format!("given eps B{batch} Z{latent} M{samples}"), &z, &want, &scale, 1e-5, 1e-7);
        assert_tail_poisoned("z", g, &zb, n);
    }
}

#[test]
fn sample_backward_adds_to_dhead() {
    let g = gpu();
    for (k, &(batch, latent, samples)) in SAMPLE_SHAPES.iter().enumerate() {
        let n = samples * batch * latent;
        let nh = batch * 2 * latent;
        let head = sample_head(600 + k as u64, batch, latent);
        let eps = f32_round(&normals(610 + k as u64, n));
        let dz = f32_round(&uniform(620 + k as u64, n, -1.0, 1.0));
        let prefill = f32_round(&uniform(630 + k as u64, nh, -3.0, 3.0));
        let path = reference::sample::sample_backward(&head, &eps, &dz, batch, latent, samples);
        let want: Vec<f64> = prefill.iter().zip(&path).map(|(a, b)| a + b).collect();
        // Magnitudes of the summed terms: |prefill| + Σ|dz| (μ) or Σ|dz·ε|·½σ (logσ²).
        let abs_dz: Vec<f64> = dz.iter().map(|v| v.abs()).collect();
        let abs_eps: Vec<f64> = eps.iter().map(|v| v.abs()).collect();
        let mag = reference::sample::sample_backward(&head, &abs_eps, &abs_dz, batch, latent, samples);
        let scale: Vec<f64> = prefill.iter().zip(&mag).map(|(a, b)| a.abs() + b).collect();
        let hb = g.upload("head", &to_f32(&head));
        let eb = g.upload("eps", &to_f32(&eps));
        let dzb = g.upload("dz", &to_f32(&dz));
        let mut pre = to_f32(&prefill);
        pre.extend([f32::NAN; 3]);
        let dhb = g.upload("dhead", &pre);
        let s = Sample { batch, latent, samples, counter_word: 0, stream: 0, given_eps: true };
        let l = s.backward(g, "test", (&hb).into(), (&eb).into(), (&dzb).into(), View::new(&dhb, 0, nh)).unwrap();
        g.run(&l).unwrap();
        let got: Vec<f32> = g.read(&dhb, 0, nh).unwrap();
        // A sum of M products plus the prefill and an exp, in f32.
        check_scaled(&format!("sample_backward B{batch} Z{latent} M{samples}"), &got, &want, &scale, 1e-5, 1e-7);
        // Clamped logσ² entries got nothing added: bit for bit the prefill.
        for b in 0..batch {
            for j in 0..latent {
                let i = b * 2 * latent + latent + j;
                if !(LOGVAR_MIN..=LOGVAR_MAX).contains(&head[i]) {
                    assert_eq!(got[i], prefill[i] as f32, "clamped logσ² [{b}, {j}] changed");
                }
            }
        }
        assert_tail_poisoned("dhead", g, &dhb, nh);
    }
}

#[test]
fn gpu_eps_is_standard_normal() {
    let g = gpu();
    let (batch, latent, samples) = (1000, 100, 2);
    let n = samples * batch * latent; // 200k draws
    let head = vec![0.0f32; batch * 2 * latent];
    let state = g.upload("state", &state_words(12, 0x5eed));
    let hb = g.upload("head", &head);
    let eb = poisoned(g, "eps", n);
    let zb = poisoned(g, "z", n);
    let s = Sample { batch, latent, samples, counter_word: 0, stream: STREAM_TRAIN, given_eps: false };
    g.run(&s.forward(g, "stats", (&state).into(), (&hb).into(), (&eb).into(), (&zb).into()).unwrap()).unwrap();
    let eps = g.read_f32(&eb).unwrap();
    assert!(eps.iter().all(|e| e.is_finite()), "non-finite ε");
    let mean = eps.iter().map(|&e| e as f64).sum::<f64>() / n as f64;
    let var = eps.iter().map(|&e| (e as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Standard errors at n = 200k: 0.0022 on the mean, 0.0032 on the variance: 0.01 / 0.02 are > 4σ.
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "variance {var}");
    // With μ = 0 and logσ² = 0, z = ε exactly.
    assert_eq!(g.read_f32(&zb).unwrap(), eps);
}

// ---------------------------------------------------------------------------------------------
// ELBO

fn elbo_inputs(seed: u64, e: &Elbo) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b, d, z, m) = (e.batch, e.dim, e.latent, e.samples);
    let mut out = match e.likelihood {
        Likelihood::Bernoulli => uniform(seed, m * b * d, -8.0, 8.0),
        Likelihood::Gaussian => uniform(seed, m * b * d, -1.0, 2.0),
    };
    if e.likelihood == Likelihood::Bernoulli {
        // Large logits: BCE must not overflow (exp(40) in f32 is fine, exp(100) is not).
        for (k, i) in (0..out.len()).step_by(5).enumerate() {
            out[i] = [40.0, -40.0, 90.0, -90.0][k % 4];
        }
    }
    let mut x = uniform(seed + 1, b * d, 0.0, 1.0);
    for (k, i) in (0..x.len()).step_by(3).enumerate() {
        x[i] = (k % 2) as f64; // exact 0s and 1s
    }
    let mut head = uniform(seed + 2, b * 2 * z, -2.0, 2.0);
    let specials = [LOGVAR_MIN - 4.0, LOGVAR_MAX + 3.0, 0.0, LOGVAR_MIN, 8.0];
    for (k, s) in specials.iter().enumerate() {
        let (bb, j) = ((3 * k) % b, (5 * k) % z);
        head[bb * 2 * z + z + j] = *s;
    }
    (f32_round(&out), f32_round(&x), f32_round(&head))
}

fn check_elbo(g: &Gpu, e: Elbo, seed: u64) {
    let (b, d, z, m) = (e.batch, e.dim, e.latent, e.samples);
    let (out, x, head) = elbo_inputs(seed, &e);
    let sigma = e.sigma as f64;
    let want = reference::elbo::elbo(&out, &x, &head, b, d, z, m, e.likelihood, e.beta as f64, sigma);
    let ob = g.upload("out", &to_f32(&out));
    let xb = g.upload("x", &to_f32(&x));
    let hb = g.upload("head", &to_f32(&head));
    let doutb = poisoned(g, "dout", m * b * d + 3);
    let dheadb = poisoned(g, "dhead", b * 2 * z + 3);
    let rowsb = poisoned(g, "rows", 2 * b + 3);
    let l = e
        .launch(
            g,
            "test",
            (&ob).into(),
            (&xb).into(),
            (&hb).into(),
            View::new(&doutb, 0, m * b * d),
            View::new(&dheadb, 0, b * 2 * z),
            View::new(&rowsb, 0, 2 * b),
        )
        .unwrap();
    // Four pixels per invocation where rows are whole vec4s.
    let entry = if d % 4 == 0 { "elbo_v4[" } else { "elbo[" };
    assert!(l.label.contains(entry), "{}", l.label);
    g.run(&l).unwrap();
    let what = format!("{e:?}");
    let dout: Vec<f32> = g.read(&doutb, 0, m * b * d).unwrap();
    let dhead: Vec<f32> = g.read(&dheadb, 0, b * 2 * z).unwrap();
    let rows: Vec<f32> = g.read(&rowsb, 0, 2 * b).unwrap();
    // rows: f32 sums of M·D (rec) or Z (kl) terms; scale = Σ|term| bounds the rounding even when
    // Gaussian terms (log-normaliser < 0 for small σ) cancel.
    let mut want_rows = Vec::new();
    let mut scale_rows = Vec::new();
    for bb in 0..b {
        let mut rec_mag = 0.0;
        for mm in 0..m {
            for dd in 0..d {
                let (v, _) = reference::elbo::nll(e.likelihood, sigma, out[(mm * b + bb) * d + dd], x[bb * d + dd]);
                // BCE of a ±90 logit is ~90 built from max(l, 0) − l·x: its rounding scales with |l|.
                rec_mag += v.abs() + out[(mm * b + bb) * d + dd].abs();
            }
        }
        want_rows.extend([want.rows[bb].0, want.rows[bb].1]);
        scale_rows.extend([rec_mag / m as f64, want.rows[bb].1.abs() + z as f64]);
    }
    check_scaled(&format!("{what} rows"), &rows, &want_rows, &scale_rows, 2e-6, 1e-6);
    // dout = (σ(l) − x)/(B·M) or (μ − x)/(σ²·B·M): σ(l) to the accuracy of exp (WGSL allows 3 + 2|x|
    // ulp; NVIDIA's was 1.1e-7 off in σ near 0.5 where lavapipe's was exact to an ulp), then one
    // rounding of the difference and the scale.
    Tol::new(1e-5, 4e-7 / b as f64).check(&format!("{what} dout"), &dout, &want.dout).unwrap();
    // dhead: β·μ/B and β·½(e^lv − 1)/B (0 outside the clamp): exp to a few ulp, 1 − e^lv cancels
    // near lv = 0.
    Tol::new(1e-5, 1e-7).check(&format!("{what} dhead"), &dhead, &want.dhead).unwrap();
    for bb in 0..b {
        for j in 0..z {
            let raw = head[bb * 2 * z + z + j];
            if !(LOGVAR_MIN..=LOGVAR_MAX).contains(&raw) {
                assert_eq!(dhead[bb * 2 * z + z + j], 0.0, "{what}: gradient through the clamp");
            }
        }
    }
    // The loss as the model reads it: mean over the batch of rec + β·kl from the GPU rows.
    let loss: f64 =
        (0..b).map(|bb| rows[2 * bb] as f64 + e.beta as f64 * rows[2 * bb + 1] as f64).sum::<f64>() / b as f64;
    let loss_scale: f64 =
        (0..b).map(|bb| scale_rows[2 * bb] + e.beta as f64 * scale_rows[2 * bb + 1]).sum::<f64>() / b as f64;
    assert!((loss - want.loss).abs() <= 2e-6 * loss_scale + 1e-6, "{what}: loss {loss} want {}", want.loss);
    assert_tail_poisoned("dout", g, &doutb, m * b * d);
    assert_tail_poisoned("dhead", g, &dheadb, b * 2 * z);
    assert_tail_poisoned("rows", g, &rowsb, 2 * b);
}

#[test]
fn elbo_both_likelihoods() {
    let mut seed = 700;
    for likelihood in [Likelihood::Bernoulli, Likelihood::Gaussian] {
        for samples in [1, 3] {
            for dim in [1, 7, 12, 65, 784] {
                for latent in [1, 20, 70] {
                    for beta in [1.0, 0.5] {
                        seed += 3;
                        let sigma = if seed % 2 == 0 { 1.0 } else { 0.3 };
                        let batch = 1 + (seed as usize % 5);
                        // Both widths of the per-example reduction (`Gpu::row_lanes`), in turns: β = 1
                        // on one, 0.5 on the other, over every shape.
                        let g = if (seed / 3) % 2 == 0 { gpu() } else { shared_gpu_other_rows() };
                        check_elbo(g, Elbo { batch, dim, latent, samples, likelihood, beta, sigma }, seed);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adam

struct AdamCase {
    cfg: Adam,
    t: u32,
    clip: f32,
    n: usize,
}

fn check_adam(c: AdamCase, seed: u64) {
    check_adam_on(gpu(), c, seed);
}

/// [`check_adam`] on `g`; returns the entry point that ran and the parameters, m and v after the step.
fn check_adam_on(g: &Gpu, c: AdamCase, seed: u64) -> (&'static str, [Vec<f32>; 3]) {
    check_adam_as(g, c, seed, true, false)
}

/// [`check_adam_on`] with the texture form allowed or not (`Adam::launch_as`), and the four operands
/// either in buffers of their own or (`shared`) at distinct offsets of one buffer (the grads of a copy
/// of it), so that each starts at its own texel of an aliased texture.
fn check_adam_as(g: &Gpu, c: AdamCase, seed: u64, textures: bool, shared: bool) -> (&'static str, [Vec<f32>; 3]) {
    let n = c.n;
    let params = f32_round(&uniform(seed, n, -1.0, 1.0));
    let grads = f32_round(&uniform(seed + 1, n, -0.5, 0.5));
    let (m0, v0) = if c.t == 1 {
        (vec![0.0; n], vec![0.0; n])
    } else {
        (f32_round(&uniform(seed + 2, n, -0.05, 0.05)), f32_round(&uniform(seed + 3, n, 0.0, 0.01)))
    };
    let (mut wp, mut wm, mut wv) = (params.clone(), m0.clone(), v0.clone());
    reference::optim::adam(&c.cfg, c.t, &mut wp, &grads, &mut wm, &mut wv, c.clip as f64);
    let state = g.upload("state", &state_words(c.t - 1, 0));
    let cb = g.upload("clip", &[c.clip]);
    // Shared: params, grads, m, v in that order, each after a gap of 64 floats more than the last (the
    // storage offset alignment is 256 bytes), so no two start at the same texel of their window.
    let parts = [&params, &grads, &m0, &v0].map(|x| to_f32(x));
    let starts: Vec<usize> = (0..4).map(|i| i * n.next_multiple_of(64) + 64 * (i + 1) * (i + 2) / 2).collect();
    let mut all = vec![f32::NAN; starts[3] + n.next_multiple_of(64)];
    for (x, &s) in parts.iter().zip(&starts) {
        all[s..s + n].copy_from_slice(x);
    }
    // The grads, read only, lie in a buffer of their own (a copy of the same layout): adam_v8 binds them
    // read-only, which wgpu does not allow beside a read-write binding of the same buffer.
    let one = shared.then(|| (g.upload("adam operands", &all), g.upload("adam grads", &all)));
    let own: Vec<_> = if shared {
        vec![]
    } else {
        ["params", "grads", "m", "v"].iter().zip(&parts).map(|(l, x)| g.upload(l, x)).collect()
    };
    let view = |i: usize| match &one {
        Some((b, gb)) => View::new(if i == 1 { gb } else { b }, 4 * starts[i] as u64, n),
        None => View::whole(&own[i]),
    };
    let l = c.cfg.launch_as(g, n, (&state).into(), view(0), view(1), view(2), view(3), (&cb).into(), textures).unwrap();
    g.run(&l).unwrap();
    let read = |i: usize| match &one {
        Some((b, gb)) => g.read_f32(if i == 1 { gb } else { b }).unwrap()[starts[i]..starts[i] + n].to_vec(),
        None => g.read_f32(&own[i]).unwrap(),
    };
    let what = format!("adam {} t={} clip={} {:?}", l.entry, c.t, c.clip, c.cfg);
    // m, v: two products and a sum in f32; the terms (|m| ≤ 0.05, |g| ≤ 0.5; v ≤ 0.01) can cancel,
    // so the floor is a few ulp of the terms rather than of the result.
    let (p1, m1, v1) = (read(0), read(2), read(3));
    Tol::new(1e-6, 2e-8).check(&format!("{what} m"), &m1, &wm).unwrap();
    Tol::new(1e-6, 4e-9).check(&format!("{what} v"), &v1, &wv).unwrap();
    // θ: the step is lr·m̂/(√v̂ + ε) with 1 − β2ᵗ computed from GPU pow(β2, t) (exp2/log2 to a few
    // ulp) and cancelling (1 − 0.999 loses ~10 bits): relative error up to ~1e-4 on a step of
    // size ≤ lr, i.e. ≤ 1e-7 absolute at lr = 1e-3, on top of the rounding of θ (~6e-8).
    let step_tol = 2e-4 * c.cfg.lr as f64;
    Tol::new(2e-7, step_tol).check(&format!("{what} params"), &p1, &wp).unwrap();
    // The grads are read only.
    assert!(to_f32(&grads).iter().zip(read(1)).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: grads changed");
    (l.entry, [p1, m1, v1])
}

/// Adam through 64-bit components (optim64.wgsl's adam_v8, on CPU adapters with 64-bit integers such as
/// lavapipe) gives adam_v4's bits: the same update in the same order.
#[test]
fn adam_64_bit_form_matches_the_32_bit_one() {
    // Both forms forced, on any adapter with 64-bit integers (GPUs run the 32-bit one by default).
    let Some((wide, narrow)) = vaegpu::testing::wide_and_narrow_gpus() else { return };
    let wide = &wide;
    let cfg = Adam { lr: 0.05, beta1: 0.5, beta2: 0.9, eps: 1e-6, weight_decay: 0.1, ..Default::default() };
    for (n, seed) in [(8, 960), (1000, 964), (4104, 968)] {
        let c = || AdamCase { cfg, t: 3, clip: 0.25, n };
        let (e8, a) = check_adam_as(wide, c(), seed, false, false);
        let (e4, b) = check_adam_on(&narrow, c(), seed);
        assert_eq!((e8, e4), ("adam_v8", "adam_v4"));
        for (x, y) in a.iter().zip(&b) {
            assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()), "n = {n}: adam_v8 differs from adam_v4");
        }
    }
}

/// Adam reading its operands through textures that alias their buffers (optim64.wgsl's adam_tex, on
/// lavapipe) gives adam_v8's bits, with the four operands in buffers of their own and at distinct
/// offsets of one buffer (each read from its own base texel); operands too small to alias (under 64
/// KiB) fall back to adam_v8.
#[test]
fn adam_texture_form_matches_adam_v8() {
    let Some((wide, _)) = vaegpu::testing::wide_and_narrow_gpus() else { return };
    let wide = &wide;
    let cfg = Adam { lr: 0.05, beta1: 0.5, beta2: 0.9, eps: 1e-6, weight_decay: 0.1, ..Default::default() };
    // (n, seed, shared, aliased): the buffers of 1000 floats (4 KiB, or 19 KiB shared) stay unaliased.
    let cases =
        [(20008, 970, false, true), (17000, 974, true, true), (1000, 978, false, false), (1000, 982, true, false)];
    for (n, seed, shared, aliased) in cases {
        let c = || AdamCase { cfg, t: 3, clip: 0.25, n };
        let (et, a) = check_adam_as(wide, c(), seed, true, shared);
        let (e8, b) = check_adam_as(wide, c(), seed, false, shared);
        // The texture form where the adapter aliases buffers of 64 KiB or more (lavapipe).
        let tex = aliased && wide.alias_operands;
        assert_eq!((et, e8), (if tex { "adam_tex" } else { "adam_v8" }, "adam_v8"), "n = {n}, shared: {shared}");
        for (x, y) in a.iter().zip(&b) {
            assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()), "n = {n}: adam_tex differs from adam_v8");
        }
    }
}

#[test]
fn adam_matches_reference() {
    let mut seed = 800;
    for weight_decay in [0.0, 0.01] {
        for t in [1, 5] {
            for clip in [1.0, 0.5] {
                for n in [1, 257, 1000] {
                    seed += 4;
                    let cfg = Adam { lr: 1e-3, weight_decay, ..Default::default() };
                    check_adam(AdamCase { cfg, t, clip, n }, seed);
                }
            }
        }
    }
    // A larger learning rate and unusual betas.
    let cfg = Adam { lr: 0.05, beta1: 0.5, beta2: 0.9, eps: 1e-6, weight_decay: 0.1, ..Default::default() };
    check_adam(AdamCase { cfg, t: 3, clip: 0.25, n: 300 }, 900);
}

/// Moments that would fall below f32's least normal come out as exactly zero, in every Adam form the
/// adapter runs (n = 20008: adam_tex on lavapipe; 1000: adam_v8 there; adam_v4 on GPUs), as the
/// reference has them: x86 CPUs slow to a crawl on subnormal operands, which lavapipe does not flush
/// (shaders/optim_common.wgsl, flush_subnormal). The parameter update matches the reference throughout.
#[test]
fn adam_flushes_subnormal_moments_to_zero() {
    let g = gpu();
    let tiny = f32::MIN_POSITIVE as f64;
    let cfg = Adam::default();
    for n in [1000, 20008] {
        // Per parameter, cycling: (grad, m0, v0). β1·m0 and β2·v0 land below 2^-126 for the first three
        // (a gradient that stays zero); a gradient of 1e-20 makes (1 − β2)·g² of about 1e-43; the last
        // two stay normal, just above the line.
        let cases = [
            (0.0, 1.05 * tiny, 1.0005 * tiny),
            (0.0, -1.05 * tiny, 0.5),
            (0.0, 0.0, 1.0005 * tiny),
            (1e-20, 0.0, 0.0),
            (0.0, 1.2 * tiny, 0.25),
            (1e-3, 2.0 * tiny, 1.01 * tiny),
        ];
        let pick = |j: usize| cases[j % cases.len()];
        let params = f32_round(&uniform(990, n, -1.0, 1.0));
        let grads: Vec<f64> = (0..n).map(|j| pick(j).0 as f32 as f64).collect();
        let m0: Vec<f64> = (0..n).map(|j| pick(j).1 as f32 as f64).collect();
        let v0: Vec<f64> = (0..n).map(|j| pick(j).2 as f32 as f64).collect();
        let (mut wp, mut wm, mut wv) = (params.clone(), m0.clone(), v0.clone());
        reference::optim::adam(&cfg, 7, &mut wp, &grads, &mut wm, &mut wv, 1.0);
        let state = g.upload("state", &state_words(6, 0));
        let cb = g.upload("clip", &[1.0f32]);
        let bufs =
            [("params", &params), ("grads", &grads), ("m", &m0), ("v", &v0)].map(|(l, x)| g.upload(l, &to_f32(x)));
        let [pb, gb, mb, vb] = &bufs;
        let l = cfg.launch(g, n, (&state).into(), pb.into(), gb.into(), mb.into(), vb.into(), (&cb).into()).unwrap();
        g.run(&l).unwrap();
        let what = format!("{} n={n}", l.entry);
        let (p1, m1, v1) = (g.read_f32(pb).unwrap(), g.read_f32(mb).unwrap(), g.read_f32(vb).unwrap());
        for (name, got, want) in [("m", &m1, &wm), ("v", &v1, &wv)] {
            for j in 0..n {
                let (x, w) = (got[j], want[j]);
                assert!(!x.is_subnormal(), "{what}: {name}[{j}] = {x:e} is subnormal");
                // Zero exactly where the reference flushed; elsewhere its value to an f32 rounding.
                assert_eq!(x == 0.0, w == 0.0, "{what}: {name}[{j}] = {x:e}, reference {w:e}");
                assert!((x as f64 - w).abs() <= 1e-6 * w.abs(), "{what}: {name}[{j}] = {x:e}, reference {w:e}");
            }
            // The cases above flush some moments and keep others.
            assert!(got.contains(&0.0) && got.iter().any(|&x| x != 0.0), "{what}: {name}");
        }
        Tol::new(2e-7, 2e-4 * cfg.lr as f64).check(&format!("{what} params"), &p1, &wp).unwrap();
    }
}

#[test]
fn adam_skips_a_nonfinite_step() {
    let g = gpu();
    let n = 513;
    let params = to_f32(&uniform(950, n, -1.0, 1.0));
    let grads = to_f32(&uniform(951, n, -1.0, 1.0));
    let m0 = to_f32(&uniform(952, n, -0.1, 0.1));
    let v0 = to_f32(&uniform(953, n, 0.0, 0.1));
    let mut st = state_words(4, 0);
    st[W_NONFINITE] = 1;
    let state = g.upload("state", &st);
    let pb = g.upload("params", &params);
    let gb = g.upload("grads", &grads);
    let mb = g.upload("m", &m0);
    let vb = g.upload("v", &v0);
    let cb = g.upload("clip", &[1.0f32]);
    let l = Adam::default()
        .launch(g, n, (&state).into(), (&pb).into(), (&gb).into(), (&mb).into(), (&vb).into(), (&cb).into())
        .unwrap();
    g.run(&l).unwrap();
    assert_eq!(g.read_f32(&pb).unwrap(), params);
    assert_eq!(g.read_f32(&mb).unwrap(), m0);
    assert_eq!(g.read_f32(&vb).unwrap(), v0);
}

// ---------------------------------------------------------------------------------------------
// reductions

/// The batch metrics count only the rows inside the dataset; with `advance` the same launch then moves
/// the batch's cursor as data.wgsl's advance (after a training step: the step counter on a finite one,
/// the non-finite run on the other) or advance_eval would, and touches no other word.
#[test]
fn metrics_accumulate_counts_only_valid_rows() {
    let g = gpu();
    // (batch, n_items, batch index, slot): full batches, a partial last batch, batch > 64 threads.
    let cases = [
        (1, 1, 0, SLOT_TRAIN),
        (10, 25, 2, SLOT_EVAL),
        (100, 250, 2, SLOT_TRAIN),
        (130, 1000, 7, SLOT_EVAL),
        (64, 64, 0, SLOT_TRAIN),
        (200, 201, 1, SLOT_EVAL),
        (3, 9, 1, SLOT_TRAIN),
    ];
    for (k, &(batch, n_items, index, slot)) in cases.iter().enumerate() {
        let beta = [1.0f32, 0.5][k % 2];
        let word = if slot == SLOT_TRAIN { W_TRAIN_BATCH } else { W_EVAL_BATCH };
        let rows = f32_round(&uniform(1000 + k as u64, 2 * batch, 0.0, 10.0));
        let prefill: Vec<f32> = (0..METRICS_WORDS).map(|i| i as f32 * 0.25 + 1.0).collect();
        let mut st = state_words(9, 0);
        st[word as usize] = index;
        // The step's non-finite flag (set on the train cases 2 and 6) and a run of 3 before it.
        st[5] = u32::from(k % 4 == 2);
        st[6] = 3;
        let valid = (0..batch).filter(|b| index as usize * batch + b < n_items);
        let (mut rec, mut kl, mut cnt) = (0.0, 0.0, 0.0);
        for b in valid {
            rec += rows[2 * b];
            kl += rows[2 * b + 1];
            cnt += 1.0;
        }
        let base = 4 * slot as usize;
        let mut want: Vec<f64> = to_f64(&prefill);
        want[base] += rec;
        want[base + 1] += kl;
        want[base + 2] += rec + beta as f64 * kl;
        want[base + 3] += cnt;
        for advance in [false, true] {
            let state = g.upload("state", &st);
            let rb = g.upload("rows", &to_f32(&rows));
            let mbuf = g.upload("metrics", &prefill);
            let at = reduce::MetricsAt { batch, n_items, batch_word: word, slot, advance };
            let l =
                reduce::metrics_accumulate(g, "test", at, beta, (&state).into(), (&rb).into(), (&mbuf).into()).unwrap();
            assert_eq!(l.entry, if advance { "metrics_advance" } else { "metrics_accumulate" });
            g.run(&l).unwrap();
            let got = g.read_f32(&mbuf).unwrap();
            // Sums of ≤ 200 positive terms in f32 (tree order): well within 1e-6 relative.
            Tol::new(1e-6, 0.0).check(&format!("metrics case {k}, advance {advance}"), &got, &want).unwrap();
            assert_eq!(got[base + 3], want[base + 3] as f32, "row count");
            let mut st_want = st;
            if advance && word == W_TRAIN_BATCH {
                if st[5] == 0 {
                    (st_want[0], st_want[6]) = (st[0] + 1, 0);
                } else {
                    st_want[6] += 1;
                }
                st_want[1] += 1;
            } else if advance {
                st_want[2] += 1;
            }
            let st_got: Vec<u32> = g.read(&state, 0, st.len()).unwrap();
            assert_eq!(st_got, st_want, "state words, case {k}, advance {advance}");
        }
    }
    // Only the train and eval cursors advance.
    let (b1, b2) = (g.storage_f32("s", 16), g.storage_f32("r", 16));
    let at = reduce::MetricsAt { batch: 1, n_items: 1, batch_word: 0, slot: 0, advance: true };
    let err = reduce::metrics_accumulate(g, "bad", at, 1.0, (&b1).into(), (&b2).into(), (&b2).into()).err().unwrap();
    assert!(err.to_string().contains("only the train or eval cursor advances"), "{err}");
}

/// Runs the two grad_norm launches over `grads`; returns (state, metrics, clip).
fn run_grad_norm(
    grads: &[f32],
    max_norm: f32,
    state0: [u32; STATE_WORDS],
    metrics0: &[f32],
) -> (Vec<u32>, Vec<f32>, f32) {
    let g = gpu();
    let n = grads.len();
    let gb = g.upload("grads", grads);
    let partials = poisoned(g, "partials", PARTIALS);
    let state = g.upload("state", &state0);
    let mbuf = g.upload("metrics", metrics0);
    let clip = poisoned(g, "clip", 1);
    let [a, b] = reduce::grad_norm(
        g,
        n,
        max_norm,
        (&gb).into(),
        (&partials).into(),
        (&state).into(),
        (&mbuf).into(),
        (&clip).into(),
    )
    .unwrap();
    g.run(&a).unwrap();
    g.run(&b).unwrap();
    (g.read(&state, 0, STATE_WORDS).unwrap(), g.read_f32(&mbuf).unwrap(), g.read_f32(&clip).unwrap()[0])
}

#[test]
fn grad_norm_and_clip_scale() {
    let prefill: Vec<f32> = (0..METRICS_WORDS).map(|i| i as f32 + 0.5).collect();
    // 100_004: a multiple of 4 in a buffer of 64 KiB or more, read through a texture on lavapipe.
    for (k, n) in [1usize, 1000, 100_003, 100_004].into_iter().enumerate() {
        let grads = f32_round(&uniform(1100 + k as u64, n, -1.0, 1.0));
        let (norm, _) = reference::optim::clip_scale(&grads, 0.0);
        for max_norm in [0.0, 0.05 * norm, 1e-3, 10.0 * norm + 1.0] {
            let (want_norm, want_scale) = reference::optim::clip_scale(&grads, max_norm as f32 as f64);
            let mut st = state_words(3, 0);
            st[W_NONFINITE] = 1; // a finite step clears a stale flag
            let (state, metrics, clip) = run_grad_norm(&to_f32(&grads), max_norm as f32, st, &prefill);
            let what = format!("n={n} max_norm={max_norm}");
            // Σ g² of n terms in f32 (per-invocation strided sums, 256 each in order, then a tree): well within
            // 2e-6 relative for these sizes, then a sqrt.
            let tol = Tol::new(2e-6, 0.0);
            tol.check(&format!("{what} norm"), &[metrics[M_GRAD_NORM]], &[want_norm]).unwrap();
            tol.check(&format!("{what} scale"), &[clip], &[want_scale]).unwrap();
            if max_norm == 0.0 || max_norm > norm {
                assert_eq!(clip, 1.0, "{what}: no clipping expected");
            }
            assert_eq!(state[W_NONFINITE], 0, "{what}: finite flag");
            assert_eq!(&state[..W_NONFINITE], &st[..W_NONFINITE], "{what}: other state words changed");
            tol.check(
                &format!("{what} Σ norms"),
                &[metrics[M_GRAD_NORM_SUM]],
                &[prefill[M_GRAD_NORM_SUM] as f64 + want_norm],
            )
            .unwrap();
            assert_eq!(metrics[M_GRAD_NORM_COUNT], prefill[M_GRAD_NORM_COUNT] + 1.0, "{what}: steps normed");
            assert_eq!(metrics[M_NONFINITE], prefill[M_NONFINITE], "{what}: non-finite count");
            assert_eq!(&metrics[..M_GRAD_NORM], &prefill[..M_GRAD_NORM], "{what}: loss slots changed");
        }
    }
}

/// The gradient norm's first pass reading the grads through a texture that aliases their buffer
/// (reduce.wgsl's sumsq_tex, on lavapipe) leaves sumsq_partial_v4's partial sums to the bit, with the
/// grads at an offset in their buffer (read from its base texel), and the same norm and clip scale.
#[test]
fn grad_norm_texture_form_matches_the_buffer_one() {
    let g = gpu();
    for (n, offset, seed) in [(100_004usize, 0usize, 1130u64), (40_000, 1_088, 1131), (1000, 64, 1132)] {
        let mut all = vec![f32::NAN; offset + n + 64];
        all[offset..offset + n].copy_from_slice(&to_f32(&uniform(seed, n, -1.0, 1.0)));
        let gb = g.upload("grads", &all);
        let mut out = vec![];
        for textures in [true, false] {
            let partials = poisoned(g, "partials", PARTIALS);
            let state = g.upload("state", &state_words(3, 0));
            let mbuf = g.upload("metrics", &[0.0f32; METRICS_WORDS]);
            let clip = poisoned(g, "clip", 1);
            let grads = View::new(&gb, 4 * offset as u64, n);
            let views = [(&partials).into(), (&state).into(), (&mbuf).into(), (&clip).into()];
            let [p, s, m, c] = views;
            let [a, b] = reduce::grad_norm_as(g, n, 0.5, grads, p, s, m, c, textures).unwrap();
            g.run(&a).unwrap();
            g.run(&b).unwrap();
            out.push((a.entry, g.read_f32(&partials).unwrap(), g.read_f32(&mbuf).unwrap(), g.read_f32(&clip).unwrap()));
        }
        // Buffers of 64 KiB or more are aliased on lavapipe (`Gpu::alias_operands`).
        let tex = g.alias_operands && 4 * all.len() >= 64 << 10;
        assert_eq!(
            (out[0].0, out[1].0),
            (if tex { "sumsq_tex" } else { "sumsq_partial_v4" }, "sumsq_partial_v4"),
            "n = {n}"
        );
        for (what, x, y) in
            [("partial sums", &out[0].1, &out[1].1), ("metrics", &out[0].2, &out[1].2), ("clip", &out[0].3, &out[1].3)]
        {
            let differ = x.iter().zip(y).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(differ.is_none(), "n = {n}: {what} differ first at {differ:?}");
        }
    }
}

#[test]
fn grad_norm_flags_nonfinite_gradients() {
    let prefill: Vec<f32> = (0..METRICS_WORDS).map(|i| i as f32 + 0.5).collect();
    for (n, at, bad) in [
        (1usize, 0usize, f32::NAN),
        (1000, 999, f32::NAN),
        (100_003, 51_234, f32::INFINITY),
        (100_003, 7, f32::NEG_INFINITY),
    ] {
        let mut grads = to_f32(&uniform(1200 + n as u64, n, -1.0, 1.0));
        grads[at] = bad;
        let st = state_words(3, 0);
        let (state, metrics, clip) = run_grad_norm(&grads, 1.0, st, &prefill);
        let what = format!("n={n} {bad} at {at}");
        assert_eq!(state[W_NONFINITE], 1, "{what}: flag");
        assert_eq!(metrics[M_NONFINITE], prefill[M_NONFINITE] + 1.0, "{what}: non-finite count");
        assert!(!metrics[M_GRAD_NORM].is_finite(), "{what}: norm {}", metrics[M_GRAD_NORM]);
        assert_eq!(metrics[M_GRAD_NORM_SUM], prefill[M_GRAD_NORM_SUM], "{what}: Σ norms must skip the step");
        assert_eq!(metrics[M_GRAD_NORM_COUNT], prefill[M_GRAD_NORM_COUNT], "{what}: steps normed");
        assert_eq!(clip, 1.0, "{what}: clip");
    }
    // A gradient whose Σ g² overflows f32 is non-finite too.
    let grads = vec![1e30f32; 10];
    let (state, metrics, _) = run_grad_norm(&grads, 0.0, state_words(0, 0), &prefill);
    assert_eq!(state[W_NONFINITE], 1);
    assert_eq!(metrics[M_NONFINITE], prefill[M_NONFINITE] + 1.0);
}

// ---------------------------------------------------------------------------------------------
// gather

fn pixels(seed: u64, n: usize) -> Vec<u8> {
    let mut p: Vec<u8> = uniform(seed, n, 0.0, 256.0).iter().map(|v| *v as u8).collect();
    // Both extremes present.
    p[0] = 255;
    if n > 1 {
        p[n - 1] = 0;
    }
    p
}

#[test]
fn gather_matches_reference() {
    let g = gpu();
    // (n_items, dim, batch, batch index): pixel counts not a multiple of 4, partial last batches
    // (rows past n_items repeat the last item), a batch longer than the dataset.
    // D a multiple of 4 (784, 12, 260: past one 256-pixel workgroup) takes gather_v4, the others gather.
    let cases = [
        (5, 7, 3, 1),
        (5, 7, 2, 0),
        (1, 7, 4, 0),
        (10, 784, 4, 2),
        (13, 784, 5, 2),
        (33, 7, 8, 4),
        (3, 1, 5, 0),
        (7, 12, 3, 2),
        (4, 260, 3, 1),
    ];
    let mut seed = 1300;
    for &(n_items, dim, batch, index) in &cases {
        for binarize in [false, true] {
            for key_seed in SEEDS {
                seed += 2;
                let px = pixels(seed, n_items * dim);
                // A permutation: reversed, then rotated.
                let perm: Vec<u32> =
                    (0..n_items as u32).rev().cycle().skip(seed as usize % n_items).take(n_items).collect();
                let step = 1 + seed as u32;
                let word = if seed % 4 == 0 { W_TRAIN_BATCH } else { W_EVAL_BATCH };
                let mut st = state_words(step, key_seed);
                st[word as usize] = index;
                let want =
                    reference::data::gather(&px, &perm, dim, batch, index as usize, binarize, step, seed_key(key_seed));
                let state = g.upload("state", &st);
                let data = g.upload::<u8>("pixels", &px);
                let pb = g.upload("perm", &perm);
                let xb = poisoned(g, "x", batch * dim + 5);
                let ga = Gather { batch, dim, n_items, batch_word: word, binarize };
                let l = ga
                    .launch(g, "test", (&state).into(), (&data).into(), (&pb).into(), View::new(&xb, 0, batch * dim))
                    .unwrap();
                assert_eq!(l.label.contains("gather_v4["), dim % 4 == 0, "{}", l.label);
                g.run(&l).unwrap();
                let got: Vec<f32> = g.read(&xb, 0, batch * dim).unwrap();
                let what = format!("{ga:?} index {index} seed {key_seed:#x}");
                if binarize {
                    // Exactly 0 or 1, the same draw as the reference.
                    assert!(got.iter().all(|v| *v == 0.0 || *v == 1.0), "{what}: not binary");
                    assert_eq!(got, to_f32(&want), "{what}");
                } else {
                    // px/255 is one f32 division (WGSL allows 2.5 ulp).
                    Tol::new(4e-7, 0.0).check(&what, &got, &want).unwrap();
                }
                assert_tail_poisoned("x", g, &xb, batch * dim);
            }
        }
    }
}
