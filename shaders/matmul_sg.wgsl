// matmul_sg.wgsl: the product of matmul.wgsl (C = epilogue(op(A) · op(B)), same Params, overrides and
// meaning; see its header) for adapters that run a subgroup's invocations as the lanes of one SIMD
// register, like lavapipe (8 lanes of 256-bit AVX). Needs the SUBGROUP feature and subgroups of at least
// 8 invocations; the vec4 conditions of matmul_v4 (lda, ldb, K and N multiples of 4; op(A) at least 4
// rows when TRANS_A).
//
// Why: on lavapipe every storage-buffer load is a loop over the 8 lanes with a bounds check per
// element, so a kernel's time is close to its count of load instructions. In matmul_v4 the 8 rows of
// op(A) are the same for every lane: 8 loads each fetch one value eight times over. Here lane l of each
// group of 8 loads row l's 4 k-values in ONE load, and subgroupBroadcast hands each row to every lane
// (on lavapipe an extract and a splat: register work, no memory access).
//
// Tile: an invocation owns TM = 8·RG rows (RG = 2, 4 or 8: 16, 32 or 64 rows) × one vec4 column group
// of C (32·RG accumulators). Per step of 4 in k it makes RG loads of op(A) (one per 8 rows), 4 vec4
// loads of op(B) and 64·RG FMAs: 43 FMAs per load at 16 rows, 128 at 64. On lavapipe (default VAE's
// products, benches/RESULTS.md) 64 rows ran 1.3-1.45x faster than 16. The loads still bound it at 64
// rows: lavapipe compiles each one into a loop over the 8 lanes with a mask test, a bounds check and a
// masked insert per component (~270 instructions for one vec4 per lane), and a profile (perf) of the
// 128×784×400 product put half its samples in those loops. With op(A)'s loads taken out of the k loop
// (a scratch experiment, wrong results) it ran 1.6-2.0x faster, with op(B)'s too 2.0-3.3x. 12 loads
// per 1024 FMAs is the least for 64 vec4 accumulators (rows/8 + 4·groups per step, rows × groups = 64);
// more accumulators (two column groups, or 128 rows) spill the op(B) values and ran 0.87-1.0x, as did
// loading the next step's values early or stepping k by 8. Reading op(A) from a storage texture (a
// branch-free gather) ran 1.25-1.33x, but packing op(A) into it costs most of that back
// (benches/RESULTS.md, 2026-11-28, "where matmul_sg's time goes"). Two column groups also took
// lavapipe's LLVM up to 1.7 s per pipeline to compile. The launcher picks RG per product (`sg_rows` in
// src/kernels/matmul.rs): more rows pad M further.
// matmul_sg64.wgsl is this product with every buffer access 64 bits wide, where the device has 64-bit
// integers and the shape allows; matmul_sg_common.wgsl holds what the two share.
// Rows: m0 = wid.y · TM; rows m0 + 8h + r (h < RG, r < 8). Column group: n4 = wid.x · WG + lid.x,
// clamped to the last one so that every lane takes part in every broadcast (subgroup operations
// need all lanes); the clamped lanes and rows past M only skip their stores.
// Loads of op(A) for rows m0 + 8h .. m0 + 8h + 7 at k .. k+3, lane l (l = subgroup id mod 8):
//   A row-major (not TRANS_A): row m0 + 8h + l, k .. k+3 (one vec4): row r is lane r's vec4.
//   A k-major (TRANS_A): k + (l mod 4), rows m0 + 8h + 4·(l / 4) .. +3: row r at k+q is component
//   r mod 4 of lane q + 4·(r / 4).
// Out of range rows read the last stored row (their results are never stored); the lane that loads the
// ONES_ROW row (m = M-1) sets it to 1 before the broadcast.
// Dispatch: WG invocations (a multiple of 8) along N; grid = (ceil(N / (4·WG)), ceil(M / TM), 1).
// Bindings as matmul_v4: 0 uniform Params, 5 A, 6 B, 7 C (read_write, overwritten =), 8 Z (read).

//!include matmul_sg_common.wgsl

@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> z4: array<vec4<f32>>;

// This lane's load of op(A) for the 8 rows from `mg` (see the header). The ones row is set here, in
// the lane that loads it (4 selects per load), not in every row after the broadcast (32 per load):
// on the weight gradients, which have it, that ran 1.05-1.1x faster on lavapipe (benches/RESULTS.md).
fn load_a8(mg: u32, k: u32, l: u32) -> vec4<f32> {
    let rows_stored = select(p.m, p.m - 1u, ONES_ROW);
    if (TRANS_A) {
        // lda = rows stored, a multiple of 4 (vec4 conditions): a vec4 of rows either lies below it
        // or starts at or past it (the ones row and rows past M, which are never stored).
        let first = mg + 4u * (l >> 2u);
        let v = a4[((k + (l & 3u)) * p.lda + min(first, p.lda - 4u)) >> 2u];
        return select(v, vec4<f32>(1.0), ONES_ROW && first >= rows_stored);
    }
    let row = mg + l;
    let v = a4[(min(row, rows_stored - 1u) * p.lda + k) >> 2u];
    return select(v, vec4<f32>(1.0), ONES_ROW && row >= rows_stored);
}

