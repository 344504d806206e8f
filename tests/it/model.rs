//! The GPU model's whole step against the f64 reference model (reference/vae.rs) for configurations
//! the fixture does not cover: two hidden layers, tanh / leaky ReLU / sigmoid, M = 3, Gaussian
//! likelihood, β ≠ 1, odd sizes; and the conv VAE (RGB and grayscale, strides 1 and 2, residual blocks,
//! dense layers) the same way.

use vaegpu::gpu::{ConvKernel, Gpu, GpuOptions, MatmulKernel};
use vaegpu::kernels::elbo::Likelihood;
use vaegpu::kernels::optim::Adam;
use vaegpu::kernels::Act;
use vaegpu::models::vae::{ConvArch, Vae, VaeConfig};
use vaegpu::reference::vae::vae_step;
use vaegpu::testing::{f32_round, normals, test_gpu, to_f32, uniform, Tol};

fn check(cfg: VaeConfig, batch: usize) {
    check_on(&test_gpu(), cfg, batch, &[]);
}

/// The step on `gpu`; `entries`: texts (kernels, shapes) that some launch of the step must each name.
fn check_on(gpu: &Gpu, cfg: VaeConfig, batch: usize, entries: &[&str]) {
    let layout = cfg.layout();
    // random flow layers (their out layers start at zero: give them values)
    let mut params: Vec<f64> =
        cfg.init_params(3).unwrap().iter().map(|&v| v as f64).map(|v| if v == 0.0 { 0.05 } else { v }).collect();
    // a learned decoder variance: a different s per pixel (it starts at ln σ² everywhere)
    if let Some(l) = layout.layer("dec.logvar") {
        params[l.offset..l.offset + l.len()].copy_from_slice(&f32_round(&uniform(8, l.len(), -1.5, 0.5)));
    }
    let x = uniform(5, batch * cfg.input_dim, 0.0, 1.0);
    let eps = normals(6, cfg.samples * batch * cfg.latent);
    let want = vae_step(&cfg, &layout, &params, &x, &eps, batch);

    let vae = Vae::new(gpu, &cfg, batch).unwrap();
    gpu.write(&vae.core.params, 0, &to_f32(&params));
    gpu.write(&vae.x, 0, &to_f32(&x));
    gpu.write(&vae.eps, 0, &to_f32(&eps));
    vae.core.set_state(gpu, 0, 0);
    // lr = 0 keeps the parameters, so the gradients read back are those of `params`.
    let adam = Adam { lr: 0.0, ..Adam::default() };
    let prog = vae.step_program_given(gpu, &adam, 0.0).unwrap();
    for e in entries {
        assert!(prog.launches.iter().any(|l| l.label.contains(e)), "no {e} launch in the step");
    }
    gpu.submit(&prog, 1);
    let grads = gpu.read_f32(&vae.core.grads).unwrap();
    let head = gpu.read_f32(vae.head()).unwrap();
    let rows = gpu.read_f32(&vae.rows).unwrap();
    let loss: f64 = if vae.is_weighted() {
        rows.chunks(3).take(batch).map(|r| r[2] as f64).sum::<f64>() / batch as f64
    } else {
        rows.chunks(2).take(batch).map(|r| r[0] as f64 + cfg.beta as f64 * r[1] as f64).sum::<f64>() / batch as f64
    };
    assert!((loss - want.loss).abs() < 1e-5 * want.loss.abs() + 1e-4, "{cfg:?}: loss {loss} vs {}", want.loss);
    Tol::new(1e-4, 1e-5).check("head", &head, &want.head).unwrap();
    let gmax = want.grads.iter().fold(0.0f64, |a, g| a.max(g.abs()));
    // float32 accumulations over ≤ a few hundred terms: relative 1e-3 of the largest gradient.
    for l in &layout.layers {
        let r = l.offset..l.offset + l.len();
        Tol::new(1e-3, 1e-4 * gmax)
            .check(&format!("{cfg:?} grad {}", l.name), &grads[r.clone()], &want.grads[r])
            .unwrap();
    }
}

