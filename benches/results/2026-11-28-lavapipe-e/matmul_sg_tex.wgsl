// matmul_sg_tex.wgsl: the subgroup matmul (matmul_sg.wgsl: same tile, Params, overrides and epilogue)
// reading op(A) from a texture that `pack_a` has filled, for CPU adapters (lavapipe) on products whose
// op(A) is read many times (once per 32 columns of C).
//
// Why: Mesa 22.3's lavapipe compiles a storage-buffer load into a loop over the 8 lanes with an
// exec-mask test, a bounds check and a masked insert per component: about 270 instructions for one
// vec4 per lane, branches included. A storage-texture load is a branch-free gather (about a third of
// that). In matmul_sg the loads of op(A) take most of the time: with them taken out of the k loop (a
// scratch experiment, wrong results) the default VAE's 128×784×400 product ran 1.65-2.6x faster; with
// op(A) read from a texture, 1.3x (benches/RESULTS.md, 2026-11-28, "op(A) from a texture").
//
// The texture holds op(A) itself, row-major, the ones row included: texel (k/4, r mod LAYER_ROWS) of
// layer r / LAYER_ROWS holds op(A)[r][k .. k+3]. So the matmul always reads the untransposed layout,
// and its launcher sets TRANS_A and ONES_ROW false for it (pack_a takes the product's own values).
// Bindings: 0 uniform Params, 6 B, 7 C, 8 Z (as matmul_sg), 9 op(A) (read); pack_a: 0 Params, 5 A (as
// matmul_sg reads it), 10 op(A) (write).

//!include matmul_params.wgsl
//!include matmul_sg_body.wgsl

// Rows of op(A) per texture layer (a power of two; the launcher sizes the texture with the same value).
const LAYER_ROWS: u32 = 4096u;
const LAYER_SHIFT: u32 = 12u;

@group(0) @binding(9) var at: texture_storage_2d_array<rgba32float, read>;

// This lane's load of op(A) for the 8 rows from `mg`: row mg + l (the last row past M; its results are
// never stored), k .. k+3.
fn load_a8(mg: u32, k: u32, l: u32) -> vec4<f32> {
    let row = min(mg + l, p.m - 1u);
    return textureLoad(at, vec2<u32>(k >> 2u, row & (LAYER_ROWS - 1u)), row >> LAYER_SHIFT);
}

@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(10) var atw: texture_storage_2d_array<rgba32float, write>;

fn store_row(r: u32, k4: u32, v: vec4<f32>) {
    if (r < p.m) {
        textureStore(atw, vec2<u32>(k4, r & (LAYER_ROWS - 1u)), r >> LAYER_SHIFT, v);
    }
}

// op(A) into the texture: one invocation per 4 rows × 4 k (texels (k4, r0 .. r0+3)), with TRANS_A,
// ONES_ROW and lda as the product has them (vec4 conditions as matmul_sg: lda a multiple of 4, and with
// TRANS_A the stored row count too, so a block of 4 rows is all stored rows or starts at the ones row).
// Grid: (ceil(K / 4 / WG), ceil(M / 4), 1).
@compute @workgroup_size(WG, 1, 1)
fn pack_a(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k4 = gid.x;
    let r0 = gid.y * 4u;
    if (k4 >= (p.k >> 2u) || r0 >= p.m) {
        return;
    }
    let rows_stored = select(p.m, p.m - 1u, ONES_ROW);
    let one = vec4<f32>(1.0);
    if (TRANS_A) {
        // A is K × lda: op(A)[r0 + i][4·k4 + q] = A[4·k4 + q][r0 + i], component i of row q's vec4.
        if (r0 >= rows_stored) {
            store_row(r0, k4, one);
            return;
        }
        let base = 4u * k4 * p.lda + r0;
        let q0 = a4[base >> 2u];
        let q1 = a4[(base + p.lda) >> 2u];
        let q2 = a4[(base + 2u * p.lda) >> 2u];
        let q3 = a4[(base + 3u * p.lda) >> 2u];
        store_row(r0, k4, vec4<f32>(q0.x, q1.x, q2.x, q3.x));
        store_row(r0 + 1u, k4, vec4<f32>(q0.y, q1.y, q2.y, q3.y));
        store_row(r0 + 2u, k4, vec4<f32>(q0.z, q1.z, q2.z, q3.z));
        store_row(r0 + 3u, k4, vec4<f32>(q0.w, q1.w, q2.w, q3.w));
        return;
    }
    // A is rows_stored × lda, row-major; row M-1 is the ones row with ONES_ROW.
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + i;
        let src = min(r, rows_stored - 1u);
        store_row(r, k4, select(a4[((src * p.lda) >> 2u) + k4], one, r >= rows_stored));
    }
}
