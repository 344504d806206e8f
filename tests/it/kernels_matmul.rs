//! matmul.wgsl against reference/matmul.rs on awkward shapes, outputs poisoned with NaN.

use vaegpu::gpu::{Gpu, MatmulKernel};
use vaegpu::kernels::matmul::{epilogue_k_splits, split_k, Matmul};
use vaegpu::kernels::Act;
use vaegpu::reference::elementwise::{act_forward, act_grad_from_y};
use vaegpu::reference::matmul::{matmul, transpose};
use vaegpu::testing::{poisoned, to_f32, to_f64, uniform, Tol};

fn gpu() -> &'static Gpu {
    vaegpu::testing::shared_gpu()
}

/// f32 accumulation over k terms of size ~1: allow k·2⁻²³-ish relative error plus a floor.
fn tol(k: usize) -> Tol {
    Tol::new(1e-5, 1e-6 * (k as f64).sqrt() * 4.0)
}

/// C for `mm` in f64: op(A) (`a` as op(A) reads it, without the ones row) with the ones row, op(B)
/// (`b` as op(B) reads it, with the bias row), bias, the residual `z` before the activation, act, act'(z).
fn reference(mm: &Matmul, a: &[f64], b: &[f64], z: &[f64]) -> Vec<f64> {
    let mut a_op = a.to_vec();
    if mm.ones_row {
        a_op.extend(std::iter::repeat_n(1.0, mm.k));
    }
    let mut want = matmul(&a_op, b, mm.m, mm.n, mm.k, mm.bias);
    // The residual (Z raw: dact is Identity with it) joins before the activation.
    for (i, w) in want.iter_mut().enumerate() {
        let r = if mm.resid { z[i] } else { 0.0 };
        *w = act_forward(mm.act, *w + r) * act_grad_from_y(mm.dact, z[i]);
    }
    want
}

/// Runs `mm` against the reference; returns the launch's label (it names the kernel that ran).
fn check(mm: Matmul, seed: u64) -> String {
    check_out(mm, seed).0
}

/// [`check`], also returning C as read back.
fn check_out(mm: Matmul, seed: u64) -> (String, Vec<f32>) {
    let g = gpu();
    let a_rows = if mm.ones_row { mm.m - 1 } else { mm.m };
    let b_rows = if mm.bias { mm.k + 1 } else { mm.k };
    let a = uniform(seed, a_rows * mm.k, -1.0, 1.0);
    let b = uniform(seed + 1, b_rows * mm.n, -1.0, 1.0);
    let z = uniform(seed + 2, mm.m * mm.n, -1.0, 1.0).iter().map(|v| act_forward(mm.dact, *v)).collect::<Vec<_>>();
    // The stored forms the GPU reads.
    let a_stored = if mm.trans_a { transpose(&a, a_rows, mm.k) } else { a.clone() };
    let b_stored = if mm.trans_b { transpose(&b, mm.k, mm.n) } else { b.clone() };
    let want = reference(&mm, &a, &b, &z);
    let ab = g.upload("a", &to_f32(&a_stored));
    let bb = g.upload("b", &to_f32(&b_stored));
    let zb = g.upload("z", &to_f32(&z));
    // A split K writes its partial products block after block: summed here in order, as the conv
    // weight gradient's split_sum does; past the last block C stays poisoned.
    let splits = if mm.splits > 1 { split_k(mm.k, mm.splits).1 } else { 1 };
    let len = mm.m * mm.n;
    let cb = poisoned(g, "c", splits * len + 5);
    let zv = if mm.dact != Act::Identity || mm.resid { Some((&zb).into()) } else { None };
    let l = mm.launch(g, "test", (&ab).into(), (&bb).into(), (&cb).into(), zv).unwrap();
    g.run(&l).unwrap();
    let got = g.read_f32(&cb).unwrap();
    let sum: Vec<f32> = (0..len).map(|i| (0..splits).map(|s| got[s * len + i]).sum()).collect();
    tol(mm.k).check(&format!("{mm:?}"), &sum, &want).unwrap();
    assert!(got[splits * len..].iter().all(|v| v.is_nan()), "{mm:?}: wrote past its {splits} blocks");
    (l.label, got)
}

/// The label names one of the subgroup kernels (matmul_sg, its 64-bit form matmul_sg64 or that form's
/// texture reader matmul_sgtex).
fn is_sg(label: &str) -> bool {
    label.contains("matmul_sg[") || label.contains("matmul_sg64[") || label.contains("matmul_sgtex[")
}

#[test]
fn awkward_shapes_all_layouts() {
    let shapes =
        [(1, 1, 1), (1, 7, 3), (9, 65, 13), (17, 63, 31), (8, 64, 64), (33, 129, 5), (128, 400, 97), (3, 2, 300)];
    let mut seed = 10;
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // Default choice (scalar or vec4), naive, tiled 64×64, tiled 128×128.
            for (naive, tiled, tile128) in
                [(false, false, false), (true, false, false), (false, true, false), (false, false, true)]
            {
                seed += 3;
                let mm = Matmul { m, n, k, trans_a: ta, trans_b: tb, naive, tiled, tile128, ..Default::default() };
                check(mm, seed);
            }
        }
    }
}

/// Every activation forward (with the bias) and backward (act') on the kernels a CPU adapter picks by
/// shape (scalar for N = 67, vec4 for N = 20). The tiled kernels share the epilogue function; their
/// flags and activations are covered by `every_flag` (each of their pipelines is seconds of lavapipe
/// compile time).
#[test]
fn bias_activation_epilogues() {
    let acts = [Act::Identity, Act::Relu, Act::LeakyRelu, Act::Tanh, Act::Sigmoid];
    let mut seed = 1000;
    for act in acts {
        for &(m, n, k) in &[(5, 67, 11), (16, 20, 40)] {
            seed += 3;
            check(Matmul { m, n, k, bias: true, act, ..Default::default() }, seed);
            check(Matmul { m, n, k, trans_b: true, dact: act, ..Default::default() }, seed + 1);
        }
    }
}

