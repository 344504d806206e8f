//! A conv layer's weight gradient reads the im2col matrix its forward gathered (GpuNet keeps it per
//! layer on the matmul path, CPU adapters) instead of gathering it again, and gives the same gradient
//! bit for bit as the gather it replaces; a residual block's 1×1 conv gathers nothing (a linear layer).

use vaegpu::gpu::{Gpu, Program};
use vaegpu::kernels::Act;
use vaegpu::nn::gpu::GpuNet;
use vaegpu::nn::{NetBuilder, ParamLayout, Shape};
use vaegpu::testing::test_gpu;

fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> wgpu::Buffer {
    let b = gpu.storage_f32(label, data.len());
    gpu.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
    b
}

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

#[test]
fn conv_weight_gradient_reads_the_forward_matrix() {
    let gpu = test_gpu();
    let mut layout = ParamLayout::default();
    // A conv, a residual block (its 3×3 conv reads relu(x)), a strided conv: odd sizes throughout.
    let net = NetBuilder::new(&mut layout, "n", Shape::new(9, 7, 3))
        .conv("c1", 6, 3, 1, 1, false, Act::Identity)
        .and_then(|b| b.res("r", 5, Act::Identity))
        .and_then(|b| b.conv("c2", 4, 3, 2, 1, false, Act::Tanh))
        .unwrap()
        .finish();
    let rows = 5;
    let gnet = GpuNet::new(&gpu, &net, rows).unwrap();
    let params = upload(&gpu, "params", &layout.init(3));
    let x = noise(4, rows * 9 * 7 * 3);
    let (x1, x2) = (upload(&gpu, "x", &x), upload(&gpu, "x copy", &x));
    let dy = noise(5, rows * net.output().len());
    let grads = gpu.storage_f32("grads", layout.total);
    // The forward gathers from x1; a backward from x1 reads its matrices, one from x2 (the same values
    // in another buffer) gathers its own.
    let run = |from: &wgpu::Buffer| {
        let mut p = Program::new("step");
        p.extend(gnet.forward(&gpu, &layout, &params, &x1).unwrap());
        let back = gnet.backward(&gpu, &layout, &params, &grads, from, None).unwrap();
        let gathers: Vec<String> =
            back.iter().filter(|l| l.label.contains(".dW im2col[")).map(|l| l.label.clone()).collect();
        p.extend(back);
        gpu.queue.write_buffer(gnet.d_output(), 0, bytemuck::cast_slice(&dy));
        gpu.queue.write_buffer(&grads, 0, bytemuck::cast_slice(&vec![f32::NAN; layout.total]));
        gpu.submit(&p, 1);
        gpu.sync().unwrap();
        (gpu.read_f32(&grads).unwrap(), gathers)
    };
    let (kept, kept_gathers) = run(&x1);
    let (own, own_gathers) = run(&x2);
    for l in &layout.layers {
        let block = &kept[l.offset..l.offset + l.len()];
        assert!(block.iter().all(|v| v.is_finite()), "{}: every gradient written", l.name);
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&kept), bits(&own), "the kept matrix and a fresh gather give the same gradient");
    if gpu.is_cpu() {
        // On the matmul path no weight gradient gathers when the forward's matrices are kept
        // (r.conv1, 1×1, never does: it runs as a linear layer); from the copy, the first layer (whose
        // input differs) gathers its own, and the later ones still read theirs.
        assert!(kept_gathers.is_empty(), "{kept_gathers:?}");
        assert_eq!(own_gathers.len(), 1, "{own_gathers:?}");
        assert!(own_gathers[0].starts_with("n.c1.dW im2col["), "{own_gathers:?}");
    }
}

