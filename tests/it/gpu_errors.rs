//! What the device reports becomes a typed error naming the adapter, with the GPU exit code (4), never a
//! panic; the device goes on after it.

use vaegpu::gpu::GpuError;
use vaegpu::testing::test_gpu;

#[test]
fn a_validation_error_is_a_typed_error_naming_the_adapter() {
    let gpu = test_gpu();
    let small = gpu.storage_f32("small", 4);
    // 256 bytes into a 16-byte buffer: wgpu refuses the write and reports it to the device's handler.
    gpu.write(&small, 0, &[1.0f32; 64]);
    let err = gpu.sync().unwrap_err();
    assert!(matches!(err, GpuError::Validation { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("GPU validation error on '") && msg.contains(&gpu.summary.name), "{msg}");
    assert_eq!(vaegpu::Error::from(err).exit_code(), 4);
    // Reported once; the device still works.
    gpu.sync().unwrap();
    gpu.write(&small, 0, &[1.0f32, 2.0, 3.0, 4.0]);
    assert_eq!(gpu.read_f32(&small).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}