/// The residual epilogue act(op(A)·B + bias + Z) (a residual block's 1×1 conv) on every kernel:
/// scalar, vec4, subgroup where the adapter has it, naive, tiled 64×64 and 128×128.
#[test]
fn residual_epilogue_on_every_kernel() {
    let g = gpu();
    let mut seed = 3000;
    for &(m, n, k) in &[(5, 67, 11), (70, 20, 32), (130, 132, 36)] {
        for kind in 0..6 {
            seed += 3;
            let mm = Matmul { m, n, k, bias: true, act: Act::Relu, resid: true, ..Default::default() };
            let mm = match kind {
                0 => Matmul { register: true, scalar: true, ..mm },
                1 => Matmul { register: true, ..mm },
                2 => Matmul { subgroup: true, ..mm },
                3 => Matmul { naive: true, ..mm },
                4 => Matmul { tiled: true, ..mm },
                _ => Matmul { tile128: true, ..mm },
            };
            let label = check(mm, seed);
            assert!(label.contains(" +Z]") || label.contains(" +Z tex]"), "{label}");
            if kind == 2 && g.subgroups && mm.vec4_ok() {
                assert!(is_sg(&label), "{label}");
            }
        }
    }
    // Without Z, or with act' as well: refused.
    let buf = g.storage_f32("x", 64);
    let mm = Matmul { m: 4, n: 4, k: 4, resid: true, ..Default::default() };
    assert!(mm.launch(g, "t", (&buf).into(), (&buf).into(), (&buf).into(), None).is_err());
    let both = Matmul { dact: Act::Relu, ..mm };
    let err = both.launch(g, "t", (&buf).into(), (&buf).into(), (&buf).into(), Some((&buf).into())).err().unwrap();
    assert!(err.to_string().contains("resid and dact"), "{err}");
}

/// [dW; db] = [X | 1]ᵀ · dY for X: rows×din stored row-major (TRANS_A with the ones row).
fn bias_grad(din: usize, dout: usize, rows: usize) -> Matmul {
    Matmul { m: din + 1, n: dout, k: rows, trans_a: true, ones_row: true, ..Default::default() }
}

#[test]
fn ones_row_computes_bias_gradient() {
    // [dW; db] = [X | 1]ᵀ · dY with X: rows×din stored row-major (TRANS_A).
    for &(din, dout, rows) in &[(1, 1, 1), (13, 7, 9), (64, 65, 33), (100, 40, 128)] {
        for (tiled, tile128) in [(false, false), (true, false), (false, true)] {
            let mm = Matmul { tiled, tile128, ..bias_grad(din, dout, rows) };
            check(mm, din as u64);
        }
    }
}

/// The tiled kernel with K split over workgroups (a conv's weight gradient on GPUs): the partial products
/// of every layout, with the ones row, on sizes that leave a short last split, a split count that
/// rounds to fewer (k per split a multiple of 16), and more splits asked than K has steps.
#[test]
fn tiled_kernel_split_k() {
    assert_eq!(split_k(1000, 7), (144, 7));
    assert_eq!(split_k(100, 6), (32, 4));
    assert_eq!(split_k(20, 50), (16, 2));
    let cases = [
        (Matmul { m: 70, n: 33, k: 1000, splits: 7, ..Default::default() }, 3100),
        (Matmul { splits: 6, ..bias_grad(29, 65, 100) }, 3110),
        (Matmul { m: 17, n: 9, k: 20, trans_b: true, splits: 50, ..Default::default() }, 3120),
        (Matmul { m: 65, n: 64, k: 333, trans_a: true, trans_b: true, splits: 3, ..Default::default() }, 3130),
    ];
    for (mm, seed) in cases {
        let label = check(mm, seed);
        assert!(label.contains("matmul_tiled[") && label.contains(" /"), "{label}");
    }
    // No epilogue with a split.
    let g = gpu();
    let buf = g.storage_f32("c", 4096);
    let mm = Matmul { m: 4, n: 4, k: 64, bias: true, splits: 2, ..Default::default() };
    let err = mm.launch(g, "bad", (&buf).into(), (&buf).into(), (&buf).into(), None).err().unwrap();
    assert!(err.to_string().contains("no epilogue"), "{err}");
}

/// A split K with an epilogue (`Matmul::launch_split`): the tiled kernel's partial blocks, then
/// split_finish's ordered sum with the bias, activation, residual or act'. Both C and the partials are
/// poisoned; shapes leave a short last split and M, N off the 64 tiles; a split that rounds to one runs
/// the plain product alone.
#[test]
fn split_k_with_epilogue_matches_reference() {
    let g = gpu();
    let cases = [
        (Matmul { m: 70, n: 36, k: 784, bias: true, act: Act::Relu, ..Default::default() }, 6, 3300),
        (Matmul { m: 33, n: 20, k: 300, bias: true, act: Act::Tanh, resid: true, ..Default::default() }, 3, 3310),
        (Matmul { m: 37, n: 44, k: 400, trans_b: true, dact: Act::Sigmoid, ..Default::default() }, 5, 3320),
        (Matmul { m: 20, n: 12, k: 100, trans_a: true, act: Act::LeakyRelu, ..Default::default() }, 4, 3330),
        (Matmul { m: 9, n: 5, k: 16, bias: true, act: Act::Relu, ..Default::default() }, 3, 3340),
    ];
    for (mm, splits, seed) in cases {
        let b_rows = if mm.bias { mm.k + 1 } else { mm.k };
        let a = uniform(seed, mm.m * mm.k, -1.0, 1.0);
        let b = uniform(seed + 1, b_rows * mm.n, -1.0, 1.0);
        let z = uniform(seed + 2, mm.m * mm.n, -1.0, 1.0).iter().map(|v| act_forward(mm.dact, *v)).collect::<Vec<_>>();
        let want = reference(&mm, &a, &b, &z);
        let a_stored = if mm.trans_a { transpose(&a, mm.m, mm.k) } else { a };
        let b_stored = if mm.trans_b { transpose(&b, mm.k, mm.n) } else { b };
        let (ab, bb, zb) =
            (g.upload("a", &to_f32(&a_stored)), g.upload("b", &to_f32(&b_stored)), g.upload("z", &to_f32(&z)));
        let runs = split_k(mm.k, splits).1;
        let cb = poisoned(g, "c", mm.m * mm.n + 3);
        let pb = poisoned(g, "partials", runs * mm.m * mm.n);
        let zv = (mm.dact != Act::Identity || mm.resid).then(|| (&zb).into());
        let ls = mm.launch_split(g, "t", (&ab).into(), (&bb).into(), (&cb).into(), zv, (&pb).into(), splits).unwrap();
        let labels: Vec<&str> = ls.iter().map(|l| l.label.as_str()).collect();
        if runs > 1 {
            assert_eq!(ls.len(), 2, "{labels:?}");
            assert!(labels[0].contains("matmul_tiled[") && labels[0].contains(&format!(" /{runs}]")), "{labels:?}");
            assert!(labels[1].contains(&format!("split_finish[{}x{} /{runs}]", mm.m, mm.n)), "{labels:?}");
        } else {
            assert_eq!(ls.len(), 1, "{labels:?}");
            assert!(!labels[0].contains(" /"), "{labels:?}");
        }
        g.submit(&vaegpu::gpu::Program { label: "split".into(), launches: ls }, 1);
        let got = g.read_f32(&cb).unwrap();
        tol(mm.k).check(&format!("{mm:?} /{splits}"), &got[..mm.m * mm.n], &want).unwrap();
        assert!(got[mm.m * mm.n..].iter().all(|v| v.is_nan()), "{mm:?}: wrote past C");
    }
    // The split counts a GPU takes (`Gpu::split_k` with the tiled kernel its choice; a CPU adapter
    // splits nothing): the MLP VAE's products at batches 128 and 1024, and one too short to split.
    let mut own = vaegpu::testing::test_gpu();
    own.split_k = false;
    own.matmul = MatmulKernel::Tiled;
    assert_eq!(epilogue_k_splits(&own, 128, 400, 784), 1);
    own.split_k = true;
    own.matmul = MatmulKernel::Subgroup;
    assert_eq!(epilogue_k_splits(&own, 128, 400, 784), 1);
    own.matmul = MatmulKernel::Tiled;
    let got = [(128, 400, 784), (1024, 400, 784), (128, 40, 400), (128, 784, 400), (128, 400, 40), (6272, 512, 64)]
        .map(|(m, n, k)| epilogue_k_splits(&own, m, n, k));
    assert_eq!(got, [6, 6, 3, 3, 1, 1]);
}

