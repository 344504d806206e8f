//! conv.wgsl and conv_grad.wgsl against reference/conv.rs: odd sizes, strides 1 and 2, padding 0/1/2,
//! kernel sizes 1 to 7, 1/3/4+ channels, scalar, vec4 and one-output-channel kernels, outputs poisoned
//! with NaN.

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::conv::{ConvGather, ConvGeom, ConvWgrad, Resid};
use vaegpu::kernels::Act;
use vaegpu::reference::conv::{conv_backward_input, conv_backward_params, conv_forward};
use vaegpu::reference::elementwise::act_forward;
use vaegpu::testing::{poisoned, to_f32, uniform, Tol};

fn gpu() -> &'static Gpu {
    vaegpu::testing::shared_gpu()
}

/// f32 sums of `terms` products of values in [-1, 1].
fn tol(terms: usize) -> Tol {
    Tol::new(1e-5, 2e-6 * (terms as f64).sqrt() * 4.0)
}

struct Case {
    g: ConvGeom,
    batch: usize,
    h: usize,
    w: usize,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(batch: usize, h: usize, w: usize, cin: usize, cout: usize, k: usize, s: usize, p: usize, t: bool) -> Case {
        Case { g: ConvGeom { k, stride: s, pad: p, cin, cout, transposed: t }, batch, h, w }
    }
    fn out(&self) -> (usize, usize) {
        self.g.out_hw(self.h, self.w).unwrap()
    }
    fn name(&self) -> String {
        let g = &self.g;
        format!(
            "{}{}x{}x{}x{}->{} k{} s{} p{}",
            if g.transposed { "convT " } else { "conv " },
            self.batch,
            self.h,
            self.w,
            g.cin,
            g.cout,
            g.k,
            g.stride,
            g.pad
        )
    }
}

/// How the launches are shaped: the adapter's choice (None) or a forced pixels-per-invocation of the
/// gather kernels and split count of the parameter gradient (the shapes a GPU picks, run here too).
#[derive(Clone, Copy, Default)]
struct Shape {
    pix: Option<usize>,
    splits: Option<usize>,
    /// conv_tiled with this (TM, NT) for the forward and input gradient (the parameter gradient is
    /// then left out: it has no tiled kernel).
    tile: Option<(usize, usize)>,
    /// Only the v-th forward epilogue (v mod 3) and input-gradient epilogue (v mod 2) instead of each:
    /// the epilogue is one function for every kernel, so a kernel's cases can share its variants out
    /// (each is a pipeline to compile, seconds on lavapipe).
    variant: Option<usize>,
    /// Force the parameter gradient's im2col path on or off (None: the adapter's choice: on for conv
    /// layers on CPU adapters unless splits are forced).
    im2col: Option<bool>,
    /// Force the flat im2col kernel (GPUs' choice) or the per-row one (CPU adapters').
    flat: Option<bool>,
}

/// Forward (with each activation and the residual add), input gradient (with dact and resid) and
/// parameter gradient of one layer, each on the scalar and (where the channels allow) vec4 kernel.
fn check(c: &Case, seed: u64) {
    check_shaped(c, seed, Shape::default())
}

fn check_shaped(c: &Case, seed: u64, shape: Shape) {
    let gpu = gpu();
    let g = &c.g;
    let (oh, ow) = c.out();
    let xs = c.batch * c.h * c.w * g.cin;
    let ys = c.batch * oh * ow * g.cout;
    let x = uniform(seed, xs, -1.0, 1.0);
    let block = uniform(seed + 1, g.block_rows() * g.cout, -1.0, 1.0);
    let dy = uniform(seed + 2, ys, -1.0, 1.0);
    let r_out = uniform(seed + 3, ys, -1.0, 1.0);
    let r_in = uniform(seed + 4, xs, -1.0, 1.0);
    let z_in: Vec<f64> = uniform(seed + 5, xs, -1.0, 1.0).iter().map(|v| act_forward(Act::Relu, *v)).collect();
    let xb = gpu.upload("x", &to_f32(&x));
    let wb = gpu.upload("w", &to_f32(&block));
    let dyb = gpu.upload("dy", &to_f32(&dy));
    let rob = gpu.upload("r_out", &to_f32(&r_out));
    let rib = gpu.upload("r_in", &to_f32(&r_in));
    let zb = gpu.upload("z_in", &to_f32(&z_in));
    let taps = g.k * g.k;
    let tiled = shape.tile.is_some();
    // The kernel each launch must name.
    let entry = |k: &ConvGather, scalar: bool| {
        if tiled {
            "conv_tiled["
        } else if !scalar && k.vec4_ok() {
            "conv_gather_v4["
        } else if !scalar && k.n1_ok() {
            "conv_gather_n1["
        } else {
            "conv_gather["
        }
    };
    for scalar in if tiled { vec![false] } else { vec![true, false] } {
        let fwd = [(Act::Identity, false, false), (Act::Relu, true, false), (Act::Tanh, false, true)];
        for (i, &(act, resid, pre_relu)) in fwd.iter().enumerate() {
            if shape.variant.is_some_and(|v| v % 3 != i) {
                continue;
            }
            let mut k = ConvGather::forward(g, c.batch, c.h, c.w, act).unwrap();
            k.scalar = scalar;
            k.pix = shape.pix;
            k.tile = shape.tile;
            k.pre_relu = pre_relu;
            k.resid = if resid { Resid::BeforeAct } else { Resid::None };
            let yb = poisoned(gpu, "y", ys);
            let r = if resid { Some((&rob).into()) } else { None };
            let l = k.launch(gpu, "t", (&xb).into(), (&wb).into(), (&yb).into(), None, r).unwrap();
            assert!(l.label.contains(entry(&k, scalar)), "{}", l.label);
            gpu.run(&l).unwrap();
            let want = conv_forward(g, &x, &block, c.batch, c.h, c.w, act, pre_relu, resid.then_some(&r_out[..]));
            let what = format!("{} forward {act:?} resid={resid} pre_relu={pre_relu} scalar={scalar}", c.name());
            tol(taps * g.cin).check(&what, &gpu.read_f32(&yb).unwrap()[..ys], &want).unwrap();
        }
        for (i, &(dact, resid)) in [(Act::Identity, false), (Act::Relu, true)].iter().enumerate() {
            if shape.variant.is_some_and(|v| v % 2 != i) {
                continue;
            }
            let mut k = ConvGather::input_grad(g, c.batch, c.h, c.w, dact).unwrap();
            k.scalar = scalar;
            k.pix = shape.pix;
            k.tile = shape.tile;
            k.resid = if resid { Resid::AfterDact } else { Resid::None };
            let dxb = poisoned(gpu, "dx", xs);
            let z = (dact != Act::Identity).then(|| (&zb).into());
            let r = resid.then(|| (&rib).into());
            let l = k.launch(gpu, "t", (&dyb).into(), (&wb).into(), (&dxb).into(), z, r).unwrap();
            assert!(l.label.contains(entry(&k, scalar)), "{}", l.label);
            gpu.run(&l).unwrap();
            let zs = (dact != Act::Identity).then_some(&z_in[..]);
            let want = conv_backward_input(g, &dy, &block, c.batch, c.h, c.w, dact, zs, resid.then_some(&r_in[..]));
            let what = format!("{} input grad dact={dact:?} resid={resid} scalar={scalar}", c.name());
            tol(taps * g.cout).check(&what, &gpu.read_f32(&dxb).unwrap()[..xs], &want).unwrap();
        }
        if tiled {
            continue;
        }
        for pre_relu in [false, true] {
            let len = g.block_rows() * g.cout;
            // Written at an offset inside a larger poisoned buffer, as a block of the flat gradient.
            let off = 5;
            let out = poisoned(gpu, "dw", len + off + 3);
            let mut launches = Vec::new();
            let mut scratch_bufs = Vec::new();
            for (mut k, at) in ConvWgrad::for_layer(g, c.batch, c.h, c.w, pre_relu).unwrap() {
                k.scalar = scalar;
                k.splits = shape.splits;
                k.im2col = shape.im2col;
                k.flat = shape.flat;
                let (n, np) = (k.scratch_len(gpu), k.product_len(gpu));
                scratch_bufs.push(poisoned(gpu, "scratch", n.max(1)));
                scratch_bufs.push(poisoned(gpu, "product", np.max(1)));
                let [.., s, pb] = &scratch_bufs[..] else { unreachable!() };
                let (sv, pv) = ((n > 0).then(|| s.into()), (np > 0).then(|| pb.into()));
                let ls = k.launch(gpu, "t", (&xb).into(), (&dyb).into(), (&out).into(), off + at, sv, pv).unwrap();
                assert_eq!(ls.iter().any(|l| l.label.contains(" im2col[")), k.uses_im2col(gpu));
                if k.uses_im2col(gpu) && k.im2col_splits(gpu) > 1 {
                    assert!(ls.iter().any(|l| l.label.contains("matmul_tiled[") && l.label.contains(" /")));
                    let folds = ls.iter().any(|l| l.label.contains(" split_fold/"));
                    assert_eq!(folds, k.im2col_splits(gpu) > 64, "{}", c.name());
                }
                let flat = shape.flat.unwrap_or(!gpu.is_cpu());
                assert!(ls.iter().all(|l| !l.label.contains(" im2col[") || l.label.contains(", flat]") == flat));
                launches.extend(ls);
            }
            for l in &launches {
                gpu.run(l).unwrap();
            }
            let got = gpu.read_f32(&out).unwrap();
            let want = conv_backward_params(g, &x, &dy, c.batch, c.h, c.w, pre_relu);
            let what = format!("{} param grad pre_relu={pre_relu} scalar={scalar}", c.name());
            let pixels = c.batch * oh.max(c.h) * ow.max(c.w);
            tol(pixels).check(&what, &got[off..off + len], &want).unwrap();
            assert!(got[..off].iter().chain(&got[off + len..]).all(|v| v.is_nan()), "{what}: wrote outside its block");
        }
    }
}

