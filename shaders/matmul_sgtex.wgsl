// matmul_sgtex.wgsl: matmul_sg64's product (same tile, Params, overrides, C, Z and bias bindings and
// dispatch; matmul_sg64.wgsl's header) with op(A) and op(B) read from textures, for CPU adapters.
//
// Why: lavapipe (Mesa 22.3) compiles a storage-buffer load into a loop over the 8 lanes with a bounds
// check and a branch per component; an image load is a branch-free gather, 4 floats a texel. So the
// launcher copies A and B into rgba32float textures (a buffer → texture copy recorded before the
// dispatch, `TexFill`) and the kernel reads them there. Layout: float i of a buffer is component i mod 4
// of texel (i/4 mod TW, i/4 / TW), TW = 2048 texels a row (32 KiB: buffer rows a multiple of 256
// bytes, as copies need), so any buffer copies as whole rows and one partial row. A row-major op(B)
// takes 8 texel loads a lane (its 4 columns at k .. k+7) and no shuffles.
// The same sums in the same order as matmul_sg64: the results are its bits.
// Bindings: 0 Params, 6 B (the bias row only), 7 C, 8 Z (matmul_sg64_body.wgsl), 12 A's texture, 13 B's,
// 14 Z's (ZTEX, below).
// IM2COL (below): op(A) gathered from a conv's input image, the matrix never written.
// PHASES (below, with IM2COL): a col2im-form layer as one such product per output phase.

//!include matmul_sg64_body.wgsl

@group(0) @binding(12) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(13) var b_tex: texture_storage_2d<rgba32float, read>;
// Z (the residual, or the values whose act' the epilogue takes) through its buffer's aliased texture
// where ZTEX, from texel p.z_base; else the buffer (binding 8), and A's texture stands in here.
// On lavapipe a buffer load is a loop over the lanes, a texel load a gather: with ZTEX the conv VAE's
// input gradients with K of 16 and 40 ran 1.13x and 1.41x faster, the VQ-VAE's residual 1x1 convs
// 1.17x (benches/RESULTS.md, 2026-11-29, the eighteenth session).
@group(0) @binding(14) var z_tex: texture_storage_2d<rgba32float, read>;
override ZTEX: bool = false;

//!include texel.wgsl

fn load_z(i: u32) -> vec4<f32> {
    if (ZTEX) {
        return textureLoad(z_tex, texel(p.z_base + i));
    }
    return load_z_buffer(i);
}

fn tex_a(i: u32) -> vec4<f32> {
    return textureLoad(a_tex, texel(p.a_base + i));
}

fn tex_b(i: u32) -> vec4<f32> {
    return textureLoad(b_tex, texel(p.b_base + i));
}

// This lane's load of op(A) for the 8 rows from `mg` at k .. k+7 (a_load): two texels.
fn load_a(mg: u32, k: u32, l: u32) -> F8 {
    let q = a_load(mg, k, l);
    return F8(select(tex_a(2u * q.i8), vec4<f32>(1.0), q.one), select(tex_a(2u * q.i8 + 1u), vec4<f32>(1.0), q.one));
}

// Rows k .. k+7 of op(B) over the lane's column group n4: B column-major (TRANS_B), the 4 columns'
// 8 k-values (two texels each), transposed; B row-major, one texel per row.
fn load_b(k: u32, n4: u32, u: u32, sl: u32, l: u32) -> B8 {
    return load_b_at(k, 0u, n4);
}

