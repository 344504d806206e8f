// conv.wgsl: 2-D convolution and transposed convolution (forward, and the input gradient of both),
// as one gather kernel: every output element is a sum its own invocation owns (no atomics, no
// scatter), in a fixed order, so results are deterministic.
//
// Layout: NHWC ([B, H, W, C], channels innermost), weights [K·K·Cin + 1, Cout] (bias last row).
//   Why NHWC: the reduction runs over (tap, channel); with channels innermost the 4 channels an
//   iteration reads are one vec4 load of the input and the 4 output channels of a weight row are one
//   vec4 load too (NCHW would make them strided scalar loads). On lavapipe every storage load is a
//   per-lane loop, so the load count sets the speed; on GPUs the vec4 loads are full 16-byte
//   transactions and neighbouring lanes (neighbouring pixels) read neighbouring cache lines. A flattened
//   NHWC tensor is also exactly what a Linear layer reads, so conv and dense layers chain with no copy.
//
// Geometry (per axis): big = small·S − P + tap, pairs outside the big image skipped. A conv's output is
// the small image; a transposed conv's output is the big one.
//   GEOM_T = false: output (oy, ox) small, input (oy, ox)·S − P + (kh, kw)   conv forward;
//                   convT input gradient.
//   GEOM_T = true:  output big, input ((oy, ox) + P − (kh, kw)) / S when that divides exactly
//                   convT forward; conv input gradient.
//   With GEOM_T the rows are ordered by phase ((oy mod S)·S + ox mod S), each phase padded to a whole
//   number of workgroups: every row of a workgroup then has the same valid taps (kh ≡ oy + P mod S), so
//   the tap loop visits only the K²/S² taps that contribute instead of K² with 1 − 1/S² of them masked.
//   W_T = false: Wt(tap, c, n) = W[(tap·C + c)·N + n]   (the layer's block: forward)
//   W_T = true:  Wt(tap, c, n) = W[(tap·N + n)·C + c]   (the block read transposed: input gradient)
//
// Y[b, oy, ox, n] = epilogue(Σ_{taps, c} X[b, iy, ix, c] · Wt(tap, c, n)), C channels in, N out:
//   v = acc (+ bias row W[K·K·C·N + n] if BIAS) (+ R if RESID == 1); v = act(v) (ACT);
//   v *= act'(Z) (DACT, Z an activation output); v += R if RESID == 2. PRE_RELU reads max(X, 0).
//   The residual block uses RESID 1 in forward (y = act(x + conv(...))) and 2 in backward
//   (dx = conv_in_grad ⊙ relu'(x) + dy).
// Bindings: 0 uniform Params, 1 X, 2 W, 3 Y (read_write, overwritten =), 4 Z, 5 R (read); conv_gather_v4
//   reads the same buffers through vec4 views at 6 X, 7 W, 8 Y, 9 Z, 10 R; conv_gather_n1 reads X and W
//   at 6 and 7, and W (bias), Y, Z and R at 2–5. Z and R are always bound (a read-only stand-in when
//   unused).
// Dispatch: lanes run along output pixels; each invocation owns PIX pixels (rows m0 + r·WG, r < PIX,
//   PIX = 1, 2, 4 or 8) × 4 output channels, so the weights it loads are the same for the whole
//   workgroup (one broadcast load on SIMD-across-lanes CPUs, a cached broadcast on GPUs) and each loaded
//   weight feeds PIX FMAs. CPU adapters take PIX = 8 (fewer weight loads, the cost there); GPUs take
//   1, for more invocations and shorter chains of loads in each (a batch-128 layer of 7×7 pixels has
//   6272 rows: 8 to an invocation leave too few invocations to fill a GPU's SMs).
//   grid = (rows / (PIX·WG), ceil(N / 4), 1); rows stay padded to a multiple of 8·WG (PIX divides 8).
//   conv_gather_v4 (C and N multiples of 4): per (tap, 4 channels) 8 vec4 input loads + 4 vec4 weight
//   loads feed 128 FMAs.
//   conv_gather_n1 (N = 1, C a multiple of 4: an image-channel output, a decoder's last layer or a first
//   layer's input gradient): per (tap, 4 channels) one vec4 weight load and PIX vec4 input loads feed
//   4·PIX FMAs, all of them useful; conv_gather there computes 4 output channels, 3 past N, with one
//   scalar load per useful FMA.
//   conv_gather (any C, N; e.g. 1 or 3 image channels): scalar loads with bounds.

