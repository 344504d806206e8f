//! The ceiling kernels the benchmark measures every rate against (shaders/ceiling.wgsl) build and give
//! checked results on this adapter: `ceilings` verifies the copy bit for bit and the FMA chains against
//! their closed form before timing them, and returns an error otherwise. No speed is asserted here.

use vaegpu::testing::test_gpu;

#[test]
fn ceilings_are_checked_and_positive() {
    let gpu = test_gpu();
    let c = vaegpu::bench::ceilings(&gpu, 1).unwrap_or_else(|e| panic!("ceiling benchmark failed: {e}"));
    assert!(c.copy_gbs.is_finite() && c.copy_gbs > 0.0, "{c:?}");
    assert!(c.fma_gflops.is_finite() && c.fma_gflops > 0.0, "{c:?}");
    assert!(c.copy_bytes >= 1 << 20 && c.fma_invocations >= 4096 * 64 && c.fma_iters >= 256, "{c:?}");
}
