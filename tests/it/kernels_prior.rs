//! shaders/prior.wgsl against src/reference/prior.rs on awkward shapes (C, K and P not multiples of the
//! workgroup, K from 2 to 65536), outputs poisoned with NaN (indices with 0xffffffff) first; the
//! reference gradients against central finite differences; extreme logits; the position filter of the
//! lookup; the categorical draws index by index (up to near ties of the CDF) and in distribution.

use vaegpu::gpu::{Gpu, GpuError, View};
use vaegpu::kernels::prior::{self as k, Categorical, Rows};
use vaegpu::reference::prior as r;
use vaegpu::reference::sample::seed_key;
use vaegpu::testing::{poisoned, to_f32, to_f64, uniform, Tol};

fn gpu() -> &'static Gpu {
    vaegpu::testing::shared_gpu()
}

use vaegpu::testing::f32_round as f32r;

fn state(step: u32, seed: u64) -> wgpu::Buffer {
    gpu().upload("state", &vaegpu::testing::state_words(step, seed))
}

fn read_u32(b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    gpu().read(b, 0, n).unwrap()
}

fn up(v: &[f64]) -> wgpu::Buffer {
    gpu().upload("in", &to_f32(v))
}

/// Central differences of f at x, step h.
fn central(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

/// Gate inputs in [−4, 4] with a few saturated ones (±100, ±30) mixed in.
fn gate_pre(seed: u64, n: usize, c: usize) -> Vec<f64> {
    let mut pre = f32r(&uniform(seed, n * 2 * c, -4.0, 4.0));
    for (i, v) in [100.0, -100.0, 30.0, -30.0].into_iter().enumerate() {
        let at = (i * 7919 + 3) % pre.len();
        pre[at] = v;
    }
    pre
}

const GATES: [(usize, usize); 5] = [(37, 1), (130, 3), (37, 64), (5, 513), (1, 2)];

#[test]
fn gate_forward_matches_reference() {
    let g = gpu();
    for (si, &(n, c)) in GATES.iter().enumerate() {
        let pre = gate_pre(si as u64, n, c);
        let pb = up(&pre);
        let y = poisoned(g, "y", n * c);
        g.run(&k::gate_forward(g, "t", n, c, (&pb).into(), (&y).into()).unwrap()).unwrap();
        // tanh as (1 − e^{−2|a|})/(1 + e^{−2|a|}) in f32: a few ulps of 1 absolute, not relative near 0.
        Tol::new(1e-5, 1e-6)
            .check(&format!("y [{n}, {c}]"), &g.read_f32(&y).unwrap(), &r::gate_forward(&pre, n, c))
            .unwrap();
    }
}

#[test]
fn gate_backward_matches_reference_and_stays_finite_when_saturated() {
    let g = gpu();
    for (si, &(n, c)) in GATES.iter().enumerate() {
        let pre = gate_pre(10 + si as u64, n, c);
        let dy = f32r(&uniform(20 + si as u64, n * c, -1.0, 1.0));
        let (pb, db) = (up(&pre), up(&dy));
        let dpre = poisoned(g, "dpre", n * 2 * c);
        g.run(&k::gate_backward(g, "t", n, c, (&pb).into(), (&db).into(), (&dpre).into()).unwrap()).unwrap();
        let got = g.read_f32(&dpre).unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "[{n}, {c}]: non-finite gradient");
        // Products of three f32 factors, each within a few ulps (absolute for tanh): as the forward.
        Tol::new(1e-5, 1e-6).check(&format!("dpre [{n}, {c}]"), &got, &r::gate_backward(&pre, &dy, n, c)).unwrap();
    }
}

#[test]
fn gate_backward_reference_matches_finite_differences() {
    let (n, c) = (3, 4);
    let pre = uniform(30, n * 2 * c, -2.0, 2.0);
    let dy = uniform(31, n * c, -1.0, 1.0);
    let loss = |p: &[f64]| r::gate_forward(p, n, c).iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
    // Step 1e-6 in f64: truncation ~1e-12, rounding ~1e-10.
    Tol::new(1e-6, 1e-8).check64("gate fd", &r::gate_backward(&pre, &dy, n, c), &central(loss, &pre, 1e-6)).unwrap();
}

struct CeRun {
    dlogits: Vec<f32>,
    stats: Vec<f32>,
}

fn run_ce(n: usize, kk: usize, scale: f32, logits: &[f64], target: &[u32]) -> CeRun {
    run_ce_on(gpu(), n, kk, scale, logits, target)
}

