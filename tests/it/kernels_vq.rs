//! shaders/vq.wgsl against src/reference/vq.rs on awkward shapes (K not a multiple of the workgroup,
//! D = 1 and D = 256), outputs poisoned with NaN (indices with 0xffffffff) first; exact ties; bit-for-bit
//! repeatability of the statistics; and the reference gradients against central finite differences.

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::data::{STATE_WORDS, W_EVAL_BATCH};
use vaegpu::kernels::vq::{ReconMse, TableLayout, Valid, Vq};
use vaegpu::reference::vq as r;
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

/// |got − want| ≤ rel·scale + abs, where scale bounds the summed terms' magnitudes.
fn check_scaled(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(err <= rel * scale[i] + abs, "{what}[{i}]: got {} want {} (scale {})", got[i], want[i], scale[i]);
    }
}

struct Assigned {
    idx: Vec<u32>,
    zq: Vec<f32>,
    dist: Vec<f32>,
}

fn run_assign(q: Vq, z: &[f64], code: &[f64]) -> Assigned {
    let g = gpu();
    let zb = g.upload("z", &to_f32(z));
    let cb = g.upload("code", &to_f32(code));
    let idx = g.upload("idx", &vec![u32::MAX; q.n]);
    let zq = poisoned(g, "zq", q.n * q.d);
    let dist = poisoned(g, "dist", q.n);
    let scratch = poisoned(g, "scratch", q.scratch_len());
    let ls = q
        .assign(g, "t", (&zb).into(), (&cb).into(), (&idx).into(), (&zq).into(), (&dist).into(), (&scratch).into())
        .unwrap();
    for l in &ls {
        g.run(l).unwrap();
    }
    Assigned { idx: read_u32(&idx, q.n), zq: g.read_f32(&zq).unwrap(), dist: g.read_f32(&dist).unwrap() }
}

// (64, 64, 512) and the last two have K and D multiples of 4 (vq_argmin_v4), the others not (vq_argmin).
const SHAPES: [(usize, usize, usize); 9] = [
    (37, 1, 5),
    (100, 3, 70),
    (64, 64, 512),
    (9, 256, 13),
    (33, 4, 1),
    (130, 12, 33),
    (50, 2, 67),
    (70, 8, 36),
    (13, 12, 4),
];

#[test]
fn assign_matches_reference_and_gathers_the_chosen_code() {
    for (si, &(n, d, k)) in SHAPES.iter().enumerate() {
        let q = Vq { n, d, k };
        let z = f32r(&uniform(si as u64, n * d, -1.0, 1.0));
        let code = f32r(&uniform(100 + si as u64, k * d, -1.0, 1.0));
        let got = run_assign(q, &z, &code);
        let (idx, _, _) = r::assign(&z, &code, n, d, k);
        let mut near_ties = 0;
        for row in 0..n {
            let all = r::distances(&z, &code, row, d, k);
            let g = got.idx[row] as usize;
            assert!(g < k, "{q:?}: row {row} got index {g}");
            if g != idx[row] as usize {
                // Only a near tie may differ: the two distances agree to f32 rounding.
                let (a, b) = (all[g], all[idx[row] as usize]);
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b),
                    "{q:?} row {row}: got code {g} ({a}), want {} ({b})",
                    idx[row]
                );
                near_ties += 1;
            }
            let want_zq = to_f32(&code[g * d..(g + 1) * d]);
            assert_eq!(&got.zq[row * d..(row + 1) * d], &want_zq[..], "{q:?}: zq row {row} is not code {g}");
            let e = (got.dist[row] as f64 - all[g]).abs();
            assert!(e <= 1e-5 * (1.0 + all[g]), "{q:?}: dist[{row}] = {} want {}", got.dist[row], all[g]);
        }
        assert!(near_ties * 50 <= n, "{q:?}: {near_ties} near ties out of {n}");
    }
}

