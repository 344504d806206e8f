// matmul_sg_common.wgsl: what the subgroup matmuls (matmul_sg.wgsl, 32-bit loads; matmul_sg64.wgsl,
// 64-bit loads) share (by textual include): the accumulator types, the multiply-adds and the epilogue.
// Each including file defines `load_z(i)` (Z's vec4 i), the only access of Z here, and `store8`, the
// stores of C (matmul_sg one vec4 a row and lane, matmul_sg64 and matmul_sgtex two rows' 8 floats a
// lane pair), since the kernels bind those buffers with different element types.

//!include matmul_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;

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

fn fma4(acc: vec4<f32>, a: vec4<f32>, b: B4) -> vec4<f32> {
    return fma(vec4<f32>(a.w), b.q3, fma(vec4<f32>(a.z), b.q2, fma(vec4<f32>(a.y), b.q1, fma(vec4<f32>(a.x), b.q0, acc))));
}

fn upd8(acc: V8, a: V8, b: B4) -> V8 {
    return V8(fma4(acc.r0, a.r0, b), fma4(acc.r1, a.r1, b), fma4(acc.r2, a.r2, b), fma4(acc.r3, a.r3, b),
              fma4(acc.r4, a.r4, b), fma4(acc.r5, a.r5, b), fma4(acc.r6, a.r6, b), fma4(acc.r7, a.r7, b));
}

// The epilogue of an accumulator of C's vec4 i (its row's, or with PHASES its output pixel's: row_at):
// bias, residual, activation, activation gradient.
fn epi_value(i: u32, acc: vec4<f32>, bias: vec4<f32>) -> vec4<f32> {
    var v = acc + bias;
    if (RESID) {
        v += load_z(i);
    }
    v = vec4<f32>(act_fwd(ACT, v.x, p.slope), act_fwd(ACT, v.y, p.slope), act_fwd(ACT, v.z, p.slope),
                  act_fwd(ACT, v.w, p.slope));
    if (DACT != 0u) {
        let zv = load_z(i);
        v *= vec4<f32>(act_grad_from_y(DACT, zv.x, p.slope), act_grad_from_y(DACT, zv.y, p.slope),
                       act_grad_from_y(DACT, zv.z, p.slope), act_grad_from_y(DACT, zv.w, p.slope));
    }
    return v;
}

// PHASES (matmul_sgtex.wgsl): the workgroup's output phase (py, px), set by the entry point first.
// Also, for matmul_sgtex's sums, its taps' residues (ry, rx) = (p + P) mod S and its pads (matmul_sgtex.wgsl,
// phase_of): found once, as lavapipe divides lane by lane.
struct Phase {
    py: u32,
    px: u32,
    ry: u32,
    rx: u32,
    pad_y: i32,
    pad_x: i32,
}

var<private> phase: Phase;

// Where a row of the product is stored: C's row r; with PHASES also the row's column ux on the phase
// grid (im_sh × im_sw), whose output pixel r is (b, S·uy + py, S·ux + px) of the [B, OH, OW] image.
struct RowCur {
    r: u32,
    ux: u32,
}

fn row_at(m: u32) -> RowCur {
    if (PHASES) {
        let t = m / p.im_sw;
        let ux = m % p.im_sw;
        let b = t / p.im_sh;
        let uy = t % p.im_sh;
        return RowCur((b * p.ph_oh + p.ph_s * uy + phase.py) * p.ph_ow + p.ph_s * ux + phase.px, ux);
    }
    return RowCur(m, 0u);
}

// The next row's: with PHASES, S pixels on, or after a phase row's last (OW = S·im_sw) the first of
// the phase's next, S image rows down (an image's next follows its last likewise, as OH = S·im_sh).
fn row_next(c: RowCur) -> RowCur {
    if (PHASES) {
        if (c.ux + 1u == p.im_sw) {
            return RowCur(c.r + p.ph_s + (p.ph_s - 1u) * p.ph_ow, 0u);
        }
        return RowCur(c.r + p.ph_s, c.ux + 1u);
    }
    return RowCur(c.r + 1u, 0u);
}

// Where an invocation works (matmul_sg's header): its column group n4 (u before clamping to the last
// one), its first row m0 and its lane l in its group of 8.
struct Place {
    cols4: u32,
    u: u32,
    n4: u32,
    m0: u32,
    l: u32,
}

fn place(wid: vec3<u32>, lid: vec3<u32>, sl: u32) -> Place {
    let cols4 = p.n >> 2u;
    let u = wid.x * WG + lid.x;
    return Place(cols4, u, min(u, cols4 - 1u), wid.y * (8u * RG), sl & 7u);
}

fn zero8() -> V8 {
    let z = vec4<f32>(0.0);
    return V8(z, z, z, z, z, z, z, z);
}

// Stores the invocation's 8·RG rows from m0 (c0 .. c7: rows m0 + 8h .. m0 + 8h + 7) in column group n4:
// each 8-row group that holds rows below M, through the including file's store8(mg, n4, acc, bias, at),
// which returns the next group's place. One copy of store8 in a loop with a runtime bound, not one per
// group: unrolled, lavapipe's LLVM took 3-4x as long to build each pipeline (about 1.8 s against 0.5 s
// at 32 rows; benches/RESULTS.md, 2026-11-29, the eighteenth session).
fn store_tile(m0: u32, n4: u32, bias: vec4<f32>, c0: V8, c1: V8, c2: V8, c3: V8, c4: V8, c5: V8, c6: V8, c7: V8) {
    let groups = min(RG, (p.m - m0 + 7u) / 8u);
    var at = row_at(m0);
    for (var h = 0u; h < groups; h++) {
        var acc = c0;
        if (h == 1u) { acc = c1; }
        if (h == 2u) { acc = c2; }
        if (h == 3u) { acc = c3; }
        if (h == 4u) { acc = c4; }
        if (h == 5u) { acc = c5; }
        if (h == 6u) { acc = c6; }
        if (h == 7u) { acc = c7; }
        at = store8(m0 + 8u * h, n4, acc, bias, at);
    }
}
