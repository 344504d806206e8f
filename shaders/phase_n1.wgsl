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

// Invocation i's work: image b, phase row uy, its 8 phase columns from ux0 (ok: i is one).
struct Item {
    b: u32,
    uy: u32,
    ux0: u32,
    ok: bool,
}

fn item_of(i: u32) -> Item {
    let gh = p.oh / p.s;
    let blocks = (p.ow / p.s + 7u) / 8u;
    let t = i / blocks;
    return Item(t / gh, t % gh, 8u * (i % blocks), i < p.batch * gh * blocks);
}

@compute @workgroup_size(WG, 1, 1)
fn phase_n1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let it = item_of(gid.x);
    if (!it.ok) {
        return;
    }
    let gw = p.ow / p.s;
    let py = wid.z / p.s;
    let px = wid.z % p.s;
    let ry = (py + p.pad) % p.s;
    let rx = (px + p.pad) % p.s;
    let pad_y = i32(T - 1u - (py + p.pad) / p.s);
    let pad_x = i32(T - 1u - (px + p.pad) / p.s);
    let c4s = p.c / 4u;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var jy = 0u; jy < T; jy++) {
        let sy = i32(it.uy + jy) - pad_y;
        let row_in = sy >= 0 && sy < i32(p.ih);
        let row = (it.b * p.ih + u32(max(sy, 0))) * p.iw;
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
                let sx = i32(it.ux0 + i) - pad_x;
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
    let out_row = (it.b * p.oh + p.s * it.uy + py) * p.ow;
    for (var j = 0u; j < 8u; j++) {
        let ux = it.ux0 + j;
        if (ux < gw) {
            y[out_row + p.s * ux + px] = act_fwd(ACT, acc[j] + bias, p.slope);
        }
    }
}

// phase_n1_x2: phase_n1 at stride 2 with both x phases in one invocation, for OW a multiple of 4:
// invocation (b, uy, block) of phase row py (workgroup z) computes the 16 consecutive outputs
// x = 2·ux0 .. 2·ux0 + 15 of output row 2·uy + py, ux0 = 8·block. The two x phases read the same input
// pixels (shifted by at most one), so each input texel is loaded once for both, and the outputs go out
// as 4 vec4 stores instead of 16 scalar ones (on lavapipe each store is a loop over the lanes). PAD, the
// layer's padding, is a constant with T, so that every index below is one once the loops unroll. The
// sums run as phase_n1's, in the same order: its bits. Binding 5: Y as vec4 (the same buffer as 1).
// Dispatch: (ceil(B·(OH/2)·ceil((OW/2)/8) / WG), 1, 2).
override PAD: u32 = 1u;

@group(0) @binding(5) var<storage, read_write> y4: array<vec4<f32>>;

@compute @workgroup_size(WG, 1, 1)
fn phase_n1_x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let it = item_of(gid.x);
    if (!it.ok) {
        return;
    }
    let gw = p.ow / 2u;
    let py = wid.z;
    let ry = (py + PAD) % 2u;
    let pad_y = i32(T - 1u - (py + PAD) / 2u);
    // Per x phase px: its taps' column offset rx and its padding; input pixel sx = ux0 + e − E0 serves
    // output j of phase px through tap jx where j = e − E0 + pad_x − jx.
    let pad0 = T - 1u - PAD / 2u;
    let pad1 = T - 1u - (1u + PAD) / 2u;
    let rx0 = PAD % 2u;
    let rx1 = (1u + PAD) % 2u;
    let c4s = p.c / 4u;
    var a0 = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    var a1 = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var jy = 0u; jy < T; jy++) {
        let sy = i32(it.uy + jy) - pad_y;
        let row_in = sy >= 0 && sy < i32(p.ih);
        let row = (it.b * p.ih + u32(max(sy, 0))) * p.iw;
        let ky = ry + 2u * (T - 1u - jy);
        for (var c4 = 0u; c4 < c4s; c4++) {
            var w0: array<vec4<f32>, 4>;
            var w1: array<vec4<f32>, 4>;
            for (var jx = 0u; jx < T; jx++) {
                w0[jx] = w4((ky * p.k + rx0 + 2u * (T - 1u - jx)) * c4s + c4);
                w1[jx] = w4((ky * p.k + rx1 + 2u * (T - 1u - jx)) * c4s + c4);
            }
            // E0 = pad0 (≥ pad1): the first input pixel either phase reads.
            for (var e = 0u; e < 7u + T + pad0 - pad1; e++) {
                let sx = i32(it.ux0 + e) - i32(pad0);
                let inside = row_in && sx >= 0 && sx < i32(p.iw);
                let v = select(vec4<f32>(0.0), x4((row + u32(max(sx, 0))) * c4s + c4), inside);
                for (var jx = 0u; jx < T; jx++) {
                    // Phase 0: j = e − jx (pad_x = E0); phase 1: j = e − (pad0 − pad1) − jx.
                    if (e >= jx && e - jx < 8u) {
                        a0[e - jx] += dot(v, w0[jx]);
                    }
                    let d = pad0 - pad1;
                    if (e >= jx + d && e - jx - d < 8u) {
                        a1[e - jx - d] += dot(v, w1[jx]);
                    }
                }
            }
        }
    }
    let bias = w_buf[p.k * p.k * p.c];
    // Outputs 2·(ux0 + j) + px of row 2·uy + py: vec4 q holds (j, px) = (2q, 0), (2q, 1), (2q+1, 0),
    // (2q+1, 1). OW is a multiple of 4, so each vec4 lies whole inside the row or past its end.
    let out4 = ((it.b * p.oh + 2u * it.uy + py) * p.ow + 2u * it.ux0) / 4u;
    for (var q = 0u; q < 4u; q++) {
        if (it.ux0 + 2u * q < gw) {
            let v = vec4<f32>(a0[2u * q], a1[2u * q], a0[2u * q + 1u], a1[2u * q + 1u]) + bias;
            y4[out4 + q] = vec4<f32>(act_fwd(ACT, v.x, p.slope), act_fwd(ACT, v.y, p.slope),
                                                 act_fwd(ACT, v.z, p.slope), act_fwd(ACT, v.w, p.slope));
        }
    }
}