// load_b with the rows (B column-major: the columns) `off` texels on.
fn load_b_at(k: u32, off: u32, n4: u32) -> B8 {
    let s4 = p.ldb >> 2u;
    if (TRANS_B) {
        let i = n4 * 4u * s4 + (k >> 2u) + off;
        let x0 = tex_b(i);
        let x1 = tex_b(i + s4);
        let x2 = tex_b(i + 2u * s4);
        let x3 = tex_b(i + 3u * s4);
        let y0 = tex_b(i + 1u);
        let y1 = tex_b(i + s4 + 1u);
        let y2 = tex_b(i + 2u * s4 + 1u);
        let y3 = tex_b(i + 3u * s4 + 1u);
        return B8(B4(col4(x0, x1, x2, x3, 0u), col4(x0, x1, x2, x3, 1u), col4(x0, x1, x2, x3, 2u),
                     col4(x0, x1, x2, x3, 3u)),
                  B4(col4(y0, y1, y2, y3, 0u), col4(y0, y1, y2, y3, 1u), col4(y0, y1, y2, y3, 2u),
                     col4(y0, y1, y2, y3, 3u)));
    }
    let i = k * s4 + n4 + off;
    return B8(B4(tex_b(i), tex_b(i + s4), tex_b(i + 2u * s4), tex_b(i + 3u * s4)),
              B4(tex_b(i + 4u * s4), tex_b(i + 5u * s4), tex_b(i + 6u * s4), tex_b(i + 7u * s4)));
}

// ---------------------------------------------------------------------------------------------
// IM2COL: op(A) is a conv's im2col matrix, read from the image in place of the matrix (an implicit
// GEMM: no im2col launch writes it). A's texture holds the image X [B, BH, BW, CH] (NHWC, conv_grad.wgsl's
// big image); the matrix [B·SH·SW, K·K·CH] has row m = small pixel (b, sy, sx) and column tap·CH + c =
// X[b, sy·S − P + tap / K, sx·S − P + tap % K, c] (0 outside the image; max(·, 0) with IM2COL_RELU),
// exactly what conv_grad.wgsl's im2col writes. Without TRANS_A the matrix is op(A) (a conv's forward:
// M = pixels, K = K·K·CH); with TRANS_A op(A) is its transpose (a conv's weight gradient: M = K·K·CH and
// the ones row, K = pixels). CH is a multiple of 8, so a lane's 8 consecutive columns are 8 channels of
// one tap: two texels. The same values in the same order as from the matrix: the same bits.
override IM2COL: bool = false;
override IM2COL_RELU: bool = false;

// A small pixel's place: the big image's row and column under tap (0, 0), and its image's first row.
struct Pix {
    y0: i32,
    x0: i32,
    row0: u32,
}

fn pix_of(sy: u32, sx: u32, b: u32) -> Pix {
    if (PHASES) {
        let pads = phase_pads();
        return Pix(i32(sy) - pads.x, i32(sx) - pads.y, b * p.im_bh);
    }
    return Pix(i32(sy * p.im_stride) - i32(p.im_pad), i32(sx * p.im_stride) - i32(p.im_pad), b * p.im_bh);
}

fn pix_at(m: u32) -> Pix {
    let t = m / p.im_sw;
    return pix_of(t % p.im_sh, m % p.im_sw, t / p.im_sh);
}

// The 8 channels from c at tap (ky, kx) of pixel q: two texels of X, zeros outside the image.
fn x8(q: Pix, ky: u32, kx: u32, c: u32) -> F8 {
    let by = q.y0 + i32(ky);
    let bx = q.x0 + i32(kx);
    let inside = by >= 0 && bx >= 0 && by < i32(p.im_bh) && bx < i32(p.im_bw);
    let i = (((q.row0 + u32(max(by, 0))) * p.im_bw + u32(max(bx, 0))) * p.im_ch + c) >> 2u;
    let z = vec4<f32>(0.0);
    var lo = select(z, tex_a(i), inside);
    var hi = select(z, tex_a(i + 1u), inside);
    if (IM2COL_RELU) {
        lo = max(lo, z);
        hi = max(hi, z);
    }
    return F8(lo, hi);
}

// ---------------------------------------------------------------------------------------------
// PHASES (with IM2COL, A untransposed): the product of a col2im-form layer (a transposed conv's forward,
// a conv's input gradient: conv_grad.wgsl's col2im sums the (pixel, tap) products into the big image)
// as S² implicit GEMMs, one per output phase (py, px) = (z / S, z % S), workgroup z. Output pixel
// (S·uy + py, S·ux + px) sums the small image's pixels (uy + jy − pad_y, ux + jx − pad_x), j < T = K/S,
// each through the layer's tap (ry + S·(T−1−jy), rx + S·(T−1−jx)), with r = (p + P) mod S and
// pad = T − 1 − (p + P) div S. So the phase's op(A) is the im2col matrix of the small image (im_bh ×
// im_bw, CH channels) over the phase grid (im_sh × im_sw = OH/S × OW/S) with kernel T (im_k), stride 1
// and those pads; op(B)'s rows for column (j, c) are the layer's weight rows of that tap (B untransposed:
// row tap·CH + c; transposed: column c of rows tap·N ..), ph_tap_rows rows a tap; the bias (with BIAS)
// is B's row ph_bias_row; row (b, uy, ux) of the product is stored at output pixel (b, S·uy + py,
// S·ux + px) (row_at). Every output pixel is one phase's: no sums in memory, no product matrix.