#[test]
fn shape_errors_are_values() {
    let g = gpu();
    let small = g.storage_f32("small", 4);
    let mm = Matmul { m: 4, n: 4, k: 4, ..Default::default() };
    let err = mm.launch(g, "bad", (&small).into(), (&small).into(), (&small).into(), None).err().unwrap();
    assert!(err.to_string().contains("holds 4 elements, needs 16"), "{err}");
}

#[test]
fn vec4_kernel_on_aligned_shapes() {
    // Shapes where lda, ldb, K and N are multiples of 4; M free (tails of the 8-row tile).
    let shapes = [(1, 4, 4), (9, 8, 12), (13, 20, 400), (128, 400, 784), (3, 64, 4), (33, 132, 40)];
    let mut seed = 5000;
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mm = Matmul { m, n, k, trans_a: ta, trans_b: tb, register: true, ..Default::default() };
            if mm.vec4_ok() {
                seed += 1;
                assert!(check(mm, seed).contains("matmul_v4["));
            }
        }
        for act in [Act::Relu, Act::Tanh] {
            seed += 1;
            check(Matmul { m, n, k, bias: true, act, register: true, ..Default::default() }, seed);
            check(Matmul { m, n, k, trans_b: true, dact: act, register: true, ..Default::default() }, seed + 7);
        }
    }
    // [dW; db] with the ones row, din a multiple of 4, for several batch sizes.
    for &(din, dout, rows) in &[(4, 4, 4), (20, 400, 128), (400, 40, 12), (784, 400, 8)] {
        let mm = Matmul { register: true, ..bias_grad(din, dout, rows) };
        assert!(mm.vec4_ok(), "{mm:?}");
        assert!(check(mm, din as u64 + 77).contains("matmul_v4["));
    }
}

/// The subgroup kernel (shaders/matmul_sg.wgsl) where the device has subgroups; every CPU adapter we
/// target does (lavapipe: 8 lanes), so there it must not be skipped.
#[test]
fn subgroup_kernel_layouts_and_epilogues() {
    let g = gpu();
    if !g.subgroups {
        assert!(!g.is_cpu(), "CPU adapter {} without subgroups of 8+ lanes", g.summary.name);
        eprintln!("skipped: {} has no subgroups of 8+ lanes", g.summary.name);
        return;
    }
    let sg = |mm: Matmul, seed: u64| {
        let mm = Matmul { subgroup: true, sg64: Some(false), ..mm };
        assert!(mm.vec4_ok(), "{mm:?}");
        let label = check(mm, seed);
        assert!(label.contains("matmul_sg["), "{label}");
    };
    // M past the 16-row tile and inside an 8-row group (37, 5, 20), the column count past the lanes
    // (N = 20: 5 vec4 columns in 8 lanes; 132: 33), a 64-lane workgroup (N = 256), K from 4 to 784.
    // With TRANS_A, M is op(A)'s stored row count, a multiple of 4 (lda).
    let mut seed = 9000;
    for &(m, n, k, layouts) in &[
        (37, 20, 12, &[(false, false), (false, true)][..]),
        (5, 132, 4, &[(false, false), (false, true)][..]),
        (36, 132, 8, &[(false, false), (true, false), (false, true), (true, true)][..]),
        (20, 256, 40, &[(true, false), (true, true)][..]),
        (128, 400, 784, &[(false, false)][..]),
    ] {
        for &(trans_a, trans_b) in layouts {
            seed += 1;
            sg(Matmul { m, n, k, trans_a, trans_b, ..Default::default() }, seed);
        }
    }
    // Epilogues: bias with an activation (forward) and act' (input gradient), both layouts of A, each
    // activation once in one direction (the activations themselves are shared with the other kernels,
    // tested in both directions by `bias_activation_epilogues`; each pipeline here is seconds of
    // lavapipe compile time).
    let pairs = [(Act::Relu, Act::LeakyRelu), (Act::Tanh, Act::Sigmoid)];
    for (i, (act, dact)) in pairs.into_iter().enumerate() {
        let trans_a = i % 2 == 1;
        seed += 2;
        sg(Matmul { m: 24, n: 36, k: 16, trans_a, bias: true, act, ..Default::default() }, seed);
        sg(Matmul { m: 37, n: 20, k: 400, trans_b: true, dact, ..Default::default() }, seed + 1);
    }
    // [dW; db]: the ones row (m = din) inside the tile, at its first row, and past a full tile.
    for &(din, dout, rows) in &[(20, 400, 128), (16, 40, 12), (784, 400, 8)] {
        seed += 1;
        sg(bias_grad(din, dout, rows), seed);
    }
    // The ones row with A row-major (set by the lane that loads it): inside an 8-row group, at a
    // group's first row.
    for &(m, n, k) in &[(37, 20, 12), (9, 36, 8)] {
        seed += 1;
        sg(Matmul { m, n, k, ones_row: true, ..Default::default() }, seed);
    }
    // Rows per invocation: the shapes above mostly take 64 (`sg_rows`); 16 and 32 forced here, M inside
    // an 8-row group and past a whole tile, both layouts of A and B, and the ones row.
    for rows in [16, 32] {
        for (mm, seed) in [
            (Matmul { m: 37, n: 20, k: 12, ..Default::default() }, 9100),
            (Matmul { m: 36, n: 132, k: 8, trans_a: true, trans_b: true, ..Default::default() }, 9101),
            (Matmul { m: 68, n: 36, k: 16, trans_a: true, ..Default::default() }, 9102),
            (bias_grad(40, 20, 12), 9103),
        ] {
            sg(Matmul { sg_rows: Some(rows), ..mm }, seed + rows as u64);
        }
    }
    assert_eq!(
        [8, 16, 21, 37, 128, 400, 785, 6272].map(vaegpu::kernels::matmul::sg_rows),
        [16, 16, 32, 64, 64, 64, 64, 64]
    );
    // The texture form's: 32 rows where padding allows; with K of 32 or less, as sg_rows.
    assert_eq!(
        [8, 16, 21, 33, 37, 65, 128, 401, 785, 6272].map(|m| vaegpu::kernels::matmul::sgtex_rows(m, 64)),
        [16, 16, 32, 16, 16, 16, 32, 32, 32, 32]
    );
    assert_eq!([128, 6272, 25088].map(|m| vaegpu::kernels::matmul::sgtex_rows(m, 32)), [64, 64, 64]);
}