fn run_ce_on(g: &Gpu, n: usize, kk: usize, scale: f32, logits: &[f64], target: &[u32]) -> CeRun {
    let (lb, tb) = (g.upload("logits", &to_f32(logits)), g.upload("target", target));
    let (dl, st) = (poisoned(g, "dlogits", n * kk), poisoned(g, "stats", 2 * n));
    let l = k::ce_forward(g, "t", n, kk, scale, (&lb).into(), (&tb).into(), (&dl).into(), (&st).into()).unwrap();
    g.run(&l).unwrap();
    CeRun { dlogits: g.read_f32(&dl).unwrap(), stats: g.read_f32(&st).unwrap() }
}

fn targets(n: usize, kk: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + i * i * 3 + 1) % kk) as u32).collect()
}

/// The GPU's cross-entropy against the reference: dlogits, nll, correct.
fn check_ce(what: &str, n: usize, kk: usize, logits: &[f64], target: &[u32], nll_tol: Tol) {
    check_ce_on(gpu(), what, n, kk, logits, target, nll_tol);
}

fn check_ce_on(g: &Gpu, what: &str, n: usize, kk: usize, logits: &[f64], target: &[u32], nll_tol: Tol) {
    let scale = 1.0 / n as f64;
    let got = run_ce_on(g, n, kk, scale as f32, logits, target);
    let want = r::ce(logits, target, n, kk, scale);
    // Softmax from f32 exps of max-subtracted logits over a tree sum: a few ulps relative; the absolute
    // part covers the cancellation in q − 1 (scale·1e-7) and terms that underflow.
    Tol::new(2e-5, 1e-8).check(&format!("{what} dlogits"), &got.dlogits, &want.dlogits).unwrap();
    let nll: Vec<f32> = got.stats.iter().step_by(2).copied().collect();
    let correct: Vec<f64> = got.stats.iter().skip(1).step_by(2).map(|&v| v as f64).collect();
    nll_tol.check(&format!("{what} nll"), &nll, &want.nll).unwrap();
    assert_eq!(correct, want.correct, "{what}: correct");
}

#[test]
fn ce_matches_reference_on_awkward_sizes() {
    let shapes = [(37, 2), (130, 5), (37, 70), (20, 512), (13, 513), (9, 1000), (2, 4099), (2, 65536)];
    for (si, &(n, kk)) in shapes.iter().enumerate() {
        let logits = f32r(&uniform(40 + si as u64, n * kk, -3.0, 3.0));
        // Both widths of the row reduction (`Gpu::row_lanes`), in turns.
        let g = if si % 2 == 0 { gpu() } else { vaegpu::testing::shared_gpu_other_rows() };
        // nll = (m − l_t) + log S with m − l_t ≤ 6 and log S ≤ log K: a few ulps of 10 absolute.
        check_ce_on(g, &format!("[{n}, {kk}]"), n, kk, &logits, &targets(n, kk), Tol::new(1e-5, 1e-5));
    }
}

#[test]
fn ce_with_extreme_logits_stays_finite_and_matches() {
    for (si, &(n, kk)) in [(37, 70), (13, 513), (5, 3)].iter().enumerate() {
        let mut logits = f32r(&uniform(50 + si as u64, n * kk, -80.0, 80.0));
        // Row 0: all equal (argmax 0); row 1: the target is the max.
        logits[..kk].fill(80.0);
        let mut target = targets(n, kk);
        target[0] = 0;
        let row1 = &logits[kk..2 * kk];
        target[1] = (0..kk).fold(0, |b, i| if row1[i] > row1[b] { i } else { b }) as u32;
        let got = run_ce(n, kk, 1.0, &logits, &target);
        assert!(got.dlogits.iter().chain(&got.stats).all(|v| v.is_finite()), "[{n}, {kk}]: non-finite");
        assert_eq!((got.stats[1], got.stats[3]), (1.0, 1.0), "[{n}, {kk}]: rows 0 and 1 are correct");
        // m − l_t up to 160: f32 subtraction and log S carry ulp(160) ≈ 1.5e-5.
        check_ce(&format!("extreme [{n}, {kk}]"), n, kk, &logits, &target, Tol::new(1e-6, 5e-5));
    }
}

#[test]
fn ce_reference_gradient_matches_finite_differences() {
    let (n, kk) = (3, 5);
    let logits = uniform(60, n * kk, -2.0, 2.0);
    let target = targets(n, kk);
    let loss = |l: &[f64]| r::ce(l, &target, n, kk, 1.0).nll.iter().sum::<f64>();
    let want = central(loss, &logits, 1e-6);
    // Step 1e-6 in f64: truncation ~1e-12, rounding ~1e-10.
    Tol::new(1e-6, 1e-8).check64("ce fd", &r::ce(&logits, &target, n, kk, 1.0).dlogits, &want).unwrap();
}