// The 8 rows that lanes 0..7 loaded (load_a8) at k .. k+3, in every lane.
fn rows8(v: vec4<f32>) -> V8 {
    let l0 = subgroupBroadcast(v, 0u);
    let l1 = subgroupBroadcast(v, 1u);
    let l2 = subgroupBroadcast(v, 2u);
    let l3 = subgroupBroadcast(v, 3u);
    let l4 = subgroupBroadcast(v, 4u);
    let l5 = subgroupBroadcast(v, 5u);
    let l6 = subgroupBroadcast(v, 6u);
    let l7 = subgroupBroadcast(v, 7u);
    if (TRANS_A) {
        return V8(col4(l0, l1, l2, l3, 0u), col4(l0, l1, l2, l3, 1u), col4(l0, l1, l2, l3, 2u), col4(l0, l1, l2, l3, 3u),
                  col4(l4, l5, l6, l7, 0u), col4(l4, l5, l6, l7, 1u), col4(l4, l5, l6, l7, 2u), col4(l4, l5, l6, l7, 3u));
    }
    return V8(l0, l1, l2, l3, l4, l5, l6, l7);
}

// Rows k .. k+3 of op(B) over the column group n4.
fn load_b4(k: u32, n4: u32) -> B4 {
    if (TRANS_B) {
        let n = n4 * 4u;
        let c0 = b4[(n * p.ldb + k) >> 2u];
        let c1 = b4[((n + 1u) * p.ldb + k) >> 2u];
        let c2 = b4[((n + 2u) * p.ldb + k) >> 2u];
        let c3 = b4[((n + 3u) * p.ldb + k) >> 2u];
        return B4(col4(c0, c1, c2, c3, 0u), col4(c0, c1, c2, c3, 1u), col4(c0, c1, c2, c3, 2u), col4(c0, c1, c2, c3, 3u));
    }
    let s = p.ldb >> 2u;
    return B4(b4[k * s + n4], b4[(k + 1u) * s + n4], b4[(k + 2u) * s + n4], b4[(k + 3u) * s + n4]);
}

fn load_z(i: u32) -> vec4<f32> {
    return z4[i];
}

// Row m's epilogue into C's vec4 i; rows past M are not stored.
fn epilogue(m: u32, i: u32, acc: vec4<f32>, bias: vec4<f32>) {
    if (m < p.m) {
        c4[i] = epi_value(i, acc, bias);
    }
}

// Rows mg .. mg+7 in column group n4 (store_tile), C's rows c.r .. c.r + 7 (no PHASES here: c.r = mg);
// returns the next group's place.
fn store8(mg: u32, n4: u32, acc: V8, bias: vec4<f32>, c: RowCur) -> RowCur {
    let cols4 = p.n >> 2u;
    let i = c.r * cols4 + n4;
    epilogue(mg, i, acc.r0, bias);
    epilogue(mg + 1u, i + cols4, acc.r1, bias);
    epilogue(mg + 2u, i + 2u * cols4, acc.r2, bias);
    epilogue(mg + 3u, i + 3u * cols4, acc.r3, bias);
    epilogue(mg + 4u, i + 4u * cols4, acc.r4, bias);
    epilogue(mg + 5u, i + 5u * cols4, acc.r5, bias);
    epilogue(mg + 6u, i + 6u * cols4, acc.r6, bias);
    epilogue(mg + 7u, i + 7u * cols4, acc.r7, bias);
    return RowCur(c.r + 8u, 0u);
}

fn bias4(n4: u32) -> vec4<f32> {
    if (BIAS) {
        return b4[((p.k * p.ldb) >> 2u) + n4];
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(WG, 1, 1)
fn matmul_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(subgroup_invocation_id) sl: u32) {
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
    for (var k = 0u; k < p.k; k += 4u) {
        let b = load_b4(k, n4);
        c0 = upd8(c0, rows8(load_a8(m0, k, l)), b);
        c1 = upd8(c1, rows8(load_a8(m0 + 8u, k, l)), b);
        if (RG > 2u) {
            c2 = upd8(c2, rows8(load_a8(m0 + 16u, k, l)), b);
            c3 = upd8(c3, rows8(load_a8(m0 + 24u, k, l)), b);
        }
        if (RG > 4u) {
            c4 = upd8(c4, rows8(load_a8(m0 + 32u, k, l)), b);
            c5 = upd8(c5, rows8(load_a8(m0 + 40u, k, l)), b);
            c6 = upd8(c6, rows8(load_a8(m0 + 48u, k, l)), b);
            c7 = upd8(c7, rows8(load_a8(m0 + 56u, k, l)), b);
        }
    }
    if (q.u < q.cols4) {
        store_tile(m0, n4, bias4(n4), c0, c1, c2, c3, c4, c5, c6, c7);
    }
}