/// The subgroup kernel's 64-bit form (shaders/matmul_sg64.wgsl) where the device has 64-bit integers;
/// lavapipe does, so there it must not be skipped. Each product also runs on matmul_sg: the same sums
/// in the same order, so C must match it bit for bit.
#[test]
fn subgroup_kernel_64_bit_accesses() {
    let g = gpu();
    if !g.subgroups || !g.int64 {
        assert!(!g.is_cpu(), "CPU adapter {} without subgroups of 8+ lanes or 64-bit integers", g.summary.name);
        eprintln!("skipped: {} has no subgroups of 8+ lanes or no 64-bit integers", g.summary.name);
        return;
    }
    let both = |mm: Matmul, seed: u64| {
        let mm = Matmul { subgroup: true, ..mm };
        assert!(mm.sg64_ok(), "{mm:?}");
        let (label, wide) = check_out(Matmul { sg64: Some(true), tex: Some(false), ..mm }, seed);
        assert!(label.contains("matmul_sg64["), "{label}");
        let (label, tex) = check_out(Matmul { sg64: Some(true), tex: Some(true), ..mm }, seed);
        assert!(label.contains("matmul_sgtex["), "{label}");
        let (label, narrow) = check_out(Matmul { sg64: Some(false), ..mm }, seed);
        assert!(label.contains("matmul_sg["), "{label}");
        for (form, got) in [("matmul_sg64", &wide), ("matmul_sgtex", &tex)] {
            let differ = got.iter().zip(&narrow).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{mm:?}: {differ} outputs of {form} differ from matmul_sg's");
        }
    };
    // M inside an 8-row group (37) and past a 64-row tile (70, 72); N = 24: 6 column groups in 8 lanes (the
    // row-major B's last 8-column chunk clamped), 136: 34 groups, 5 of them in the last 8 lanes; K from
    // 8 (one step) to 784; every layout. With TRANS_A, M is op(A)'s stored row count (lda, a multiple
    // of 8).
    let mut seed = 9500;
    for &(m, n, k, layouts) in &[
        (37, 24, 16, &[(false, false), (false, true)][..]),
        (40, 136, 8, &[(false, false), (true, false), (false, true), (true, true)][..]),
        (16, 264, 40, &[(true, false), (true, true)][..]),
        (70, 24, 32, &[(false, false), (false, true)][..]),
        (72, 24, 32, &[(true, false), (true, true)][..]),
        (128, 400, 784, &[(false, false)][..]),
    ] {
        for &(trans_a, trans_b) in layouts {
            seed += 1;
            both(Matmul { m, n, k, trans_a, trans_b, ..Default::default() }, seed);
        }
    }
    // Epilogues: bias and an activation (the bias row read through the 64-bit view, odd and even
    // column groups), act' with TRANS_B, the residual.
    both(Matmul { m: 24, n: 40, k: 16, bias: true, act: Act::Tanh, ..Default::default() }, 9520);
    both(Matmul { m: 40, n: 40, k: 24, trans_a: true, bias: true, act: Act::Relu, ..Default::default() }, 9521);
    both(Matmul { m: 37, n: 24, k: 400, trans_b: true, dact: Act::Sigmoid, ..Default::default() }, 9522);
    both(Matmul { m: 70, n: 24, k: 32, bias: true, act: Act::Relu, resid: true, ..Default::default() }, 9523);
    // [dW; db]: the ones row at an 8-row group's first row (din a multiple of 8), inside the tile and
    // past a full one; and with A row-major, inside a group and at a group's first row.
    for &(din, dout, rows) in &[(24, 40, 16), (8, 32, 8), (784, 400, 8)] {
        seed += 1;
        both(bias_grad(din, dout, rows), seed);
    }
    for &(m, n, k) in &[(37, 24, 16), (9, 40, 8)] {
        seed += 1;
        both(Matmul { m, n, k, ones_row: true, ..Default::default() }, seed);
    }
    // 16 and 32 rows per invocation.
    for rows in [16, 32] {
        both(Matmul { m: 37, n: 136, k: 16, trans_a: false, sg_rows: Some(rows), ..Default::default() }, 9540);
        both(Matmul { sg_rows: Some(rows), ..bias_grad(40, 24, 16) }, 9541);
    }
    // An epilogue's Z in a buffer of 64 KiB or more: read through its aliased texture on lavapipe
    // (ZTEX: the label ends "Z tex]"), through the buffer elsewhere; the same bits as matmul_sg. Act'
    // with M inside a row pair (the last pair's second row past M) and the residual.
    for (mm, seed) in [
        (Matmul { m: 129, n: 136, k: 40, trans_b: true, dact: Act::Relu, ..Default::default() }, 9550),
        (Matmul { m: 128, n: 144, k: 32, bias: true, act: Act::Tanh, resid: true, ..Default::default() }, 9551),
    ] {
        let mm = Matmul { subgroup: true, ..mm };
        let (label, tex) = check_out(Matmul { sg64: Some(true), tex: Some(true), ..mm }, seed);
        assert_eq!(label.contains("Z tex]"), g.alias_operands, "{label}");
        let (_, narrow) = check_out(Matmul { sg64: Some(false), ..mm }, seed);
        let differ = tex.iter().zip(&narrow).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{mm:?}: {differ} outputs of matmul_sgtex differ from matmul_sg's");
    }
    // The launcher picks it where the shape allows and the device has it on; a shape it cannot run
    // is refused when forced, and runs matmul_sg when not.
    // The MLP VAE's forward takes the texture form where the device has it on (its copies are a 55th of
    // its flops in bytes); a 3×3 conv over 1152-long im2col rows (a 16th) keeps matmul_sg64 where its
    // operands would be copied, and takes it where they are read in place (aliased, lavapipe).
    let fwd = Matmul { m: 128, n: 400, k: 784, bias: true, subgroup: true, ..Default::default() };
    let want = if g.wide_loads && g.tex_operands { "matmul_sgtex[" } else { "matmul_sg64[" };
    assert_eq!(label(fwd).contains(want), g.wide_loads, "{}", label(fwd));
    let conv = Matmul { m: 6272, n: 32, k: 1152, subgroup: true, ..Default::default() };
    assert!(conv.sg64_ok() && conv.tex_shape_ok(true) && !conv.tex_shape_ok(false), "{conv:?}");
    let aliased = g.wide_loads && g.tex_operands && g.alias_operands;
    assert_eq!(label(conv).contains("matmul_sgtex["), aliased, "{}", label(conv));
    let odd_k = Matmul { m: 128, n: 400, k: 20, subgroup: true, ..Default::default() };
    assert!(!odd_k.sg64_ok() && label(odd_k).contains("matmul_sg["), "{}", label(odd_k));
    let buf = g.storage_f32("x", 128 * 400);
    let forced = Matmul { sg64: Some(true), ..odd_k };
    let err = forced.launch(g, "t", (&buf).into(), (&buf).into(), (&buf).into(), None).err().unwrap();
    assert!(err.to_string().contains("matmul_sg64 cannot run"), "{err}");
    // The texture form reads through matmul_sg64's body: forcing it on matmul_sg is refused.
    let forced = Matmul { sg64: Some(false), tex: Some(true), ..odd_k };
    let err = forced.launch(g, "t", (&buf).into(), (&buf).into(), (&buf).into(), None).err().unwrap();
    assert!(err.to_string().contains("tex needs matmul_sg64"), "{err}");
}