#[test]
fn assign_breaks_exact_ties_towards_the_lowest_index() {
    // Four codes around the origin: z = 0 is equidistant from all (→ 0); z = (0.5, 0.5) from codes 1
    // and 2 (→ 1); duplicated codes (5 = 1, 6 = 3) never win over their first copy, nor over the
    // code after them (7 = 0). D = 2 runs the scalar distance matmul and argmin, D = 4 (two zero
    // columns) the vec4 ones (K = 8).
    let base = [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [3.0, 3.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]];
    let pts = [[0.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.1, -0.9], [-0.5, 0.5], [-0.5, -0.5], [2.0, 2.0]];
    let want = [0u32, 1, 1, 3, 0, 0, 4];
    for d in [2usize, 4] {
        let pad = |v: &[f64; 2]| {
            let mut r = vec![v[0], v[1]];
            r.resize(d, 0.0);
            r
        };
        let code: Vec<f64> = base.iter().flat_map(pad).collect();
        let z: Vec<f64> = pts.iter().flat_map(pad).collect();
        let got = run_assign(Vq { n: pts.len(), d, k: base.len() }, &z, &code);
        assert_eq!(got.idx, want, "D = {d}");
        assert_eq!(r::assign(&z, &code, pts.len(), d, base.len()).0, want, "reference, D = {d}");
    }
}

#[test]
fn backward_is_straight_through_plus_commitment() {
    let g = gpu();
    for (si, &(n, d, k)) in SHAPES.iter().enumerate() {
        let q = Vq { n, d, k };
        let z = f32r(&uniform(si as u64, n * d, -1.0, 1.0));
        let code = f32r(&uniform(7 + si as u64, k * d, -1.0, 1.0));
        let dzq = f32r(&uniform(9 + si as u64, n * d, -0.1, 0.1));
        let idx: Vec<u32> = (0..n).map(|i| ((i * 7 + 3) % k) as u32).collect();
        let scale = 2.0 * 0.25 / (n * d) as f64;
        let want = r::backward(&z, &code, &idx, &dzq, d, scale);
        let bufs = [g.upload("z", &to_f32(&z)), g.upload("code", &to_f32(&code)), g.upload("dzq", &to_f32(&dzq))];
        let ib = g.upload("idx", &idx);
        let dz = poisoned(g, "dz", n * d);
        let l = q
            .backward(
                g,
                "t",
                scale as f32,
                (&bufs[0]).into(),
                (&bufs[1]).into(),
                (&ib).into(),
                (&bufs[2]).into(),
                (&dz).into(),
            )
            .unwrap();
        g.run(&l).unwrap();
        Tol::new(1e-6, 1e-7).check(&format!("dz {q:?}"), &g.read_f32(&dz).unwrap(), &want).unwrap();
    }
}

#[test]
fn counts_are_exact_and_skip_rows_outside_the_dataset() {
    let g = gpu();
    let (batch, per_row, k) = (5, 7, 70);
    let n = batch * per_row;
    let idx: Vec<u32> = (0..n).map(|i| ((i * i + 3 * i) % 11 + (i % 3) * 29) as u32).collect();
    let ib = g.upload("idx", &idx);
    let q = Vq { n, d: 3, k };
    // (eval batch cursor, valid rows): 23 items, so batch 4 has rows 20..22 and batch 5 none.
    for (cursor, valid_rows) in [(None, batch), (Some(0u32), batch), (Some(4), 3), (Some(5), 0)] {
        let mut s = [0u32; STATE_WORDS];
        s[W_EVAL_BATCH as usize] = cursor.unwrap_or(0);
        let sb = g.upload("state", &s);
        let out = poisoned(g, "counts", k);
        let valid = cursor.map(|_| Valid { batch, n_items: 23, batch_word: W_EVAL_BATCH, per_row });
        g.run(&q.counts(g, "t", valid, (&sb).into(), (&ib).into(), (&out).into()).unwrap()).unwrap();
        let got = to_f64(&g.read_f32(&out).unwrap());
        assert_eq!(got, r::counts(&idx, k, valid_rows * per_row), "cursor {cursor:?}");
    }
}