#[test]
fn gpu_step_matches_reference_model() {
    for (act, lik, m, beta) in [
        (Act::Tanh, Likelihood::Bernoulli, 3, 1.0),
        (Act::LeakyRelu, Likelihood::Gaussian, 2, 0.5),
        (Act::Sigmoid, Likelihood::Bernoulli, 1, 4.0),
        (Act::Relu, Likelihood::Gaussian, 1, 1.0),
    ] {
        let cfg = VaeConfig {
            input_dim: 37,
            hidden: vec![29, 13],
            latent: 5,
            act,
            likelihood: lik,
            beta,
            sigma: 0.7,
            samples: m,
            ..Default::default()
        };
        check(cfg, 11);
    }
}

#[test]
fn gpu_iwae_and_score_steps_match_reference_model() {
    use vaegpu::models::vae::{Gradient, Objective};
    for (act, lik, m, beta, objective, gradient) in [
        (Act::Tanh, Likelihood::Bernoulli, 5, 1.0, Objective::Iwae, Gradient::Pathwise),
        (Act::Relu, Likelihood::Gaussian, 3, 0.5, Objective::Iwae, Gradient::Pathwise),
        (Act::Tanh, Likelihood::Bernoulli, 1, 1.0, Objective::Iwae, Gradient::Pathwise),
        (Act::LeakyRelu, Likelihood::Bernoulli, 3, 1.0, Objective::Elbo, Gradient::Score),
        (Act::Relu, Likelihood::Gaussian, 1, 2.0, Objective::Elbo, Gradient::Score),
    ] {
        let cfg = VaeConfig {
            input_dim: 37,
            hidden: vec![29, 13],
            latent: 5,
            act,
            likelihood: lik,
            beta,
            sigma: 0.7,
            samples: m,
            objective,
            gradient,
            ..Default::default()
        };
        check(cfg, 11);
    }
    // Learned priors (flow, mixture) under the Monte-Carlo ELBO and IWAE.
    use vaegpu::models::latent_prior::{LatentPriorConfig, PriorKind};
    for (kind, objective, m, beta) in [
        (PriorKind::Flow, Objective::Elbo, 2, 1.0),
        (PriorKind::Mog, Objective::Iwae, 3, 0.7),
        (PriorKind::Flow, Objective::Iwae, 4, 1.0),
    ] {
        let cfg = VaeConfig {
            input_dim: 37,
            hidden: vec![29],
            latent: 5,
            act: Act::Tanh,
            samples: m,
            beta,
            objective,
            prior: LatentPriorConfig { kind, flow_layers: 3, flow_hidden: 7, mog_components: 4, ..Default::default() },
            ..Default::default()
        };
        check(cfg, 6);
    }
    // The conv VAE with the IWAE objective.
    let arch = ConvArch { channels: vec![4, 8], strides: vec![2, 2], blocks: 1, res_hidden: 4, fc: vec![6] };
    check(
        VaeConfig { objective: Objective::Iwae, ..conv_cfg([8, 12, 3], arch, Act::Relu, Likelihood::Bernoulli, 3) },
        3,
    );
}

#[test]
fn gpu_learned_variance_steps_match_reference_model() {
    // The Gaussian decoder with a learned log-variance (block dec.logvar, one per pixel or one in all)
    // under the ELBO, IWAE, the score-function gradient and a learned prior, and in the conv VAE.
    use vaegpu::kernels::elbo::DecoderVariance::{self, Global, Pixel};
    use vaegpu::models::latent_prior::{LatentPriorConfig, PriorKind};
    use vaegpu::models::vae::{Gradient, Objective};
    let cases: [(DecoderVariance, Objective, Gradient, PriorKind, usize); 5] = [
        (Pixel, Objective::Elbo, Gradient::Pathwise, PriorKind::Standard, 2),
        (Global, Objective::Elbo, Gradient::Pathwise, PriorKind::Standard, 1),
        (Pixel, Objective::Iwae, Gradient::Pathwise, PriorKind::Standard, 3),
        (Pixel, Objective::Elbo, Gradient::Score, PriorKind::Standard, 2),
        (Global, Objective::Iwae, Gradient::Pathwise, PriorKind::Mog, 2),
    ];
    for (variance, objective, gradient, kind, m) in cases {
        let cfg = VaeConfig {
            input_dim: 37,
            hidden: vec![29, 13],
            latent: 5,
            act: Act::Tanh,
            likelihood: Likelihood::Gaussian,
            beta: 0.8,
            sigma: 0.7,
            samples: m,
            objective,
            gradient,
            variance,
            prior: LatentPriorConfig { kind, mog_components: 4, ..Default::default() },
            ..Default::default()
        };
        check(cfg, 11);
    }
    let arch = ConvArch { channels: vec![3, 5], strides: vec![1, 2], blocks: 1, res_hidden: 0, fc: vec![] };
    check(VaeConfig { variance: Pixel, ..conv_cfg([6, 6, 1], arch, Act::Relu, Likelihood::Gaussian, 2) }, 3);
}