#[test]
fn ce_marks_a_target_out_of_range_and_repeats_bit_for_bit() {
    let (n, kk) = (6, 70);
    let logits = f32r(&uniform(61, n * kk, -3.0, 3.0));
    let mut target = targets(n, kk);
    target[4] = kk as u32;
    let a = run_ce(n, kk, 0.5, &logits, &target);
    assert!(a.stats[8].is_nan() && a.stats[9] == 0.0, "row 4: {:?}", &a.stats[8..10]);
    assert!(a.stats.iter().enumerate().all(|(i, v)| i == 8 || v.is_finite()));
    let b = run_ce(n, kk, 0.5, &logits, &target);
    assert_eq!(bytemuck_bits(&a.dlogits), bytemuck_bits(&b.dlogits));
    assert_eq!(bytemuck_bits(&a.stats), bytemuck_bits(&b.stats));
}

fn bytemuck_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn ce_rows_sum_each_image() {
    let shapes = [(7usize, 37usize, 5usize), (3, 300, 70), (1, 1, 2)];
    // Each shape on both widths of the row reductions (`Gpu::row_lanes`).
    let other = vaegpu::testing::shared_gpu_other_rows();
    for (&(batch, per_row, kk), g) in shapes.iter().flat_map(|s| [(s, gpu()), (s, other)]) {
        let n = batch * per_row;
        let logits = f32r(&uniform(70 + per_row as u64, n * kk, -3.0, 3.0));
        let (lb, tb) = (g.upload("logits", &to_f32(&logits)), g.upload("target", &targets(n, kk)));
        let (dl, st, rows) = (poisoned(g, "dl", n * kk), poisoned(g, "stats", 2 * n), poisoned(g, "rows", 2 * batch));
        g.run(&k::ce_forward(g, "t", n, kk, 1.0, (&lb).into(), (&tb).into(), (&dl).into(), (&st).into()).unwrap())
            .unwrap();
        g.run(&k::ce_rows(g, "t", batch, per_row, (&st).into(), (&rows).into()).unwrap()).unwrap();
        let stats = to_f64(&g.read_f32(&st).unwrap());
        let nll: Vec<f64> = stats.iter().step_by(2).copied().collect();
        let cor: Vec<f64> = stats.iter().skip(1).step_by(2).copied().collect();
        let want = r::ce_rows(&nll, &cor, batch, per_row);
        let got = g.read_f32(&rows).unwrap();
        // Sums of up to 300 f32 terms of size ≤ 10: relative 1e-6 of the sum.
        Tol::new(1e-6, 1e-6).check(&format!("rows [{batch}x{per_row}]"), &got, &want).unwrap();
        for b in 0..batch {
            assert_eq!(got[2 * b + 1].fract(), 0.0, "correct counts are integers");
        }
    }
}

fn same_or_both_nan(got: &[f32], want: &[f64]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(&g, &w)| (g.is_nan() && w.is_nan()) || g as f64 == w)
}

#[test]
fn code_lookup_gathers_rows_and_marks_bad_indices() {
    let g = gpu();
    for &(n, kk, d) in &[(37usize, 5usize, 3usize), (130, 70, 64), (9, 2, 1)] {
        let table = f32r(&uniform(80 + d as u64, kk * d, -1.0, 1.0));
        let mut idx: Vec<u32> = targets(n, kk);
        let bad = n / 2;
        idx[bad] = kk as u32 + 3;
        let (ib, tb) = (g.upload("idx", &idx), up(&table));
        let out = poisoned(g, "out", n * d);
        g.run(&k::code_lookup(g, "t", n, kk, d, Rows::All, (&ib).into(), (&tb).into(), (&out).into()).unwrap())
            .unwrap();
        let got = g.read_f32(&out).unwrap();
        let mut want = vec![0.0; n * d];
        r::code_lookup(&idx, &table, kk, d, None, &mut want);
        assert!(same_or_both_nan(&got, &want), "[{n} k{kk} d{d}]: lookup differs");
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v.is_nan(), i / d == bad, "[{n} k{kk} d{d}]: element {i} = {v}");
        }
    }
}