//!include act.wgsl

struct Params {
    batch: u32,
    ih: u32,
    iw: u32,
    c: u32,
    oh: u32,
    ow: u32,
    n: u32,
    k: u32,
    stride: u32,
    pad: u32,
    // GEOM_T: rows per phase (a multiple of 8·WG); otherwise the padded row count.
    phase_rows: u32,
    // Rows that are real: B·qh·qw per phase (GEOM_T) or B·OH·OW.
    real_rows: u32,
    // GEOM_T: ceil(OH / S), ceil(OW / S).
    qh: u32,
    qw: u32,
    slope: f32,
    _pad0: u32,
}

override GEOM_T: bool = false;
override W_T: bool = false;
override BIAS: bool = false;
override ACT: u32 = 0u;
override DACT: u32 = 0u;
override RESID: u32 = 0u;
override PRE_RELU: bool = false;
override WG: u32 = 64u;
// Pixels per invocation: 1, 2, 4 or 8 (see Dispatch).
override PIX: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<f32>;

@group(0) @binding(6) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> z4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> res4: array<vec4<f32>>;

// An output pixel of the row being computed.
struct Pos {
    b: u32,
    oy: u32,
    ox: u32,
    ok: bool,
}

fn out_pos(m: u32) -> Pos {
    var q: Pos;
    if (GEOM_T) {
        let phase = m / p.phase_rows;
        let r = m % p.phase_rows;
        let per = p.qh * p.qw;
        q.b = r / per;
        let t = r % per;
        q.oy = (t / p.qw) * p.stride + phase / p.stride;
        q.ox = (t % p.qw) * p.stride + phase % p.stride;
        q.ok = r < p.real_rows && q.oy < p.oh && q.ox < p.ow && phase < p.stride * p.stride;
    } else {
        let per = p.oh * p.ow;
        q.b = m / per;
        let t = m % per;
        q.oy = t / p.ow;
        q.ox = t % p.ow;
        q.ok = m < p.real_rows;
    }
    return q;
}

fn out_index(q: Pos) -> u32 {
    return (q.b * p.oh + q.oy) * p.ow + q.ox;
}

// The input pixel (flat over [B, IH, IW]) output position q reads at tap (kh, kw), or -1.
fn in_pixel(q: Pos, kh: u32, kw: u32) -> i32 {
    var iy: i32;
    var ix: i32;
    if (GEOM_T) {
        // (oy + P − kh) is a multiple of S for every tap the loops visit.
        iy = (i32(q.oy) + i32(p.pad) - i32(kh)) / i32(p.stride);
        ix = (i32(q.ox) + i32(p.pad) - i32(kw)) / i32(p.stride);
    } else {
        iy = i32(q.oy * p.stride + kh) - i32(p.pad);
        ix = i32(q.ox * p.stride + kw) - i32(p.pad);
    }
    if (!q.ok || iy < 0 || ix < 0 || iy >= i32(p.ih) || ix >= i32(p.iw)) {
        return -1;
    }
    return (i32(q.b * p.ih) + iy) * i32(p.iw) + ix;
}

// First (kh, kw) of the tap loops for workgroup `wg`; taps then step by tap_step().
fn first_tap(wg: u32) -> vec2<u32> {
    if (!GEOM_T) {
        return vec2<u32>(0u, 0u);
    }
    let phase = (wg * PIX * WG) / p.phase_rows;
    return vec2<u32>((phase / p.stride + p.pad) % p.stride, (phase % p.stride + p.pad) % p.stride);
}