#[test]
fn conv_matches_reference_on_awkward_shapes() {
    let cases = [
        // batch, h, w, cin, cout, k, stride, pad, transposed
        Case::new(2, 7, 5, 1, 3, 3, 1, 1, false),
        Case::new(3, 9, 9, 3, 5, 3, 2, 1, false),
        Case::new(1, 6, 10, 4, 8, 4, 2, 1, false),
        Case::new(2, 11, 7, 8, 4, 1, 1, 0, false),
        Case::new(2, 9, 13, 3, 4, 5, 2, 2, false),
        Case::new(1, 13, 13, 4, 4, 7, 1, 2, false),
        Case::new(2, 8, 8, 5, 1, 2, 2, 0, false),
        Case::new(2, 7, 7, 12, 8, 3, 1, 0, false),
        // One output channel from 4k channels (conv_gather_n1): forward here, input gradient below.
        Case::new(2, 7, 5, 8, 1, 3, 1, 1, false),
        Case::new(2, 10, 6, 1, 8, 4, 2, 1, false),
    ];
    for (i, c) in cases.iter().enumerate() {
        check(c, 100 + 10 * i as u64);
    }
}

#[test]
fn conv_transpose_matches_reference_on_awkward_shapes() {
    let cases = [
        Case::new(2, 3, 5, 4, 1, 4, 2, 1, true),
        Case::new(3, 7, 7, 8, 4, 4, 2, 1, true),
        Case::new(1, 5, 4, 3, 3, 3, 2, 0, true),
        Case::new(2, 4, 6, 1, 5, 3, 1, 1, true),
        Case::new(2, 3, 3, 4, 8, 5, 2, 2, true),
        Case::new(1, 5, 5, 4, 4, 7, 3, 2, true),
        Case::new(2, 6, 3, 8, 8, 2, 2, 0, true),
        // A decoder's last layer (conv_gather_n1 on phase rows).
        Case::new(2, 5, 3, 8, 1, 4, 2, 1, true),
    ];
    for (i, c) in cases.iter().enumerate() {
        check(c, 500 + 10 * i as u64);
    }
}

/// The launch shapes a discrete GPU picks (fewer pixels per invocation, many reduction splits), which
/// this adapter would not choose itself: each pixel count on the forward and input-gradient kernels
/// (conv and transposed, so GEOM_T phase rows too), and split counts of one, a few, and one split a
/// pixel: 75 splits take one split_fold pass before the sum, the transposed conv's 294 weight splits
/// one and its 1176 bias splits two. One epilogue variant a case (the awkward-shape tests run each on
/// every gather kernel): each pipeline is seconds of lavapipe compile time.
#[test]
fn gpu_launch_shapes_match_reference() {
    let cases = [
        (Case::new(3, 9, 9, 3, 5, 3, 2, 1, false), Shape { pix: Some(1), splits: Some(100), ..Default::default() }),
        (Case::new(6, 7, 7, 8, 4, 4, 2, 1, true), Shape { pix: Some(2), splits: Some(2000), ..Default::default() }),
        (Case::new(2, 5, 5, 4, 8, 3, 1, 1, true), Shape { pix: Some(8), splits: Some(3), ..Default::default() }),
        (Case::new(2, 5, 3, 8, 1, 4, 2, 1, true), Shape { pix: Some(1), ..Default::default() }),
        (Case::new(2, 7, 7, 12, 8, 3, 1, 0, false), Shape { pix: Some(4), splits: Some(1), ..Default::default() }),
    ];
    for (i, (c, shape)) in cases.iter().enumerate() {
        check_shaped(c, 900 + 10 * i as u64, Shape { variant: Some(i), ..*shape });
    }
}