// Phase z's place (py, px), its taps' residues r and its pads (the entry point sets `phase` to it).
// Every division is here, once per invocation, not in phase_b_off inside the K loop: lavapipe divides
// one lane at a time, a scalar div each (16 a K step there). The phase products' time moved within
// the noise (1.0-1.08x; benches/RESULTS.md, 2026-11-29, the eighteenth session).
fn phase_of(z: u32) -> Phase {
    let t = p.im_k;
    let py = z / p.ph_s;
    let px = z % p.ph_s;
    return Phase(py, px, (py + p.ph_pad) % p.ph_s, (px + p.ph_pad) % p.ph_s, i32(t - 1u - (py + p.ph_pad) / p.ph_s),
                 i32(t - 1u - (px + p.ph_pad) / p.ph_s));
}

// The phase's pads (y, x).
fn phase_pads() -> vec2<i32> {
    return vec2<i32>(phase.pad_y, phase.pad_x);
}

// The texel offset of op(B)'s rows for the phase's tap (jy, jx).
fn phase_b_off(jy: u32, jx: u32) -> u32 {
    let t = p.im_k;
    let ky = phase.ry + p.ph_s * (t - 1u - jy);
    let kx = phase.rx + p.ph_s * (t - 1u - jx);
    return (ky * p.ph_k + kx) * p.ph_tap_rows * (p.ldb >> 2u);
}

// A group of 8 rows of op(A) with TRANS_A: the tap and first channel of its columns of the matrix, or
// the ones row.
struct Cols {
    ky: u32,
    kx: u32,
    c: u32,
    one: bool,
}

fn cols_at(mg: u32) -> Cols {
    let r = min(mg, p.lda - 8u);
    let tap = r / p.im_ch;
    return Cols(tap / p.im_k, tap % p.im_k, r % p.im_ch, ONES_ROW && mg >= p.m - 1u);
}

fn xt8(q: Pix, g: Cols) -> F8 {
    if (g.one) {
        return F8(vec4<f32>(1.0), vec4<f32>(1.0));
    }
    return x8(q, g.ky, g.kx, g.c);
}

