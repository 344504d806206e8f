// wide.wgsl: the bits of four floats in two 64-bit components and back, for kernels that access storage
// buffers through 64-bit components (matmul_sg64.wgsl, optim64.wgsl; they need SHADER_INT64). Lavapipe
// turns every storage-buffer access into a loop over the 8 lanes with a bounds check and a branch per
// component; a 64-bit component carries two floats, so such an access does half the work per float.
// The bits are moved, never converted: results stay those of the 32-bit kernels to the bit.

// Four floats from their bits, two in each 64-bit component (the low word first, as stored).
fn unpack(v: vec2<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32(v.x & 0xfffffffflu), u32(v.x >> 32u), u32(v.y & 0xfffffffflu),
                                        u32(v.y >> 32u)));
}

fn pack(v: vec4<f32>) -> vec2<u64> {
    let b = bitcast<vec4<u32>>(v);
    return vec2<u64>(u64(b.x) | (u64(b.y) << 32u), u64(b.z) | (u64(b.w) << 32u));
}