/// conv_tiled (the implicit GEMM through workgroup tiles that GPUs may choose) on each TM and NT value:
/// fewer channels than a k-step (the k' walk crosses taps inside a step), channel counts that are not
/// multiples of 16 in and out (partial k-steps, partial column tiles), several row and column tiles,
/// strides 1/2/3 (GEOM_T phases), and a 1×1 transposed conv of stride 2 whose odd phases have no tap.
#[test]
fn tiled_kernel_matches_reference() {
    // Two cases of the same direction per tile shape and epilogue variant, so they share pipelines
    // (each is seconds of lavapipe compile time): four tile shapes cover TM 4/8 and NT 1-4, their
    // variants every forward and input-gradient epilogue.
    let cases = [
        (Case::new(3, 9, 9, 3, 5, 3, 2, 1, false), (4, 1), 0),
        (Case::new(1, 13, 13, 4, 4, 7, 1, 2, false), (4, 1), 0),
        (Case::new(6, 7, 7, 8, 4, 4, 2, 1, true), (8, 2), 1),
        (Case::new(1, 5, 5, 4, 4, 7, 3, 2, true), (8, 2), 1),
        (Case::new(3, 13, 13, 40, 70, 3, 2, 1, false), (4, 3), 2),
        (Case::new(2, 9, 7, 17, 36, 3, 1, 1, false), (4, 3), 2),
        (Case::new(2, 4, 4, 4, 6, 1, 2, 0, true), (8, 4), 3),
        (Case::new(2, 6, 6, 33, 20, 4, 2, 1, true), (8, 4), 3),
    ];
    for (i, (c, tile, variant)) in cases.iter().enumerate() {
        let shape = Shape { tile: Some(*tile), variant: Some(*variant), ..Default::default() };
        check_shaped(c, 1300 + 10 * i as u64, shape);
    }
}

/// The parameter gradient through im2col and a matmul (what CPU adapters run; the awkward-shape tests
/// cover it here, and this one wherever the suite runs), with the im2col kernel the adapter does not
/// choose (flat on a CPU adapter, per row on a GPU; the other is the default everywhere else): conv and
/// transposed conv, odd channel counts, a 1×1 kernel, padding 2, relu on read; one forward and
/// input-gradient variant each.
#[test]
fn im2col_weight_gradient_matches_reference() {
    let cases = [
        Case::new(3, 9, 9, 3, 5, 3, 2, 1, false),
        Case::new(2, 11, 7, 8, 4, 1, 1, 0, false),
        Case::new(2, 9, 13, 3, 4, 5, 2, 2, false),
        Case::new(2, 7, 7, 12, 8, 3, 1, 0, false),
        // Transposed: the output gradient gathered, the product reordered by untap (relu-on-read and
        // the bias launch keep the split reduction).
        Case::new(3, 7, 7, 8, 4, 4, 2, 1, true),
        Case::new(1, 5, 4, 3, 3, 3, 2, 0, true),
        Case::new(2, 4, 6, 1, 5, 3, 1, 1, true),
    ];
    for (i, c) in cases.iter().enumerate() {
        let shape = Shape { im2col: Some(true), flat: Some(gpu().is_cpu()), variant: Some(i), ..Default::default() };
        check_shaped(c, 1700 + 10 * i as u64, shape);
    }
}

/// The parameter gradient through im2col and a matmul with K (the pixels) split over workgroups, what
/// GPUs run when their conv kernel is the matmul forms: the tiled matmul's partial products, folded
/// (more than 64 splits: 1200 pixels split 75 ways) and summed by split_sum, or by untap for a
/// transposed conv.
#[test]
fn im2col_weight_gradient_split_k_matches_reference() {
    let cases = [
        (Case::new(3, 9, 9, 8, 4, 3, 1, 1, false), 5),
        (Case::new(4, 15, 20, 3, 5, 3, 1, 1, false), 75),
        (Case::new(3, 7, 7, 8, 4, 4, 2, 1, true), 2),
        (Case::new(4, 15, 20, 4, 3, 3, 1, 1, true), 100),
    ];
    for (i, (c, splits)) in cases.iter().enumerate() {
        let shape = Shape { im2col: Some(true), splits: Some(*splits), variant: Some(i), ..Default::default() };
        check_shaped(c, 3900 + 10 * i as u64, shape);
    }
}

/// The K splits a GPU's im2col weight gradient asks for, at the conv VAE's batch-1024 shapes.
#[test]
fn gpu_weight_gradient_splits_fill_the_device() {
    use vaegpu::kernels::matmul::{gpu_k_splits, split_k};
    // enc.conv2: 513 × 64 (9 tiles) over 50176 pixels: 114 asked, 112 of 448 pixels run.
    assert_eq!(gpu_k_splits(513, 64, 50176), 114);
    assert_eq!(split_k(50176, 114), (448, 112));
    // enc.conv1: 17 × 32 (one tile) over 200704 pixels: splits of 256 pixels, the shortest allowed.
    assert_eq!(gpu_k_splits(17, 32, 200704), 784);
    // Tiles that fill the device alone; too few pixels to split.
    assert_eq!(gpu_k_splits(4096, 4096, 100000), 1);
    assert_eq!(gpu_k_splits(17, 32, 300), 1);
}

#[test]
fn uneven_sizes_are_refused() {
    let g = ConvGeom { k: 4, stride: 2, pad: 1, cin: 1, cout: 4, transposed: false };
    assert!(g.out_hw(28, 28).is_ok());
    let e = g.out_hw(27, 28).unwrap_err();
    assert!(e.contains("does not divide"), "{e}");
    assert!(ConvGather::forward(&g, 2, 5, 5, Act::Relu).is_err());
    let mut k = ConvGather::forward(&g, 2, 28, 28, Act::Relu).unwrap();
    k.pix = Some(3);
    let (x, w, y) =
        (poisoned(gpu(), "x", 2 * 28 * 28), poisoned(gpu(), "w", 17 * 4), poisoned(gpu(), "y", 2 * 14 * 14 * 4));
    let Err(e) = k.launch(gpu(), "t", (&x).into(), (&w).into(), (&y).into(), None, None) else {
        panic!("3 pixels per invocation accepted");
    };
    let e = e.to_string();
    assert!(e.contains("pixels per invocation"), "{e}");
}