/// The table slice: count at 0, sum and code each at a multiple of 64 floats (as in a parameter buffer).
fn table_layout(k: usize, d: usize) -> (TableLayout, usize) {
    let sum = k.next_multiple_of(64);
    let code = sum + (k * d).next_multiple_of(64);
    (TableLayout { count: 0, sum, code }, code + k * d)
}

/// The stable sort by code: (starts, order).
fn sorted(idx: &[u32], k: usize) -> (Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..idx.len() as u32).collect();
    order.sort_by_key(|&n| idx[n as usize]);
    let c = r::counts(idx, k, idx.len());
    let starts = (0..k).map(|i| c[..i].iter().sum::<f64>() as u32).collect();
    (starts, order)
}

struct EmaRun {
    table: Vec<f32>,
    counts: Vec<f32>,
    vqm: Vec<f32>,
}

/// counts → stats_ema → ema_finish on the GPU.
#[allow(clippy::too_many_arguments)]
fn run_ema(q: Vq, z: &[f64], idx: &[u32], ema: &r::Ema, restart: Option<f32>, step: u32, seed: u64) -> EmaRun {
    let g = gpu();
    let (at, len) = table_layout(q.k, q.d);
    let mut t = vec![f32::NAN; len];
    t[..q.k].copy_from_slice(&to_f32(&ema.count));
    t[at.sum..at.sum + q.k * q.d].copy_from_slice(&to_f32(&ema.sum));
    let table = g.upload("table", &t);
    let zb = g.upload("z", &to_f32(z));
    let ib = g.upload("idx", idx);
    let counts = poisoned(g, "counts", q.k);
    let members = g.upload("members", &vec![u32::MAX; q.members_len()]);
    let vqm = g.upload("vqm", &[0f32; 8]);
    let st = state(step, seed);
    let mut ls = vec![q.counts(g, "t", None, (&st).into(), (&ib).into(), (&counts).into()).unwrap()];
    ls.extend(q.sort(g, "t", (&counts).into(), (&ib).into(), (&members).into()).unwrap());
    let (zv, mv, cv, tv) = ((&zb).into(), (&members).into(), (&counts).into(), (&table).into());
    ls.push(q.stats_ema(g, "t", 0.9, at, zv, mv, cv, tv).unwrap());
    let (zv, tv, sv, vv) = ((&zb).into(), (&table).into(), (&st).into(), (&vqm).into());
    ls.push(q.ema_finish(g, "t", 1e-5, restart, 0, at, zv, tv, sv, vv).unwrap());
    for l in &ls {
        g.run(l).unwrap();
    }
    let m: Vec<u32> = g.read(&members, 0, q.members_len()).unwrap();
    let k64 = q.k.next_multiple_of(64);
    let (want_starts, want_order) = sorted(idx, q.k);
    assert_eq!((&m[..q.k], &m[k64..]), (&want_starts[..], &want_order[..]), "{q:?}: stable counting sort");
    EmaRun { table: g.read_f32(&table).unwrap(), counts: g.read_f32(&counts).unwrap(), vqm: g.read_f32(&vqm).unwrap() }
}

