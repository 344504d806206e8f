// matmul_sg_body.wgsl: the subgroup matmul's body, included by matmul_sg.wgsl (op(A) read from a storage
// buffer) and matmul_sg_tex.wgsl (op(A) read from a texture); the includer declares op(A)'s binding and
// `load_a8(mg, k, l) -> vec4<f32>`, this lane's load of op(A) for the 8 rows from mg at k .. k+3 (see
// matmul_sg.wgsl's header). Everything else (tile, broadcasts, epilogue) is here.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
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

// Row r of the transposed layout: component c of lanes lo .. lo+3.
fn col4(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, c: u32) -> vec4<f32> {
    return vec4<f32>(x0[c], x1[c], x2[c], x3[c]);
}

// The 8 rows from `mg` at k .. k+3, in every lane.
fn rows8(v: vec4<f32>, mg: u32) -> V8 {
    let l0 = subgroupBroadcast(v, 0u);
    let l1 = subgroupBroadcast(v, 1u);
    let l2 = subgroupBroadcast(v, 2u);
    let l3 = subgroupBroadcast(v, 3u);
    let l4 = subgroupBroadcast(v, 4u);
    let l5 = subgroupBroadcast(v, 5u);
    let l6 = subgroupBroadcast(v, 6u);
    let l7 = subgroupBroadcast(v, 7u);
    var o: V8;
    if (TRANS_A) {
        o = V8(col4(l0, l1, l2, l3, 0u), col4(l0, l1, l2, l3, 1u), col4(l0, l1, l2, l3, 2u), col4(l0, l1, l2, l3, 3u),
               col4(l4, l5, l6, l7, 0u), col4(l4, l5, l6, l7, 1u), col4(l4, l5, l6, l7, 2u), col4(l4, l5, l6, l7, 3u));
    } else {
        o = V8(l0, l1, l2, l3, l4, l5, l6, l7);
    }
    if (ONES_ROW) {
        // The ones row: m = M-1, uniform across the lanes.
        let one = vec4<f32>(1.0);
        let last = p.m - 1u;
        o.r0 = select(o.r0, one, mg == last);
        o.r1 = select(o.r1, one, mg + 1u == last);
        o.r2 = select(o.r2, one, mg + 2u == last);
        o.r3 = select(o.r3, one, mg + 3u == last);
        o.r4 = select(o.r4, one, mg + 4u == last);
        o.r5 = select(o.r5, one, mg + 5u == last);
        o.r6 = select(o.r6, one, mg + 6u == last);
        o.r7 = select(o.r7, one, mg + 7u == last);
    }
    return o;
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
        return b4[((p.k * p.ldb) >> 2u) + n4];
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
    for (var k = 0u; k < p.k; k += 4u) {
        let b = load_b4(k, n4);
        c0 = upd8(c0, rows8(load_a8(m0, k, l), m0), b);
        c1 = upd8(c1, rows8(load_a8(m0 + 8u, k, l), m0 + 8u), b);
        if (RG > 2u) {
            c2 = upd8(c2, rows8(load_a8(m0 + 16u, k, l), m0 + 16u), b);
            c3 = upd8(c3, rows8(load_a8(m0 + 24u, k, l), m0 + 24u), b);
        }
        if (RG > 4u) {
            c4 = upd8(c4, rows8(load_a8(m0 + 32u, k, l), m0 + 32u), b);
            c5 = upd8(c5, rows8(load_a8(m0 + 40u, k, l), m0 + 40u), b);
            c6 = upd8(c6, rows8(load_a8(m0 + 48u, k, l), m0 + 48u), b);
            c7 = upd8(c7, rows8(load_a8(m0 + 56u, k, l), m0 + 56u), b);
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