/// Every launch through its matmul form (`ConvGather::launches`, what CPU adapters run in training),
/// forced: a conv's forward and a transposed conv's input gradient as one matmul over the gathered
/// matrix (im2col); a transposed conv's forward and a conv's input gradient as one matmul to every
/// (pixel, tap) product, summed into the big image (col2im). Odd channel counts, kernels 1 to 6,
/// strides 1 to 3, padding 0 to 2, every activation forward and act' on the input gradients, relu on
/// read, a residual sum in col2im's epilogue (the im2col forward has none); a conv's input gradient at
/// stride 1 with fewer output than input channels in the im2col form of the conv of dY with the
/// flipped kernel, its residual added by one more launch; outputs, scratch and product poisoned.
#[test]
fn im2col_forward_and_input_gradient_match_reference() {
    let gpu = gpu();
    let cases = [
        Case::new(3, 9, 9, 3, 5, 3, 2, 1, false),
        Case::new(2, 11, 7, 8, 4, 1, 1, 0, false),
        Case::new(2, 9, 13, 3, 4, 5, 2, 2, false),
        Case::new(2, 7, 7, 12, 8, 3, 1, 0, false),
        Case::new(2, 10, 6, 1, 8, 4, 2, 1, false),
        Case::new(2, 9, 6, 4, 4, 6, 3, 0, false),
        Case::new(3, 7, 7, 8, 4, 4, 2, 1, true),
        Case::new(1, 5, 4, 3, 3, 3, 2, 0, true),
        Case::new(2, 4, 6, 1, 5, 3, 1, 1, true),
        Case::new(2, 7, 5, 8, 1, 4, 2, 1, true),
        Case::new(2, 2, 1, 4, 4, 6, 3, 0, true),
        // Stride 1, fewer output channels (the flipped form): odd channels, an even kernel and a padding
        // of 2 (the gather's K − 1 − pad is 1); a residual block's 3×3 conv, with its residual and relu'.
        Case::new(2, 6, 5, 7, 3, 4, 1, 2, false),
        Case::new(2, 7, 7, 16, 8, 3, 1, 1, false),
    ];
    let acts = [Act::Identity, Act::Relu, Act::Tanh, Act::Sigmoid, Act::LeakyRelu];
    for (i, c) in cases.iter().enumerate() {
        let g = &c.g;
        let seed = 2300 + 10 * i as u64;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow * g.cout);
        let x = uniform(seed, xs, -1.0, 1.0);
        let block = uniform(seed + 1, g.block_rows() * g.cout, -1.0, 1.0);
        let dy = uniform(seed + 2, ys, -1.0, 1.0);
        let z_in: Vec<f64> = uniform(seed + 3, xs, -1.0, 1.0).iter().map(|v| act_forward(Act::Relu, *v)).collect();
        let (xb, wb, dyb, zb) = (
            gpu.upload("x", &to_f32(&x)),
            gpu.upload("w", &to_f32(&block)),
            gpu.upload("dy", &to_f32(&dy)),
            gpu.upload("z", &to_f32(&z_in)),
        );
        let taps = g.k * g.k;
        for fwd in [true, false] {
            let act = acts[(2 * i + usize::from(fwd)) % acts.len()];
            let dact = [Act::Relu, Act::Identity, Act::Tanh][i % 3];
            let pre_relu = fwd && !g.transposed && i % 2 == 1;
            let mut k = if fwd {
                ConvGather::forward(g, c.batch, c.h, c.w, act).unwrap()
            } else {
                ConvGather::input_grad(g, c.batch, c.h, c.w, dact).unwrap()
            };
            k.pre_relu = pre_relu;
            k.im2col = Some(true);
            // im2col where the small image is written, col2im where the big one is, except a conv's
            // input gradient at stride 1 with fewer output channels (the flipped form: im2col of dY);
            // the residual sum (on every other case) in col2im's epilogue or the flipped form's add.
            let flipped = !fwd && !g.transposed && g.stride == 1 && g.cout < g.cin;
            let im2col = fwd != g.transposed || flipped;
            let mut resid = k;
            resid.resid = if fwd { Resid::BeforeAct } else { Resid::AfterDact };
            if im2col && !flipped {
                assert!(!resid.uses_im2col(gpu) && resid.scratch_len(gpu) == 0, "{}: {resid:?}", c.name());
            } else if i % 2 == 0 {
                k = resid;
            }
            let has_r = k.resid != Resid::None;
            let what = format!(
                "{} {} {} resid={has_r}",
                c.name(),
                if fwd { "forward" } else { "input grad" },
                if flipped {
                    "flipped im2col"
                } else if im2col {
                    "im2col"
                } else {
                    "col2im"
                }
            );
            assert!(k.uses_im2col(gpu), "{what}");
            let (input, out_len) = if fwd { (&xb, ys) } else { (&dyb, xs) };
            let r_vals = uniform(seed + 4, out_len, -1.0, 1.0);
            let rb = gpu.upload("r", &to_f32(&r_vals));
            let r = has_r.then(|| (&rb).into());
            let out = poisoned(gpu, "out", out_len);
            let (ns, np) = (k.scratch_len(gpu), k.product_len(gpu));
            let (sb, pb) = (poisoned(gpu, "scratch", ns.max(1)), poisoned(gpu, "product", np.max(1)));
            let z = (!fwd && dact != Act::Identity).then(|| (&zb).into());
            let sv = (ns > 0).then(|| (&sb).into());
            let pv = (np > 0).then(|| (&pb).into());
            let ls = k.launches(gpu, "t", input.into(), (&wb).into(), (&out).into(), z, r, sv, pv).unwrap();
            // im2col: the gather, the weights reordered for a transposed conv (flipped in the flipped
            // form), the matmul, the flipped form's residual; col2im: the weights reordered for a
            // transposed conv, the matmul, the sum.
            let labels: Vec<&str> = ls.iter().map(|l| l.label.as_str()).collect();
            let count = if flipped { 3 + usize::from(has_r) } else { 2 + usize::from(g.transposed) };
            assert_eq!(ls.len(), count, "{what}: {labels:?}");
            let mark = if im2col { " im2col[" } else { " col2im[" };
            assert!(labels.iter().any(|l| l.contains(mark)), "{what}: {labels:?}");
            assert_eq!(flipped, labels.iter().any(|l| l.contains(" retap flipped")), "{what}: {labels:?}");
            assert_eq!(flipped && has_r, labels.iter().any(|l| l.contains(" add_into")), "{what}: {labels:?}");
            for l in &ls {
                gpu.run(l).unwrap();
            }
            let got = gpu.read_f32(&out).unwrap();
            if fwd {
                let rs = has_r.then_some(&r_vals[..]);
                let want = conv_forward(g, &x, &block, c.batch, c.h, c.w, act, pre_relu, rs);
                tol(taps * g.cin).check(&format!("{what} {act:?} pre_relu={pre_relu}"), &got, &want).unwrap();
            } else {
                let zs = (dact != Act::Identity).then_some(&z_in[..]);
                let rs = has_r.then_some(&r_vals[..]);
                let want = conv_backward_input(g, &dy, &block, c.batch, c.h, c.w, dact, zs, rs);
                tol(taps * g.cout).check(&format!("{what} dact={dact:?}"), &got, &want).unwrap();
            }
        }
    }
}

