// matmul_sg64.wgsl: matmul_sg.wgsl's product (same tile, Params, overrides, bindings and dispatch; see its
// header) with every buffer access 64 bits wide, for devices with SHADER_INT64 (lavapipe has it). Needs,
// besides matmul_sg's conditions: K, N, lda and ldb multiples of 8 and, with TRANS_A, op(A) at least 8
// rows (the launcher checks; other shapes run matmul_sg).
//
// Why: lavapipe compiles a storage-buffer access into a loop over the 8 lanes with a bounds check and a
// branch per component, and a 64-bit component carries two floats. So A and B are read as vec4<u64>
// (8 floats a lane in 4 components) and Z as vec2<u64> (a vec4 of floats in 2): half the components
// of matmul_sg's vec4<f32> accesses, and half its load instructions for A. C is stored as vec4<u64>,
// two rows of a lane pair's 8 columns a store (matmul_sg64_body.wgsl, store_pair). The bits are
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
// This file holds the bindings and loads of op(A) and op(B); the rest, shared with matmul_sgtex.wgsl
// (the same product reading both from textures), is matmul_sg64_body.wgsl.

//!include matmul_sg64_body.wgsl

@group(0) @binding(5) var<storage, read> a8: array<vec4<u64>>;

fn load_z(i: u32) -> vec4<f32> {
    return load_z_buffer(i);
}

// This lane's load of op(A) for the 8 rows from `mg` at k .. k+7 (see the header; a_load).
fn load_a(mg: u32, k: u32, l: u32) -> F8 {
    let q = a_load(mg, k, l);
    let v = a8[q.i8];
    return F8(select(unpack(v.xy), vec4<f32>(1.0), q.one), select(unpack(v.zw), vec4<f32>(1.0), q.one));
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

@compute @workgroup_size(WG, 1, 1)
fn matmul_sg64(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(subgroup_invocation_id) sl: u32) {
    sg64_main(wid, lid, sl);
}
