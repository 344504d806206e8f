// ceiling64.wgsl: ceiling.wgsl's copy in the two forms the fastest lavapipe kernels move their data in,
// for devices with SHADER_INT64: the copy ceiling is the best of the forms the adapter runs
// (src/bench.rs, ceilings). Lavapipe turns each storage-buffer access into a loop over the 8 lanes with
// work per component (wide.wgsl); a 64-bit component carries two floats, and an image load is one gather.
// Without these, kernels that read through textures and store 64-bit components (Adam, the gradient
// norm) read as more than twice the "ceiling".
// copy_v8:  dst8[i] = src8[i] over n8 vec4<u64> elements (8 floats an invocation).
// copy_tex: dst8[i] = the 8 floats of texels 2i and 2i + 1 from `base` of a read-only texture that
//           aliases src (texel.wgsl's layout; src/gpu/alias.rs).
// 256 invocations per workgroup, grid as ceiling.wgsl's copy over n8 invocations.
// Bindings: 0 uniform Params, 1 src8 (read), 2 dst8 (read_write), 3 src_tex.

//!include wide.wgsl
//!include texel.wgsl

struct Params {
    n8: u32,
    base: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src8: array<vec4<u64>>;
@group(0) @binding(2) var<storage, read_write> dst8: array<vec4<u64>>;
@group(0) @binding(3) var src_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256, 1, 1)
fn copy_v8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n8) {
        dst8[i] = src8[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn copy_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n8) {
        let j = p.base + 2u * i;
        dst8[i] = vec4<u64>(pack(textureLoad(src_tex, texel(j))), pack(textureLoad(src_tex, texel(j + 1u))));
    }
}