/// col2im's 64-bit form (conv_grad64.wgsl col2im64; CPU adapters with 64-bit integers, such as lavapipe)
/// against the 32-bit one on the same inputs: the same bits, and the entry that ran is the expected one.
/// A conv's input gradient at stride 2 (8 and 16 channels, act'), a transposed conv's forward (8
/// channels, the bias, the residual before the activation; 16 channels, no residual).
#[test]
fn col2im_64_bit_form_matches_the_32_bit_one() {
    let Some((wide, narrow)) = vaegpu::testing::wide_and_narrow_gpus() else { return };
    let cases = [
        (Case::new(2, 9, 7, 8, 16, 3, 2, 1, false), Resid::None),
        (Case::new(2, 5, 6, 16, 8, 4, 2, 1, true), Resid::BeforeAct),
        (Case::new(1, 6, 6, 16, 12, 4, 2, 1, false), Resid::None),
        (Case::new(2, 4, 5, 12, 16, 4, 2, 1, true), Resid::None),
    ];
    for (i, (c, resid)) in cases.iter().enumerate() {
        let g = &c.g;
        let seed = 7700 + 10 * i as u64;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow * g.cout);
        let x = to_f32(&uniform(seed, xs, -1.0, 1.0));
        let block = to_f32(&uniform(seed + 1, g.block_rows() * g.cout, -1.0, 1.0));
        let dy = to_f32(&uniform(seed + 2, ys, -1.0, 1.0));
        // Relu outputs (half of them 0), for relu' in the input gradients.
        let z = to_f32(&uniform(seed + 3, xs.max(ys), -1.0, 1.0).iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
        let r = to_f32(&uniform(seed + 4, xs.max(ys), -1.0, 1.0));
        // The launch in the col2im form: a transposed conv's forward, a conv's input gradient.
        let fwd = g.transposed;
        let mut k = if fwd {
            ConvGather::forward(g, c.batch, c.h, c.w, Act::Tanh).unwrap()
        } else {
            ConvGather::input_grad(g, c.batch, c.h, c.w, Act::Relu).unwrap()
        };
        k.im2col = Some(true);
        k.resid = *resid;
        let run = |gpu: &Gpu| -> (Vec<&'static str>, Vec<f32>) {
            let (input, out_len) = if fwd { (gpu.upload("x", &x), ys) } else { (gpu.upload("dy", &dy), xs) };
            let (wb, zb, rb) = (gpu.upload("w", &block), gpu.upload("z", &z), gpu.upload("r", &r));
            let out = poisoned(gpu, "out", out_len);
            let (ns, np) = (k.scratch_len(gpu), k.product_len(gpu));
            let (sb, pb) = (poisoned(gpu, "scratch", ns.max(1)), poisoned(gpu, "product", np.max(1)));
            let zv = (!fwd).then(|| (&zb).into());
            let rv = (k.resid != Resid::None).then(|| (&rb).into());
            let (sv, pv) = ((ns > 0).then(|| (&sb).into()), (np > 0).then(|| (&pb).into()));
            let ls = k.launches(gpu, "t", (&input).into(), (&wb).into(), (&out).into(), zv, rv, sv, pv).unwrap();
            for l in &ls {
                gpu.run(l).unwrap();
            }
            (ls.iter().map(|l| l.entry).collect(), gpu.read_f32(&out).unwrap())
        };
        let what = format!("{} {}", c.name(), if fwd { "forward" } else { "input grad" });
        let ((e64, y64), (e32, y32)) = (run(&wide), run(&narrow));
        assert!(e64.contains(&"col2im64") && e32.contains(&"col2im"), "{what}: {e64:?} {e32:?}");
        assert!(!e32.contains(&"col2im64") && !e64.contains(&"col2im"), "{what}: {e64:?} {e32:?}");
        assert!(y64.iter().all(|v| v.is_finite()), "{what}: non-finite output");
        let differ = y64.iter().zip(&y32).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{what}: {differ} outputs differ between the 64-bit and 32-bit forms");
    }
}