/// On lavapipe the texture form reads operands in large buffers through images over the buffers' own
/// memory (src/gpu/alias.rs): no copy is recorded; a view may sit anywhere in its buffer (in the second
/// 64 MiB window, at a texel inside it); each run reads the buffer as it is then; the results are
/// matmul_sg's bits. A region past its window, or in a small buffer, is copied instead.
#[test]
fn aliased_operand_textures() {
    use vaegpu::gpu::View;
    let g = gpu();
    if !g.alias_operands {
        let lavapipe = g.summary.driver == "llvmpipe" && g.summary.backend == "vulkan";
        assert!(!lavapipe || !g.int64, "lavapipe without aliased operand textures");
        eprintln!("skipped: {} does not alias operand textures (lavapipe only)", g.summary.name);
        return;
    }
    const MIB: u64 = 1 << 20;
    let (m, n, k) = (128, 136, 784);
    // A stored at 33 MiB + 4 KiB into a 40 MiB buffer (window 1, 1 MiB + 4 KiB in), B 256 bytes into its own.
    let a_off = 33 * MIB + 4096;
    let big = g.storage("big", 40 * MIB);
    let bb = g.storage_f32("b", k * n + 64);
    let a = to_f32(&uniform(9600, m * k, -1.0, 1.0));
    let b = to_f32(&uniform(9601, k * n, -1.0, 1.0));
    g.write(&big, a_off, &a);
    g.write(&bb, 256, &b);
    let (av, bv) = (View::new(&big, a_off, m * k), View::new(&bb, 256, k * n));
    let (_, base) = g.alias_texture(&av, m * k / 4).expect("A aliased");
    assert_eq!(base as u64, (MIB + 4096) / 16);
    assert_eq!(g.alias_texture(&bv, k * n / 4).expect("B aliased").1, 16);
    let mm = Matmul { m, n, k, subgroup: true, sg64: Some(true), ..Default::default() };
    let run = |mm: Matmul, a: View, b: View| {
        let c = poisoned(g, "c", m * n + 5);
        let l = mm.launch(g, "t", a, b, (&c).into(), None).unwrap();
        g.run(&l).unwrap();
        let got = g.read_f32(&c).unwrap();
        assert!(got[m * n..].iter().all(|v| v.is_nan()), "{mm:?}: wrote past C");
        (l, got[..m * n].to_vec())
    };
    let same = |what: &str, got: &[f32], want: &[f32]| {
        let differ = got.iter().zip(want).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        assert_eq!(differ, 0, "{what}: {differ} outputs differ from matmul_sg's");
    };
    let (tex, got) = run(Matmul { tex: Some(true), ..mm }, av, bv);
    assert!(tex.label.contains("matmul_sgtex[") && tex.fills.is_empty(), "{}: {} fills", tex.label, tex.fills.len());
    let (_, want) = run(Matmul { sg64: Some(false), ..mm }, av, bv);
    tol(k).check("aliased", &got, &matmul(&to_f64(&a), &to_f64(&b), m, n, k, false)).unwrap();
    same("aliased", &got, &want);
    // New contents, written after the launch was built: the same launch reads them.
    let a2 = to_f32(&uniform(9602, m * k, -1.0, 1.0));
    g.write(&big, a_off, &a2);
    let c = poisoned(g, "c", m * n);
    let tex = Matmul { tex: Some(true), ..mm }.launch(g, "t", av, bv, (&c).into(), None).unwrap();
    g.run(&tex).unwrap();
    let (_, want) = run(Matmul { sg64: Some(false), ..mm }, av, bv);
    same("aliased, rewritten", &g.read_f32(&c).unwrap(), &want);
    // A region ending past its window (16 MiB in, 50 MiB long: window 0 ends at 64 MiB) has none; nor
    // has a buffer under ALIAS_MIN_BYTES, whose operand is copied in before the launch.
    assert!(g.alias_texture(&View::new(&big, 16 * MIB, (24 * MIB / 4) as usize), (50 * MIB / 16) as usize).is_none());
    let small = g.upload("small", &a[..8 * k]);
    assert!(
        (8 * k * 4) as u64 <= vaegpu::gpu::ALIAS_MIN_BYTES && g.alias_texture(&(&small).into(), 8 * k / 4).is_none()
    );
    let (tex, _) = run(Matmul { tex: Some(true), ..mm }, (&big).into(), bv);
    assert!(tex.fills.is_empty(), "{}", tex.label);
    let c = poisoned(g, "c", 8 * n);
    let mm8 = Matmul { m: 8, tex: Some(true), ..mm };
    let copied = mm8.launch(g, "t", (&small).into(), bv, (&c).into(), None).unwrap();
    assert_eq!(copied.fills.len(), 1, "{}", copied.label);
    g.run(&copied).unwrap();
    let (_, want) = {
        let c = poisoned(g, "c", 8 * n);
        let l = Matmul { sg64: Some(false), tex: None, ..mm8 }
            .launch(g, "t", (&small).into(), bv, (&c).into(), None)
            .unwrap();
        g.run(&l).unwrap();
        (l, g.read_f32(&c).unwrap())
    };
    same("copied", &g.read_f32(&c).unwrap(), &want);
}

