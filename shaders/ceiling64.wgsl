// ceiling64.wgsl: ceiling.wgsl's copy in the two forms the fastest lavapipe kernels move their data in,
// for devices with SHADER_INT64: the copy ceiling is the best of the forms the adapter runs
// (src/bench.rs, ceilings). Lavapipe turns each storage-buffer access into a loop over the 8 lanes with
// work per component (wide.wgsl); a 64-bit component carries two floats, and an image load is one gather.
// Without these, kernels that read through textures and store 64-bit components (Adam, the gradient
// norm) read as more than twice the "ceiling".
// copy_v8:  dst8[i] = src8[i] over n8 vec4<u64> elements (8 floats an invocation).
// copy_tex: dst8[i] = the 8 floats of texels 2i and 2i + 1 from `base` of a read-only texture that
//           aliases src (texel.wgsl's layout; src/gpu/alias.rs).
// The read and write ceilings' forms (ceiling.wgsl's read_v4 and fill_v4), n8 the number of invocations:
// read_v8:  words[i] = the XOR of the 32-bit words of src8[i + k·n8] for k < READ8_K (256 bytes).
// read_tex: words[i] = the XOR of the words of texels base + i + k·n8 for k < READ_TEX_K (256 bytes).
// fill_v8:  dst8[i] = the floats of fill_v4's elements 2i and 2i + 1, packed as the kernels pack their
//           results (wide.wgsl). Values built by 64-bit integer arithmetic instead ran at 40% of this
//           rate on lavapipe, and a splat of one value at 140% (a shortcut no kernel storing
//           distinct values takes).
// 256 invocations per workgroup, grid as ceiling.wgsl's copy over n8 invocations.
// Bindings: 0 uniform Params, 1 src8 (read), 2 dst8 (read_write), 3 src_tex, 4 words (read_write, n8
// u32, =).

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
@group(0) @binding(4) var<storage, read_write> words: array<u32>;

// Loads an invocation of read_v8 (32 bytes each) and of read_tex (16 bytes each).
const READ8_K: u32 = 8u;
const READ_TEX_K: u32 = 16u;

fn xor_words(v: vec4<u32>) -> u32 {
    return (v.x ^ v.y) ^ (v.z ^ v.w);
}

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

@compute @workgroup_size(256, 1, 1)
fn read_v8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n8) {
        var acc = vec4<u64>(0lu);
        for (var k = 0u; k < READ8_K; k++) {
            acc ^= src8[i + k * p.n8];
        }
        let v = (acc.x ^ acc.y) ^ (acc.z ^ acc.w);
        words[i] = u32(v & 0xfffffffflu) ^ u32(v >> 32u);
    }
}

@compute @workgroup_size(256, 1, 1)
fn read_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n8) {
        var acc = vec4<u32>(0u);
        for (var k = 0u; k < READ_TEX_K; k++) {
            acc ^= bitcast<vec4<u32>>(textureLoad(src_tex, texel(p.base + i + k * p.n8)));
        }
        words[i] = xor_words(acc);
    }
}

@compute @workgroup_size(256, 1, 1)
fn fill_v8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n8) {
        let v = vec4<f32>(f32(2u * i)) + vec4<f32>(0.0, 0.25, 0.5, 0.75);
        dst8[i] = vec4<u64>(pack(v), pack(v + vec4<f32>(1.0)));
    }
}
