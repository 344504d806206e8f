// optim64.wgsl: optim.wgsl's adam_v4 eight parameters at a time through 64-bit components, for devices
// with SHADER_INT64 (lavapipe has it): each buffer's access is one vec4<u64> (8 floats) per invocation,
// half the components of two vec4<f32> accesses (wide.wgsl says why that matters on lavapipe). The same
// update in the same order as adam_v4: the same bits.
// Bindings as adam_v4: 0 uniform Params, 1 state (read), 6 clip (read), 7 params, 8 grads (read), 9 m,
//   10 v, as arrays of vec4<u64>; n a multiple of 8 (a model's flat buffers are padded to 64 floats).
// Dispatch: 256 invocations per workgroup, 8 parameters each; grid over n/8, flattened as optim.wgsl's.
// adam_tex (below): adam_v8 reading through textures that alias the four buffers, on lavapipe.

//!include optim_common.wgsl
//!include wide.wgsl
//!include texel.wgsl

@group(0) @binding(7) var<storage, read_write> params8: array<vec4<u64>>;
@group(0) @binding(8) var<storage, read> grads8: array<vec4<u64>>;
@group(0) @binding(9) var<storage, read_write> m18: array<vec4<u64>>;
@group(0) @binding(10) var<storage, read_write> m28: array<vec4<u64>>;

@compute @workgroup_size(256, 1, 1)
fn adam_v8(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (8u * i >= p.n || state[5] != 0u) {
        return;
    }
    let t = f32(state[0] + 1u);
    let c = clip[0];
    let g = grads8[i];
    let m = m18[i];
    let v = m28[i];
    let w = params8[i];
    let lo = adam_step(unpack(g.xy) * c, unpack(m.xy), unpack(v.xy), unpack(w.xy), t);
    let hi = adam_step(unpack(g.zw) * c, unpack(m.zw), unpack(v.zw), unpack(w.zw), t);
    m18[i] = vec4<u64>(pack(lo.m), pack(hi.m));
    m28[i] = vec4<u64>(pack(lo.v), pack(hi.v));
    params8[i] = vec4<u64>(pack(lo.w), pack(hi.w));
}

// adam_tex: adam_v8 with grads, m, v and the parameters read through read-only textures that alias
// their buffers (src/gpu/alias.rs, lavapipe), float i at texel i/4 from the base (matmul_sgtex.wgsl's
// layout); the new values are stored through the buffers as adam_v8 stores them. Each invocation
// reads only the 8 floats it then writes. Bindings: 1 state, 6 clip, 7 params, 9 m, 10 v (buffers),
// 12 grads, 13 m, 14 v, 15 params (textures).
@group(0) @binding(12) var g_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(13) var m_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(14) var v_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(15) var w_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256, 1, 1)
fn adam_tex(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (8u * i >= p.n || state[5] != 0u) {
        return;
    }
    let t = f32(state[0] + 1u);
    let c = clip[0];
    let j = 2u * i;
    let lo = adam_step(textureLoad(g_tex, texel(p.g_base + j)) * c, textureLoad(m_tex, texel(p.m_base + j)),
                       textureLoad(v_tex, texel(p.v_base + j)), textureLoad(w_tex, texel(p.w_base + j)), t);
    let hi = adam_step(textureLoad(g_tex, texel(p.g_base + j + 1u)) * c, textureLoad(m_tex, texel(p.m_base + j + 1u)),
                       textureLoad(v_tex, texel(p.v_base + j + 1u)), textureLoad(w_tex, texel(p.w_base + j + 1u)), t);
    m18[i] = vec4<u64>(pack(lo.m), pack(hi.m));
    m28[i] = vec4<u64>(pack(lo.v), pack(hi.v));
    params8[i] = vec4<u64>(pack(lo.w), pack(hi.w));
}