#[test]
fn ema_update_matches_reference_with_and_without_restart() {
    for (si, &(n, d, k)) in SHAPES.iter().enumerate() {
        let q = Vq { n, d, k };
        let z = f32r(&uniform(si as u64, n * d, -1.0, 1.0));
        // Assign with a skew so that some codes get nothing.
        let idx: Vec<u32> = (0..n).map(|i| ((i * 5 + si) % k.div_ceil(2).max(1)) as u32).collect();
        let ema0 = r::Ema {
            count: f32r(&uniform(50 + si as u64, k, 0.0, 3.0)),
            sum: f32r(&uniform(60 + si as u64, k * d, -2.0, 2.0)),
            code: vec![0.0; k * d],
        };
        for restart in [None, Some(1.0f32)] {
            let (step, seed) = (17 + si as u32, 0xfeed_0000 + si as u64);
            let got = run_ema(q, &z, &idx, &ema0, restart, step, seed);
            let mut want = ema0.clone();
            let resets = r::ema_update(&mut want, &z, &idx, d, 0.9, 1e-5, restart.map(|t| t as f64), step, seed);
            let (at, _) = table_layout(k, d);
            assert_eq!(to_f64(&got.counts), r::counts(&idx, k, n), "{q:?} counts");
            assert_eq!(got.vqm[3] as usize, resets.len(), "{q:?} {restart:?}: resets");
            if k > 1 {
                // Half the codes get no vectors, so restart always has work (one code: it is always used).
                assert_eq!(restart.is_some(), !resets.is_empty(), "{q:?}: the case must exercise restarts");
            }
            Tol::new(1e-6, 1e-6).check(&format!("{q:?} N"), &got.table[..k], &want.count).unwrap();
            // Sums of up to n terms of magnitude ≤ 1 (z) and 2 (old m).
            let bound = vec![n as f64 + 2.0; k * d];
            check_scaled(&format!("{q:?} m"), &got.table[at.sum..at.sum + k * d], &want.sum, &bound, 1e-6, 0.0);
            let code = &got.table[at.code..at.code + k * d];
            for c in 0..k {
                let row = &code[c * d..(c + 1) * d];
                if resets.contains(&c) {
                    // A reset code is an exact copy of the drawn batch vector.
                    let rr = r::restart_row(c, step, seed, n);
                    assert_eq!(row, &to_f32(&z[rr * d..(rr + 1) * d])[..], "{q:?}: code {c} reset to row {rr}");
                } else {
                    let want_row = &want.code[c * d..(c + 1) * d];
                    let scale: Vec<f64> = want_row.iter().map(|v| v.abs() + 1.0).collect();
                    check_scaled(&format!("{q:?} {restart:?} e[{c}]"), row, want_row, &scale, 1e-4, 0.0);
                }
            }
        }
    }
}

/// An unused code's N and m, decayed below f32's least normal, come out as exactly zero (as in the
/// reference), never subnormal: lavapipe does not flush subnormals and x86 CPUs slow to a crawl on them
/// (shaders/vq.wgsl, flush_subnormal1). Used codes follow the reference as usual.
#[test]
fn ema_flushes_subnormal_statistics_of_unused_codes() {
    let (n, d, k) = (100, 3, 70);
    let q = Vq { n, d, k };
    let tiny = f32::MIN_POSITIVE as f64;
    let z = f32r(&uniform(70, n * d, -1.0, 1.0));
    // Codes below 35 get vectors; the others none, with N and m just above the least normal, so that
    // decay 0.9 takes them below it (even codes) or keeps them normal (odd codes, 1.2x).
    let idx: Vec<u32> = (0..n).map(|i| (i % 35) as u32).collect();
    let near = |c: usize| if c % 2 == 0 { 1.05 * tiny } else { 1.2 * tiny };
    let count: Vec<f64> = (0..k).map(|c| if c < 35 { 1.0 + c as f64 / 10.0 } else { near(c) as f32 as f64 }).collect();
    let sum: Vec<f64> = (0..k * d)
        .map(|i| if i / d < 35 { 0.25 } else { (near(i / d) * if i % 2 == 0 { 1.0 } else { -1.0 }) as f32 as f64 })
        .collect();
    let ema0 = r::Ema { count, sum, code: vec![0.0; k * d] };
    let got = run_ema(q, &z, &idx, &ema0, None, 3, 77);
    let mut want = ema0.clone();
    r::ema_update(&mut want, &z, &idx, d, 0.9, 1e-5, None, 3, 77);
    let (at, _) = table_layout(k, d);
    let (gn, gm) = (&got.table[..k], &got.table[at.sum..at.sum + k * d]);
    for (what, got, want) in [("N", gn, &want.count), ("m", gm, &want.sum)] {
        for (i, (&x, &w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(!x.is_subnormal(), "{what}[{i}] = {x:e} is subnormal");
            assert_eq!(x == 0.0, w == 0.0, "{what}[{i}] = {x:e}, reference {w:e}");
        }
        // Even unused codes flushed, odd ones kept.
        let unused = |i: usize| if what == "N" { i } else { i / d };
        assert!(got.iter().enumerate().all(|(i, &x)| unused(i) < 35 || (x == 0.0) == (unused(i) % 2 == 0)), "{what}");
    }
    Tol::new(1e-6, 1e-6).check("N", gn, &want.count).unwrap();
    let code = &got.table[at.code..at.code + k * d];
    assert!(code.iter().all(|x| x.is_finite() && !x.is_subnormal()), "codes");
}

#[test]
fn statistics_repeat_bit_for_bit() {
    let (n, d, k) = (300, 12, 37);
    let q = Vq { n, d, k };
    let z = f32r(&uniform(1, n * d, -1.0, 1.0));
    let idx: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let ema = r::Ema { count: vec![1.0; k], sum: f32r(&uniform(2, k * d, -1.0, 1.0)), code: vec![0.0; k * d] };
    let a = run_ema(q, &z, &idx, &ema, Some(0.5), 3, 4);
    let b = run_ema(q, &z, &idx, &ema, Some(0.5), 3, 4);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.table), bits(&b.table));
}

