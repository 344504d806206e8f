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