/// An aliased buffer's memory (which wgpu's allocator report does not see) is counted by
/// `Gpu::memory_report` while the buffer lives, and freed with it and its operand textures.
#[test]
fn aliased_buffers_are_counted_and_freed() {
    use vaegpu::gpu::{choose_adapter, GpuOptions, View};
    // A device of its own, so that other tests' buffers do not move its report.
    let g = Gpu::from_adapter(choose_adapter(&GpuOptions::default()).unwrap()).unwrap();
    if !g.alias_operands {
        eprintln!("skipped: {} does not alias operand textures (lavapipe only)", g.summary.name);
        return;
    }
    const MIB: u64 = 1 << 20;
    let used = || g.memory_report().expect("Vulkan reports its allocator").0;
    let before = used();
    let big = g.storage("big", 40 * MIB);
    let (texture, base) = g.alias_texture(&View::new(&big, 33 * MIB, 1024), 256).expect("aliased");
    assert_eq!(base as u64, MIB / 16);
    assert!(used() >= before + 40 * MIB, "{} -> {}", before, used());
    drop(texture);
    drop(big);
    // Making the next buffer prunes the dead one's entry: its textures go, then its memory.
    let small = g.storage("small", MIB);
    assert!(used() < before + 2 * MIB, "{} -> {}: the 40 MiB buffer was not freed", before, used());
    drop(small);
}

#[test]
fn scalar_kernel_on_aligned_shapes() {
    for &(m, n, k) in &[(16, 400, 784), (9, 8, 12)] {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            check(Matmul { m, n, k, trans_a: ta, trans_b: tb, scalar: true, ..Default::default() }, 900 + m as u64);
        }
    }
}

/// Every layout on every shape (4 pipelines), then every (layout, epilogue) combination the launcher
/// accepts (bias needs an untransposed B) twice, each time on another shape, the activations rotating
/// over the combinations so that each runs forward and as act' (the second round repeats the first's,
/// so it compiles no pipeline: each is seconds on lavapipe): the flags are covered without the full
/// product of shapes × flags.
fn every_flag(base: Matmul, shapes: &[(usize, usize, usize)], mut seed: u64) {
    let acts = [Act::Relu, Act::LeakyRelu, Act::Tanh, Act::Sigmoid];
    let layouts = [(false, false), (true, false), (false, true), (true, true)];
    for &(m, n, k) in shapes {
        for (ta, tb) in layouts {
            seed += 3;
            check(Matmul { m, n, k, trans_a: ta, trans_b: tb, ..base }, seed);
        }
    }
    // (trans_a, trans_b, bias, ones_row, dact)
    let mut combos = Vec::new();
    for (ta, tb) in layouts {
        for (bias, ones, dact) in [(false, false, true), (true, false, false), (false, true, true), (true, true, false)]
        {
            if !(bias && tb) {
                combos.push((ta, tb, bias, ones, dact));
            }
        }
    }
    for round in 0..2 {
        for (c, &(ta, tb, bias, ones_row, dact)) in combos.iter().enumerate() {
            // The shape rotates, shifted by one in the second round so that no combination meets the
            // same one twice; ones_row takes the next shape with m >= 2.
            let i = round * (combos.len() + 1) + c;
            let mut s = i % shapes.len();
            while ones_row && shapes[s].0 < 2 {
                s = (s + 1) % shapes.len();
            }
            let (m, n, k) = shapes[s];
            // Forward and act' combinations alternate, so every activation meets both directions.
            let act = acts[(c / 2) % acts.len()];
            let (act, dact) = if dact { (Act::Identity, act) } else { (act, Act::Identity) };
            seed += 3;
            check(Matmul { m, n, k, trans_a: ta, trans_b: tb, bias, ones_row, act, dact, ..base }, seed);
        }
    }
}

#[test]
fn tiled_kernel_awkward_sizes_every_flag() {
    // Sizes around the 64×64 tile and the 16-deep k step (1, 3, 17, 63, 65, 130).
    let shapes = [(65, 63, 17), (1, 130, 3), (130, 1, 65), (17, 3, 130), (63, 65, 1), (3, 17, 63)];
    every_flag(Matmul { tiled: true, ..Default::default() }, &shapes, 7000);
}

