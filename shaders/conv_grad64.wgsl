// conv_grad64.wgsl: conv_grad.wgsl (included whole: its Params, overrides, bindings and helpers) with
// col2im64, its col2im moving 8 floats per buffer access through 64-bit components (wide.wgsl says why
// that matters on lavapipe), for CPU adapters with SHADER_INT64 (Gpu::wide_loads), where N is a multiple
// of 8: one invocation per big pixel and 8 channels, half the invocations of col2im's 4 and so half its
// index divisions (lane by lane on lavapipe) per output. The same sums in the same order: the same bits.
// On lavapipe it ran 1.6x col2im at the conv VAE's 128×14×14×32 (benches/RESULTS.md). The same move
// for im2col (8 channels per copy) ran 0.9x its 32-bit form there: not shipped.
// Bindings: 0 Params, and as arrays of vec4<u64>: 9 A (the (pixel, tap) products), 10 G (the bias row
//   with ONES, else Z for act'), 11 OUT, 12 R (the residual). grid as col2im's over ceil(N / 8) units a
//   pixel.

//!include conv_grad.wgsl
//!include wide.wgsl

@group(0) @binding(9) var<storage, read> a8: array<vec4<u64>>;
@group(0) @binding(10) var<storage, read> g8: array<vec4<u64>>;
@group(0) @binding(11) var<storage, read_write> out8: array<vec4<u64>>;
@group(0) @binding(12) var<storage, read> r8: array<vec4<u64>>;

// Eight floats as two vec4 (the low four first) and back.
struct F8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn unpack8(v: vec4<u64>) -> F8 {
    return F8(unpack(v.xy), unpack(v.zw));
}

fn pack8(v: F8) -> vec4<u64> {
    return vec4<u64>(pack(v.lo), pack(v.hi));
}

// Element i (a multiple of 8) of A (which = 0), G (1) or R (2), as load4 reads 4.
fn load8(which: u32, i: u32) -> F8 {
    switch which {
        case 0u: { return unpack8(a8[i >> 3u]); }
        case 1u: { return unpack8(g8[i >> 3u]); }
        default: { return unpack8(r8[i >> 3u]); }
    }
}

fn act8(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(act_fwd(ACT, v.x, SLOPE), act_fwd(ACT, v.y, SLOPE), act_fwd(ACT, v.z, SLOPE),
                     act_fwd(ACT, v.w, SLOPE));
}

fn dact8(v: vec4<f32>, z: vec4<f32>) -> vec4<f32> {
    return v * vec4<f32>(act_grad_from_y(DACT, z.x, SLOPE), act_grad_from_y(DACT, z.y, SLOPE),
                         act_grad_from_y(DACT, z.z, SLOPE), act_grad_from_y(DACT, z.w, SLOPE));
}

@compute @workgroup_size(256, 1, 1)
fn col2im64(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n8 = p.n / 8u;
    let total = p.batch * p.bh * p.bw * n8;
    let row = p.k * p.k * p.n;
    let st = select(p.stride, STRIDE, STRIDE != 0u);
    for (var u = gid.x; u < total; u += nwg.x * 256u) {
        let n = (u % n8) * 8u;
        let pix = u / n8;
        let bx = pix % p.bw;
        let by = (pix / p.bw) % p.bh;
        let b = pix / (p.bw * p.bh);
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        for (var ky = (by + p.pad) % st; ky < p.k && ky <= by + p.pad; ky += st) {
            let sy = (by + p.pad - ky) / st;
            if (sy >= p.sh) {
                continue;
            }
            for (var kx = (bx + p.pad) % st; kx < p.k && kx <= bx + p.pad; kx += st) {
                let sx = (bx + p.pad - kx) / st;
                if (sx < p.sw) {
                    let v = load8(0u, ((b * p.sh + sy) * p.sw + sx) * row + (ky * p.k + kx) * p.n + n);
                    lo += v.lo;
                    hi += v.hi;
                }
            }
        }
        let i = pix * p.n + n;
        if (ONES) {
            let v = load8(1u, p.k * p.k * p.c * p.n + n);
            lo += v.lo;
            hi += v.hi;
        }
        if (RESID == 1u) {
            let v = load8(2u, i);
            lo += v.lo;
            hi += v.hi;
        }
        lo = act8(lo);
        hi = act8(hi);
        if (DACT != 0u) {
            let z = load8(1u, i);
            lo = dact8(lo, z.lo);
            hi = dact8(hi, z.hi);
        }
        if (RESID == 2u) {
            let v = load8(2u, i);
            lo += v.lo;
            hi += v.hi;
        }
        out8[i >> 3u] = pack8(F8(lo, hi));
    }
}
