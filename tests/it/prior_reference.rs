//! The f64 reference of one prior step (reference::prior::prior_step): its gradient against central
//! finite differences of its loss, the causality of the masked stacks (the logits at a position never
//! see that code or any later one, and images never see each other), the conditioning path, and the
//! masked taps' zero gradients. CPU only.
//!
//! Finite differences: h = 1e-6; a coordinate passes when |fd − analytic| ≤ 1e-8 (absolute: the loss is
//! a mean of O(1) nats, so central differences carry ~ε·|L|/h ≈ 1e-9 of rounding) or
//! ≤ 1e-6·max(|fd|, |analytic|) (relative; the O(h²) truncation error is far below that).

use vaegpu::models::prior::{PriorConfig, PriorNets};
use vaegpu::nn::Op;
use vaegpu::reference::conv::conv_forward;
use vaegpu::reference::prior::{prior_step, PriorStepOut};
use vaegpu::reference::sample::{philox, seed_key};
use vaegpu::testing::uniform;

const H: f64 = 1e-6;
const REL: f64 = 1e-6;
const ABS: f64 = 1e-8;

/// A tiny prior, optionally conditioned on a half-size map.
fn config(cond: bool) -> PriorConfig {
    let cfg = PriorConfig {
        grid: if cond { [4, 4] } else { [3, 4] },
        codes: 5,
        dim: 2,
        cond: cond.then_some([2, 2]),
        channels: 2,
        layers: 2,
        kernel: 3,
        hidden: 3,
    };
    cfg.validate().unwrap();
    cfg
}

/// Everything a step needs, seeded: masked params, codebooks and code maps.
struct Case {
    cfg: PriorConfig,
    nets: PriorNets,
    params: Vec<f64>,
    codebook: Vec<f64>,
    idx: Vec<u32>,
    top_codebook: Vec<f64>,
    top_idx: Vec<u32>,
    batch: usize,
}

/// Seeded codes < k.
fn codes(seed: u64, n: usize, k: usize) -> Vec<u32> {
    (0..n as u32).map(|i| philox([i, 0, 0, 0], seed_key(seed))[0] % k as u32).collect()
}

impl Case {
    fn new(cond: bool, seed: u64) -> Case {
        let cfg = config(cond);
        let nets = cfg.nets().unwrap();
        let batch = 2;
        let params: Vec<f64> =
            uniform(seed, nets.layout.total, -0.8, 0.8).iter().zip(&nets.mask).map(|(p, m)| p * *m as f64).collect();
        let (k, d) = (cfg.codes, cfg.dim);
        let codebook = uniform(seed + 1, k * d, -1.0, 1.0);
        let idx = codes(seed + 2, batch * cfg.positions(), k);
        let top_codebook = uniform(seed + 3, k * d, -1.0, 1.0);
        let top_idx = cfg.cond.map_or(Vec::new(), |[h, w]| codes(seed + 4, batch * h * w, k));
        Case { cfg, nets, params, codebook, idx, top_codebook, top_idx, batch }
    }

    fn step_with(&self, params: &[f64], idx: &[u32], top_idx: &[u32]) -> PriorStepOut {
        let cond = self.cfg.cond.map(|_| (&self.top_codebook[..], top_idx));
        prior_step(&self.cfg, params, &self.codebook, idx, cond, self.batch)
    }

    fn step(&self) -> PriorStepOut {
        self.step_with(&self.params, &self.idx, &self.top_idx)
    }