// The PIX output rows of an invocation: m0 + r·WG, so neighbouring lanes own neighbouring pixels.
// Arrays are sized for the largest PIX; entries past PIX are never used.
fn tile_rows(wg: u32, lane: u32) -> array<Pos, 8> {
    var pos: array<Pos, 8>;
    for (var r = 0u; r < PIX; r++) {
        pos[r] = out_pos(wg * PIX * WG + lane + r * WG);
    }
    return pos;
}

fn tap_step() -> u32 {
    return select(1u, p.stride, GEOM_T);
}

fn w_index(tap: u32, c: u32, n: u32) -> u32 {
    if (W_T) {
        return (tap * p.n + n) * p.c + c;
    }
    return (tap * p.c + c) * p.n + n;
}

fn epilogue(v0: f32, i: u32, n: u32) -> f32 {
    var v = v0;
    if (BIAS) {
        v += w[p.k * p.k * p.c * p.n + n];
    }
    if (RESID == 1u) {
        v += res[i];
    }
    v = act_fwd(ACT, v, p.slope);
    if (DACT != 0u) {
        v *= act_grad_from_y(DACT, z[i], p.slope);
    }
    if (RESID == 2u) {
        v += res[i];
    }
    return v;
}

@compute @workgroup_size(WG, 1, 1)
fn conv_gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n0 = wid.y * 4u;
    let pos = tile_rows(wid.x, lid.x);
    var acc: array<vec4<f32>, 8>;
    let first = first_tap(wid.x);
    let step = tap_step();
    for (var kh = first.x; kh < p.k; kh += step) {
        for (var kw = first.y; kw < p.k; kw += step) {
            let tap = kh * p.k + kw;
            var pix: array<i32, 8>;
            for (var r = 0u; r < PIX; r++) {
                pix[r] = in_pixel(pos[r], kh, kw);
            }
            for (var c = 0u; c < p.c; c++) {
                var wv = vec4<f32>(0.0);
                for (var j = 0u; j < 4u; j++) {
                    if (n0 + j < p.n) {
                        wv[j] = w[w_index(tap, c, n0 + j)];
                    }
                }
                for (var r = 0u; r < PIX; r++) {
                    var xv = select(0.0, x[u32(max(pix[r], 0)) * p.c + c], pix[r] >= 0);
                    if (PRE_RELU) {
                        xv = max(xv, 0.0);
                    }
                    acc[r] = fma(vec4<f32>(xv), wv, acc[r]);
                }
            }
        }
    }
    for (var r = 0u; r < PIX; r++) {
        if (pos[r].ok) {
            let o = out_index(pos[r]) * p.n;
            for (var j = 0u; j < 4u; j++) {
                if (n0 + j < p.n) {
                    y[o + n0 + j] = epilogue(acc[r][j], o + n0 + j, n0 + j);
                }
            }
        }
    }
}

// The input pixels of an invocation's rows at one tap (vec4 kernels): element offsets, and whether each
// lies inside the image.
struct TapPixels {
    pix: array<u32, 8>,
    inside: array<bool, 8>,
}

fn tap_pixels(pos: array<Pos, 8>, kh: u32, kw: u32) -> TapPixels {
    var t: TapPixels;
    for (var r = 0u; r < PIX; r++) {
        let q = in_pixel(pos[r], kh, kw);
        t.inside[r] = q >= 0;
        t.pix[r] = u32(max(q, 0)) * p.c;
    }
    return t;
}

// X[row r's pixel, c..c+3] (0 outside the image; max(·, 0) with PRE_RELU).
fn load_x4(t: TapPixels, r: u32, c: u32) -> vec4<f32> {
    var xv = select(vec4<f32>(0.0), x4[(t.pix[r] + c) >> 2u], t.inside[r]);
    if (PRE_RELU) {
        xv = max(xv, vec4<f32>(0.0));
    }
    return xv;
}