fn conv_cfg(image: [usize; 3], arch: ConvArch, act: Act, lik: Likelihood, m: usize) -> VaeConfig {
    VaeConfig {
        input_dim: image.iter().product(),
        image,
        latent: 3,
        act,
        likelihood: lik,
        beta: 0.7,
        sigma: 0.9,
        samples: m,
        conv: Some(arch),
        ..Default::default()
    }
}

#[test]
fn gpu_conv_vae_step_matches_reference_model() {
    // RGB 8x12, two stride-2 stages with a residual block each and a dense layer.
    let arch = ConvArch { channels: vec![4, 8], strides: vec![2, 2], blocks: 1, res_hidden: 4, fc: vec![6] };
    check(conv_cfg([8, 12, 3], arch, Act::Relu, Likelihood::Bernoulli, 2), 3);
    // Grayscale 6x6, odd channel counts (scalar kernels), a stride-1 stage, two blocks, no dense layer.
    let arch = ConvArch { channels: vec![3, 5], strides: vec![1, 2], blocks: 2, res_hidden: 0, fc: vec![] };
    check(conv_cfg([6, 6, 1], arch, Act::Tanh, Likelihood::Gaussian, 1), 5);
}

/// A conv VAE with 16 and 20 channels and one residual block, on 8×8×3 images: every conv launch of
/// 16+ output channels is one the adapter's conv kernel choice applies to.
fn conv16_cfg() -> VaeConfig {
    let arch = ConvArch { channels: vec![16, 20], strides: vec![2, 2], blocks: 1, res_hidden: 16, fc: vec![] };
    conv_cfg([8, 8, 3], arch, Act::Relu, Likelihood::Bernoulli, 1)
}

/// That conv VAE's step on a device whose conv kernel is forced to `kernel`, with a launch of `entry`.
fn check_conv_kernel(kernel: ConvKernel, entry: &str) {
    let gpu = Gpu::new(&GpuOptions { conv: kernel, ..Default::default() }).unwrap();
    assert_eq!(gpu.conv, kernel);
    check_on(&gpu, conv16_cfg(), 2, &[entry]);
}

/// The conv VAE step with conv_tiled as the adapter's conv kernel (what a GPU may choose at start-up):
/// every layer of 16 or more output channels runs it, forward and input gradient, inside the step.
#[test]
fn gpu_conv_vae_step_with_tiled_conv_matches_reference_model() {
    check_conv_kernel(ConvKernel::Tiled, "conv_tiled[");
}

/// The conv VAE step with the gather kernels as the adapter's conv kernel (a GPU's choice until it has
/// timed the others; on a CPU adapter `--conv gather`): no launch takes its matmul form.
#[test]
fn gpu_conv_vae_step_with_gather_conv_matches_reference_model() {
    check_conv_kernel(ConvKernel::Gather, "conv_gather_v4[");
}

/// The VAE steps with K split over workgroups, as on a GPU (`Gpu::split_k`, here forced on lavapipe):
/// an MLP at 600 rows, whose dense weight gradients split in two, as do the first layer's forward and
/// the last one's input gradient (K = 300 input values: their sums and epilogues in split_finish; the
/// tiled kernel is the matmul choice there, as on GPUs, so every product runs on it); a
/// conv VAE at 40 images, whose first conv's im2col weight gradient (640 pixels) splits in two, the
/// others too short.
#[test]
fn gpu_steps_with_split_k_match_reference_model() {
    let mut gpu = Gpu::new(&GpuOptions::default()).unwrap();
    gpu.split_k = true;
    // The products with an epilogue split where the tiled kernel is the adapter's choice, as on GPUs.
    let own = std::mem::replace(&mut gpu.matmul, MatmulKernel::Tiled);
    let cfg = VaeConfig { input_dim: 300, hidden: vec![29, 13], latent: 5, act: Act::Tanh, ..Default::default() };
    let splits = [
        ".dW matmul_tiled[301x29x600 At /2]",
        "enc.fc1 matmul_tiled[600x29x300 /2]",
        "enc.fc1 split_finish[600x29 /2]",
        "dec.out.dX matmul_tiled[600x29x300 Bt /2]",
        "dec.out.dX split_finish[600x29 /2]",
    ];
    check_on(&gpu, cfg, 600, &splits);
    gpu.matmul = own;
    check_on(&gpu, conv16_cfg(), 40, &[" At /2]"]);
}