#[test]
fn code_lookup_position_filter_writes_only_that_position() {
    let g = gpu();
    let (batch, per_row, kk, d) = (5, 26, 70, 33);
    let n = batch * per_row;
    let table = f32r(&uniform(90, kk * d, -1.0, 1.0));
    let idx = targets(n, kk);
    let (ib, tb) = (g.upload("idx", &idx), up(&table));
    for pos in [0, 7, per_row - 1] {
        let out = poisoned(g, "out", n * d);
        let rows = Rows::Position { per_row, pos };
        g.run(&k::code_lookup(g, "t", n, kk, d, rows, (&ib).into(), (&tb).into(), (&out).into()).unwrap()).unwrap();
        let got = g.read_f32(&out).unwrap();
        let mut want = vec![f64::NAN; n * d];
        r::code_lookup(&idx, &table, kk, d, Some((per_row, pos)), &mut want);
        assert!(same_or_both_nan(&got, &want), "pos {pos}: lookup differs");
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v.is_nan(), (i / d) % per_row != pos, "pos {pos}: element {i} = {v}");
        }
    }
    let out = poisoned(g, "out", n * d);
    let bad = Rows::Position { per_row: 7, pos: 0 };
    let e = k::code_lookup(g, "t", n, kk, d, bad, (&ib).into(), (&tb).into(), (&out).into()).err();
    assert!(matches!(e, Some(GpuError::Shape { .. })), "130 rows are not a multiple of 7: {e:?}");
}

struct Drawn {
    idx: Vec<u32>,
    out: Vec<f32>,
}

/// One categorical launch (with the fused lookup when `d > 0`) on poisoned idx and out.
#[allow(clippy::too_many_arguments)]
fn run_sample(c: Categorical, pos: usize, step: u32, seed: u64, logits: &[f64], d: usize, table: &[f64]) -> Drawn {
    let g = gpu();
    let n = c.batch * c.per_row;
    let (sb, lb) = (state(step, seed), up(logits));
    let ib = g.upload("idx", &vec![u32::MAX; n]);
    let tb = up(if table.is_empty() { &[0.0] } else { table });
    let out = poisoned(g, "out", (n * d).max(1));
    let lookup = (d > 0).then(|| (d, View::from(&tb), View::from(&out)));
    g.run(&c.launch(g, "t", pos, (&sb).into(), (&lb).into(), (&ib).into(), lookup).unwrap()).unwrap();
    Drawn { idx: read_u32(&ib, n), out: g.read_f32(&out).unwrap() }
}

#[test]
fn categorical_sample_matches_reference_up_to_near_ties() {
    let cases = [
        (64usize, 5usize, 2usize, 1.0f32, 3usize, 0usize),
        (100, 3, 70, 0.5, 1, 16),
        (37, 4, 513, 1.0, 3, 0),
        (20, 2, 1000, 2.0, 0, 7),
        (8, 1, 65536, 1.0, 0, 0),
        (300, 2, 5, 1.0, 1, 0),
    ];
    let (mut near_total, mut draws) = (0, 0);
    for (ci, &(batch, per_row, kk, temperature, pos, d)) in cases.iter().enumerate() {
        let c = Categorical { batch, per_row, k: kk, temperature };
        let n = batch * per_row;
        let logits = f32r(&uniform(100 + ci as u64, n * kk, -3.0, 3.0));
        let table = f32r(&uniform(110 + ci as u64, kk * d, -1.0, 1.0));
        let (step, seed) = (17 + ci as u32, 0x1234_5678_9abc_def0 ^ ci as u64);
        let got = run_sample(c, pos, step, seed, &logits, d, &table);
        let t = temperature as f64;
        let want = r::categorical_sample(&logits, batch, per_row, kk, pos, t, step, seed_key(seed));
        let mut near = 0;
        for (b, &w) in want.iter().enumerate() {
            let row = b * per_row + pos;
            let g = got.idx[row];
            assert!((g as usize) < kk, "{c:?} image {b}: index {g}");
            if g != w {
                // Only where u lies within 1e-5 of a CDF boundary (f32 sums of the weights on the GPU).
                let u = r::sample_unit(b, pos, step, seed_key(seed));
                let cdf = r::cdf(&logits[row * kk..(row + 1) * kk], t);
                let gap = cdf.iter().map(|&v| (u - v).abs()).fold(f64::INFINITY, f64::min);
                assert!(gap < 1e-5, "{c:?} image {b}: got {g} want {w} (u {u}, nearest boundary {gap:e})");
                near += 1;
            }
            if d > 0 {
                let want_row = to_f32(&table[g as usize * d..(g as usize + 1) * d]);
                assert_eq!(&got.out[row * d..(row + 1) * d], &want_row[..], "{c:?} image {b}: out row");
            }
        }
        // Every other position keeps its poison.
        for (i, &v) in got.idx.iter().enumerate() {
            assert_eq!(v == u32::MAX, i % per_row != pos, "{c:?}: idx[{i}] = {v}");
        }
        if d > 0 {
            for (row, vals) in got.out.chunks(d).enumerate() {
                for v in vals {
                    assert_eq!(v.is_nan(), row % per_row != pos, "{c:?}: out row {row} holds {v}");
                }
            }
        }
        near_total += near;
        draws += batch;
    }
    assert!(near_total * 50 <= draws, "{near_total} near ties out of {draws} draws");
}