#[test]
fn codebook_gradient_matches_reference() {
    let g = gpu();
    for (si, &(n, d, k)) in SHAPES.iter().enumerate() {
        let q = Vq { n, d, k };
        let z = f32r(&uniform(si as u64, n * d, -1.0, 1.0));
        let code = f32r(&uniform(30 + si as u64, k * d, -1.0, 1.0));
        let (idx, _, _) = r::assign(&z, &code, n, d, k);
        let scale = 2.0 / (n * d) as f64;
        let want = r::codebook_grad(&z, &code, &idx, d, k, scale);
        let (zb, cb, ib) = (g.upload("z", &to_f32(&z)), g.upload("code", &to_f32(&code)), g.upload("idx", &idx));
        let counts = poisoned(g, "counts", k);
        let gcode = poisoned(g, "gcode", k * d);
        let members = g.upload("members", &vec![u32::MAX; q.members_len()]);
        let st = state(0, 0);
        let mut ls = vec![q.counts(g, "t", None, (&st).into(), (&ib).into(), (&counts).into()).unwrap()];
        ls.extend(q.sort(g, "t", (&counts).into(), (&ib).into(), (&members).into()).unwrap());
        let (zv, cv, mv, nv, ov) = ((&zb).into(), (&cb).into(), (&members).into(), (&counts).into(), (&gcode).into());
        ls.push(q.stats_grad(g, "t", scale as f32, zv, cv, mv, nv, ov).unwrap());
        for l in &ls {
            g.run(l).unwrap();
        }
        let c = r::counts(&idx, k, n);
        let bound: Vec<f64> = (0..k * d).map(|i| scale * 2.0 * c[i / d]).collect();
        check_scaled(&format!("gcode {q:?}"), &g.read_f32(&gcode).unwrap(), &want, &bound, 1e-5, 1e-9);
    }
}

#[test]
fn usage_gives_perplexity_used_codes_and_accumulates() {
    let g = gpu();
    for k in [1usize, 5, 70, 300, 512] {
        let counts: Vec<f64> = (0..k).map(|i| ((i * 37 + 11) % 9) as f64 * f64::from(i % 4 != 1)).collect();
        let cb = g.upload("counts", &to_f32(&counts));
        let vqm = g.upload("vqm", &[0.5f32; 8]);
        let usage = g.upload("usage", &vec![2.0f32; k]);
        let q = Vq { n: 1, d: 1, k };
        let l = q.usage(g, "t", 4, (&cb).into(), (&vqm).into(), (&usage).into()).unwrap();
        g.run(&l).unwrap();
        g.run(&l).unwrap();
        let (perp, used) = r::perplexity(&counts);
        let m = g.read_f32(&vqm).unwrap();
        assert_eq!(&m[..4], &[0.5; 4], "k {k}: other slot untouched");
        Tol::new(1e-5, 0.0).check(&format!("perplexity k {k}"), &[m[4]], &[0.5 + 2.0 * perp]).unwrap();
        assert_eq!((m[5], m[6]), (0.5 + 2.0 * used as f32, 2.5), "k {k}");
        let want: Vec<f64> = counts.iter().map(|c| 2.0 + 2.0 * c).collect();
        assert_eq!(to_f64(&g.read_f32(&usage).unwrap()), want);
    }
}

