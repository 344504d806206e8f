//! The GPU prior (models::prior::Prior) against the f64 reference step (reference::prior::prior_step):
//! logits, per-image sums and every parameter gradient, with and without the conditioning net, on
//! awkward sizes (odd channel counts take the scalar conv paths, multiples of 4 the vec4 ones), logits and
//! gradients poisoned with NaN beforehand. Then whole training steps: masked taps stay exactly zero.

use vaegpu::gpu::Program;
use vaegpu::models::prior::{Prior, PriorConfig};
use vaegpu::models::vae::GpuDataset;
use vaegpu::reference::prior::prior_step;
use vaegpu::testing::{test_gpu, to_f32, to_f64, uniform, Tol};

fn codes(seed: u64, n: usize, k: usize) -> Vec<u32> {
    uniform(seed, n, 0.0, k as f64).iter().map(|&v| (v as usize).min(k - 1) as u32).collect()
}

fn check(cfg: PriorConfig, batch: usize) {
    let gpu = test_gpu();
    let (k, d) = (cfg.codes, cfg.dim);
    let book = to_f32(&uniform(1, k * d, -1.0, 1.0));
    let top_book = to_f32(&uniform(2, k * d, -1.0, 1.0));
    let cond_book = cfg.cond.map(|_| &top_book[..]);
    let m = Prior::new(&gpu, &cfg, batch, 7, &book, cond_book).unwrap();
    let p = cfg.positions();
    let idx = codes(3, batch * p, k);
    gpu.write(&m.idx, 0, &idx);
    let top_idx = cfg.cond.map(|[h, w]| codes(4, batch * h * w, k));
    if let (Some(c), Some(t)) = (&m.cond, &top_idx) {
        gpu.write(&c.idx, 0, t);
    }
    let nan = |buf: &wgpu::Buffer| gpu.write(buf, 0, &vec![f32::NAN; buf.size() as usize / 4]);
    nan(m.logits());
    nan(&m.core.grads);
    nan(&m.rows);
    let mut prog = Program::new("prior test step");
    prog.extend(m.forward(&gpu).unwrap());
    prog.extend(m.loss(&gpu).unwrap());
    prog.extend(m.backward(&gpu).unwrap());
    gpu.submit(&prog, 1);

    let params = to_f64(&gpu.read_f32(&m.core.params).unwrap());
    let cond = top_idx.as_ref().map(|t| (to_f64(&top_book), &t[..]));
    let want = prior_step(&cfg, &params, &to_f64(&book), &idx, cond.as_ref().map(|(b, t)| (&b[..], *t)), batch);
    let logits = gpu.read(m.logits(), 0, batch * p * k).unwrap();
    // f32 sums of up to k·k·C products of O(1) values: 1e-4 relative, 1e-5 absolute.
    Tol::new(1e-4, 1e-5).check(&format!("{cfg:?} logits"), &logits, &want.logits).unwrap();
    let rows = gpu.read_f32(&m.rows).unwrap();
    let nll: Vec<f64> = want.rows.iter().map(|r| r.0).collect();
    let got: Vec<f32> = rows.chunks(2).map(|r| r[0]).collect();
    Tol::new(1e-4, 1e-5).check("nll per map", &got, &nll).unwrap();
    let grads = gpu.read_f32(&m.core.grads).unwrap();
    let gmax = want.grads.iter().fold(0.0f64, |a, g| a.max(g.abs()));
    for l in &m.core.layout.layers {
        let r = l.offset..l.offset + l.len();
        // Gradients sum over B·P positions through several layers: 1e-3 relative, plus 1e-4 of the
        // largest gradient for the entries that cancel.
        Tol::new(1e-3, 1e-4 * gmax)
            .check(&format!("{cfg:?} grad {}", l.name), &grads[r.clone()], &want.grads[r])
            .unwrap();
    }
    for (i, (&g, &mk)) in grads.iter().zip(&m.nets.mask).enumerate() {
        assert!(mk == 1.0 || g == 0.0, "masked gradient {i} is {g}");
    }

    // Three training steps over a small dataset of maps: finite, and the masked taps stay zero. (The
    // alignment gaps between blocks are never written: clear the poison there, as a new buffer is.)
    gpu.write(&m.core.grads, 0, &vec![0f32; grads.len()]);
    let n_items = 2 * batch + 1;
    let data = GpuDataset::upload_words(&gpu, "maps", &codes(5, n_items * p, k), n_items, p).unwrap();
    let cdata = cfg
        .cond
        .map(|[h, w]| GpuDataset::upload_words(&gpu, "top", &codes(6, n_items * h * w, k), n_items, h * w).unwrap());
    let adam = vaegpu::kernels::optim::Adam { lr: 1e-2, ..Default::default() };
    let step = m.train_program(&gpu, &data, cdata.as_ref(), &adam, 0.0).unwrap();
    m.core.set_state(&gpu, 0, 0);
    gpu.submit(&step, 3);
    let after = gpu.read_f32(&m.core.params).unwrap();
    for (i, (&v, &mk)) in after.iter().zip(&m.nets.mask).enumerate() {
        assert!(v.is_finite(), "param {i} is {v}");
        assert!(mk == 1.0 || v == 0.0, "masked param {i} moved to {v}");
    }
    let moved = after.iter().zip(&params).filter(|(a, b)| (**a as f64 - **b).abs() > 0.0).count();
    assert!(moved > after.len() / 4, "only {moved} params moved");
    let met = m.core.read_metrics(&gpu).unwrap();
    assert_eq!(met.train.rows, n_items as f64, "rows counted (the third batch holds one map)");
    assert!(met.train.rec.is_finite() && met.train.rec > 0.0);
}

#[test]
fn prior_step_matches_reference() {
    // Odd sizes: 3x5 maps, 3 channels (scalar conv paths), 7 codes of 5 dims, 3 layers, kernel 3.
    let cfg = PriorConfig { grid: [3, 5], codes: 7, dim: 5, cond: None, channels: 3, layers: 3, kernel: 3, hidden: 6 };
    check(cfg, 3);
}

#[test]
fn conditioned_prior_step_matches_reference() {
    // 4x6 maps conditioned on 2x3 top maps, 4 channels (vec4 paths), kernel 5, 2 layers.
    let cfg = PriorConfig {
        grid: [4, 6],
        codes: 6,
        dim: 4,
        cond: Some([2, 3]),
        channels: 4,
        layers: 2,
        kernel: 5,
        hidden: 8,
    };
    check(cfg, 2);
}
