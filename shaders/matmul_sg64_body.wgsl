// matmul_sg64_body.wgsl: the part of matmul_sg64 (64-bit accesses, matmul_sg64.wgsl's header) and
// matmul_sgtex (its operands read through textures, matmul_sgtex.wgsl) that does not read op(A) and
// op(B): the bindings of C, Z and B's bias row, the broadcasts, the multiply-adds and the loop.
// The including file defines load_a and load_b.

//!include matmul_sg_common.wgsl
//!include wide.wgsl

@group(0) @binding(6) var<storage, read> b8: array<vec4<u64>>;
@group(0) @binding(7) var<storage, read_write> c8: array<vec2<u64>>;
@group(0) @binding(8) var<storage, read> z8: array<vec2<u64>>;

fn load_z(i: u32) -> vec4<f32> {
    return unpack(z8[i]);
}

fn store_c(i: u32, v: vec4<f32>) {
    c8[i] = pack(v);
}

// Eight floats: k .. k+3 and k+4 .. k+7 (or rows mg .. mg+3 and mg+4 .. mg+7).
struct F8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Where this lane's load of op(A) for the 8 rows from `mg` at k .. k+7 lies (matmul_sg64.wgsl's
// header): its 8 floats are op(A)'s floats 8·i8 .. 8·i8 + 7, or the ones row (`one`: set to 1, not
// read). Rows past those stored read the last stored ones (never stored back).
struct ALoad {
    i8: u32,
    one: bool,
}

fn a_load(mg: u32, k: u32, l: u32) -> ALoad {
    let rows_stored = select(p.m, p.m - 1u, ONES_ROW);
    if (TRANS_A) {
        // lda = rows stored, a multiple of 8: the 8 rows lie below it or start at or past it.
        return ALoad(((k + l) * p.lda + min(mg, p.lda - 8u)) >> 3u, ONES_ROW && mg >= rows_stored);
    }
    let row = mg + l;
    return ALoad((min(row, rows_stored - 1u) * p.lda + k) >> 3u, ONES_ROW && row >= rows_stored);
}

// The 8 rows that lanes 0..7 loaded (load_a), in every lane: at k .. k+3, at k+4 .. k+7.
struct Rows {
    lo: V8,
    hi: V8,
}

fn rows(v: F8) -> Rows {
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
        // Row r at k+q: component r of lane q (rows 0..3 in lo, 4..7 in hi).
        return Rows(V8(col4(l0, l1, l2, l3, 0u), col4(l0, l1, l2, l3, 1u), col4(l0, l1, l2, l3, 2u),
                       col4(l0, l1, l2, l3, 3u), col4(h0, h1, h2, h3, 0u), col4(h0, h1, h2, h3, 1u),
                       col4(h0, h1, h2, h3, 2u), col4(h0, h1, h2, h3, 3u)),
                    V8(col4(l4, l5, l6, l7, 0u), col4(l4, l5, l6, l7, 1u), col4(l4, l5, l6, l7, 2u),
                       col4(l4, l5, l6, l7, 3u), col4(h4, h5, h6, h7, 0u), col4(h4, h5, h6, h7, 1u),
                       col4(h4, h5, h6, h7, 2u), col4(h4, h5, h6, h7, 3u)));
    }
    return Rows(V8(l0, l1, l2, l3, l4, l5, l6, l7), V8(h0, h1, h2, h3, h4, h5, h6, h7));
}

// Rows k .. k+3 and k+4 .. k+7 of op(B) over the lane's column group.
struct B8 {
    lo: B4,
    hi: B4,
}

fn bias4(n4: u32) -> vec4<f32> {
    if (BIAS) {
        // B's row K (with PHASES the layer's bias row).
        let row = select(p.k, p.ph_bias_row, PHASES);
        let v = b8[((row * p.ldb) >> 3u) + (n4 >> 1u)];
        return select(unpack(v.xy), unpack(v.zw), (n4 & 1u) == 1u);
    }
    return vec4<f32>(0.0);
}

// Eight k-steps of the 8 rows in `c` from the rows `r` and op(B)'s `b`.
fn upd16(c: V8, r: Rows, b: B8) -> V8 {
    return upd8(upd8(c, r.lo, b.lo), r.hi, b.hi);
}

// The product; the including file defines load_a(mg, k, l) -> F8 and load_b(k, n4, u, sl, l) -> B8.
fn sg64_main(wid: vec3<u32>, lid: vec3<u32>, sl: u32) {
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
    for (var k = 0u; k < p.k; k += 8u) {
        let b = load_b(k, n4, q.u, sl, l);
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
    }
    if (q.u < q.cols4) {
        store_tile(m0, n4, bias4(n4), c0, c1, c2, c3, c4, c5, c6, c7);
    }
}