/// The VQ-VAE step (padding, residual blocks, assignment, straight-through, commitment, EMA update with
/// restarts or the codebook gradient) against reference::vq::vq_step.
fn check_vq(cfg: vaegpu::models::vq::VqConfig, batch: usize) {
    use vaegpu::models::vq::VqVae;
    use vaegpu::reference::vq::{distances, vq_step};
    let gpu = test_gpu();
    let (step, seed, variance) = (0u32, 9u64, 0.21);
    let m = VqVae::new(&gpu, &cfg, batch, seed).unwrap();
    let params: Vec<f64> = gpu.read_f32(&m.core.params).unwrap().iter().map(|&v| v as f64).collect();
    let [h, w, c] = cfg.image;
    let (top, left, vh, vw) = m.window();
    // Data inside the window, zero padding outside (as the session pads images).
    let x: Vec<f64> = uniform(5, batch * h * w * c, 0.0, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (y, xx) = (i / c / w % h, i / c % w);
            if y >= top && y < top + vh && xx >= left && xx < left + vw {
                v
            } else {
                0.0
            }
        })
        .collect();
    gpu.write(&m.x, 0, &to_f32(&x));
    m.core.set_state(&gpu, seed, step);
    let mut p = vaegpu::gpu::Program::new("vq test step");
    p.extend(m.forward(&gpu, variance as f32).unwrap());
    p.extend(m.backward(&gpu).unwrap());
    gpu.submit(&p, 1);
    let idx: Vec<Vec<u32>> = m.levels.iter().map(|l| gpu.read(&l.idx, 0, l.q.n).unwrap()).collect();
    // The reference's own assignment must agree but for float near-ties; it then follows the GPU's.
    // (A near-tie in the top level changes the bottom level's input, so the check is per level on
    // the reference's z; the GPU's choices are then imposed on every level.)
    let mine = vq_step(&cfg, &params, &x, batch, variance, None, step, seed);
    for (l, lv) in m.levels.iter().enumerate() {
        let code = &params[m.core.layout.layers[lv.tables.embed].offset..][..cfg.codes * cfg.dim];
        for (r, (&a, &b)) in idx[l].iter().zip(&mine.idx[l]).enumerate() {
            let dd = distances(&mine.z[l], code, r, cfg.dim, cfg.codes);
            let (da, db) = (dd[a as usize], dd[b as usize]);
            assert!(a == b || (da - db).abs() <= 1e-5 * (1.0 + db), "{cfg:?}: level {l} vector {r}: code {a} vs {b}");
        }
    }
    let want = vq_step(&cfg, &params, &x, batch, variance, Some(&idx), step, seed);
    let rows = gpu.read_f32(&m.rows).unwrap();
    for (b, &(sse, ds)) in want.rows.iter().enumerate() {
        Tol::new(1e-4, 1e-6).check(&format!("{cfg:?} rows[{b}]"), &rows[2 * b..2 * b + 2], &[sse, ds]).unwrap();
    }
    let grads = gpu.read_f32(&m.core.grads).unwrap();
    let gmax = want.grads.iter().fold(0.0f64, |a, g| a.max(g.abs()));
    let t0 = m.nets.tables[0];
    let trained = if cfg.ema { t0.embed } else { t0.count };
    for l in &m.core.layout.layers[..trained] {
        let r = l.offset..l.offset + l.len();
        Tol::new(1e-3, 1e-4 * gmax)
            .check(&format!("{cfg:?} grad {}", l.name), &grads[r.clone()], &want.grads[r])
            .unwrap();
    }
    if cfg.restart {
        let vqm = gpu.read_f32(&m.vqm).unwrap();
        assert!(vqm[3] > 0.0, "{cfg:?}: the case must reset codes");
    }
    let after = gpu.read_f32(&m.core.params).unwrap();
    let at = |b: usize, len: usize| {
        let o = m.core.layout.layers[b].offset;
        after[o..o + len].to_vec()
    };
    assert_eq!(want.ema.len(), if cfg.ema { m.levels.len() } else { 0 });
    for (ema, lv) in want.ema.iter().zip(&m.levels) {
        let (k, d, t) = (cfg.codes, cfg.dim, lv.tables);
        Tol::new(1e-5, 1e-6).check("ema count", &at(t.count, k), &ema.count).unwrap();
        Tol::new(1e-4, 1e-5).check("ema sum", &at(t.sum, k * d), &ema.sum).unwrap();
        Tol::new(1e-3, 1e-5).check("ema code", &at(t.embed, k * d), &ema.code).unwrap();
    }
}

