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

//!include matmul_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(5) var<storage, read> a8: array<vec4<u64>>;
@group(0) @binding(6) var<storage, read> b8: array<vec4<u64>>;
fn unpack(v: vec2<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32(v.x & 0xfffffffflu), u32(v.x >> 32u), u32(v.y & 0xfffffffflu), u32(v.y >> 32u)));
}


@group(0) @binding(7) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> z4: array<vec4<f32>>;

// Eight vec4: eight rows of op(A) at 4 consecutive k, or eight rows of one accumulator column group.
struct V8 {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
    r4: vec4<f32>,
    r5: vec4<f32>,
    r6: vec4<f32>,
    r7: vec4<f32>,
}

// Four rows k .. k+3 of op(B), each a vec4 over one column group.
struct B4 {
    q0: vec4<f32>,
    q1: vec4<f32>,
    q2: vec4<f32>,
    q3: vec4<f32>,
}

struct A2 { lo: vec4<f32>, hi: vec4<f32> }
fn load_a16(mg: u32, k: u32, l: u32) -> A2 {
    let rows_stored = select(p.m, p.m - 1u, ONES_ROW);
    var v: vec4<u64>;
    var one = false;
    if (TRANS_A) {
        v = a8[((k + l) * p.lda + min(mg, p.lda - 8u)) >> 3u];
        one = ONES_ROW && mg >= rows_stored;
    } else {
        let row = mg + l;
        v = a8[(min(row, rows_stored - 1u) * p.lda + k) >> 3u];
        one = ONES_ROW && row >= rows_stored;
    }
    return A2(select(unpack(v.xy), vec4<f32>(1.0), one), select(unpack(v.zw), vec4<f32>(1.0), one));
}
struct V16 { a: V8, b: V8 }
fn rows16(v: A2) -> V16 {
    let l0 = subgroupBroadcast(v.lo, 0u);
    let l1 = subgroupBroadcast(v.lo, 1u);
    let l2 = subgroupBroadcast(v.lo, 2u);
    let l3 = subgroupBroadcast(v.lo, 3u);
    let l4 = subgroupBroadcast(v.lo, 4u);
    let l5 = subgroupBroadcast(v.lo, 5u);
    let l6 = subgroupBroadcast(v.lo, 6u);
    let l7 = subgroupBroadcast(v.lo, 7u);
    let h0 = subgroupBroadcast(v.hi, 0u);
    let h1 = subgroupBroadcast(v.hi, 1u);
    let h2 = subgroupBroadcast(v.hi, 2u);
    let h3 = subgroupBroadcast(v.hi, 3u);
    let h4 = subgroupBroadcast(v.hi, 4u);
    let h5 = subgroupBroadcast(v.hi, 5u);
    let h6 = subgroupBroadcast(v.hi, 6u);
    let h7 = subgroupBroadcast(v.hi, 7u);
    if (TRANS_A) {
        // row r (< 4) at k+q: lo component r of lane q; rows 4..7: hi.
        return V16(V8(col4(l0, l1, l2, l3, 0u), col4(l0, l1, l2, l3, 1u), col4(l0, l1, l2, l3, 2u), col4(l0, l1, l2, l3, 3u),
                      col4(h0, h1, h2, h3, 0u), col4(h0, h1, h2, h3, 1u), col4(h0, h1, h2, h3, 2u), col4(h0, h1, h2, h3, 3u)),
                   V8(col4(l4, l5, l6, l7, 0u), col4(l4, l5, l6, l7, 1u), col4(l4, l5, l6, l7, 2u), col4(l4, l5, l6, l7, 3u),
                      col4(h4, h5, h6, h7, 0u), col4(h4, h5, h6, h7, 1u), col4(h4, h5, h6, h7, 2u), col4(h4, h5, h6, h7, 3u)));
    }
    return V16(V8(l0, l1, l2, l3, l4, l5, l6, l7), V8(h0, h1, h2, h3, h4, h5, h6, h7));
}

