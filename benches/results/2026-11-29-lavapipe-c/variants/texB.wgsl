// matmul_sg64.wgsl: matmul_sg.wgsl's product (same tile, Params, overrides, bindings and dispatch; see its
// header) with every buffer access 64 bits wide, for devices with SHADER_INT64 (lavapipe has it). Needs,
// besides matmul_sg's conditions: K, N, lda and ldb multiples of 8 and, with TRANS_A, op(A) at least 8
// rows (the launcher checks; other shapes run matmul_sg).
//
// Why: lavapipe compiles a storage-buffer access into a loop over the 8 lanes with a bounds check and a
// branch per component, and a 64-bit component carries two floats. So A and B are read as vec4<u64>
// (8 floats a lane in 4 components) and C and Z as vec2<u64> (a vec4 of floats in 2): half the
// components of matmul_sg's vec4<f32> accesses, and half its load instructions for A. The bits are
// moved, never converted (wide.wgsl): the results are matmul_sg's to the bit.
// Per step of 8 in k an invocation makes RG loads of op(A) (8 rows × 8 k each) and 4 of op(B) (8 rows
// of k × the 32 columns of its group of 8 lanes, redistributed by subgroupShuffle), against matmul_sg's
// 2·RG + 8 for the same 128·RG multiply-adds.
// Loads of op(A) for rows mg .. mg+7 at k .. k+7, lane l:
//   A row-major (not TRANS_A): row mg + l, k .. k+7: row r at k+q is component q of lane r.
//   A k-major (TRANS_A): row k + l of A, rows mg .. mg+7: row r at k+q is component r of lane q.
// Loads of op(B), B row-major (not TRANS_B): load i, lane l: row k + 2i + l/4, the 8 columns
// 8·(l mod 4) .. +7 from the group's first column (8 lanes × 4 columns); lane l's 4 columns at row k+q
// are the half l mod 2 of lane 4·(q mod 2) + l/2's load q/2. B column-major (TRANS_B): the lane's 4
// columns, 8 k-values each.

//!include matmul_sg_common.wgsl
//!include wide.wgsl

@group(0) @binding(5) var<storage, read> a8: array<vec4<u64>>;
@group(0) @binding(6) var<storage, read> b8: array<vec4<u64>>;
@group(0) @binding(7) var<storage, read_write> c8: array<vec2<u64>>;
@group(0) @binding(8) var<storage, read> z8: array<vec2<u64>>;

@group(0) @binding(13) var bt: texture_storage_2d<rgba32float, read>;



fn tex_b(i: u32) -> vec4<f32> {
    return textureLoad(bt, vec2<u32>(i & 2047u, i >> 11u));
}

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

// This lane's load of op(A) for the 8 rows from `mg` at k .. k+7 (see the header). Rows past those
// stored read the last stored ones (never stored back); the ones row is set by the lane that loads it.
fn load_a(mg: u32, k: u32, l: u32) -> F8 {
    let rows_stored = select(p.m, p.m - 1u, ONES_ROW);
    var v: vec4<u64>;
    var one = false;
    if (TRANS_A) {
        // lda = rows stored, a multiple of 8: the 8 rows lie below it or start at or past it.
        v = a8[((k + l) * p.lda + min(mg, p.lda - 8u)) >> 3u];
        one = ONES_ROW && mg >= rows_stored;
    } else {
        let row = mg + l;
        v = a8[(min(row, rows_stored - 1u) * p.lda + k) >> 3u];
        one = ONES_ROW && row >= rows_stored;
    }
    return F8(select(unpack(v.xy), vec4<f32>(1.0), one), select(unpack(v.zw), vec4<f32>(1.0), one));
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

// Lane `src`'s 4 columns of a row-major load: its low or high 4 floats.
fn shuffle_half(v: vec4<u64>, src: u32, hi: bool) -> vec4<f32> {
    return select(subgroupShuffle(unpack(v.xy), src), subgroupShuffle(unpack(v.zw), src), hi);
}

// u: the lane's column group before clamping (the group of 8 lanes starts at u - l); sl: its subgroup
// invocation id.
fn load_b(k: u32, n4: u32, u: u32, sl: u32, l: u32) -> B8 {
    if (TRANS_B) {
        let s4 = p.ldb >> 2u;
        let n = n4 * 4u;
        let k4 = k >> 2u;
        let x0 = tex_b(n * s4 + k4);
        let x1 = tex_b((n + 1u) * s4 + k4);
        let x2 = tex_b((n + 2u) * s4 + k4);
        let x3 = tex_b((n + 3u) * s4 + k4);
        let y0 = tex_b(n * s4 + k4 + 1u);
        let y1 = tex_b((n + 1u) * s4 + k4 + 1u);
        let y2 = tex_b((n + 2u) * s4 + k4 + 1u);
        let y3 = tex_b((n + 3u) * s4 + k4 + 1u);
        return B8(B4(col4(x0, x1, x2, x3, 0u), col4(x0, x1, x2, x3, 1u), col4(x0, x1, x2, x3, 2u),
                     col4(x0, x1, x2, x3, 3u)),
                  B4(col4(y0, y1, y2, y3, 0u), col4(y0, y1, y2, y3, 1u), col4(y0, y1, y2, y3, 2u),
                     col4(y0, y1, y2, y3, 3u)));
    }
    let s4 = p.ldb >> 2u;
    let i = k * s4 + n4;
    return B8(B4(tex_b(i), tex_b(i + s4), tex_b(i + 2u * s4), tex_b(i + 3u * s4)),
              B4(tex_b(i + 4u * s4), tex_b(i + 5u * s4), tex_b(i + 6u * s4), tex_b(i + 7u * s4)));
}

fn bias4(n4: u32) -> vec4<f32> {
    if (BIAS) {
        let v = b8[((p.k * p.ldb) >> 3u) + (n4 >> 1u)];
        return select(unpack(v.xy), unpack(v.zw), (n4 & 1u) == 1u);
    }
    return vec4<f32>(0.0);
}

// Eight k-steps of the 8 rows in `c` from the rows `r` and op(B)'s `b`.
fn upd16(c: V8, r: Rows, b: B8) -> V8 {
    return upd8(upd8(c, r.lo, b.lo), r.hi, b.hi);
}

@compute @workgroup_size(WG, 1, 1)
fn matmul_sg64(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
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