@compute @workgroup_size(WG, 1, 1)
fn conv_gather_n1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pos = tile_rows(wid.x, lid.x);
    var acc: array<f32, 8>;
    let first = first_tap(wid.x);
    let step = tap_step();
    for (var kh = first.x; kh < p.k; kh += step) {
        for (var kw = first.y; kw < p.k; kw += step) {
            let tap = kh * p.k + kw;
            let tp = tap_pixels(pos, kh, kw);
            for (var c = 0u; c < p.c; c += 4u) {
                // Wt(tap, c..c+3, 0): with N = 1 both layouts put it at tap·C + c.
                let wv = w4[(tap * p.c + c) >> 2u];
                for (var r = 0u; r < PIX; r++) {
                    acc[r] += dot(load_x4(tp, r, c), wv);
                }
            }
        }
    }
    for (var r = 0u; r < PIX; r++) {
        if (pos[r].ok) {
            let o = out_index(pos[r]);
            y[o] = epilogue(acc[r], o, 0u);
        }
    }
}

fn act4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(act_fwd(ACT, v.x, p.slope), act_fwd(ACT, v.y, p.slope), act_fwd(ACT, v.z, p.slope),
                     act_fwd(ACT, v.w, p.slope));
}

fn dact4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(act_grad_from_y(DACT, v.x, p.slope), act_grad_from_y(DACT, v.y, p.slope),
                     act_grad_from_y(DACT, v.z, p.slope), act_grad_from_y(DACT, v.w, p.slope));
}

@compute @workgroup_size(WG, 1, 1)
fn conv_gather_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n0 = wid.y * 4u;
    let pos = tile_rows(wid.x, lid.x);
    var acc: array<vec4<f32>, 8>;
    let first = first_tap(wid.x);
    let step = tap_step();
    for (var kh = first.x; kh < p.k; kh += step) {
        for (var kw = first.y; kw < p.k; kw += step) {
            let tap = kh * p.k + kw;
            let tp = tap_pixels(pos, kh, kw);
            for (var c = 0u; c < p.c; c += 4u) {
                // Rows c..c+3 of Wt(tap, ·, n0..n0+3), each a vec4 over the 4 output channels.
                var w0: vec4<f32>;
                var w1: vec4<f32>;
                var w2: vec4<f32>;
                var w3: vec4<f32>;
                if (W_T) {
                    let q0 = w4[w_index(tap, c, n0) >> 2u];
                    let q1 = w4[w_index(tap, c, n0 + 1u) >> 2u];
                    let q2 = w4[w_index(tap, c, n0 + 2u) >> 2u];
                    let q3 = w4[w_index(tap, c, n0 + 3u) >> 2u];
                    w0 = vec4<f32>(q0.x, q1.x, q2.x, q3.x);
                    w1 = vec4<f32>(q0.y, q1.y, q2.y, q3.y);
                    w2 = vec4<f32>(q0.z, q1.z, q2.z, q3.z);
                    w3 = vec4<f32>(q0.w, q1.w, q2.w, q3.w);
                } else {
                    w0 = w4[w_index(tap, c, n0) >> 2u];
                    w1 = w4[w_index(tap, c + 1u, n0) >> 2u];
                    w2 = w4[w_index(tap, c + 2u, n0) >> 2u];
                    w3 = w4[w_index(tap, c + 3u, n0) >> 2u];
                }
                for (var r = 0u; r < PIX; r++) {
                    let xv = load_x4(tp, r, c);
                    acc[r] += xv.x * w0 + xv.y * w1 + xv.z * w2 + xv.w * w3;
                }
            }
        }
    }
    for (var r = 0u; r < PIX; r++) {
        let q = pos[r];
        if (q.ok) {
            let i = (out_index(q) * p.n + n0) >> 2u;
            var v = acc[r];
            if (BIAS) {
                v += w4[(p.k * p.k * p.c * p.n + n0) >> 2u];
            }
            if (RESID == 1u) {
                v += res4[i];
            }
            v = act4(v);
            if (DACT != 0u) {
                v *= dact4(z4[i]);
            }
            if (RESID == 2u) {
                v += res4[i];
            }
            y4[i] = v;
        }
    }
}

