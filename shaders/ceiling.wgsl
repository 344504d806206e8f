// ceiling.wgsl: the adapter's measured ceilings, against which the benchmark states each kernel's rate.
// copy:     dst[i] = src[i] over n4 vec4 elements: the bandwidth of a kernel that reads and writes each
//           byte once. 256 invocations per workgroup; grid (x, y, 1) with x·y·256 ≥ n4 (index =
//           (gid.y·x)·256 + gid.x), so more than 65535 workgroups fit.
// fma_peak: every invocation runs `iters` rounds of 8 independent vec4 chains, each round applying
//           a ← fma(a, m, c) four times to each chain (m and c from the uniform: nothing folds at
//           compile time), and writes the sum of its chains: 256 FLOP per round. The independent chains
//           hide FMA latency on GPUs and on lavapipe, whose SIMD lanes are invocations (8 chains × 4
//           components = 32 independent vector FMAs). Four FMAs per chain and round, not one: lavapipe
//           writes every variable a loop carries through a blend with the loop's lane mask, one extra
//           instruction per write, which one FMA per write would count against the ceiling (it measured
//           a third of this kernel's rate that way).
//           64 invocations per workgroup, grid as for copy with n4 invocations.
// read_v4:  words[i] = the XOR of the 32-bit words of src[i + k·n4] for k < READ_K, over n4 invocations
//           (grid as copy's): READ_K vec4 loads and one 32-bit store an invocation (1/64 of the bytes
//           moved), each load coalesced across the invocations. The bandwidth of a kernel that only
//           reads; src/bench.rs takes the store's share of the time off at the write ceiling's rate.
// fill_v4:  dst[i] = (i, i + ¼, i + ½, i + ¾) over n4 vec4 elements (exact for i < 2^22): the bandwidth
//           of a kernel that only writes.
// Bindings: 0 uniform Params, 1 src (read), 2 dst (read_write, n4 vec4, overwritten =), 3 words
// (read_write, n4 u32, =).

struct Params {
    n4: u32,
    iters: u32,
    mul: f32,
    add: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> words: array<u32>;

// vec4 loads an invocation of read_v4 (16 bytes each).
const READ_K: u32 = 16u;

@compute @workgroup_size(256, 1, 1)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n4) {
        dst[i] = src[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn read_v4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n4) {
        var acc = vec4<u32>(0u);
        for (var k = 0u; k < READ_K; k++) {
            acc ^= bitcast<vec4<u32>>(src[i + k * p.n4]);
        }
        words[i] = (acc.x ^ acc.y) ^ (acc.z ^ acc.w);
    }
}

@compute @workgroup_size(256, 1, 1)
fn fill_v4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 256u + gid.x;
    if (i < p.n4) {
        dst[i] = vec4<f32>(f32(i)) + vec4<f32>(0.0, 0.25, 0.5, 0.75);
    }
}

// a ← fma(a, m, c), four times.
fn fma4(a: vec4<f32>, m: vec4<f32>, c: vec4<f32>) -> vec4<f32> {
    return fma(fma(fma(fma(a, m, c), m, c), m, c), m, c);
}

@compute @workgroup_size(64, 1, 1)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.y * nw.x * 64u + gid.x;
    let s = f32(i & 1023u) * 0.001;
    var a0 = vec4<f32>(s, s + 0.01, s + 0.02, s + 0.03);
    var a1 = a0 + vec4<f32>(0.1);
    var a2 = a0 + vec4<f32>(0.2);
    var a3 = a0 + vec4<f32>(0.3);
    var a4 = a0 + vec4<f32>(0.4);
    var a5 = a0 + vec4<f32>(0.5);
    var a6 = a0 + vec4<f32>(0.6);
    var a7 = a0 + vec4<f32>(0.7);
    let m = vec4<f32>(p.mul);
    let c = vec4<f32>(p.add);
    for (var t = 0u; t < p.iters; t++) {
        a0 = fma4(a0, m, c);
        a1 = fma4(a1, m, c);
        a2 = fma4(a2, m, c);
        a3 = fma4(a3, m, c);
        a4 = fma4(a4, m, c);
        a5 = fma4(a5, m, c);
        a6 = fma4(a6, m, c);
        a7 = fma4(a7, m, c);
    }
    if (i < p.n4) {
        dst[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    }
}