// sg64_main with op(A) gathered from the image: the row (or, with TRANS_A, the pixel) coordinates that
// do not change along K are found once, the tap and channel (pixel) carried from one step to the next.
fn im2col_main(wid: vec3<u32>, lid: vec3<u32>, sl: u32) {
    let q = place(wid, lid, sl);
    let n4 = q.n4;
    let m0 = q.m0;
    let l = q.l;
    var c0 = zero8();
    var c1 = c0;
    var c2 = c0;
    var c3 = c0;
    var c4 = c0;
    var c5 = c0;
    var c6 = c0;
    var c7 = c0;
    if (TRANS_A) {
        let g0 = cols_at(m0);
        let g1 = cols_at(m0 + 8u);
        let g2 = cols_at(m0 + 16u);
        let g3 = cols_at(m0 + 24u);
        let g4 = cols_at(m0 + 32u);
        let g5 = cols_at(m0 + 40u);
        let g6 = cols_at(m0 + 48u);
        let g7 = cols_at(m0 + 56u);
        // This lane's pixel, k + l, as (sy, sx, b), moved on by 8 each step.
        let t = l / p.im_sw;
        var sx = l % p.im_sw;
        var sy = t % p.im_sh;
        var b = t / p.im_sh;
        for (var k = 0u; k < p.k; k += 8u) {
            let px = pix_of(sy, sx, b);
            let bk = load_b(k, n4, q.u, sl, l);
            c0 = upd16(c0, rows(xt8(px, g0)), bk);
            c1 = upd16(c1, rows(xt8(px, g1)), bk);
            if (RG > 2u) {
                c2 = upd16(c2, rows(xt8(px, g2)), bk);
                c3 = upd16(c3, rows(xt8(px, g3)), bk);
            }
            if (RG > 4u) {
                c4 = upd16(c4, rows(xt8(px, g4)), bk);
                c5 = upd16(c5, rows(xt8(px, g5)), bk);
                c6 = upd16(c6, rows(xt8(px, g6)), bk);
                c7 = upd16(c7, rows(xt8(px, g7)), bk);
            }
            sx += 8u;
            loop {
                if (sx < p.im_sw) {
                    break;
                }
                sx -= p.im_sw;
                sy += 1u;
                if (sy == p.im_sh) {
                    sy = 0u;
                    b += 1u;
                }
            }
        }
    } else {
        // Rows past the matrix's read its last (never stored back), as load_a does.
        let last = p.m - 1u;
        let r0 = pix_at(min(m0 + l, last));
        let r1 = pix_at(min(m0 + 8u + l, last));
        let r2 = pix_at(min(m0 + 16u + l, last));
        let r3 = pix_at(min(m0 + 24u + l, last));
        let r4 = pix_at(min(m0 + 32u + l, last));
        let r5 = pix_at(min(m0 + 40u + l, last));
        let r6 = pix_at(min(m0 + 48u + l, last));
        let r7 = pix_at(min(m0 + 56u + l, last));
        // Column k = (ky·K + kx)·CH + c.
        var c = 0u;
        var kx = 0u;
        var ky = 0u;
        for (var k = 0u; k < p.k; k += 8u) {
            var bk: B8;
            if (PHASES) {
                bk = load_b_at(c, phase_b_off(ky, kx), n4);
            } else {
                bk = load_b(k, n4, q.u, sl, l);
            }
            c0 = upd16(c0, rows(x8(r0, ky, kx, c)), bk);
            c1 = upd16(c1, rows(x8(r1, ky, kx, c)), bk);
            if (RG > 2u) {
                c2 = upd16(c2, rows(x8(r2, ky, kx, c)), bk);
                c3 = upd16(c3, rows(x8(r3, ky, kx, c)), bk);
            }
            if (RG > 4u) {
                c4 = upd16(c4, rows(x8(r4, ky, kx, c)), bk);
                c5 = upd16(c5, rows(x8(r5, ky, kx, c)), bk);
                c6 = upd16(c6, rows(x8(r6, ky, kx, c)), bk);
                c7 = upd16(c7, rows(x8(r7, ky, kx, c)), bk);
            }
            c += 8u;
            if (c == p.im_ch) {
                c = 0u;
                kx += 1u;
                if (kx == p.im_k) {
                    kx = 0u;
                    ky += 1u;
                }
            }
        }
    }
    if (q.u < q.cols4) {
        store_tile(m0, n4, bias4(n4), c0, c1, c2, c3, c4, c5, c6, c7);
    }
}

// ---------------------------------------------------------------------------------------------
// IM2COL_B: op(B) (untransposed, no bias row) is the im2col matrix, read from the image in B's
// texture (the geometry and layout as IM2COL's): row k = small pixel, column tap·CH + c. CH is a
// multiple of 4, so a lane's 4 columns are 4 channels of one tap: one texel a row. A transposed
// conv's weight gradient (the matrix gathered from its output gradient) is such a product.

// A lane's 4 columns of the matrix: their tap and first channel.
struct Tap {
    ky: u32,
    kx: u32,
    c: u32,
}

// Small pixels as (sy, sx, image), 4 at a time.
struct Pix4 {
    sy: vec4<u32>,
    sx: vec4<u32>,
    b: vec4<u32>,
}

fn pix4_at(m: vec4<u32>) -> Pix4 {
    let t = m / p.im_sw;
    return Pix4(t % p.im_sh, m % p.im_sw, t / p.im_sh);
}