#[test]
fn tiled128_kernel_awkward_sizes_every_flag() {
    // Sizes around the 128×128 tile and the 8-deep k step (1, 7, 9, 129, 130, 257), and multiples of 4
    // (132, 260, 36, 68) where the vec4 loads run, up to a partial tile.
    let shapes =
        [(129, 130, 7), (1, 257, 9), (257, 1, 130), (130, 129, 1), (132, 260, 36), (7, 3, 257), (260, 132, 68)];
    every_flag(Matmul { tile128: true, ..Default::default() }, &shapes, 8000);
}

#[test]
fn tiled_wins_over_vec4_and_naive_over_tiled() {
    let g = gpu();
    let (ab, bb, cb) = (g.storage_f32("a", 64), g.storage_f32("b", 64), g.storage_f32("c", 64));
    let label = |mm: Matmul| mm.launch(g, "t", (&ab).into(), (&bb).into(), (&cb).into(), None).unwrap().label;
    // A shape the vec4 kernel could run: `tiled` still picks the tiled one.
    let tiled = Matmul { m: 8, n: 8, k: 8, tiled: true, ..Default::default() };
    assert!(tiled.vec4_ok());
    assert!(label(tiled).contains("matmul_tiled["), "{}", label(tiled));
    let naive = Matmul { naive: true, ..tiled };
    assert!(label(naive).contains("matmul_naive["), "{}", label(naive));
    let big = Matmul { tile128: true, ..tiled };
    assert!(label(big).contains("matmul_tiled128["), "{}", label(big));
    assert!(label(Matmul { naive: true, ..big }).contains("matmul_naive["));
}

/// The label of `mm`'s launch, which names the kernel (nothing runs).
fn label(mm: Matmul) -> String {
    let g = gpu();
    let (ab, bb, cb) =
        (g.storage_f32("a", mm.m * mm.k), g.storage_f32("b", (mm.k + 1) * mm.n), g.storage_f32("c", mm.m * mm.n));
    mm.launch(g, "t", (&ab).into(), (&bb).into(), (&cb).into(), None).unwrap().label
}

#[test]
fn tiled_uses_128_tiles_only_on_a_full_grid() {
    // 11 × 12 = 132 workgroups of 128×128: the large tiles; one row fewer of them: the 64×64 ones.
    let full = Matmul { m: 11 * 128, n: 12 * 128, k: 8, tiled: true, ..Default::default() };
    assert_eq!(full.m.div_ceil(128) * full.n.div_ceil(128), vaegpu::kernels::matmul::TILE128_MIN_GROUPS);
    assert!(label(full).contains("matmul_tiled128["), "{}", label(full));
    let short = Matmul { m: 10 * 128, ..full };
    assert!(label(short).contains("matmul_tiled["), "{}", label(short));
    // A product 64 wide (a conv's im2col forward) would leave half of every 128 tile idle: 64×64 tiles,
    // however many rows. A full grid 1520 wide pads to 1536 either way: 128 tiles.
    let narrow = Matmul { m: 400 * 128, n: 64, k: 512, bias: true, tiled: true, ..Default::default() };
    assert!(!narrow.fills_tile128() && label(narrow).contains("matmul_tiled["), "{}", label(narrow));
    let wide = Matmul { m: 12 * 128, n: 11 * 128 + 112, ..full };
    assert!(wide.fills_tile128(), "{wide:?}");
    // The default model's products stay on the 64×64 configuration.
    let fwd = Matmul { m: 128, n: 400, k: 784, bias: true, tiled: true, ..Default::default() };
    assert!(label(fwd).contains("matmul_tiled["), "{}", label(fwd));
}

#[test]
fn adapter_choice_of_the_subgroup_kernel_spares_small_products() {
    let g = gpu();
    if g.matmul != vaegpu::gpu::MatmulKernel::Subgroup {
        eprintln!("skipped: this adapter trains with the {} kernel", g.matmul);
        return;
    }
    let big = Matmul { m: 128, n: 400, k: 784, bias: true, ..Default::default() };
    assert!(big.m * big.n * big.k >= vaegpu::kernels::matmul::SUBGROUP_MIN_MACS);
    assert!(is_sg(&label(big)), "{}", label(big));
    // The default model's smallest products (1 M multiply-adds) are above the threshold too.
    let small = Matmul { m: 128, n: 20, k: 400, trans_b: true, ..Default::default() };
    assert!(is_sg(&label(small)), "{}", label(small));
    let head = Matmul { m: 32, n: 32, k: 256, bias: true, ..Default::default() };
    assert!(head.m * head.n * head.k < vaegpu::kernels::matmul::SUBGROUP_MIN_MACS);
    assert!(label(head).contains("matmul_v4["), "{}", label(head));
    // Forced, it runs whatever the size.
    assert!(is_sg(&label(Matmul { subgroup: true, ..head })));
}

/// conv_grad.wgsl's im2col matrix on the host: rows the small pixels, columns tap·CH + c.
fn host_im2col(g: &vaegpu::kernels::matmul::Im2col, x: &[f32]) -> Vec<f32> {
    let (bh, bw) = g.big_hw;
    let mut out = Vec::with_capacity(g.rows() * g.cols());
    for b in 0..g.batch {
        for sy in 0..g.small_hw.0 {
            for sx in 0..g.small_hw.1 {
                for tap in 0..g.k * g.k {
                    let by = (sy * g.stride + tap / g.k) as isize - g.pad as isize;
                    let bx = (sx * g.stride + tap % g.k) as isize - g.pad as isize;
                    let inside = by >= 0 && bx >= 0 && (by as usize) < bh && (bx as usize) < bw;
                    for c in 0..g.ch {
                        let v = if inside { x[((b * bh + by as usize) * bw + bx as usize) * g.ch + c] } else { 0.0 };
                        out.push(if g.relu { v.max(0.0) } else { v });
                    }
                }
            }
        }
    }
    out
}