#[test]
fn categorical_sample_picks_a_dominant_logit() {
    let (batch, per_row, kk) = (256, 3, 513);
    let n = batch * per_row;
    let mut logits = f32r(&uniform(120, n * kk, -1.0, 1.0));
    let pos = 2;
    let hot: Vec<u32> = (0..batch).map(|b| ((b * 131 + 7) % kk) as u32).collect();
    for b in 0..batch {
        logits[(b * per_row + pos) * kk + hot[b] as usize] = 31.0;
    }
    // Gap ≥ 30 at τ = 1: another index has probability below 512·e^−30 ≈ 5e−11; at τ = 0.1 the gap is 300.
    for temperature in [1.0, 0.1] {
        let c = Categorical { batch, per_row, k: kk, temperature };
        let got = run_sample(c, pos, 3, 99, &logits, 0, &[]);
        for (b, &h) in hot.iter().enumerate() {
            assert_eq!(got.idx[b * per_row + pos], h, "τ {temperature}, image {b}");
        }
    }
}

#[test]
fn categorical_sample_frequencies_follow_the_tempered_softmax() {
    let (batch, kk) = (4096, 4);
    let probs = [0.1f64, 0.2, 0.3, 0.4];
    let logits: Vec<f64> = (0..batch).flat_map(|_| probs.iter().map(|p| p.ln())).collect();
    let logits = f32r(&logits);
    for temperature in [1.0f32, 0.5, 2.0, 0.25] {
        let c = Categorical { batch, per_row: 1, k: kk, temperature };
        let got = run_sample(c, 0, 5, 2024, &logits, 0, &[]);
        let mut freq = [0.0f64; 4];
        for &i in &got.idx {
            freq[i as usize] += 1.0 / batch as f64;
        }
        let w: Vec<f64> = probs.iter().map(|p| p.powf(1.0 / temperature as f64)).collect();
        let s: f64 = w.iter().sum();
        // 4096 draws: the standard error of a frequency is at most 0.5/64 ≈ 0.008; 0.03 is ~4σ.
        for j in 0..kk {
            let want = w[j] / s;
            assert!(
                (freq[j] - want).abs() < 0.03,
                "τ {temperature}: freq {freq:?}, want {:?}",
                w.iter().map(|v| v / s)
            );
        }
    }
}

#[test]
fn mask_mul_is_exact() {
    let g = gpu();
    for n in [1usize, 37, 1000, 70_001] {
        let x = f32r(&uniform(130 + n as u64, n, -5.0, 5.0));
        let mask: Vec<f64> = (0..n).map(|i| if (i * 7) % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let (xb, mb) = (up(&x), up(&mask));
        g.run(&k::mask_mul(g, "t", n, (&mb).into(), (&xb).into()).unwrap()).unwrap();
        let got = g.read_f32(&xb).unwrap();
        assert_eq!(got, to_f32(&r::mask_mul(&x, &mask)), "n {n}");
    }
}

#[test]
fn launchers_refuse_short_buffers() {
    let g = gpu();
    let small = poisoned(g, "small", 3);
    let big = poisoned(g, "big", 1000);
    let e = k::gate_forward(g, "t", 4, 2, (&big).into(), (&small).into()).err();
    assert!(matches!(e, Some(GpuError::Shape { .. })), "{e:?}");
    let e = k::ce_forward(g, "t", 4, 10, 1.0, (&big).into(), (&big).into(), (&big).into(), (&small).into()).err();
    assert!(matches!(e, Some(GpuError::Shape { .. })), "{e:?}");
    let c = Categorical { batch: 2, per_row: 3, k: 10, temperature: 0.0 };
    let e = c.launch(g, "t", 0, (&big).into(), (&big).into(), (&big).into(), None).err();
    assert!(matches!(e, Some(GpuError::Shape { .. })), "τ = 0: {e:?}");
}
