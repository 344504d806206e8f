//! The autoencoder family (models::ae, shaders/ae.wgsl, reference::ae):
//! 1. each ae.wgsl kernel against its f64 twin on awkward sizes, outputs poisoned with NaN;
//! 2. the reference step's gradient against central finite differences for every variant;
//! 3. the GPU step (plain, BCE, L1 and KL sparse, denoising, conv) against the reference step;
//! 4. short training runs on a tiny synthetic dataset: the loss falls, the penalties make the penalised
//!    layer sparser, and a run repeats bit for bit.

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::ae::{AeLoss, Corrupt, Noise, RecLoss, Sparse, Sparsity, KL_EPS, STREAM_CORRUPT};
use vaegpu::kernels::data::{W_EVAL_BATCH, W_STEP, W_TRAIN_BATCH};
use vaegpu::kernels::optim::Adam;
use vaegpu::kernels::Act;
use vaegpu::models::ae::{Ae, AeConfig};
use vaegpu::models::vae::{ConvArch, GpuDataset};
use vaegpu::reference::ae as rae;
use vaegpu::reference::elementwise::act_forward;
use vaegpu::reference::sample::seed_key;
use vaegpu::testing::{
    f32_round, poisoned, shared_gpu, shared_gpu_other_rows, state_words, to_f32, to_f64, uniform, Tol,
};

fn gpu() -> &'static Gpu {
    shared_gpu()
}

const SEEDS: [u64; 2] = [0, 0xdead_beef_0123_4567];

fn assert_tail_poisoned(what: &str, buf: &wgpu::Buffer, n: usize) {
    assert_tail_poisoned_on(gpu(), what, buf, n);
}

fn assert_tail_poisoned_on(g: &Gpu, what: &str, buf: &wgpu::Buffer, n: usize) {
    let all = g.read_f32(buf).unwrap();
    assert!(all[n..].iter().all(|v| v.is_nan()), "{what}: wrote past element {n}");
}

// ---------------------------------------------------------------------------------------------
// 1. kernels

#[test]
fn corrupt_matches_reference() {
    let g = gpu();
    for (batch, dim) in [(5, 37), (3, 1000)] {
        let n = batch * dim;
        let x = f32_round(&uniform(1, n, 0.0, 1.0));
        let xb = g.upload("x", &to_f32(&x));
        for seed in SEEDS {
            for step in [0u32, 7] {
                let state = g.upload("state", &state_words(step, seed));
                for (noise, level) in [(Noise::None, 0.0f32), (Noise::Gaussian, 0.3), (Noise::Mask, 0.4)] {
                    let out = poisoned(g, "xin", n + 5);
                    let c = Corrupt { batch, dim, noise, level, counter_word: W_STEP, stream: STREAM_CORRUPT };
                    g.run(&c.launch(g, "t", (&state).into(), (&xb).into(), View::new(&out, 0, n)).unwrap()).unwrap();
                    let got: Vec<f32> = g.read(&out, 0, n).unwrap();
                    let want = rae::corrupt(&x, noise, level, step, STREAM_CORRUPT, seed_key(seed));
                    let what = format!("corrupt {noise:?} {batch}x{dim} seed {seed} step {step}");
                    // None and mask copy or zero f32 values: exact. Gaussian: x + σ·n with n from f32
                    // log/sqrt/cos on the GPU (a few ulp of |n| ≤ 5.6), so 1e-5 absolute.
                    let tol = if noise == Noise::Gaussian { Tol::new(1e-5, 1e-5) } else { Tol::new(0.0, 0.0) };
                    tol.check(&what, &got, &want).unwrap();
                    assert_tail_poisoned(&what, &out, n);
                    if noise == Noise::Mask && n >= 1000 {
                        // (The test values are > 0, so a zero is a masked value.)
                        let frac = got.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
                        assert!((frac - 0.4).abs() < 0.05, "{what}: masked fraction {frac}");
                    }
                }
            }
        }
    }
    // Another step draws other noise; the same step the same noise.
    let key = seed_key(3);
    let a = rae::corrupt(&x_ones(64), Noise::Gaussian, 1.0, 1, STREAM_CORRUPT, key);
    let b = rae::corrupt(&x_ones(64), Noise::Gaussian, 1.0, 2, STREAM_CORRUPT, key);
    assert_ne!(a, b);
    assert_eq!(a, rae::corrupt(&x_ones(64), Noise::Gaussian, 1.0, 1, STREAM_CORRUPT, key));
}

