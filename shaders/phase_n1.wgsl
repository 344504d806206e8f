// phase_n1.wgsl: a transposed conv's forward to one output channel (an image decoder's last layer) per
// output phase, for CPU adapters: the col2im form's (pixel, tap) products and col2im in one pass, as
// matmul_sgtex.wgsl's PHASES does for 8 or more channels (its header has the phase algebra). Output
// pixel (S·uy + py, S·ux + px) of Y [B, OH, OW, 1] is act(b + Σ_{jy, jx < T} Σ_c X[b, uy + jy − pad_y,
// ux + jx − pad_x, c] · W[tap(jy, jx)·C + c]), T = K/S, tap (ry + S·(T−1−jy))·K + rx + S·(T−1−jx),
// r = (p + P) mod S, pad = T − 1 − (p + P) div S, X [B, IH, IW, C] (0 outside), W the layer's block
// [K·K·C + 1, 1] (bias last).
//
// Why: with one output channel the phase GEMM has one column, where matmul_sgtex's lanes take 4 each;
// the col2im form wrote 16 products per small pixel and summed them. Here each invocation (a lane on
// lavapipe) computes 8 outputs along a phase row, so each input texel it reads serves up to T of them
// and each weight texel 8. X and W are read through textures aliasing their buffers (texel.wgsl; the
// launcher copies one in where its buffer has no alias), C a multiple of 4: a texel is 4 channels. The
// bias is read from W's buffer.
// Dispatch: (ceil(B·(OH/S)·ceil((OW/S)/8) / WG), 1, S²), workgroup z the phase (py, px) = (z / S, z % S).
// The sums run over (jy, channel texel, jx, channel) in that order.

//!include act.wgsl
//!include texel.wgsl

struct Params {
    batch: u32,
    ih: u32,
    iw: u32,
    c: u32,
    oh: u32,
    ow: u32,
    k: u32,
    s: u32,
    pad: u32,
    x_base: u32,
    w_base: u32,
    slope: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var x_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var w_tex: texture_storage_2d<rgba32float, read>;
// The block again, for its bias (its last float; the texture holds the K·K·C weights, whole texels).
@group(0) @binding(4) var<storage, read> w_buf: array<f32>;

override WG: u32 = 8u;
override ACT: u32 = 0u;
// T = K/S (1 to 4): a constant, so that the loops over the taps unroll and the 8 sums stay in registers.
override T: u32 = 2u;

fn x4(i: u32) -> vec4<f32> {
    return textureLoad(x_tex, texel(p.x_base + i));
}

fn w4(i: u32) -> vec4<f32> {
    return textureLoad(w_tex, texel(p.w_base + i));
}

@compute @workgroup_size(WG, 1, 1)
fn phase_n1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let gh = p.oh / p.s;
    let gw = p.ow / p.s;
    let blocks = (gw + 7u) / 8u;
    let item = gid.x;
    if (item >= p.batch * gh * blocks) {
        return;
    }
    let ux0 = 8u * (item % blocks);
    let t = item / blocks;
    let uy = t % gh;
    let b = t / gh;
    let py = wid.z / p.s;
    let px = wid.z % p.s;
    let ry = (py + p.pad) % p.s;
    let rx = (px + p.pad) % p.s;
    let pad_y = i32(T - 1u - (py + p.pad) / p.s);
    let pad_x = i32(T - 1u - (px + p.pad) / p.s);
    let c4s = p.c / 4u;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var jy = 0u; jy < T; jy++) {
        let sy = i32(uy + jy) - pad_y;
        let row_in = sy >= 0 && sy < i32(p.ih);
        let row = (b * p.ih + u32(max(sy, 0))) * p.iw;
        let ky = ry + p.s * (T - 1u - jy);
        for (var c4 = 0u; c4 < c4s; c4++) {
            // The weights of this row's T taps at channels 4·c4 .. 4·c4+3.
            var w: array<vec4<f32>, 4>;
            for (var jx = 0u; jx < T; jx++) {
                let tap = ky * p.k + rx + p.s * (T - 1u - jx);
                w[jx] = w4(tap * c4s + c4);
            }
            // Input pixels ux0 − pad_x .. ux0 + 7 + T − 1 − pad_x of the row: pixel i serves outputs
            // i − jx.
            for (var i = 0u; i < 7u + T; i++) {
                let sx = i32(ux0 + i) - pad_x;
                let inside = row_in && sx >= 0 && sx < i32(p.iw);
                let v = select(vec4<f32>(0.0), x4((row + u32(max(sx, 0))) * c4s + c4), inside);
                for (var jx = 0u; jx < T; jx++) {
                    if (i >= jx && i - jx < 8u) {
                        acc[i - jx] += dot(v, w[jx]);
                    }
                }
            }
        }
    }
    let bias = w_buf[p.k * p.k * p.c];
    let out_row = (b * p.oh + p.s * uy + py) * p.ow;
    for (var j = 0u; j < 8u; j++) {
        let ux = ux0 + j;
        if (ux < gw) {
            y[out_row + p.s * ux + px] = act_fwd(ACT, acc[j] + bias, p.slope);
        }
    }
}
