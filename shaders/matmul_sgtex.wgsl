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
// Bindings: 0 Params, 6 B (the bias row only), 7 C, 8 Z (matmul_sg64_body.wgsl), 12 A's texture, 13 B's.

//!include matmul_sg64_body.wgsl

@group(0) @binding(12) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(13) var b_tex: texture_storage_2d<rgba32float, read>;

// Texels a row of the operand textures (TEX_WIDTH in src/kernels/matmul.rs).
const TW_SHIFT: u32 = 11u;

fn texel(i: u32) -> vec2<u32> {
    return vec2<u32>(i & ((1u << TW_SHIFT) - 1u), i >> TW_SHIFT);
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
    let s4 = p.ldb >> 2u;
    if (TRANS_B) {
        let i = n4 * 4u * s4 + (k >> 2u);
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
    let i = k * s4 + n4;
    return B8(B4(tex_b(i), tex_b(i + s4), tex_b(i + 2u * s4), tex_b(i + 3u * s4)),
              B4(tex_b(i + 4u * s4), tex_b(i + 5u * s4), tex_b(i + 6u * s4), tex_b(i + 7u * s4)));
}

@compute @workgroup_size(WG, 1, 1)
fn matmul_sgtex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(subgroup_invocation_id) sl: u32) {
    sg64_main(wid, lid, sl);
}
