// matmul_sg64_body.wgsl: the part of matmul_sg64 (64-bit accesses, matmul_sg64.wgsl's header) and
// matmul_sgtex (its operands read through textures, matmul_sgtex.wgsl) that does not read op(A) and
// op(B): the bindings of C, Z and B's bias row, the broadcasts, the multiply-adds, the loop and the
// stores.
// The including file defines load_a and load_b.

//!include matmul_sg_common.wgsl
//!include wide.wgsl

@group(0) @binding(6) var<storage, read> b8: array<vec4<u64>>;
// C as groups of 8 floats (its rows are whole groups: N is a multiple of 8), stored by lane pairs.
@group(0) @binding(7) var<storage, read_write> c8: array<vec4<u64>>;
@group(0) @binding(8) var<storage, read> z8: array<vec2<u64>>;

// Z's vec4 i through its buffer (load_z, defined by the including file, may read it elsewhere).
fn load_z_buffer(i: u32) -> vec4<f32> {
    return unpack(z8[i]);
}

// Two rows of C in the column groups n4 of a lane pair (n4 even and n4 + 1: lanes 2j and 2j + 1 of a
// subgroup, as WG is a multiple of 8): row m's accumulators `a` at C's row ra.r, row m + 1's `b` at rb.r
// (apart with PHASES). Each lane finishes its 4 columns of both rows, the pair swaps a row's half, and
// the even lane stores row m's 8 floats, the odd one row m + 1's, as one 32-byte access: half the stores
// of one vec4 a row and lane. Lavapipe turns every store into a loop over the 8 lanes (a mask test
// and a branch a lane, a reload, a bounds check and a branch a 64-bit component): about as many
// instructions run either way, but the weight gradients (K of 128, their stores a fifth of the time)
// ran 1.02-1.11x faster, the other products 1.0-1.05x (benches/RESULTS.md, 2026-11-29, the
// eighteenth session).
fn store_pair(m: u32, n4: u32, a: vec4<f32>, b: vec4<f32>, bias: vec4<f32>, ra: RowCur, rb: RowCur) {
    let cols4 = p.n >> 2u;
    let va = epi_value(ra.r * cols4 + n4, a, bias);
    let vb = epi_value(rb.r * cols4 + n4, b, bias);
    let odd = (n4 & 1u) == 1u;
    // The even lane sends row m + 1's half and gets row m's; the odd lane the other way round.
    let got = subgroupShuffleXor(select(vb, va, odd), 1u);
    if (select(m, m + 1u, odd) < p.m) {
        let lo = select(va, got, odd);
        let hi = select(got, vb, odd);
        c8[select(ra.r, rb.r, odd) * (p.n >> 3u) + (n4 >> 1u)] = vec4<u64>(pack(lo), pack(hi));
    }
}

// Rows mg .. mg+7 in column group n4 (store_tile), the first at C's row c.r (row_next gives the others):
// four pair stores. Returns the next group's place.
fn store8(mg: u32, n4: u32, acc: V8, bias: vec4<f32>, c: RowCur) -> RowCur {
    let r1 = row_next(c);
    let r2 = row_next(r1);
    let r3 = row_next(r2);
    let r4 = row_next(r3);
    let r5 = row_next(r4);
    let r6 = row_next(r5);
    let r7 = row_next(r6);
    store_pair(mg, n4, acc.r0, acc.r1, bias, c, r1);
    store_pair(mg + 2u, n4, acc.r2, acc.r3, bias, r2, r3);
    store_pair(mg + 4u, n4, acc.r4, acc.r5, bias, r4, r5);
    store_pair(mg + 6u, n4, acc.r6, acc.r7, bias, r6, r7);
    return row_next(r7);
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