/// On the matmul path, a conv's forward, the flipped form of its input gradient and its weight
/// gradient, and a transposed conv's input and weight gradients, read their im2col matrix in place
/// from the image (matmul_sgtex's IM2COL, or IM2COL_B for the transposed conv's weight gradient, on
/// lavapipe: the image's buffer aliased, channels, pixels and N multiples of 8): no gather launch, and the bits of
/// the gathered path (`implicit: Some(false)`), which the reference checks too. Images at an offset
/// in buffers of 64 KiB or more; relu on read; strides 1 and 2, padding 0 and 1. Every product has
/// SUBGROUP_MIN_MACS or more, so that the gathered path runs the same kernel (smaller ones run the
/// register-blocked kernel on lavapipe, over a gathered matrix).
#[test]
fn implicit_im2col_matches_the_gathered_path() {
    use vaegpu::gpu::View;
    let gpu = gpu();
    let cases = [
        // A residual block's 3×3 conv (relu on read) and its input gradient in the flipped form.
        (Case::new(8, 7, 7, 32, 16, 3, 1, 1, false), true),
        (Case::new(16, 8, 8, 8, 16, 4, 2, 1, false), false),
        (Case::new(16, 9, 9, 16, 16, 3, 2, 0, false), true),
        // A transposed conv: its input gradient gathers dY (as A), its weight gradient too (as B).
        (Case::new(8, 7, 7, 16, 32, 4, 2, 1, true), false),
        (Case::new(16, 6, 6, 16, 8, 3, 1, 1, true), false),
    ];
    let mut implicit_runs = 0;
    for (i, (c, pre_relu)) in cases.iter().enumerate() {
        let g = &c.g;
        let seed = 4700 + 10 * i as u64;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow * g.cout);
        let x = uniform(seed, xs, -1.0, 1.0);
        let block = uniform(seed + 1, g.block_rows() * g.cout, -1.0, 1.0);
        let dy = uniform(seed + 2, ys, -1.0, 1.0);
        let z_in: Vec<f64> = uniform(seed + 3, xs, -1.0, 1.0).iter().map(|v| act_forward(Act::Relu, *v)).collect();
        // x and dy 1 KiB into buffers of 80 KiB or more.
        let big = |label: &str, v: &[f64]| {
            let b = gpu.storage(label, (1024 + 4 * v.len()).max(80 << 10) as u64);
            gpu.write(&b, 1024, &to_f32(v));
            b
        };
        let (xb, dyb) = (big("x", &x), big("dy", &dy));
        let (xv, dyv) = (View::new(&xb, 1024, xs), View::new(&dyb, 1024, ys));
        let (wb, zb) = (gpu.upload("w", &to_f32(&block)), gpu.upload("z", &to_f32(&z_in)));
        let taps = g.k * g.k;
        // Forward, then the input gradient (the flipped form where the stride is 1 and cout < cin).
        for fwd in [true, false] {
            let mut k = if fwd {
                ConvGather::forward(g, c.batch, c.h, c.w, Act::Tanh).unwrap()
            } else {
                ConvGather::input_grad(g, c.batch, c.h, c.w, Act::Relu).unwrap()
            };
            k.pre_relu = fwd && *pre_relu;
            k.im2col = Some(true);
            // The launches with an im2col form: a conv's forward, a transposed conv's input gradient,
            // a conv's input gradient at stride 1 with fewer output channels (the flipped form).
            let flipped = !fwd && !g.transposed && g.stride == 1 && g.cout < g.cin;
            if fwd == g.transposed && !flipped {
                continue;
            }
            let (input, out_len) = if fwd { (xv, ys) } else { (dyv, xs) };
            let z = (!fwd).then(|| (&zb).into());
            let run = |k: ConvGather| {
                let out = poisoned(gpu, "out", out_len);
                let (ns, np) = (k.scratch_len(gpu), k.product_len(gpu));
                let (sb, pb) = (poisoned(gpu, "scratch", ns.max(1)), poisoned(gpu, "product", np.max(1)));
                let (sv, pv) = ((ns > 0).then(|| (&sb).into()), (np > 0).then(|| (&pb).into()));
                let ls = k.launches(gpu, "t", input, (&wb).into(), (&out).into(), z, None, sv, pv).unwrap();
                for l in &ls {
                    gpu.run(l).unwrap();
                }
                (ls.iter().map(|l| l.label.clone()).collect::<Vec<_>>(), gpu.read_f32(&out).unwrap())
            };
            let what = format!("{} {}", c.name(), if fwd { "forward" } else { "input grad" });
            let (labels, got) = run(k);
            let (gathered, want) = run(ConvGather { implicit: Some(false), ..k });
            assert!(gathered.iter().any(|l| l.contains(" im2col[")), "{what}: {gathered:?}");
            let implicit = labels.iter().any(|l| l.contains("matmul_sgtex[im2col "));
            assert_eq!(implicit, gpu.alias_operands, "{what}: {labels:?}");
            assert_eq!(labels.iter().any(|l| l.contains(" im2col[")), !implicit, "{what}: {labels:?}");
            implicit_runs += usize::from(implicit);
            let differ = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(differ.is_none(), "{what}: differs from the gathered path first at {differ:?}");
            let reference = if fwd {
                conv_forward(g, &x, &block, c.batch, c.h, c.w, Act::Tanh, *pre_relu, None)
            } else {
                conv_backward_input(g, &dy, &block, c.batch, c.h, c.w, Act::Relu, Some(&z_in[..]), None)
            };
            tol(taps * g.cin.max(g.cout)).check(&what, &got, &reference).unwrap();
        }
        // The weight gradient (with its bias row; a transposed conv's bias is a launch of its own),
        // written at an offset in a poisoned buffer.
        let len = g.block_rows() * g.cout;
        let run = |implicit: Option<bool>| {
            let out = poisoned(gpu, "dw", len + 8);
            let mut labels = vec![];
            for (k, at) in ConvWgrad::for_layer(g, c.batch, c.h, c.w, *pre_relu).unwrap() {
                let k = ConvWgrad { implicit, ..k };
                let (ns, np) = (k.scratch_len(gpu), k.product_len(gpu));
                let (sb, pb) = (poisoned(gpu, "scratch", ns.max(1)), poisoned(gpu, "product", np.max(1)));
                let (sv, pv) = ((ns > 0).then(|| (&sb).into()), (np > 0).then(|| (&pb).into()));
                let ls = k.launch(gpu, "t", xv, dyv, (&out).into(), 5 + at, sv, pv).unwrap();
                for l in &ls {
                    gpu.run(l).unwrap();
                }
                labels.extend(ls.iter().map(|l| l.label.clone()));
            }
            let got = gpu.read_f32(&out).unwrap();
            assert!(got[..5].iter().chain(&got[5 + len..]).all(|v| v.is_nan()), "{}: wrote outside", c.name());
            (labels, got[5..5 + len].to_vec())
        };
        let what = format!("{} weight gradient pre_relu={pre_relu}", c.name());
        let (labels, got) = run(None);
        let (gathered, want) = run(Some(false));
        assert!(gathered.iter().any(|l| l.contains(" im2col[")), "{what}: {gathered:?}");
        let mark = if g.transposed { "matmul_sgtex[im2col B " } else { "matmul_sgtex[im2col " };
        let implicit = labels.iter().any(|l| l.contains(mark));
        assert_eq!(implicit, gpu.alias_operands, "{what}: {labels:?}");
        assert_eq!(labels.iter().any(|l| l.contains(" im2col[")), !implicit, "{what}: {labels:?}");
        implicit_runs += usize::from(implicit);
        let differ = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(differ.is_none(), "{what}: differs from the gathered path first at {differ:?}");
        let reference = conv_backward_params(g, &x, &dy, c.batch, c.h, c.w, *pre_relu);
        tol(c.batch * oh * ow).check(&what, &got, &reference).unwrap();
    }
    if gpu.alias_operands {
        assert_eq!(implicit_runs, 11);
    }
}

/// On the matmul path, the col2im-form launches (a transposed conv's forward, a conv's input gradient
/// where it is not flipped) run as one implicit GEMM per output phase (matmul_sgtex's PHASES, on
/// lavapipe: the input's buffer aliased, channels multiples of 8): one launch, no product matrix and
/// no col2im, and the col2im path's results (`implicit: Some(false)`) to within the rounding of a
/// different order of sums, both against the reference. Strides 2 and 1, kernels 4, 3 and 2, padding
/// 1 and 0, residuals before the activation (forward) and after act' (input gradient, a launch of its
/// own), the input at an offset in a buffer of 64 KiB or more, the output poisoned.
#[test]
fn phase_gemms_match_the_col2im_path() {
    use vaegpu::gpu::View;
    use vaegpu::kernels::conv::Resid;
    let gpu = gpu();
    // (case, forward: else the input gradient, residual)
    let cases = [
        (Case::new(8, 7, 7, 16, 32, 4, 2, 1, true), true, false),
        (Case::new(32, 5, 6, 16, 16, 4, 2, 1, true), true, true),
        (Case::new(32, 8, 8, 32, 8, 2, 2, 0, true), true, false),
        (Case::new(8, 14, 14, 32, 16, 4, 2, 1, false), false, false),
        (Case::new(32, 12, 10, 16, 16, 4, 2, 1, false), false, true),
        (Case::new(16, 7, 7, 8, 16, 3, 1, 1, false), false, false),
    ];
    let mut phase_runs = 0;
    for (i, &(ref c, fwd, resid)) in cases.iter().enumerate() {
        let g = &c.g;
        let seed = 5100 + 10 * i as u64;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow * g.cout);
        let (in_len, out_len) = if fwd { (xs, ys) } else { (ys, xs) };
        let input = uniform(seed, in_len, -1.0, 1.0);
        let block = uniform(seed + 1, g.block_rows() * g.cout, -1.0, 1.0);
        let z_out: Vec<f64> =
            uniform(seed + 2, out_len, -1.0, 1.0).iter().map(|v| act_forward(Act::Relu, *v)).collect();
        let r = uniform(seed + 3, out_len, -1.0, 1.0);
        let ib = gpu.storage("in", (1024 + 4 * in_len).max(80 << 10) as u64);
        gpu.write(&ib, 1024, &to_f32(&input));
        let iv = View::new(&ib, 1024, in_len);
        let (wb, zb, rb) =
            (gpu.upload("w", &to_f32(&block)), gpu.upload("z", &to_f32(&z_out)), gpu.upload("r", &to_f32(&r)));
        let mut k = if fwd {
            ConvGather::forward(g, c.batch, c.h, c.w, Act::Tanh).unwrap()
        } else {
            ConvGather::input_grad(g, c.batch, c.h, c.w, Act::Relu).unwrap()
        };
        k.im2col = Some(true);
        if resid {
            k.resid = if fwd { Resid::BeforeAct } else { Resid::AfterDact };
        }
        let z = (!fwd).then(|| (&zb).into());
        let rv = resid.then(|| (&rb).into());
        let run = |k: ConvGather| {
            let out = poisoned(gpu, "out", out_len + 12);
            let (ns, np) = (k.scratch_len(gpu), k.product_len(gpu));
            let (sb, pb) = (poisoned(gpu, "scratch", ns.max(1)), poisoned(gpu, "product", np.max(1)));
            let (sv, pv) = ((ns > 0).then(|| (&sb).into()), (np > 0).then(|| (&pb).into()));
            let ov = View::new(&out, 32, out_len);
            let ls = k.launches(gpu, "t", iv, (&wb).into(), ov, z, rv, sv, pv).unwrap();
            for l in &ls {
                gpu.run(l).unwrap();
            }
            let got = gpu.read_f32(&out).unwrap();
            assert!(got[..8].iter().chain(&got[8 + out_len..]).all(|v| v.is_nan()), "{}: wrote outside", c.name());
            (ls.iter().map(|l| l.label.clone()).collect::<Vec<_>>(), got[8..8 + out_len].to_vec())
        };
        let what = format!("{} {} resid={resid}", c.name(), if fwd { "forward" } else { "input grad" });
        let (labels, got) = run(k);
        let (col2im, want) = run(ConvGather { implicit: Some(false), ..k });
        assert!(col2im.iter().any(|l| l.contains(" col2im[")), "{what}: {col2im:?}");
        let phases = labels.iter().any(|l| l.contains("matmul_sgtex[im2col phases "));
        assert_eq!(phases, gpu.alias_operands, "{what}: {labels:?}");
        assert_eq!(labels.iter().any(|l| l.contains(" col2im[")), !phases, "{what}: {labels:?}");
        assert_eq!(
            labels.len(),
            if phases { 1 + usize::from(resid && !fwd) } else { col2im.len() },
            "{what}: {labels:?}"
        );
        phase_runs += usize::from(phases);
        let taps = g.k * g.k;
        let reference = if fwd {
            conv_forward(g, &input, &block, c.batch, c.h, c.w, Act::Tanh, false, resid.then_some(&r[..]))
        } else {
            conv_backward_input(
                g,
                &input,
                &block,
                c.batch,
                c.h,
                c.w,
                Act::Relu,
                Some(&z_out[..]),
                resid.then_some(&r[..]),
            )
        };
        let t = tol(taps * g.cin.max(g.cout));
        t.check(&what, &got, &reference).unwrap();
        t.check(&format!("{what} (col2im path)"), &want, &reference).unwrap();
    }
    if gpu.alias_operands {
        assert_eq!(phase_runs, cases.len());
    }
}

