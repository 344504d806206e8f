//! The ceiling kernels the benchmark measures every rate against (shaders/ceiling.wgsl) build and give
//! checked results on this adapter: `ceilings` verifies the copy bit for bit and the FMA chains against
//! their closed form before timing them, and returns an error otherwise; likewise the conv benchmark.
//! No speed is asserted here.

use std::time::Duration;

use vaegpu::bench::Timing;
use vaegpu::testing::test_gpu;

/// One replay a kernel, one warm-up submission: the results are checked the same way, only the
/// figures are rougher.
const QUICK: Timing = Timing { reps: 1, warmup: Duration::ZERO };

#[test]
fn ceilings_are_checked_and_positive() {
    let gpu = test_gpu();
    let c = vaegpu::bench::ceilings(&gpu, QUICK).unwrap_or_else(|e| panic!("ceiling benchmark failed: {e}"));
    assert!(c.copy_gbs.is_finite() && c.copy_gbs > 0.0, "{c:?}");
    assert!(c.fma_gflops.is_finite() && c.fma_gflops > 0.0, "{c:?}");
    assert!(c.copy_bytes >= 1 << 20 && c.fma_invocations >= 4096 * 64 && c.fma_iters >= 256, "{c:?}");
}

/// `vaegpu bench --model conv-vae` at a small batch: every layer's forward, input-gradient and
/// parameter-gradient kernels are checked against the reference (an error otherwise) and timed, with
/// the scalar kernel timed beside the one-output-channel kernel it replaced, and the whole step.
#[test]
fn conv_bench_checks_and_times_every_layer() {
    let gpu = vaegpu::testing::shared_gpu();
    let r = vaegpu::bench::run_conv(gpu, 4, QUICK).unwrap_or_else(|e| panic!("conv benchmark failed: {e}"));
    let names: Vec<&str> = r.rows.iter().map(|row| row.name.as_str()).collect();
    for layer in ["enc.conv1", "enc.conv2", "dec.deconv2", "dec.deconv1"] {
        for what in ["fwd", "dX", "dW"] {
            assert!(names.contains(&format!("{layer} {what}").as_str()), "{layer} {what} missing: {names:?}");
        }
    }
    // Each conv kernel the adapter did not choose, beside the one it did, on the launches where it
    // changes what runs (checked against the reference at batch 2 before it is timed): the tiled kernel
    // on every launch with 16+ output channels; the gather kernel where the chosen one is not it (on a
    // CPU adapter, whose choice is the matmul forms, every launch: each has an im2col or col2im form;
    // on a GPU the one-channel launches keep their own kernel whatever the choice); the matmul forms
    // on every launch.
    use vaegpu::gpu::ConvKernel;
    let wide_launches = [
        ("enc.conv1 fwd", true),
        ("enc.conv1 dX", false),
        ("enc.conv2 fwd", true),
        ("enc.conv2 dX", true),
        ("dec.deconv2 fwd", true),
        ("dec.deconv2 dX", true),
        ("dec.deconv1 fwd", false),
        ("dec.deconv1 dX", true),
    ];
    for k in [ConvKernel::Gather, ConvKernel::Tiled, ConvKernel::Matmul] {
        for (launch, wide) in wide_launches {
            let row = format!("{launch} [{k}]");
            let present = k != gpu.conv
                && match k {
                    ConvKernel::Tiled => wide,
                    ConvKernel::Gather => wide || gpu.is_cpu() && gpu.conv == ConvKernel::Matmul,
                    _ => true,
                };
            assert_eq!(names.contains(&row.as_str()), present, "{row}: {names:?}");
        }
    }
    // The one-output-channel layers: enc.conv1's input gradient, dec.deconv1's forward.
    for row in ["enc.conv1 dX [scalar]", "dec.deconv1 fwd [scalar]"] {
        assert!(names.contains(&row), "{row} missing: {names:?}");
    }
    assert!(r.rows.iter().all(|row| row.micros.is_finite() && row.micros > 0.0), "{:?}", r.rows);
    let step = r.step.expect("the step is timed");
    assert!(step.step_ms.is_finite() && step.step_ms > 0.0, "{step:?}");
}
