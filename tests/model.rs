//! The GPU model's whole step against the f64 reference model (reference/vae.rs) for configurations
//! the fixture does not cover: two hidden layers, tanh / leaky ReLU / sigmoid, M = 3, Gaussian
//! likelihood, β ≠ 1, odd sizes.

use vaegpu::kernels::elbo::Likelihood;
use vaegpu::kernels::optim::Adam;
use vaegpu::kernels::Act;
use vaegpu::models::vae::{Vae, VaeConfig};
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
    gpu.write(&vae.params, 0, &to_f32(&params));
    gpu.write(&vae.x, 0, &to_f32(&x));
    gpu.write(&vae.eps, 0, &to_f32(&eps));
    vae.set_state(&gpu, 0, 0);
    // lr = 0 keeps the parameters, so the gradients read back are those of `params`.
    let adam = Adam { lr: 0.0, ..Adam::default() };
    gpu.submit(&vae.step_program_given(&gpu, &adam, 0.0).unwrap(), 1);
    let grads = gpu.read_f32(&vae.grads).unwrap();
    let head = gpu.read_f32(vae.enc_out.last().unwrap()).unwrap();
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
        };
        check(cfg, 11);
    }
}