// Row r of the transposed layout: component c of lanes lo .. lo+3.
fn col4(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, c: u32) -> vec4<f32> {
    return vec4<f32>(x0[c], x1[c], x2[c], x3[c]);
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

// Rows k .. k+7 of op(B) over column group n4: (rows k..k+3, rows k+4..k+7).
struct B8 { a: B4, b: B4 }
fn half(v: vec4<u64>, hi: bool) -> vec4<f32> {
    return select(unpack(v.xy), unpack(v.zw), hi);
}
fn shuf_row(v: vec4<u64>, src: u32, hi: bool) -> vec4<f32> {
    let lo4 = subgroupShuffle(unpack(v.xy), src);
    let hi4 = subgroupShuffle(unpack(v.zw), src);
    return select(lo4, hi4, hi);
}
fn load_b8(k: u32, n4: u32, u: u32, sl: u32, l: u32) -> B8 {
    if (TRANS_B) {
        let n = n4 * 4u;
        let s8 = p.ldb >> 3u;
        let k8 = k >> 3u;
        let c0 = b8[n * s8 + k8];
        let c1 = b8[(n + 1u) * s8 + k8];
        let c2 = b8[(n + 2u) * s8 + k8];
        let c3 = b8[(n + 3u) * s8 + k8];
        let x0 = unpack(c0.xy); let y0 = unpack(c0.zw);
        let x1 = unpack(c1.xy); let y1 = unpack(c1.zw);
        let x2 = unpack(c2.xy); let y2 = unpack(c2.zw);
        let x3 = unpack(c3.xy); let y3 = unpack(c3.zw);
        return B8(B4(col4(x0, x1, x2, x3, 0u), col4(x0, x1, x2, x3, 1u), col4(x0, x1, x2, x3, 2u), col4(x0, x1, x2, x3, 3u)),
                  B4(col4(y0, y1, y2, y3, 0u), col4(y0, y1, y2, y3, 1u), col4(y0, y1, y2, y3, 2u), col4(y0, y1, y2, y3, 3u)));
    }
    // The 8 lanes' 32 columns from (n4 - l)·4, rows k..k+7, as 4 loads of 8 columns: load i, lane l:
    // row k + 2i + l/4, columns 8·(l mod 4) .. +7 (clamped to the last 8 of the row).
    let s8 = p.ldb >> 3u;
    let cc = min(((u - l) >> 1u) + (l & 3u), (p.n >> 3u) - 1u);
    let r = k + (l >> 2u);
    let v0 = b8[r * s8 + cc];
    let v1 = b8[(r + 2u) * s8 + cc];
    let v2 = b8[(r + 4u) * s8 + cc];
    let v3 = b8[(r + 6u) * s8 + cc];
    // Row k+q for this lane (columns 4l..4l+3 of the 32): load q/2, lane 4·(q mod 2) + l/2, half l mod 2.
    let base = sl - l;
    let e = base + (l >> 1u);
    let o = e + 4u;
    let hi = (l & 1u) == 1u;
    return B8(B4(shuf_row(v0, e, hi), shuf_row(v0, o, hi), shuf_row(v1, e, hi), shuf_row(v1, o, hi)),
              B4(shuf_row(v2, e, hi), shuf_row(v2, o, hi), shuf_row(v3, e, hi), shuf_row(v3, o, hi)));
}

fn fma4(acc: vec4<f32>, a: vec4<f32>, b: B4) -> vec4<f32> {
    return fma(vec4<f32>(a.w), b.q3, fma(vec4<f32>(a.z), b.q2, fma(vec4<f32>(a.y), b.q1, fma(vec4<f32>(a.x), b.q0, acc))));
}

fn upd8(acc: V8, a: V8, b: B4) -> V8 {
    return V8(fma4(acc.r0, a.r0, b), fma4(acc.r1, a.r1, b), fma4(acc.r2, a.r2, b), fma4(acc.r3, a.r3, b),
              fma4(acc.r4, a.r4, b), fma4(acc.r5, a.r5, b), fma4(acc.r6, a.r6, b), fma4(acc.r7, a.r7, b));
}

fn epilogue(m: u32, n4: u32, acc: vec4<f32>, bias: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    var v = acc + bias;
    let i = m * (p.n >> 2u) + n4;
    if (RESID) {
        v += z4[i];
    }
    v = vec4<f32>(act_fwd(ACT, v.x, p.slope), act_fwd(ACT, v.y, p.slope), act_fwd(ACT, v.z, p.slope),
                  act_fwd(ACT, v.w, p.slope));
    if (DACT != 0u) {
        let zv = z4[i];
        v *= vec4<f32>(act_grad_from_y(DACT, zv.x, p.slope), act_grad_from_y(DACT, zv.y, p.slope),
                       act_grad_from_y(DACT, zv.z, p.slope), act_grad_from_y(DACT, zv.w, p.slope));
    }
    c4[i] = v;
}

fn store8(mg: u32, n4: u32, acc: V8, bias: vec4<f32>) {
    epilogue(mg, n4, acc.r0, bias);
    epilogue(mg + 1u, n4, acc.r1, bias);
    epilogue(mg + 2u, n4, acc.r2, bias);
    epilogue(mg + 3u, n4, acc.r3, bias);
    epilogue(mg + 4u, n4, acc.r4, bias);
    epilogue(mg + 5u, n4, acc.r5, bias);
    epilogue(mg + 6u, n4, acc.r6, bias);
    epilogue(mg + 7u, n4, acc.r7, bias);
}

fn bias4(n4: u32) -> vec4<f32> {
    if (BIAS) {
        return half(b8[((p.k * p.ldb) >> 3u) + (n4 >> 1u)], (n4 & 1u) == 1u);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(WG, 1, 1)
fn matmul_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(subgroup_invocation_id) sl: u32) {
    let cols4 = p.n >> 2u;
    let u = wid.x * WG + lid.x;
    let n4 = min(u, cols4 - 1u);
    let m0 = wid.y * (8u * RG);
    let l = sl & 7u;
    let z = vec4<f32>(0.0);
    var c0 = V8(z, z, z, z, z, z, z, z);
    var c1 = c0;
    var c2 = c0;
    var c3 = c0;
    var c4 = c0;
    var c5 = c0;
    var c6 = c0;
    var c7 = c0;
    for (var k = 0u; k < p.k; k += 16u) {
        let b8v = load_b8(k, n4, u, sl, l);
        let b = b8v.a;
        let bb = b8v.b;
        var r = rows16(load_a16(m0, k, l));
        c0 = upd8(upd8(c0, r.a, b), r.b, bb);
        r = rows16(load_a16(m0 + 8u, k, l));
        c1 = upd8(upd8(c1, r.a, b), r.b, bb);
        if (RG > 2u) {
            r = rows16(load_a16(m0 + 16u, k, l));
            c2 = upd8(upd8(c2, r.a, b), r.b, bb);
            r = rows16(load_a16(m0 + 24u, k, l));
            c3 = upd8(upd8(c3, r.a, b), r.b, bb);
        }
        if (RG > 4u) {
            r = rows16(load_a16(m0 + 32u, k, l));
            c4 = upd8(upd8(c4, r.a, b), r.b, bb);
            r = rows16(load_a16(m0 + 40u, k, l));
            c5 = upd8(upd8(c5, r.a, b), r.b, bb);
            r = rows16(load_a16(m0 + 48u, k, l));
            c6 = upd8(upd8(c6, r.a, b), r.b, bb);
            r = rows16(load_a16(m0 + 56u, k, l));
            c7 = upd8(upd8(c7, r.a, b), r.b, bb);
        }
    
        let b8w = load_b8(k + 8u, n4, u, sl, l);
        let b_ = b8w.a;
        let bb_ = b8w.b;
        r = rows16(load_a16(m0, k + 8u, l));
        c0 = upd8(upd8(c0, r.a, b_), r.b, bb_);
        r = rows16(load_a16(m0 + 8u, k + 8u, l));
        c1 = upd8(upd8(c1, r.a, b_), r.b, bb_);
        if (RG > 2u) {
            r = rows16(load_a16(m0 + 16u, k + 8u, l));
            c2 = upd8(upd8(c2, r.a, b_), r.b, bb_);
            r = rows16(load_a16(m0 + 24u, k + 8u, l));
            c3 = upd8(upd8(c3, r.a, b_), r.b, bb_);
        }
        if (RG > 4u) {
            r = rows16(load_a16(m0 + 32u, k + 8u, l));
            c4 = upd8(upd8(c4, r.a, b_), r.b, bb_);
            r = rows16(load_a16(m0 + 40u, k + 8u, l));
            c5 = upd8(upd8(c5, r.a, b_), r.b, bb_);
            r = rows16(load_a16(m0 + 48u, k + 8u, l));
            c6 = upd8(upd8(c6, r.a, b_), r.b, bb_);
            r = rows16(load_a16(m0 + 56u, k + 8u, l));
            c7 = upd8(upd8(c7, r.a, b_), r.b, bb_);
        }
        }
    if (u < cols4) {
        // One copy of the epilogue in a loop with a runtime bound (the 8-row groups that hold rows
        // below M), not one per row: unrolled over 64 rows it took lavapipe's LLVM seconds per pipeline.
        let bias = bias4(n4);
        let groups = min(RG, (p.m - m0 + 7u) / 8u);
        for (var h = 0u; h < groups; h++) {
            var acc = c0;
            if (h == 1u) { acc = c1; }
            if (h == 2u) { acc = c2; }
            if (h == 3u) { acc = c3; }
            if (h == 4u) { acc = c4; }
            if (h == 5u) { acc = c5; }
            if (h == 6u) { acc = c6; }
            if (h == 7u) { acc = c7; }
            store8(m0 + 8u * h, n4, acc, bias);
        }
    }
}
