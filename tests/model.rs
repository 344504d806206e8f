//! The GPU model's whole step against the f64 reference model (reference/vae.rs) for configurations
//! the fixture does not cover: two hidden layers, tanh / leaky ReLU / sigmoid, M = 3, Gaussian
//! likelihood, β ≠ 1, odd sizes; and the conv VAE (RGB and grayscale, strides 1 and 2, residual blocks,
//! dense layers) the same way.

use vaegpu::kernels::elbo::Likelihood;
use vaegpu::kernels::optim::Adam;
use vaegpu::kernels::Act;
use vaegpu::models::vae::{ConvArch, Vae, VaeConfig};
use vaegpu::reference::vae::vae_step;
use vaegpu::testing::{normals, test_gpu, to_f32, uniform, Tol};

fn check(cfg: VaeConfig, batch: usize) {
    let gpu = test_gpu();
    let layout = cfg.layout();
    let params: Vec<f64> = layout.init(3).iter().map(|&v| v as f64).collect();
    let x = uniform(5, batch * cfg.input_dim, 0.0, 1.0);
    let eps = normals(6, cfg.samples * batch * cfg.latent);
    let want = vae_step(&cfg, &layout, &params, &x, &eps, batch);

    let vae = Vae::new(&gpu, &cfg, batch).unwrap();
    gpu.write(&vae.core.params, 0, &to_f32(&params));
    gpu.write(&vae.x, 0, &to_f32(&x));
    gpu.write(&vae.eps, 0, &to_f32(&eps));
    vae.core.set_state(&gpu, 0, 0);
    // lr = 0 keeps the parameters, so the gradients read back are those of `params`.
    let adam = Adam { lr: 0.0, ..Adam::default() };
    gpu.submit(&vae.step_program_given(&gpu, &adam, 0.0).unwrap(), 1);
    let grads = gpu.read_f32(&vae.core.grads).unwrap();
    let head = gpu.read_f32(vae.head()).unwrap();
    let rows = gpu.read_f32(&vae.rows).unwrap();
    let loss: f64 = rows.chunks(2).map(|r| r[0] as f64 + cfg.beta as f64 * r[1] as f64).sum::<f64>() / batch as f64;
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