/// The net's shared scratch and product buffers hold only what its launches use: on lavapipe, where
/// the convs past the first read their matrices in place (an implicit GEMM) and the transposed conv
/// and the input gradients take the phase forms, not the matrices and (pixel, tap) products the
/// gather and col2im forms would need. The same gradients as on buffers copied into textures (no
/// aliasing, so every matrix gathered and every col2im product written), within the sums' rounding.
#[test]
fn shared_buffers_hold_only_what_the_launches_use() {
    use vaegpu::kernels::conv::{ConvGather, ConvWgrad};
    use vaegpu::nn::net::Op;
    let bytes = |n: usize| (n.max(1) * 4) as u64;
    let step = |gpu: &Gpu| {
        let mut layout = ParamLayout::default();
        // Channels multiples of 8, so that every layer but the first (whose input the net does not
        // know) may run in place; 32 images, so that every buffer is aliased (64 KiB or more).
        let net = NetBuilder::new(&mut layout, "n", Shape::new(14, 14, 8))
            .conv("c1", 16, 3, 1, 1, false, Act::Relu)
            .and_then(|b| b.conv("c2", 32, 4, 2, 1, false, Act::Relu))
            .and_then(|b| b.conv("t1", 16, 4, 2, 1, true, Act::Relu))
            .and_then(|b| b.conv("t2", 8, 3, 1, 1, false, Act::Identity))
            .unwrap()
            .finish();
        let rows = 32;
        let gnet = GpuNet::new(gpu, &net, rows).unwrap();
        let params = upload(gpu, "params", &layout.init(7));
        let x = upload(gpu, "x", &noise(8, rows * 14 * 14 * 8));
        let grads = gpu.storage_f32("grads", layout.total);
        let mut p = Program::new("step");
        p.extend(gnet.forward(gpu, &layout, &params, &x).unwrap());
        p.extend(gnet.backward(gpu, &layout, &params, &grads, &x, None).unwrap());
        gpu.queue.write_buffer(gnet.d_output(), 0, bytemuck::cast_slice(&noise(9, rows * net.output().len())));
        gpu.queue.write_buffer(&grads, 0, bytemuck::cast_slice(&vec![f32::NAN; layout.total]));
        gpu.submit(&p, 1);
        gpu.sync().unwrap();
        // The most any conv launch's gather or col2im form would need (the sizes before in-place forms
        // were counted), for each buffer.
        let (mut scratch, mut product) = (0, 0);
        for l in &net.layers {
            let Op::Conv { geom, .. } = &l.op else { unreachable!() };
            let s = l.input;
            for (k, _) in ConvWgrad::for_layer(geom, rows, s.h, s.w, false).unwrap() {
                (scratch, product) = (scratch.max(k.scratch_len(gpu)), product.max(k.product_len(gpu)));
            }
            for k in [
                ConvGather::forward(geom, rows, s.h, s.w, Act::Identity).unwrap(),
                ConvGather::input_grad(geom, rows, s.h, s.w, Act::Identity).unwrap(),
            ] {
                (scratch, product) = (scratch.max(k.scratch_len(gpu)), product.max(k.product_len(gpu)));
            }
        }
        let sizes = (gnet.scratch.size(), gnet.product.size(), bytes(scratch), bytes(product));
        // The layers' blocks (the layout pads between them).
        let g = gpu.read_f32(&grads).unwrap();
        (layout.layers.iter().flat_map(|l| g[l.offset..l.offset + l.len()].to_vec()).collect::<Vec<f32>>(), sizes)
    };
    let gpu = test_gpu();
    let (got, (s, p, s_full, p_full)) = step(&gpu);
    assert!(got.iter().all(|v| v.is_finite()), "every gradient written");
    eprintln!("scratch {s} of {s_full} bytes, product {p} of {p_full}");
    assert!(s <= s_full && p <= p_full);
    // What the in-place forms need of the adapter (ConvWgrad::implicit_possible, Matmul::im2col_runs).
    let flags = [gpu.alias_operands, gpu.tex_operands, gpu.wide_loads, gpu.subgroups, gpu.int64];
    if flags.contains(&false) || gpu.matmul != vaegpu::gpu::MatmulKernel::Subgroup {
        eprintln!("no in-place forms on {}", gpu.summary.name);
        return;
    }
    // c1 (the net's input unknown) may gather its matrix, 32·14·14 × 9·8 floats; nothing larger.
    assert_eq!(s, bytes(32 * 14 * 14 * 9 * 8), "scratch: c1's matrix");
    assert!(s < s_full && p < p_full / 4, "in-place forms leave the gather and col2im buffers out");
    let copied = Gpu::new(&vaegpu::gpu::GpuOptions { alias_operands: Some(false), ..Default::default() }).unwrap();
    let (want, (s2, p2, _, _)) = step(&copied);
    assert_eq!((s2, p2), (s_full, p_full), "without aliasing every launch gathers");
    let tol = |w: f32| 1e-4 * (1.0 + w.abs());
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / tol(*w)).fold(0.0, f32::max);
    assert!(worst <= 1.0, "gradients differ from the copied run's by {worst} tolerances");
}
