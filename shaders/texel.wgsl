// texel.wgsl: the layout of a texture that holds (or aliases) a buffer of floats, shared by the
// kernels that read buffers through such textures (matmul_sgtex.wgsl, optim64.wgsl's adam_tex,
// reduce.wgsl's sumsq_tex): float i is component i mod 4 of texel texel(i / 4), TW = 2048 texels a row
// (TEX_WIDTH in src/gpu/pipeline.rs; src/gpu/alias.rs binds such images to the buffers' memory).

// log2 of the texels a row.
const TW_SHIFT: u32 = 11u;

// The coordinates of texel i.
fn texel(i: u32) -> vec2<u32> {
    return vec2<u32>(i & ((1u << TW_SHIFT) - 1u), i >> TW_SHIFT);
}