// conv_tiled: the same products as the gather kernels, for discrete GPUs: an implicit GEMM through
// workgroup memory (the structure of matmul_tiled). Rows m are output pixels in the order above, columns
// n output channels, and the reduction runs over k' = (tap, c): tap t of the workgroup's valid taps
// (all K² without GEOM_T; the K²/S² of the workgroup's phase with it, t = th·ntw + tw, kh = first.x +
// S·th, kw = first.y + S·tw), c < C fastest, so K' = nth·ntw·C.
// Tile: 256 invocations (tx = tid % 16, ty = tid / 16) own BM = 16·TM rows × BN = 16·NT columns, each
// TM × NT outputs in registers: rows m0 + ty + 16i (i < TM), columns n0 + tx + 16j (j < NT). Per
// BK = 16 step of k' the workgroup stages the A tile (the im2col block, 16 × BM) and the B tile (the
// weights, 16 × BN) k-major in workgroup memory, zero outside (k' >= K', rows that are not pixels,
// pixels outside the image, n >= N), then each invocation does 16 rank-1 updates of its TM × NT block
// (TM + NT workgroup loads per TM·NT FMAs).
// Global loads (TM of A and NT of B per invocation per step) run along the contiguous direction:
//   A: an invocation loads k' = k0 + tx of its own rows m0 + ty + 16r (r < TM): 16 consecutive
//      invocations read 16 consecutive channels of one input pixel (NHWC).
//   B: without W_T 16 consecutive invocations read 16 consecutive output channels of one weight row;
//      with W_T 16 consecutive channels c of one output channel's row.
// Each invocation follows its k' offsets incrementally (KPos), with no division inside the loop.
// The workgroup's phase (GEOM_T) is uniform: BM divides phase_rows. A workgroup whose rows are all
// padding returns before its first barrier (uniformly).
// Bindings as conv_gather (scalar 1–5). Grid = (phases · phase_rows / BM, ceil(N / BN), 1).
override TM: u32 = 8u;
override NT: u32 = 4u;
const CT_BK: u32 = 16u;
// Row strides of the tiles (32 banks of 4 bytes; a warp of 32 is 16 tx × 2 ty). The stores to ct_a
// (and to ct_b with W_T) put k' = tx on rows: with a stride ≡ 2 (mod 32) the warp's 32 stores,
// 2·tx + ty + const, hit 32 banks. The stores to ct_b without W_T put ty on rows and tx on columns:
// with a stride ≡ 16, tx + 16·ty + const does. Every read is 16 consecutive columns (tx) or a
// broadcast (ty).
const CT_SA: u32 = 130u;
var<workgroup> ct_a: array<f32, 2080>; // ct_a[k * CT_SA + m], BM <= 128
var<workgroup> ct_b: array<f32, 1280>; // ct_b[k * ct_sb() + n], BN <= 64

fn ct_sb() -> u32 {
    return select(80u, 66u, W_T);
}

// Where k' = k0 + offset lies: tap (th, tw) of the workgroup's tap grid and channel c.
struct KPos {
    th: u32,
    tw: u32,
    c: u32,
}

fn kpos_at(k: u32, ntw: u32) -> KPos {
    let t = k / p.c;
    return KPos(t / ntw, t % ntw, k % p.c);
}

// k' + 16.
fn kpos_next(q0: KPos, ntw: u32) -> KPos {
    var q = q0;
    q.c += CT_BK;
    while (q.c >= p.c) {
        q.c -= p.c;
        q.tw += 1u;
        if (q.tw == ntw) {
            q.tw = 0u;
            q.th += 1u;
        }
    }
    return q;
}