fn x_ones(n: usize) -> Vec<f64> {
    vec![1.0; n]
}

#[test]
fn loss_matches_reference() {
    // (3, 264): whole vec4 rows (ae_loss_v4), more of them than the workgroup's 64 lanes; each shape on
    // both widths of the per-row reduction (`Gpu::row_lanes`).
    for ((batch, dim), g) in
        [(5, 37), (2, 130), (3, 264)].into_iter().flat_map(|s| [(s, gpu()), (s, shared_gpu_other_rows())])
    {
        let n = batch * dim;
        let out = f32_round(&uniform(2, n, -4.0, 4.0));
        let mut x = f32_round(&uniform(3, n, 0.0, 1.0));
        for i in (0..n).step_by(5) {
            x[i] = (i % 2) as f64; // exact 0 and 1 targets
        }
        let (ob, xb) = (g.upload("out", &to_f32(&out)), g.upload("x", &to_f32(&x)));
        for loss in [RecLoss::Mse, RecLoss::Bce] {
            let dout = poisoned(g, "dout", n + 3);
            let rows = poisoned(g, "rows", 2 * batch + 3);
            let k = AeLoss { batch, dim, loss };
            let l = k
                .launch(g, "t", (&ob).into(), (&xb).into(), View::new(&dout, 0, n), View::new(&rows, 0, 2 * batch))
                .unwrap();
            let entry = if dim % 4 == 0 { "ae_loss_v4[" } else { "ae_loss[" };
            assert!(l.label.contains(entry), "{}", l.label);
            g.run(&l).unwrap();
            let want = rae::rec_loss(&out, &x, batch, dim, loss);
            let what = format!("ae_loss {loss:?} {batch}x{dim}");
            let want_rows: Vec<f64> = want.rec.iter().flat_map(|&r| [r, 0.0]).collect();
            // f32 sums of ≤ 264 terms of size ≤ 16: relative 1e-5 plus a small absolute floor.
            Tol::new(1e-5, 1e-5)
                .check(&format!("{what} rows"), &g.read(&rows, 0, 2 * batch).unwrap(), &want_rows)
                .unwrap();
            // Elementwise (sigmoid through exp): a few ulp.
            Tol::new(1e-5, 1e-8).check(&format!("{what} dout"), &g.read(&dout, 0, n).unwrap(), &want.dout).unwrap();
            assert_tail_poisoned_on(g, &what, &dout, n);
            assert_tail_poisoned_on(g, &what, &rows, 2 * batch);
        }
    }
}

/// Activations of a layer with `act`, with exact zeros for ReLU (the kink, where sign and act' are 0).
fn layer_acts(seed: u64, n: usize, act: Act) -> Vec<f64> {
    let pre = uniform(seed, n, -3.0, 3.0);
    f32_round(&pre.iter().map(|&u| act_forward(act, u)).collect::<Vec<_>>())
}