/// The texture form reading a conv's im2col matrix in place from its image (matmul_sgtex's IM2COL, on
/// lavapipe) gives the bits of the same product over the gathered matrix: a conv's forward (op(A) the
/// matrix, bias and activation in the epilogue) and weight gradient (its transpose with the ones row),
/// and a transposed conv's weight gradient (the matrix as op(B), IM2COL_B), at strides 1 and 2, with
/// and without padding and relu on read, the image at an offset in its buffer.
#[test]
fn implicit_im2col_matches_the_gathered_matrix() {
    use vaegpu::gpu::View;
    use vaegpu::kernels::matmul::Im2col;
    let g = gpu();
    // (batch, big image, channels, k, stride, pad, relu, output channels): small pixels a multiple of 8
    // (the weight gradient's K), the forward's M not a multiple of the rows an invocation takes.
    let cases = [
        (8, (5, 7), 8, 3, 1, 1, false, 8),
        (2, (9, 6), 16, 4, 2, 1, true, 24),
        (2, (4, 4), 8, 2, 2, 0, true, 16),
        (3, (8, 8), 32, 4, 2, 1, false, 64),
    ];
    let mut ran = 0;
    for (i, &(batch, big_hw, ch, k, stride, pad, relu, n)) in cases.iter().enumerate() {
        let small_hw = ((big_hw.0 + 2 * pad - k) / stride + 1, (big_hw.1 + 2 * pad - k) / stride + 1);
        let geo = Im2col { batch, small_hw, big_hw, ch, k, stride, pad, relu };
        let (rows, cols) = (geo.rows(), geo.cols());
        let seed = 9700 + 10 * i as u64;
        let x = to_f32(&uniform(seed, geo.image_len(), -1.0, 1.0));
        // The image 4 KiB + 256 bytes into a buffer of 64 KiB or more (aliased on lavapipe).
        let off = 4096 + 256;
        let xb = g.storage("x", (off + 4 * geo.image_len()).max(80 << 10) as u64);
        g.write(&xb, off as u64, &x);
        let xv = View::new(&xb, off as u64, geo.image_len());
        let matrix = host_im2col(&geo, &x);
        let mb = g.upload("matrix", &matrix);
        let w = to_f32(&uniform(seed + 1, (cols + 1) * n, -1.0, 1.0));
        let wb = g.upload("w", &w);
        let dy = to_f32(&uniform(seed + 2, rows * n, -1.0, 1.0));
        let dyb = g.upload("dy", &dy);
        let fwd = Matmul { m: rows, n, k: cols, bias: true, act: Act::Relu, subgroup: true, ..Default::default() };
        let wgrad =
            Matmul { m: cols + 1, n, k: rows, trans_a: true, ones_row: true, subgroup: true, ..Default::default() };
        for (what, mm, b, bh) in [("forward", fwd, &wb, &w), ("weight gradient", wgrad, &dyb, &dy)] {
            let implicit = Matmul { im2col: Some(geo), ..mm };
            if !implicit.im2col_runs(g, &geo, &xv) {
                assert!(!g.alias_operands, "{what} {geo:?}: no implicit im2col on an aliasing adapter");
                continue;
            }
            let run = |mm: Matmul, a: View| {
                let c = poisoned(g, "c", mm.m * n + 5);
                let l = mm.launch(g, "t", a, b.into(), (&c).into(), None).unwrap();
                g.run(&l).unwrap();
                let got = g.read_f32(&c).unwrap();
                assert!(got[mm.m * n..].iter().all(|v| v.is_nan()), "{what} {geo:?}: wrote past C");
                (l, got[..mm.m * n].to_vec())
            };
            let (li, got) = run(implicit, xv);
            let (le, want) = run(Matmul { tex: Some(true), ..mm }, (&mb).into());
            // The image is read in place: no copy of it (B, if small, is copied).
            assert!(
                li.label.contains("matmul_sgtex[im2col ") && li.fills.iter().all(|f| f.buffer != xb),
                "{}",
                li.label
            );
            assert!(le.label.contains("matmul_sgtex["), "{}", le.label);
            let differ = got.iter().zip(&want).position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(differ.is_none(), "{what} {geo:?}: differs from the gathered matrix's product first at {differ:?}");
            // And the product itself, against the f64 reference over the host's matrix.
            let (a64, b64) = (to_f64(&matrix), to_f64(bh));
            let want64 = if mm.trans_a {
                let mut at = transpose(&a64, rows, cols);
                at.extend(std::iter::repeat_n(1.0, rows));
                matmul(&at, &b64, cols + 1, n, rows, false)
            } else {
                matmul(&a64, &b64, rows, n, cols, true).into_iter().map(|v| act_forward(Act::Relu, v)).collect()
            };
            tol(mm.k).check(&format!("{what} {geo:?}"), &got, &want64).unwrap();
            ran += 1;
        }
        // The matrix as op(B) (IM2COL_B): a transposed conv's weight gradient, Aᵀ · matrix with A [rows, 16].
        let ca = 16;
        let a = to_f32(&uniform(seed + 3, rows * ca, -1.0, 1.0));
        let ab = g.upload("a", &a);
        let mm = Matmul { m: ca, n: cols, k: rows, trans_a: true, subgroup: true, ..Default::default() };
        let implicit = Matmul { im2col: Some(geo), im2col_b: true, ..mm };
        if !implicit.im2col_runs(g, &geo, &xv) {
            assert!(!g.alias_operands, "B {geo:?}: no implicit im2col on an aliasing adapter");
            continue;
        }
        let run = |mm: Matmul, b: View| {
            let c = poisoned(g, "c", ca * cols + 5);
            let l = mm.launch(g, "t", (&ab).into(), b, (&c).into(), None).unwrap();
            g.run(&l).unwrap();
            let got = g.read_f32(&c).unwrap();
            assert!(got[ca * cols..].iter().all(|v| v.is_nan()), "B {geo:?}: wrote past C");
            (l, got[..ca * cols].to_vec())
        };
        let (li, got) = run(implicit, xv);
        let (le, want) = run(Matmul { tex: Some(true), ..mm }, (&mb).into());
        assert!(li.label.contains("matmul_sgtex[im2col B ") && li.fills.iter().all(|f| f.buffer != xb), "{}", li.label);
        assert!(le.label.contains("matmul_sgtex["), "{}", le.label);
        let differ = got.iter().zip(&want).position(|(x, y)| x.to_bits() != y.to_bits());
        assert!(differ.is_none(), "B {geo:?}: differs from the gathered matrix's product first at {differ:?}");
        let at = transpose(&to_f64(&a), rows, ca);
        let want64 = matmul(&at, &to_f64(&matrix), ca, cols, rows, false);
        tol(rows).check(&format!("B {geo:?}"), &got, &want64).unwrap();
        ran += 1;
    }
    if g.alias_operands {
        assert_eq!(ran, 3 * cases.len());
    } else {
        eprintln!("skipped: {} does not alias operand textures (lavapipe only)", g.summary.name);
    }
}