@compute @workgroup_size(256, 1, 1)
fn conv_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let bm = 16u * TM;
    let bn = 16u * NT;
    let m0 = wid.x * bm;
    let n0 = wid.y * bn;
    let tx = tid % 16u;
    let ty = tid / 16u;
    // Taps of this workgroup: a phase is whole tiles, so the first row's phase is everyone's.
    var first = vec2<u32>(0u, 0u);
    var step = 1u;
    if (GEOM_T) {
        let phase = m0 / p.phase_rows;
        if (m0 % p.phase_rows >= p.real_rows) {
            return;
        }
        first = vec2<u32>((phase / p.stride + p.pad) % p.stride, (phase % p.stride + p.pad) % p.stride);
        step = p.stride;
    } else if (m0 >= p.real_rows) {
        return;
    }
    // (A 1×1 kernel with stride 2 has phases with no tap at all.)
    let nth = select(0u, (p.k - first.x + step - 1u) / step, first.x < p.k);
    let ntw_real = select(0u, (p.k - first.y + step - 1u) / step, first.y < p.k);
    let ntw = max(ntw_real, 1u);
    let kk_total = nth * ntw_real * p.c;
    // The A rows this invocation loads: m0 + ty + 16r (r < TM), at k' offset tx.
    var rows: array<Pos, 8>;
    for (var r = 0u; r < TM; r++) {
        rows[r] = out_pos(m0 + ty + 16u * r);
    }
    // k' offsets: A (and B with W_T) at tx; B without W_T at ty.
    var qa = kpos_at(tx, ntw);
    var qb = kpos_at(ty, ntw);
    var acc: array<f32, 32>;
    for (var k0 = 0u; k0 < kk_total; k0 += CT_BK) {
        // A tile: ct_a[tx][ty + 16r].
        let a_in = k0 + tx < kk_total;
        let kh = first.x + step * qa.th;
        let kw = first.y + step * qa.tw;
        for (var r = 0u; r < TM; r++) {
            let pix = in_pixel(rows[r], kh, kw);
            var v = 0.0;
            if (a_in && pix >= 0) {
                v = x[u32(pix) * p.c + qa.c];
                if (PRE_RELU) {
                    v = max(v, 0.0);
                }
            }
            ct_a[tx * CT_SA + ty + 16u * r] = v;
        }
        // B tile: k'-row kr, column kc + 16j: without W_T kr = ty, kc = tx (consecutive invocations on
        // consecutive output channels), with W_T kr = tx, kc = ty (on consecutive channels c).
        let kr = select(ty, tx, W_T);
        let kc = select(tx, ty, W_T);
        var qr = qb;
        if (W_T) {
            qr = qa;
        }
        let tap = (first.x + step * qr.th) * p.k + first.y + step * qr.tw;
        for (var j = 0u; j < NT; j++) {
            let n = n0 + kc + 16u * j;
            var v = 0.0;
            if (k0 + kr < kk_total && n < p.n) {
                v = w[w_index(tap, qr.c, n)];
            }
            ct_b[kr * ct_sb() + kc + 16u * j] = v;
        }
        if (!W_T) {
            qb = kpos_next(qb, ntw);
        }
        qa = kpos_next(qa, ntw);
        workgroupBarrier();
        for (var kk = 0u; kk < CT_BK; kk++) {
            var av: array<f32, 8>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < TM; i++) {
                av[i] = ct_a[kk * CT_SA + ty + 16u * i];
            }
            for (var j = 0u; j < NT; j++) {
                bv[j] = ct_b[kk * ct_sb() + tx + 16u * j];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < NT; j++) {
                    acc[i * NT + j] = fma(av[i], bv[j], acc[i * NT + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let q = rows[i];
        if (q.ok) {
            let o = out_index(q) * p.n;
            for (var j = 0u; j < NT; j++) {
                let n = n0 + tx + 16u * j;
                if (n < p.n) {
                    y[o + n] = epilogue(acc[i * NT + j], o + n, n);
                }
            }
        }
    }
}