// The 4 pixels 8 further on.
fn pix4_next(q: Pix4) -> Pix4 {
    var r = q;
    r.sx += vec4<u32>(8u);
    loop {
        let wrap = r.sx >= vec4<u32>(p.im_sw);
        if (!any(wrap)) {
            break;
        }
        r.sx = select(r.sx, r.sx - p.im_sw, wrap);
        r.sy = select(r.sy, r.sy + 1u, wrap);
        let next = r.sy == vec4<u32>(p.im_sh);
        r.sy = select(r.sy, vec4<u32>(0u), next);
        r.b = select(r.b, r.b + 1u, next);
    }
    return r;
}

// Rows q (4 pixels) of the lane's 4 columns at tap t: one texel each, zeros outside the image.
fn rows4(q: Pix4, t: Tap) -> B4 {
    let by = vec4<i32>(q.sy * p.im_stride) - i32(p.im_pad) + i32(t.ky);
    let bx = vec4<i32>(q.sx * p.im_stride) - i32(p.im_pad) + i32(t.kx);
    let inside = (by >= vec4<i32>(0)) & (bx >= vec4<i32>(0)) & (by < vec4<i32>(i32(p.im_bh)))
        & (bx < vec4<i32>(i32(p.im_bw)));
    let pix = (q.b * p.im_bh + vec4<u32>(max(by, vec4<i32>(0)))) * p.im_bw + vec4<u32>(max(bx, vec4<i32>(0)));
    let i = (pix * p.im_ch + t.c) >> vec4<u32>(2u);
    let z = vec4<f32>(0.0);
    var r = B4(select(z, tex_b(i.x), inside.x), select(z, tex_b(i.y), inside.y), select(z, tex_b(i.z), inside.z),
               select(z, tex_b(i.w), inside.w));
    if (IM2COL_RELU) {
        r = B4(max(r.q0, z), max(r.q1, z), max(r.q2, z), max(r.q3, z));
    }
    return r;
}

override IM2COL_B: bool = false;

// sg64_main with op(B) gathered from the image: the lane's tap found once, the 8 rows' pixels carried
// from one step to the next.
fn im2col_b_main(wid: vec3<u32>, lid: vec3<u32>, sl: u32) {
    let q = place(wid, lid, sl);
    let n4 = q.n4;
    let m0 = q.m0;
    let l = q.l;
    let col = 4u * n4;
    let tap = col / p.im_ch;
    let t = Tap(tap / p.im_k, tap % p.im_k, col % p.im_ch);
    var lo = pix4_at(vec4<u32>(0u, 1u, 2u, 3u));
    var hi = pix4_at(vec4<u32>(4u, 5u, 6u, 7u));
    var c0 = zero8();
    var c1 = c0;
    var c2 = c0;
    var c3 = c0;
    var c4 = c0;
    var c5 = c0;
    var c6 = c0;
    var c7 = c0;
    for (var k = 0u; k < p.k; k += 8u) {
        let b = B8(rows4(lo, t), rows4(hi, t));
        c0 = upd16(c0, rows(load_a(m0, k, l)), b);
        c1 = upd16(c1, rows(load_a(m0 + 8u, k, l)), b);
        if (RG > 2u) {
            c2 = upd16(c2, rows(load_a(m0 + 16u, k, l)), b);
            c3 = upd16(c3, rows(load_a(m0 + 24u, k, l)), b);
        }
        if (RG > 4u) {
            c4 = upd16(c4, rows(load_a(m0 + 32u, k, l)), b);
            c5 = upd16(c5, rows(load_a(m0 + 40u, k, l)), b);
            c6 = upd16(c6, rows(load_a(m0 + 48u, k, l)), b);
            c7 = upd16(c7, rows(load_a(m0 + 56u, k, l)), b);
        }
        lo = pix4_next(lo);
        hi = pix4_next(hi);
    }
    if (q.u < q.cols4) {
        store_tile(m0, n4, bias4(n4), c0, c1, c2, c3, c4, c5, c6, c7);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn matmul_sgtex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(subgroup_invocation_id) sl: u32) {
    if (PHASES) {
        phase = phase_of(wid.z);
    }
    if (IM2COL) {
        im2col_main(wid, lid, sl);
    } else if (IM2COL_B) {
        im2col_b_main(wid, lid, sl);
    } else {
        sg64_main(wid, lid, sl);
    }
}