#[test]
fn vq_step_matches_reference_model() {
    use vaegpu::models::vq::VqConfig;
    // Grayscale 6x6 padded to 8x8, one residual block, gradient-trained codebook, D = 3 (scalar paths).
    let gray = VqConfig {
        image: [8, 8, 1],
        valid: [6, 6],
        channels: vec![3, 5],
        blocks: 1,
        res_hidden: 2,
        dim: 3,
        codes: 7,
        ema: false,
        ..VqConfig::default()
    };
    check_vq(gray, 3);
    // RGB 8x12 without padding or blocks, EMA codebook with restarts (threshold above every count), D = 4.
    let rgb = VqConfig {
        image: [8, 12, 3],
        valid: [8, 12],
        channels: vec![4, 6],
        blocks: 0,
        dim: 4,
        codes: 5,
        restart: true,
        restart_threshold: 1.0,
        decay: 0.6,
        ..VqConfig::default()
    };
    check_vq(rgb, 2);
}

#[test]
fn vq_vae_2_step_matches_reference_model() {
    use vaegpu::models::vq::VqConfig;
    // Two levels on 16x16 (bottom grid 4x4, top 2x2) from 14x14 data, one residual block per stack,
    // EMA codebooks with restarts in both levels.
    let ema = VqConfig {
        image: [16, 16, 1],
        valid: [14, 14],
        levels: 2,
        channels: vec![3, 4],
        blocks: 1,
        res_hidden: 2,
        dim: 3,
        codes: 6,
        restart: true,
        decay: 0.7,
        ..VqConfig::default()
    };
    check_vq(ema, 2);
    // RGB 8x8 without blocks: gradient-trained codebooks, D = 4 (vec4 paths).
    let grad = VqConfig {
        image: [8, 8, 3],
        valid: [8, 8],
        levels: 2,
        channels: vec![4, 4],
        blocks: 0,
        dim: 4,
        codes: 5,
        ema: false,
        ..VqConfig::default()
    };
    check_vq(grad, 3);
}

/// A conv VAE whose first conv's input (8×16×16×8 floats, 64 KiB: an aliased buffer on lavapipe) and
/// channels let its forward and weight gradient read their im2col matrix in place from the image
/// (matmul_sgtex's IM2COL, the forward's 512 rows) on lavapipe, and its last transposed conv's weight
/// gradient the matrix of its 64 KiB output gradient (IM2COL_B); its other convs' smaller images
/// gather as before (and their weight gradients gather their own matrices: a layer that may read its
/// matrix in place shares none).
#[test]
fn gpu_conv_vae_step_with_implicit_im2col_matches_reference_model() {
    let arch = ConvArch { channels: vec![8, 16], strides: vec![2, 2], blocks: 1, res_hidden: 8, fc: vec![] };
    let gpu = test_gpu();
    let entries: &[&str] =
        if gpu.alias_operands { &["matmul_sgtex[im2col 512x", "matmul_sgtex[im2col B ", " im2col["] } else { &[] };
    check_on(&gpu, conv_cfg([16, 16, 8], arch, Act::Relu, Likelihood::Bernoulli, 1), 8, entries);
}