#[test]
fn recon_mse_counts_the_window_only() {
    let g = gpu();
    let (b, h, w, c) = (3, 7, 9, 2);
    let window = (1, 2, 4, 5);
    let n = b * h * w * c;
    let xhat = f32r(&uniform(1, n, 0.0, 1.0));
    let x = f32r(&uniform(2, n, 0.0, 1.0));
    // Two levels: 6 vectors per image at 0, then 2 per image at offset 64.
    let dist = f32r(&uniform(3, 64 + b * 2, 0.0, 1.0));
    let scale = 0.37;
    let k = ReconMse { batch: b, h, w, c, window, scale: scale as f32, per_row: 6, second: Some((64, 2)) };
    let bufs = [g.upload("xhat", &to_f32(&xhat)), g.upload("x", &to_f32(&x)), g.upload("dist", &to_f32(&dist))];
    let dx = poisoned(g, "dx", n);
    let rows = poisoned(g, "rows", 2 * b);
    let l = k
        .launch(g, "t", (&bufs[0]).into(), (&bufs[1]).into(), (&dx).into(), (&rows).into(), View::whole(&bufs[2]))
        .unwrap();
    g.run(&l).unwrap();
    let (sse, want_dx) = r::recon_mse(&xhat, &x, b, (h, w, c), window, scale);
    Tol::new(1e-6, 1e-7).check("dxhat", &g.read_f32(&dx).unwrap(), &want_dx).unwrap();
    let got = g.read_f32(&rows).unwrap();
    for i in 0..b {
        let ds: f64 = dist[i * 6..i * 6 + 6].iter().chain(&dist[64 + 2 * i..64 + 2 * i + 2]).sum();
        Tol::new(1e-5, 0.0).check(&format!("rows[{i}]"), &got[2 * i..2 * i + 2], &[sse[i], ds]).unwrap();
    }
}

/// Central differences of a scalar function of one vector.
fn fd(f: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn reference_gradients_match_finite_differences() {
    let (n, d, k, beta) = (11, 3, 4, 0.25);
    let z = uniform(1, n * d, -1.0, 1.0);
    let code = uniform(2, k * d, -1.0, 1.0);
    let (idx, _, _) = r::assign(&z, &code, n, d, k);
    let tol = Tol::new(1e-6, 1e-9);
    // Commitment: ∂/∂z β·mean((z − sg[e])²), the assignment held fixed.
    let want = fd(|zz| r::commitment_loss(zz, &code, &idx, d, beta), &z);
    let got = r::backward(&z, &code, &idx, &vec![0.0; n * d], d, 2.0 * beta / (n * d) as f64);
    tol.check64("commitment dz", &got, &want).unwrap();
    // Codebook loss: ∂/∂e mean((sg[z] − e)²).
    let want = fd(|cc| r::commitment_loss(&z, cc, &idx, d, 1.0), &code);
    let got = r::codebook_grad(&z, &code, &idx, d, k, 2.0 / (n * d) as f64);
    tol.check64("codebook de", &got, &want).unwrap();
    // Reconstruction: ∂/∂xhat Σ_window (xhat − x)² · s/2 with dxhat = s·e.
    let (b, h, w, c, win, s) = (2, 3, 4, 1, (1, 0, 2, 3), 0.3);
    let x = uniform(3, b * h * w * c, 0.0, 1.0);
    let xh = uniform(4, b * h * w * c, 0.0, 1.0);
    let loss = |v: &[f64]| r::recon_mse(v, &x, b, (h, w, c), win, s).0.iter().sum::<f64>() * s / 2.0;
    tol.check64("recon dxhat", &r::recon_mse(&xh, &x, b, (h, w, c), win, s).1, &fd(loss, &xh)).unwrap();
}