    /// Logits [K] of image b at position p.
    fn at<'a>(&self, logits: &'a [f64], b: usize, p: usize) -> &'a [f64] {
        let k = self.cfg.codes;
        &logits[(b * self.cfg.positions() + p) * k..][..k]
    }

    /// The smallest |pre-activation| of the head's hidden relu (finite differences are only valid away
    /// from its kink).
    fn head_kink_clearance(&self) -> f64 {
        let hs = self.head_input();
        let layer = &self.nets.head.layers[0];
        let Op::Conv { block, geom } = &layer.op else { unreachable!() };
        let b = &self.nets.layout.layers[*block];
        let s = layer.input;
        let pre = conv_forward(
            geom,
            &hs,
            &self.params[b.offset..b.offset + b.len()],
            self.batch,
            s.h,
            s.w,
            vaegpu::kernels::Act::Identity,
            false,
            None,
        );
        pre.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()))
    }

    /// h_{L−1}, the head's input (prior_step does not return it), recomputed with the same ops.
    fn head_input(&self) -> Vec<f64> {
        use vaegpu::reference::net::{net_forward, net_forward_add};
        use vaegpu::reference::prior::{code_lookup, gate_forward};
        let (k, d, c) = (self.cfg.codes, self.cfg.dim, self.cfg.channels);
        let (layout, p, b) = (&self.nets.layout, &self.params[..], self.batch);
        let n = b * self.cfg.positions();
        let last = |a: vaegpu::reference::net::Acts| a.outs.last().unwrap().clone();
        let mut e = vec![0.0; n * d];
        code_lookup(&self.idx, &self.codebook, k, d, None, &mut e);
        let cond = self.nets.cond.as_ref().map(|net| {
            let mut et = vec![0.0; self.top_idx.len() * d];
            code_lookup(&self.top_idx, &self.top_codebook, k, d, None, &mut et);
            last(net_forward(net, layout, p, &et, b))
        });
        let (mut vin, mut hin) = (e.clone(), e);
        for (l, g) in self.nets.layers.iter().enumerate() {
            let add = if l == 0 { cond.as_deref() } else { None };
            let v_pre = last(net_forward_add(&g.conv_v, layout, p, &vin, b, add));
            let u = last(net_forward(&g.v2h, layout, p, &v_pre, b));
            let h_pre = last(net_forward_add(&g.conv_h, layout, p, &hin, b, Some(&u)));
            let gated = gate_forward(&h_pre, n, c);
            let skip = (l > 0).then_some(&hin[..]);
            let h = last(net_forward_add(&g.res, layout, p, &gated, b, skip));
            (vin, hin) = (gate_forward(&v_pre, n, c), h);
        }
        hin
    }
}

/// Central difference of the step's loss along parameter i.
fn central(case: &Case, i: usize) -> f64 {
    let mut p = case.params.clone();
    p[i] = case.params[i] + H;
    let fp = case.step_with(&p, &case.idx, &case.top_idx).loss;
    p[i] = case.params[i] - H;
    let fm = case.step_with(&p, &case.idx, &case.top_idx).loss;
    (fp - fm) / (2.0 * H)
}

fn check_gradient(cond: bool, seed: u64) {
    let case = Case::new(cond, seed);
    let clearance = case.head_kink_clearance();
    assert!(clearance > 1e-4, "seed {seed}: a head pre-activation within {clearance:e} of the relu kink");
    let out = case.step();
    let mut bad = Vec::new();
    let mut checked = 0;
    // Every unmasked parameter of every block (not the alignment padding between blocks).
    let layers = &case.nets.layout.layers;
    for i in layers.iter().flat_map(|l| l.offset..l.offset + l.len()).filter(|&i| case.nets.mask[i] != 0.0) {
        checked += 1;
        let fd = central(&case, i);
        let an = out.grads[i];
        let err = (fd - an).abs();
        if !(err <= ABS || err <= REL * fd.abs().max(an.abs())) {
            let name = layers.iter().find(|l| i >= l.offset && i < l.offset + l.len()).unwrap();
            bad.push(format!("  [{i}] {} fd {fd:.12e} analytic {an:.12e} (err {err:.3e})", name.name));
        }
    }
    // 193 parameters without cond, 325 with it.
    assert!(checked >= 190, "only {checked} parameters checked");
    assert!(bad.is_empty(), "cond={cond}: {} of {checked} parameters fail:\n{}", bad.len(), bad.join("\n"));
    // The gradient is not trivially zero in any block.
    for l in &case.nets.layout.layers {
        assert!(out.grads[l.offset..l.offset + l.len()].iter().any(|g| *g != 0.0), "{}: zero gradient", l.name);
    }
}

#[test]
fn prior_step_gradient_matches_finite_differences() {
    check_gradient(false, 11);
}

#[test]
fn prior_step_gradient_matches_finite_differences_with_cond() {
    check_gradient(true, 23);
}

#[test]
fn prior_step_loss_and_rows_agree() {
    for cond in [false, true] {
        let case = Case::new(cond, 31);
        let out = case.step();
        let (n, k) = (case.batch * case.cfg.positions(), case.cfg.codes);
        assert_eq!(out.logits.len(), n * k);
        assert_eq!(out.rows.len(), case.batch);
        let total: f64 = out.rows.iter().map(|r| r.0).sum();
        assert!((out.loss - total / n as f64).abs() < 1e-12, "loss {} vs rows {}", out.loss, total / n as f64);
        // Per image: Σ −log softmax[idx] recomputed from the logits; the correct count is an integer.
        for (b, &(nll, correct)) in out.rows.iter().enumerate() {
            let mut want = 0.0;
            for p in 0..case.cfg.positions() {
                let l = case.at(&out.logits, b, p);
                let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                want += lse - l[case.idx[b * case.cfg.positions() + p] as usize];
            }
            assert!((nll - want).abs() < 1e-10, "image {b}: nll {nll} vs {want}");
            assert!(correct.fract() == 0.0 && correct >= 0.0 && correct <= case.cfg.positions() as f64);
        }
    }
}

