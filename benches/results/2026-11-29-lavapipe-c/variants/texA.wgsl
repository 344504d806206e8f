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

@group(0) @binding(12) var at: texture_storage_2d<rgba32float, read>;

fn tex_a(i: u32) -> vec4<f32> {
    return textureLoad(at, vec2<u32>(i & 2047u, i >> 11u));
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
    var i8 = 0u;
    var one = false;
    if (TRANS_A) {
        i8 = ((k + l) * p.lda + min(mg, p.lda - 8u)) >> 3u;
        one = ONES_ROW && mg >= rows_stored;
    } else {
        let row = mg + l;
        i8 = (min(row, rows_stored - 1u) * p.lda + k) >> 3u;
        one = ONES_ROW && row >= rows_stored;
    }
    return F8(select(tex_a(2u * i8), vec4<f32>(1.0), one), select(tex_a(2u * i8 + 1u), vec4<f32>(1.0), one));
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
    let s8 = p.ldb >> 3u;
    if (TRANS_B) {
        let n = n4 * 4u;
        let k8 = k >> 3u;
        let c0 = b8[n * s8 + k8];
        let c1 = b8[(n + 1u) * s8 + k8];
        let c2 = b8[(n + 2u) * s8 + k8];
        let c3 = b8[(n + 3u) * s8 + k8];
        let x0 = unpack(c0.xy);
        let x1 = unpack(c1.xy);
        let x2 = unpack(c2.xy);
        let x3 = unpack(c3.xy);
        let y0 = unpack(c0.zw);
        let y1 = unpack(c1.zw);
        let y2 = unpack(c2.zw);
        let y3 = unpack(c3.zw);
        return B8(B4(col4(x0, x1, x2, x3, 0u), col4(x0, x1, x2, x3, 1u), col4(x0, x1, x2, x3, 2u),
                     col4(x0, x1, x2, x3, 3u)),
                  B4(col4(y0, y1, y2, y3, 0u), col4(y0, y1, y2, y3, 1u), col4(y0, y1, y2, y3, 2u),
                     col4(y0, y1, y2, y3, 3u)));
    }
    // The 8-column chunk this lane loads, clamped to the row's last (lanes past N compute unstored
    // columns; every lane loads, since the shuffles need every lane).
    let chunk = min(((u - l) >> 1u) + (l & 3u), (p.n >> 3u) - 1u);
    let r = k + (l >> 2u);
    let v0 = b8[r * s8 + chunk];
    let v1 = b8[(r + 2u) * s8 + chunk];
    let v2 = b8[(r + 4u) * s8 + chunk];
    let v3 = b8[(r + 6u) * s8 + chunk];
    let even = sl - l + (l >> 1u);
    let odd = even + 4u;
    let hi = (l & 1u) == 1u;
    return B8(B4(shuffle_half(v0, even, hi), shuffle_half(v0, odd, hi), shuffle_half(v1, even, hi),
                 shuffle_half(v1, odd, hi)),
              B4(shuffle_half(v2, even, hi), shuffle_half(v2, odd, hi), shuffle_half(v3, even, hi),
                 shuffle_half(v3, odd, hi)));
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