/// On lavapipe (its buffers aliased), a transposed conv's forward to one channel runs as one launch of
/// phase_n1 (8 outputs of a phase row an invocation) instead of retap, product and col2im, and agrees
/// with the col2im path (`implicit: Some(false)`) and the reference to the rounding of another order
/// of sums. T = K/S from 1 to 4, strides 2 and 1, phase rows that do not fill the last block of 8, the
/// input at an offset in an aliased buffer, the output poisoned around its view.
#[test]
fn one_channel_phase_kernel_matches_the_col2im_path() {
    use vaegpu::gpu::View;
    let gpu = gpu();
    let cases = [
        Case::new(8, 14, 14, 32, 1, 4, 2, 1, true),
        Case::new(4, 5, 7, 8, 1, 4, 2, 1, true),
        Case::new(4, 6, 5, 4, 1, 2, 2, 0, true),
        Case::new(2, 5, 5, 8, 1, 3, 1, 1, true),
        Case::new(2, 4, 4, 4, 1, 8, 2, 3, true),
        // Stride 2, OW a multiple of 4: both x phases an invocation (phase_n1_x2), T 1 and 3.
        Case::new(4, 6, 6, 4, 1, 2, 2, 0, true),
        Case::new(2, 5, 8, 8, 1, 6, 2, 2, true),
    ];
    let mut runs = 0;
    for (i, c) in cases.iter().enumerate() {
        let g = &c.g;
        let seed = 5300 + 10 * i as u64;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow);
        let x = uniform(seed, xs, -1.0, 1.0);
        let block = uniform(seed + 1, g.block_rows() * g.cout, -1.0, 1.0);
        let xb = gpu.storage("x", (1024 + 4 * xs).max(80 << 10) as u64);
        gpu.write(&xb, 1024, &to_f32(&x));
        let xv = View::new(&xb, 1024, xs);
        let wb = gpu.upload("w", &to_f32(&block));
        let mut k = ConvGather::forward(g, c.batch, c.h, c.w, Act::Tanh).unwrap();
        k.im2col = Some(true);
        let run = |k: ConvGather| {
            let out = poisoned(gpu, "out", ys + 16);
            let (ns, np) = (k.scratch_len(gpu), k.product_len(gpu));
            let (sb, pb) = (poisoned(gpu, "scratch", ns.max(1)), poisoned(gpu, "product", np.max(1)));
            let (sv, pv) = ((ns > 0).then(|| (&sb).into()), (np > 0).then(|| (&pb).into()));
            let ls = k.launches(gpu, "t", xv, (&wb).into(), View::new(&out, 32, ys), None, None, sv, pv).unwrap();
            for l in &ls {
                gpu.run(l).unwrap();
            }
            let got = gpu.read_f32(&out).unwrap();
            assert!(got[..8].iter().chain(&got[8 + ys..]).all(|v| v.is_nan()), "{}: wrote outside", c.name());
            (ls.iter().map(|l| l.label.clone()).collect::<Vec<_>>(), got[8..8 + ys].to_vec())
        };
        let what = c.name();
        let (labels, got) = run(k);
        let (col2im, want) = run(ConvGather { implicit: Some(false), ..k });
        assert!(col2im.iter().any(|l| l.contains(" col2im[")), "{what}: {col2im:?}");
        let phases = labels.iter().any(|l| l.contains(" phase_n1[") || l.contains(" phase_n1_x2["));
        assert_eq!(phases, gpu.alias_operands, "{what}: {labels:?}");
        let x2 = labels.iter().any(|l| l.contains(" phase_n1_x2["));
        assert_eq!(x2, phases && g.stride == 2 && ow % 4 == 0, "{what}: {labels:?}");
        if phases {
            assert_eq!(labels.len(), 1, "{what}: {labels:?}");
        }
        runs += usize::from(phases);
        let reference = conv_forward(g, &x, &block, c.batch, c.h, c.w, Act::Tanh, false, None);
        let t = tol(g.k * g.k * g.cin);
        t.check(&what, &got, &reference).unwrap();
        t.check(&format!("{what} (col2im path)"), &want, &reference).unwrap();
    }
    if gpu.alias_operands {
        assert_eq!(runs, cases.len());
    }
}