/// Changing the code at q of image 0 leaves the logits at p ≤ q of every image exactly as they were
/// (masked taps multiply the changed values by exact zeros), and changes the logits of its right
/// neighbour and of the position below it.
#[test]
fn prior_step_is_causal() {
    for cond in [false, true] {
        let case = Case::new(cond, 41);
        let base = case.step().logits;
        let np = case.cfg.positions();
        for q in 0..np {
            let mut idx = case.idx.clone();
            idx[q] = (idx[q] + 1 + q as u32 % 3) % case.cfg.codes as u32;
            assert_ne!(idx[q], case.idx[q]);
            let got = case.step_with(&case.params, &idx, &case.top_idx).logits;
            for b in 0..case.batch {
                let upto = if b == 0 { q + 1 } else { np };
                for p in 0..upto {
                    assert_eq!(
                        case.at(&got, b, p),
                        case.at(&base, b, p),
                        "cond={cond}: code {q} changed image {b} at {p}"
                    );
                }
            }
            // The right neighbour (horizontal stack) and the one below (vertical stack) always see q;
            // (i + 1, 0) sees (i, W − 1) only with a receptive field that wide.
            let [gh, gw] = case.cfg.grid;
            let (i, j) = (q / gw, q % gw);
            let later: Vec<usize> =
                [(j + 1 < gw).then_some(q + 1), (i + 1 < gh).then_some(q + gw)].into_iter().flatten().collect();
            assert_eq!(later.is_empty(), q + 1 == np);
            for p in later {
                assert_ne!(case.at(&got, 0, p), case.at(&base, 0, p), "cond={cond}: code {q} not seen at {p}");
            }
        }
    }
}

/// Image 1's logits do not depend on image 0's codes (or its conditioning codes).
#[test]
fn prior_step_images_are_independent() {
    for cond in [false, true] {
        let case = Case::new(cond, 53);
        let base = case.step().logits;
        let np = case.cfg.positions();
        let k = case.cfg.codes as u32;
        let mut idx = case.idx.clone();
        for v in &mut idx[..np] {
            *v = (*v + 2) % k;
        }
        let mut top = case.top_idx.clone();
        let nt = top.len() / case.batch;
        for v in &mut top[..nt] {
            *v = (*v + 1) % k;
        }
        let got = case.step_with(&case.params, &idx, &top).logits;
        let half = np * case.cfg.codes;
        assert_eq!(got[half..], base[half..], "cond={cond}: image 1 changed");
        assert_ne!(got[..half], base[..half], "cond={cond}: image 0 unchanged");
    }
}

/// Changing one conditioning code changes image 0's logits (and not image 1's).
#[test]
fn prior_step_cond_is_wired() {
    let case = Case::new(true, 61);
    let base = case.step().logits;
    let nt = case.top_idx.len() / case.batch;
    let half = case.cfg.positions() * case.cfg.codes;
    for t in 0..nt {
        let mut top = case.top_idx.clone();
        top[t] = (top[t] + 1) % case.cfg.codes as u32;
        let got = case.step_with(&case.params, &case.idx, &top).logits;
        assert_ne!(got[..half], base[..half], "cond code {t} changed nothing");
        assert_eq!(got[half..], base[half..], "cond code {t} of image 0 changed image 1");
    }
}

#[test]
fn prior_step_masked_gradients_are_zero() {
    for cond in [false, true] {
        let case = Case::new(cond, 71);
        // The raw parameters (masked taps non-zero too): the returned gradient is still masked.
        let raw = uniform(72, case.nets.layout.total, -0.8, 0.8);
        for params in [&case.params, &raw] {
            let out = case.step_with(params, &case.idx, &case.top_idx);
            let masked = case.nets.mask.iter().filter(|m| **m == 0.0).count();
            assert!(masked > 0);
            for (i, m) in case.nets.mask.iter().enumerate() {
                if *m == 0.0 {
                    assert_eq!(out.grads[i], 0.0, "cond={cond}: masked parameter {i}");
                }
            }
        }
    }
}