#[test]
fn sparse_penalties_match_reference() {
    let cases = [
        (Sparsity::L1, Act::Identity, 5, 37),
        (Sparsity::L1, Act::Relu, 5, 37),
        (Sparsity::L1, Act::Tanh, 3, 70),
        (Sparsity::L1, Act::Sigmoid, 70, 3),
        (Sparsity::Kl, Act::Sigmoid, 5, 37),
        (Sparsity::Kl, Act::Sigmoid, 70, 3),
        (Sparsity::Kl, Act::Sigmoid, 3, 130),
    ];
    for (ci, &(kind, act, batch, units)) in cases.iter().enumerate() {
        // The two widths of the per-row reduction (`Gpu::row_lanes`) in turns: the other device (64
        // lanes on a CPU adapter) takes the cases with more than 64 units (3x70, 3x130).
        let g = if ci % 2 == 0 { shared_gpu_other_rows() } else { gpu() };
        let n = batch * units;
        let mut a = layer_acts(10 + ci as u64, n, act);
        if kind == Sparsity::Kl {
            // Unit 0 nearly off in every row: ρ̂ below the clamp (its gradient is 0, its KL at 1e-6).
            for b in 0..batch {
                a[b * units] = 1e-8;
            }
        }
        let g0 = f32_round(&uniform(20 + ci as u64, n, -1.0, 1.0));
        let (weight, target) = (0.37f32, 0.1f32);
        let want = rae::penalty(kind, &a, batch, units, act, weight as f64, target as f64);
        let ab = g.upload("a", &to_f32(&a));
        for with_grad in [false, true] {
            let grad = g.upload("grad", &to_f32(&g0));
            let rows = poisoned(g, "rows", 2 * batch + 3);
            let stats = poisoned(g, "stats", 2 * units + 3);
            let k = Sparse { batch, units, kind, weight, target, act, with_grad };
            let what = format!("{kind:?} {act:?} {batch}x{units} grad={with_grad}");
            let ls = k
                .launch(
                    g,
                    "t",
                    (&ab).into(),
                    (&grad).into(),
                    View::new(&stats, 0, 2 * units),
                    View::new(&rows, 0, 2 * batch),
                )
                .unwrap();
            g.submit(&vaegpu::gpu::Program { label: what.clone(), launches: ls }, 1);
            g.sync().unwrap();
            let r = g.read_f32(&rows).unwrap();
            let pen: Vec<f32> = (0..batch).map(|b| r[2 * b + 1]).collect();
            // Sums of ≤ 130 terms (L1) or of KL values through f32 logs (KL): relative 1e-5.
            Tol::new(1e-5, 1e-6).check(&format!("{what} penalty"), &pen, &want.pen).unwrap();
            assert!((0..batch).all(|b| r[2 * b].is_nan()), "{what}: wrote the rec column");
            assert_tail_poisoned_on(g, &what, &rows, 2 * batch);
            let want_grad: Vec<f64> =
                if with_grad { g0.iter().zip(&want.dpre).map(|(a, b)| a + b).collect() } else { g0.clone() };
            // += of one f32 product: a few ulp of the larger term.
            Tol::new(1e-5, 1e-7).check(&format!("{what} grad"), &g.read_f32(&grad).unwrap(), &want_grad).unwrap();
            if kind == Sparsity::Kl {
                let s: Vec<f32> = g.read(&stats, 0, 2 * units).unwrap();
                Tol::new(1e-4, 1e-6).check(&format!("{what} kl_j"), &s[..units], &want.kl).unwrap();
                Tol::new(1e-5, 1e-7).check(&format!("{what} rho_hat"), &s[units..], &want.rho_hat).unwrap();
                assert!(want.rho_hat[0] < KL_EPS && want.dpre[0] == 0.0, "{what}: the clamp case");
                assert_tail_poisoned_on(g, &what, &stats, 2 * units);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. finite differences of the reference

const H: f64 = 1e-6;

/// Central differences of `f` against `grad` over the parameter blocks of `layout`: |fd − an| ≤ abs or
/// ≤ 1e-6·max(|fd|, |an|). `abs` = 1e-9·|L| (at least 1e-8): the loss sums many terms, so central
/// differences carry a rounding error of a few ε·|L|/h.
fn fd_check(what: &str, layout: &vaegpu::nn::ParamLayout, f: &dyn Fn(&[f64]) -> f64, p0: &[f64], grad: &[f64]) {
    let abs = (1e-9 * f(p0).abs()).max(1e-8);
    let mut bad = Vec::new();
    let mut checked = 0;
    for l in &layout.layers {
        for i in l.offset..l.offset + l.len() {
            let mut p = p0.to_vec();
            p[i] = p0[i] + H;
            let fp = f(&p);
            p[i] = p0[i] - H;
            let fm = f(&p);
            let fd = (fp - fm) / (2.0 * H);
            let err = (fd - grad[i]).abs();
            checked += 1;
            if !(err <= abs || err <= 1e-6 * fd.abs().max(grad[i].abs())) {
                bad.push(format!("  {} [{i}] fd {fd:.10e} analytic {:.10e}", l.name, grad[i]));
            }
        }
    }
    assert!(checked > 50, "{what}: only {checked} coordinates");
    assert!(bad.is_empty(), "{what}: {} of {checked} fail:\n{}", bad.len(), bad.join("\n"));
}

fn mlp(loss: RecLoss, act: Act, code_act: Act) -> AeConfig {
    AeConfig {
        input_dim: 7,
        image: [1, 7, 1],
        hidden: vec![5, 4],
        latent: 3,
        act,
        code_act,
        loss,
        ..AeConfig::default()
    }
}

/// Every variant the tests run: (name, config), on MLPs with `input_dim` values and a small conv AE.
fn variants(small: bool) -> Vec<(&'static str, AeConfig)> {
    let base = |loss, act, code_act| {
        let mut c = mlp(loss, act, code_act);
        if !small {
            c.input_dim = 37;
            c.image = [1, 37, 1];
            c.hidden = vec![13, 6];
        }
        c
    };
    let with = |mut c: AeConfig, f: &dyn Fn(&mut AeConfig)| {
        f(&mut c);
        c
    };
    // The reference FD check avoids the ReLU kink (tanh, sigmoid); the GPU check uses ReLU too.
    let act = if small { Act::Tanh } else { Act::Relu };
    let conv = |noise| AeConfig {
        input_dim: 36,
        image: [6, 6, 1],
        latent: 2,
        act: Act::Tanh,
        loss: RecLoss::Bce,
        sparsity: Sparsity::L1,
        sparse_weight: 0.2,
        // The first conv (no activation: a residual block follows), so the encoder's tail starts with
        // the block.
        sparse_layer: Some(0),
        noise,
        noise_level: 0.3,
        conv: Some(ConvArch { channels: vec![3], strides: vec![2], blocks: 1, res_hidden: 2, fc: vec![4] }),
        ..AeConfig::default()
    };
    vec![
        ("plain mse", base(RecLoss::Mse, act, Act::Identity)),
        ("plain bce", base(RecLoss::Bce, Act::Tanh, Act::Identity)),
        (
            "l1 hidden",
            with(base(RecLoss::Mse, act, Act::Identity), &|c| {
                c.sparsity = Sparsity::L1;
                c.sparse_weight = 0.05;
                c.sparse_layer = Some(0);
            }),
        ),
        (
            "l1 code",
            with(base(RecLoss::Bce, Act::Tanh, Act::Identity), &|c| {
                c.sparsity = Sparsity::L1;
                c.sparse_weight = 0.1;
            }),
        ),
        (
            "kl hidden",
            with(base(RecLoss::Mse, Act::Sigmoid, Act::Identity), &|c| {
                c.sparsity = Sparsity::Kl;
                c.sparse_weight = 0.5;
                c.sparse_target = 0.1;
                c.sparse_layer = Some(1);
            }),
        ),
        (
            "kl code",
            with(base(RecLoss::Bce, Act::Tanh, Act::Sigmoid), &|c| {
                c.sparsity = Sparsity::Kl;
                c.sparse_weight = 0.3;
                c.sparse_target = 0.2;
            }),
        ),
        (
            "denoising gaussian",
            with(base(RecLoss::Mse, act, Act::Identity), &|c| {
                c.noise = Noise::Gaussian;
                c.noise_level = 0.3;
            }),
        ),
        (
            "denoising mask",
            with(base(RecLoss::Bce, Act::Tanh, Act::Tanh), &|c| {
                c.noise = Noise::Mask;
                c.noise_level = 0.4;
            }),
        ),
        ("conv l1 clean", conv(Noise::None)),
        ("conv l1 mask", conv(Noise::Mask)),
    ]
}

#[test]
fn reference_step_gradients_match_finite_differences() {
    let batch = 3;
    for (k, (name, cfg)) in variants(true).into_iter().enumerate() {
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let layout = cfg.layout();
        let seed = 100 + k as u64;
        let p0: Vec<f64> = layout.init(seed).iter().map(|&v| 2.0 * v as f64).collect();
        let x = uniform(seed + 1, batch * cfg.input_dim, 0.0, 1.0);
        // The corruption is fixed (drawn once): the loss is a function of the parameters alone.
        let x_in = rae::corrupt(&x, cfg.noise, cfg.noise_level, 2, STREAM_CORRUPT, seed_key(seed));
        let step = rae::ae_step(&cfg, &layout, &p0, &x, &x_in, batch);
        assert!(step.loss.is_finite() && step.rows.iter().all(|r| r.1 >= 0.0), "{name}");
        if cfg.sparsity != Sparsity::None {
            assert!(step.rows[0].1 > 0.0, "{name}: the penalty must be active");
        }
        let f = |p: &[f64]| rae::ae_step(&cfg, &layout, p, &x, &x_in, batch).loss;
        fd_check(name, &layout, &f, &p0, &step.grads);
    }
}

/// The penalties' gradients with respect to the pre-activation u (a = act(u)), on their own.
#[test]
fn penalty_gradients_match_finite_differences() {
    let (batch, units) = (4, 5);
    for (kind, act) in [(Sparsity::L1, Act::Tanh), (Sparsity::L1, Act::Identity), (Sparsity::Kl, Act::Sigmoid)] {
        let u0: Vec<f64> = uniform(7, batch * units, -2.0, 2.0);
        let f = |u: &[f64]| {
            let a: Vec<f64> = u.iter().map(|&v| act_forward(act, v)).collect();
            let p = rae::penalty(kind, &a, batch, units, act, 0.7, 0.15);
            p.pen.iter().sum::<f64>() / batch as f64
        };
        let a: Vec<f64> = u0.iter().map(|&v| act_forward(act, v)).collect();
        let d = rae::penalty(kind, &a, batch, units, act, 0.7, 0.15).dpre;
        for i in 0..u0.len() {
            let mut u = u0.clone();
            u[i] += H;
            let fp = f(&u);
            u[i] -= 2.0 * H;
            let fd = (fp - f(&u)) / (2.0 * H);
            assert!((fd - d[i]).abs() <= 1e-8 + 1e-6 * fd.abs(), "{kind:?} {act:?} [{i}]: fd {fd} analytic {}", d[i]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. the GPU step against the reference step

#[test]
fn gpu_step_matches_reference_step() {
    let g = gpu();
    let batch = 5;
    let (seed, step) = (11u64, 3u32);
    for (name, cfg) in variants(false) {
        let layout = cfg.layout();
        let params = f32_round(&layout.init(3).iter().map(|&v| 2.0 * v as f64).collect::<Vec<_>>());
        let x = f32_round(&uniform(5, batch * cfg.input_dim, 0.0, 1.0));
        let ae = Ae::new(g, &cfg, batch).unwrap();
        g.write(&ae.core.params, 0, &to_f32(&params));
        g.write(&ae.x, 0, &to_f32(&x));
        ae.core.set_state(g, seed, step);
        // lr = 0 keeps the parameters, so the gradients read back are those of `params`.
        let adam = Adam { lr: 0.0, ..Adam::default() };
        g.submit(&ae.step_program_given(g, &adam, 0.0).unwrap(), 1);
        let x_in = if cfg.noise == Noise::None {
            x.clone()
        } else {
            // The GPU's corruption (checked against the reference draws), fed to the reference step.
            let got = g.read_f32(&ae.x_in).unwrap();
            let want = rae::corrupt(&x, cfg.noise, cfg.noise_level, step, STREAM_CORRUPT, seed_key(seed));
            Tol::new(1e-5, 1e-5).check(&format!("{name} x_in"), &got, &want).unwrap();
            to_f64(&got)
        };
        let want = rae::ae_step(&cfg, &layout, &params, &x, &x_in, batch);
        let rows = g.read_f32(&ae.rows).unwrap();
        let want_rows: Vec<f64> = want.rows.iter().flat_map(|&(r, p)| [r, p]).collect();
        // f32 forward through three or four layers and sums over ≤ 37 values.
        Tol::new(1e-4, 1e-5).check(&format!("{name} rows"), &rows, &want_rows).unwrap();
        Tol::new(1e-4, 1e-5).check(&format!("{name} code"), &g.read_f32(ae.code()).unwrap(), &want.code).unwrap();
        let pen = g.read_f32(ae.penalised()).unwrap();
        Tol::new(1e-4, 1e-5).check(&format!("{name} penalised layer"), &pen, &want.penalised).unwrap();
        let grads = g.read_f32(&ae.core.grads).unwrap();
        let gmax = want.grads.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        // f32 accumulations over ≤ a few hundred terms: relative 1e-3 of the largest gradient.
        for l in &layout.layers {
            let r = l.offset..l.offset + l.len();
            Tol::new(1e-3, 1e-4 * gmax)
                .check(&format!("{name} grad {}", l.name), &grads[r.clone()], &want.grads[r])
                .unwrap();
        }
    }
}

#[test]
fn config_names_and_validation() {
    let cfg = AeConfig::default();
    cfg.validate().unwrap();
    let layout = cfg.layout();
    let names: Vec<(String, Vec<usize>)> = cfg.named_tensors(&layout).into_iter().map(|t| (t.name, t.shape)).collect();
    let want = [
        ("enc.fc1.weight", vec![400, 784]),
        ("enc.fc1.bias", vec![400]),
        ("enc.code.weight", vec![32, 400]),
        ("enc.code.bias", vec![32]),
        ("dec.fc1.weight", vec![400, 32]),
        ("dec.fc1.bias", vec![400]),
        ("dec.out.weight", vec![784, 400]),
        ("dec.out.bias", vec![784]),
    ];
    assert_eq!(names, want.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
    // TOML: defaults fill what is missing; unknown keys are refused.
    let c: AeConfig =
        toml::from_str("latent = 8\nsparsity = \"kl\"\ncode_act = \"sigmoid\"\nnoise = \"mask\"").unwrap();
    assert_eq!((c.latent, c.sparsity, c.noise, c.hidden.clone()), (8, Sparsity::Kl, Noise::Mask, vec![400]));
    c.validate().unwrap();
    assert!(toml::from_str::<AeConfig>("lattent = 8").is_err());
    let back: AeConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    let bad = |f: &dyn Fn(&mut AeConfig), needle: &str| {
        let mut c = AeConfig::default();
        f(&mut c);
        let e = c.validate().expect_err(needle);
        assert!(e.contains(needle), "{e}");
    };
    bad(&|c| c.sparsity = Sparsity::Kl, "sigmoid");
    bad(&|c| c.sparse_layer = Some(2), "sparse_layer");
    bad(&|c| c.sparse_target = 1.0, "sparse_target");
    bad(&|c| c.sparse_weight = -1.0, "sparse_weight");
    bad(
        &|c| {
            c.noise = Noise::Mask;
            c.noise_level = 1.5;
        },
        "noise_level",
    );
    bad(&|c| c.latent = 0, "latent");
}

// ---------------------------------------------------------------------------------------------
// 4. training

const ITEMS: usize = 256;
const DIM: usize = 16;
const BATCH: usize = 32;

/// 256 items of 16 pixels: sigmoid of a random rank-3 map of 3 factors, as u8.
fn synthetic() -> Vec<u8> {
    let z = uniform(41, ITEMS * 3, -2.0, 2.0);
    let w = uniform(42, 3 * DIM, -2.0, 2.0);
    let mut px = vec![0u8; ITEMS * DIM];
    for i in 0..ITEMS {
        for d in 0..DIM {
            let s: f64 = (0..3).map(|k| z[i * 3 + k] * w[k * DIM + d]).sum();
            px[i * DIM + d] = (255.0 / (1.0 + (-s).exp())).round() as u8;
        }
    }
    px
}

fn tiny(f: &dyn Fn(&mut AeConfig)) -> AeConfig {
    let mut c = AeConfig {
        input_dim: DIM,
        image: [4, 4, 1],
        hidden: vec![32],
        latent: 4,
        loss: RecLoss::Mse,
        ..AeConfig::default()
    };
    f(&mut c);
    c
}

struct Run {
    /// Mean training loss and penalty of the first and last epochs.
    first: (f64, f64),
    last: (f64, f64),
    /// Mean over the first eval batch of the penalised layer's activations.
    mean_act: f64,
    params: Vec<f32>,
}

fn train(cfg: &AeConfig, epochs: usize) -> Run {
    let g = gpu();
    let data = GpuDataset::upload(g, "synthetic", &synthetic(), ITEMS, DIM).unwrap();
    let ae = Ae::new(g, cfg, BATCH).unwrap();
    ae.core.set_state(g, 5, 0);
    let adam = Adam { lr: 1e-2, ..Adam::default() };
    let step = ae.train_program(g, &data, &adam, 0.0, false).unwrap();
    let mut means = Vec::new();
    for _ in 0..epochs {
        ae.core.set_cursor(g, W_TRAIN_BATCH, 0);
        ae.core.reset_metrics(g);
        g.submit(&step, ITEMS / BATCH);
        let m = ae.core.read_metrics(g).unwrap();
        assert_eq!(m.train.rows as usize, ITEMS);
        means.push((m.train.mean_loss(), m.train.mean_kl()));
    }
    ae.core.set_cursor(g, W_EVAL_BATCH, 0);
    ae.core.reset_metrics(g);
    g.submit(&ae.eval_program(g, &data, false).unwrap(), 1);
    let a = g.read_f32(ae.penalised()).unwrap();
    Run {
        first: means[0],
        last: *means.last().unwrap(),
        mean_act: a.iter().map(|v| v.abs() as f64).sum::<f64>() / a.len() as f64,
        params: g.read_f32(&ae.core.params).unwrap(),
    }
}

#[test]
fn training_reduces_loss_and_penalties_sparsify() {
    let epochs = 40; // 320 steps
    let plain = train(&tiny(&|_| {}), epochs);
    assert!(plain.last.0 < 0.25 * plain.first.0, "plain: loss {:?} -> {:?}", plain.first, plain.last);

    let noisy = train(
        &tiny(&|c| {
            c.noise = Noise::Gaussian;
            c.noise_level = 0.1;
        }),
        epochs,
    );
    assert!(noisy.last.0 < 0.4 * noisy.first.0, "denoising: loss {:?} -> {:?}", noisy.first, noisy.last);

    // L1 on the hidden ReLU layer against the same model without it (λ = 0).
    let l1 = |w: f32| {
        tiny(&|c| {
            c.sparsity = Sparsity::L1;
            c.sparse_layer = Some(0);
            c.sparse_weight = w;
        })
    };
    let (l1_0, l1_on) = (train(&l1(0.0), epochs), train(&l1(0.02), epochs));
    assert_eq!(l1_0.last.1, 0.0);
    assert!(
        l1_on.mean_act < 0.6 * l1_0.mean_act,
        "L1: mean |a| {} with λ vs {} without",
        l1_on.mean_act,
        l1_0.mean_act
    );
    assert!(l1_on.last.0 < 0.5 * l1_on.first.0, "L1: loss {:?} -> {:?}", l1_on.first, l1_on.last);

    // KL on a sigmoid hidden layer, ρ = 0.05, against β = 0.
    let kl = |w: f32| {
        tiny(&|c| {
            c.act = Act::Sigmoid;
            c.sparsity = Sparsity::Kl;
            c.sparse_layer = Some(0);
            c.sparse_target = 0.05;
            c.sparse_weight = w;
        })
    };
    let (kl_0, kl_on) = (train(&kl(0.0), epochs), train(&kl(0.1), epochs));
    let rho = 0.05;
    assert!(
        (kl_on.mean_act - rho).abs() < 0.3 * (kl_0.mean_act - rho).abs() && kl_on.mean_act < kl_0.mean_act,
        "KL: mean activation {} with β vs {} without (ρ = {rho})",
        kl_on.mean_act,
        kl_0.mean_act
    );
    assert!(kl_on.last.1 < kl_on.first.1, "KL: penalty {:?} -> {:?}", kl_on.first, kl_on.last);
    eprintln!(
        "plain {:?}->{:?}; denoising {:?}->{:?}; L1 mean|a| {:.4} vs {:.4}; KL mean a {:.4} vs {:.4}",
        plain.first, plain.last, noisy.first, noisy.last, l1_on.mean_act, l1_0.mean_act, kl_on.mean_act, kl_0.mean_act
    );
}

#[test]
fn training_repeats_bit_for_bit() {
    let cfg = tiny(&|c| {
        c.act = Act::Sigmoid;
        c.sparsity = Sparsity::Kl;
        c.sparse_layer = Some(0);
        c.sparse_weight = 0.1;
        c.noise = Noise::Mask;
    });
    let (a, b) = (train(&cfg, 2), train(&cfg, 2));
    assert_eq!(a.params, b.params);
    assert_eq!((a.first, a.last), (b.first, b.last));
}