/// The im2col of a one-channel image (a conv's input with C = 1, or a transposed conv's output gradient
/// with N = 1) through the image's aliased texture, 4 taps a store (conv_grad.wgsl `im2col1_tex`, on
/// lavapipe): the same matrix as the flat gather, so the weight gradients over it agree bit for bit,
/// and with the f64 reference. Images of 64 KiB or more (aliased), odd sides at stride 1, K 4 and 8, taps off every
/// edge (padding up to 3), relu-on-read, and an image starting inside its buffer.
#[test]
fn one_channel_im2col_through_the_texture_matches_the_gather() {
    let gpu = gpu();
    let cases = [
        Case::new(20, 30, 28, 1, 8, 4, 2, 1, false),
        Case::new(32, 23, 25, 1, 4, 8, 1, 3, false),
        Case::new(20, 15, 16, 8, 1, 4, 2, 1, true),
        Case::new(12, 33, 35, 4, 1, 8, 1, 2, true),
    ];
    let mut tex_runs = 0;
    for (i, c) in cases.iter().enumerate() {
        let g = &c.g;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow * g.cout);
        let seed = 4100 + 10 * i as u64;
        let (x, dy) = (uniform(seed, xs, -1.0, 1.0), uniform(seed + 1, ys, -1.0, 1.0));
        // The image 256 bytes into its buffer (a view at an offset), the other operand at 0.
        let lead = 64;
        let pad = |v: &[f64], at: usize| vec![0.5f32; at].into_iter().chain(to_f32(v)).collect::<Vec<f32>>();
        let (x_at, dy_at) = if g.transposed { (0, lead) } else { (lead, 0) };
        let xb = gpu.upload("x", &pad(&x, x_at));
        let dyb = gpu.upload("dy", &pad(&dy, dy_at));
        let xv = View::new(&xb, (x_at * 4) as u64, xs);
        let dyv = View::new(&dyb, (dy_at * 4) as u64, ys);
        for pre_relu in [false, true] {
            if pre_relu && g.transposed {
                continue;
            }
            let len = g.block_rows() * g.cout;
            let mut results = Vec::new();
            for flat in [false, true] {
                let out = poisoned(gpu, "dw", len);
                let mut labels = Vec::new();
                let mut keep = Vec::new();
                for (mut k, at) in ConvWgrad::for_layer(g, c.batch, c.h, c.w, pre_relu).unwrap() {
                    k.im2col = Some(k.im2col_ok());
                    k.flat = Some(flat);
                    let (n, np) = (k.scratch_len(gpu), k.product_len(gpu));
                    keep.push(poisoned(gpu, "scratch", n.max(1)));
                    keep.push(poisoned(gpu, "product", np.max(1)));
                    let [.., s, pb] = &keep[..] else { unreachable!() };
                    let (sv, pv) = ((n > 0).then(|| s.into()), (np > 0).then(|| pb.into()));
                    let ls = k.launch(gpu, "t", xv, dyv, (&out).into(), at, sv, pv).unwrap();
                    for l in &ls {
                        gpu.run(l).unwrap();
                        labels.push(l.label.clone());
                    }
                }
                let tex = labels.iter().any(|l| l.contains(" im2col[") && l.contains(", tex]"));
                let what = format!("{} pre_relu={pre_relu} flat={flat}: {labels:?}", c.name());
                if flat {
                    assert!(!tex, "{what}");
                } else {
                    assert_eq!(tex, gpu.alias_operands && gpu.tex_operands, "{what}");
                    tex_runs += usize::from(tex);
                }
                let got = gpu.read_f32(&out).unwrap();
                let want = conv_backward_params(g, &x, &dy, c.batch, c.h, c.w, pre_relu);
                tol(c.batch * oh.max(c.h) * ow.max(c.w)).check(&what, &got, &want).unwrap();
                results.push(got);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&results[0]), bits(&results[1]), "{}: the texture and the flat gather", c.name());
        }
    }
    if gpu.alias_operands && gpu.tex_operands {
        assert_eq!(tex_runs, 6);
    }
}

/// A transposed conv's bias (the sum of its output gradient over the pixels) through the gradient's
/// aliased texture (conv_grad.wgsl `bias_tex`, lavapipe): the same sums in the same order as the buffer
/// kernel's, so the same bits, and the f64 reference's sum. One channel (4 pixels a texel) and 8
/// channels, gradients of 64 KiB or more, one 256 bytes into its buffer; where a split's pixels are not
/// whole texels the buffer kernel runs.
#[test]
fn bias_through_the_texture_matches_the_buffer_sum() {
    let gpu = gpu();
    // (case, whether bias_tex takes it where textures alias: 20·30·32 pixels split 256 ways is 75 a
    // split, not whole texels).
    let cases = [
        (Case::new(32, 15, 16, 8, 1, 4, 2, 1, true), true),
        (Case::new(4, 15, 16, 4, 8, 4, 2, 1, true), true),
        (Case::new(20, 15, 16, 3, 1, 4, 2, 1, true), false),
    ];
    for (i, (c, takes)) in cases.iter().enumerate() {
        let g = &c.g;
        let (oh, ow) = c.out();
        let (xs, ys) = (c.batch * c.h * c.w * g.cin, c.batch * oh * ow * g.cout);
        let seed = 4300 + 10 * i as u64;
        let (x, dy) = (uniform(seed, xs, -1.0, 1.0), uniform(seed + 1, ys, -1.0, 1.0));
        let lead = if i == 1 { 64 } else { 0 };
        let xb = gpu.upload("x", &to_f32(&x));
        let dyb = gpu.upload("dy", &vec![0.5f32; lead].into_iter().chain(to_f32(&dy)).collect::<Vec<f32>>());
        let dyv = View::new(&dyb, (lead * 4) as u64, ys);
        let (bias, at) = ConvWgrad::for_layer(g, c.batch, c.h, c.w, false).unwrap().remove(0);
        assert_eq!(bias.c, 0, "the bias launch first");
        let mut results = Vec::new();
        for scalar in [false, true] {
            let k = ConvWgrad { scalar, ..bias };
            let out = poisoned(gpu, "db", at + g.cout);
            let scratch = poisoned(gpu, "scratch", k.scratch_len(gpu).max(1));
            let sv = (k.scratch_len(gpu) > 0).then(|| (&scratch).into());
            let ls = k.launch(gpu, "t", (&xb).into(), dyv, (&out).into(), at, sv, None).unwrap();
            let tex = ls.iter().any(|l| l.label.contains(" bias_tex["));
            let what = format!("{} scalar={scalar}: {:?}", c.name(), ls.iter().map(|l| &l.label).collect::<Vec<_>>());
            assert_eq!(tex, !scalar && *takes && gpu.alias_operands && gpu.tex_operands, "{what}");
            for l in &ls {
                gpu.run(l).unwrap();
            }
            let got = gpu.read_f32(&out).unwrap()[at..].to_vec();
            let want: Vec<f64> = (0..g.cout).map(|n| (0..ys / g.cout).map(|p| dy[p * g.cout + n]).sum()).collect();
            tol(ys / g.cout).check(&what, &got, &want).unwrap();
            results.push(got);
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&results[0]), bits(&results[1]), "{}: the texture and the buffer sums", c.name());
    }
}
