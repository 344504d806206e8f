// latent_prior.wgsl: learnable priors p_λ(z) over a VAE's latent space (src/models/latent_prior.rs):
// the RealNVP affine coupling layers of a flow prior (forward, backward, inverse, input masking), the
// standard-normal base density with its gradient, and a diagonal Gaussian mixture (log-density,
// responsibilities, gradients, sampling). Every sum runs in a fixed order (no atomics), so runs repeat
// bit for bit. The CPU twins are in src/reference/latent_prior.rs.
//
// Letters: n rows (r), Z latent size (j), K mixture components (c). All arrays row-major.
// Mask of a coupling layer with `parity`: dimension j is CONDITIONING (passed through, m_j = 1) when
// j % 2 == parity, TRANSFORMED (m_j = 0) otherwise. The coupling MLP output st [n, 2Z] holds ŝ in
// columns 0..Z and t in Z..2Z; the scale is s = tanh(ŝ) (bounded in (−1, 1)).
//
// lp_mask: h[r, j] = x[r, j]·m_j. One invocation per element. Bindings 1 x (x_in), 3 h (y_out).
// flow_coupling_forward: y = m⊙x + (1 − m)⊙(x⊙exp(s) + t); logp[r] (=, first != 0; else +=) the
//   log-determinant Σ_j (1 − m_j)·s_j, summed over j in order. One invocation per ROW.
//   Bindings 1 x_in, 2 st, 3 y_out, 4 logp.
// flow_coupling_backward: from g = ∂L/∂y (L = Σ_r c_r·(−log p(z_r)), so each layer's log-determinant
//   contributes −c_r per transformed s_j): conditioning j: dx = g, dst[r, j] = dst[r, Z + j] = 0;
//   transformed j: dx = g·exp(s), dst[r, Z + j] = g, dst[r, j] = (g·x·exp(s) − c_r)·(1 − s²).
//   dx (=) holds only the direct path; flow_add_masked adds the path through the MLP afterwards.
//   One invocation per element. Bindings 1 x_in, 2 st, 5 cw, 6 g, 7 dst, 8 dx.
// flow_add_masked: dx[r, j] += m_j·dh[r, j] (the MLP's input gradient). Bindings 6 g (= dh), 8 dx.
// flow_coupling_inverse: x = m⊙y + (1 − m)⊙((y − t)⊙exp(−s)), from y (x_in) and the st the MLP gave
//   for m⊙y (equal to m⊙x). One invocation per element. Bindings 1 x_in (= y), 2 st, 3 y_out (= x).
// lp_base_forward: logp[r] (=, first != 0; else +=) log N(u_r; 0, I) = −½ Σ_j u_j² − ½ Z log 2π.
//   One invocation per ROW. Bindings 1 x_in (= u), 4 logp.
// lp_base_backward: du[r, j] (=) = c_r·u[r, j] = c_r·∂(−log N(u_r))/∂u_rj. Bindings 1 u, 5 cw, 8 dx.
// lp_copy: y_out[i] = x_in[i] for i < n·Z (the standard prior's "sample"). Bindings 1, 3.
// Mixture parameters: one block mog [K, 2Z + 1], row c = (μ_c [Z], logσ²_c [Z], logit_c); logσ² is
//   clamped to [LOGVAR_MIN, LOGVAR_MAX] where used (its gradient is zero outside), π = softmax(logits).
//   a_rc = log π_c + Σ_j −½(log 2π + lv_cj + (z_rj − μ_cj)²·exp(−lv_cj)); log p(z_r) = LSE_c a_rc.
// mog_forward: logp[r] (=) = log p(z_r) by an online log-sum-exp over c in order; gamma[r, c] (=) =
//   exp(a_rc − log p(z_r)) (the responsibilities). One invocation per ROW.
//   Bindings 1 x_in (= z), 9 mog, 4 logp, 10 gamma.
// mog_backward_z: dz[r, j] (=) = c_r·Σ_c γ_rc·(z_rj − μ_cj)·exp(−lv_cj), c in order. One invocation
//   per element. Bindings 1 z, 9 mog, 11 gam (read), 5 cw, 8 dx (= dz).
// mog_backward_params: dmog (=) the gradient of L over the block, one WORKGROUP per entry (c, q):
//   q < Z (μ_cj):        −Σ_r c_r·γ_rc·(z_rj − μ_cj)·exp(−lv_cj)
//   Z <= q < 2Z (lv_cj): −Σ_r c_r·γ_rc·½((z_rj − μ_cj)²·exp(−lv_cj) − 1)  (0 when lv is clamped)
//   q = 2Z (logit_c):     Σ_r c_r·(π_c − γ_rc)
//   invocation i sums rows i, i + RWG, ... in order, then a fixed tree over the workgroup (RWG
//   invocations: 64, or 8 on CPU adapters).
//   Bindings 1 z, 9 mog, 11 gam, 5 cw, 12 dmog.
// mog_sample: per row r, u = u32_to_unit(philox((r, state[counter_word], STREAM_LATENT_PRIOR = 14, 0),
//   (state[3], state[4])).x); the component is the first c (in order) with u < π_0 + ... + π_c, or the
//   last c with π_c > 0 when rounding leaves u above the total; z[r, j] = μ_cj + exp(½ lv_cj)·e[r, j]
//   for the standard normals e (x_in). One invocation per ROW. Bindings 1 x_in (= e), 9 mog,
//   13 state, 3 y_out (= z).
//
// Dispatch: WG = 64 invocations per workgroup. Element and row entries: one invocation per item over
// grid_1d (flattened as x + y·65535·WG); mog_backward_params: one workgroup per entry over grid_1d
// (workgroup x + y·65535).

//!include act.wgsl
//!include philox.wgsl

const WG: u32 = 64u;
// Invocations per workgroup of mog_backward_params (`Gpu::row_lanes`): 64 on GPUs, 8 on CPU adapters,
// where one 8-lane lavapipe batch takes no turns at the tree's barriers. A power of two, at most WG.
override RWG: u32 = 64u;
const LOG_2PI: f32 = 1.8378770664093453;
const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;
const STREAM_LATENT_PRIOR: u32 = 14u;

struct Params {
    n: u32,
    z: u32,
    k: u32,
    parity: u32,
    first: u32,
    counter_word: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x_in: array<f32>;
@group(0) @binding(2) var<storage, read> st: array<f32>;
@group(0) @binding(3) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> logp: array<f32>;
@group(0) @binding(5) var<storage, read> cw: array<f32>;
@group(0) @binding(6) var<storage, read> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> dst: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read> mog: array<f32>;
@group(0) @binding(10) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(11) var<storage, read> gam: array<f32>;
@group(0) @binding(12) var<storage, read_write> dmog: array<f32>;
@group(0) @binding(13) var<storage, read> state: array<u32>;

var<workgroup> red: array<f32, WG>;

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * WG;
}

fn group_index(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * 65535u;
}

fn conditioning(j: u32) -> bool {
    return j % 2u == p.parity;
}

@compute @workgroup_size(WG, 1, 1)
fn lp_mask(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    let j = i % p.z;
    y_out[i] = select(0.0, x_in[i], conditioning(j));
}

@compute @workgroup_size(WG, 1, 1)
fn flow_coupling_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = flat(gid);
    if (r >= p.n) {
        return;
    }
    var ld = 0.0;
    for (var j = 0u; j < p.z; j++) {
        let i = r * p.z + j;
        let x = x_in[i];
        if (conditioning(j)) {
            y_out[i] = x;
        } else {
            let s = act_tanh(st[2u * i - j]);
            let t = st[2u * i - j + p.z];
            y_out[i] = x * exp(s) + t;
            ld += s;
        }
    }
    if (p.first != 0u) {
        logp[r] = ld;
    } else {
        logp[r] = logp[r] + ld;
    }
}

// st index of (r, j) is r·2Z + j = 2i − j for i = r·Z + j.

@compute @workgroup_size(WG, 1, 1)
fn flow_coupling_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    let r = i / p.z;
    let j = i - r * p.z;
    let si = 2u * i - j;
    let gv = g[i];
    if (conditioning(j)) {
        dx[i] = gv;
        dst[si] = 0.0;
        dst[si + p.z] = 0.0;
    } else {
        let s = act_tanh(st[si]);
        let e = exp(s);
        dx[i] = gv * e;
        dst[si + p.z] = gv;
        dst[si] = (gv * x_in[i] * e - cw[r]) * (1.0 - s * s);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn flow_add_masked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    if (conditioning(i % p.z)) {
        dx[i] = dx[i] + g[i];
    }
}

@compute @workgroup_size(WG, 1, 1)
fn flow_coupling_inverse(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    let r = i / p.z;
    let j = i - r * p.z;
    let yv = x_in[i];
    if (conditioning(j)) {
        y_out[i] = yv;
    } else {
        let si = 2u * i - j;
        let s = act_tanh(st[si]);
        y_out[i] = (yv - st[si + p.z]) * exp(-s);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn lp_base_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = flat(gid);
    if (r >= p.n) {
        return;
    }
    var q = 0.0;
    for (var j = 0u; j < p.z; j++) {
        let u = x_in[r * p.z + j];
        q += u * u;
    }
    let v = -0.5 * q - 0.5 * f32(p.z) * LOG_2PI;
    if (p.first != 0u) {
        logp[r] = v;
    } else {
        logp[r] = logp[r] + v;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn lp_base_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    dx[i] = cw[i / p.z] * x_in[i];
}

@compute @workgroup_size(WG, 1, 1)
fn lp_copy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    y_out[i] = x_in[i];
}

// ---------------------------------------------------------------------------------------------
// Gaussian mixture

fn mog_row(c: u32) -> u32 {
    return c * (2u * p.z + 1u);
}

fn mog_lv(c: u32, j: u32) -> f32 {
    return clamp(mog[mog_row(c) + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
}

// log Σ_c exp(logit_c), max first.
fn logit_lse() -> f32 {
    var m = mog[mog_row(0u) + 2u * p.z];
    for (var c = 1u; c < p.k; c++) {
        m = max(m, mog[mog_row(c) + 2u * p.z]);
    }
    var s = 0.0;
    for (var c = 0u; c < p.k; c++) {
        s += exp(mog[mog_row(c) + 2u * p.z] - m);
    }
    return m + log(s);
}

// log N(z_r; μ_c, diag exp(lv_c)).
fn comp_logpdf(c: u32, r: u32) -> f32 {
    let base = mog_row(c);
    var acc = 0.0;
    for (var j = 0u; j < p.z; j++) {
        let lv = mog_lv(c, j);
        let d = x_in[r * p.z + j] - mog[base + j];
        acc += LOG_2PI + lv + d * d * exp(-lv);
    }
    return -0.5 * acc;
}

@compute @workgroup_size(WG, 1, 1)
fn mog_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = flat(gid);
    if (r >= p.n) {
        return;
    }
    let lz = logit_lse();
    var m = 0.0;
    var s = 0.0;
    for (var c = 0u; c < p.k; c++) {
        let a = mog[mog_row(c) + 2u * p.z] - lz + comp_logpdf(c, r);
        gamma[r * p.k + c] = a;
        if (c == 0u) {
            m = a;
            s = 1.0;
        } else if (a > m) {
            s = s * exp(m - a) + 1.0;
            m = a;
        } else {
            s += exp(a - m);
        }
    }
    let lp = m + log(s);
    logp[r] = lp;
    for (var c = 0u; c < p.k; c++) {
        gamma[r * p.k + c] = exp(gamma[r * p.k + c] - lp);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn mog_backward_z(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.z) {
        return;
    }
    let r = i / p.z;
    let j = i - r * p.z;
    let zv = x_in[i];
    var acc = 0.0;
    for (var c = 0u; c < p.k; c++) {
        acc += gam[r * p.k + c] * (zv - mog[mog_row(c) + j]) * exp(-mog_lv(c, j));
    }
    dx[i] = cw[r] * acc;
}

@compute @workgroup_size(RWG, 1, 1)
fn mog_backward_params(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let e = group_index(wid);
    let width = 2u * p.z + 1u;
    if (e >= p.k * width) {
        return;
    }
    let t = lid.x;
    let c = e / width;
    let q = e - c * width;
    var acc = 0.0;
    if (q < 2u * p.z) {
        let j = select(q - p.z, q, q < p.z);
        let mu = mog[mog_row(c) + j];
        let iv = exp(-mog_lv(c, j));
        for (var r = t; r < p.n; r += RWG) {
            let d = x_in[r * p.z + j] - mu;
            let w = cw[r] * gam[r * p.k + c];
            if (q < p.z) {
                acc -= w * d * iv;
            } else {
                acc -= w * 0.5 * (d * d * iv - 1.0);
            }
        }
    } else {
        let pi = exp(mog[mog_row(c) + 2u * p.z] - logit_lse());
        for (var r = t; r < p.n; r += RWG) {
            acc += cw[r] * (pi - gam[r * p.k + c]);
        }
    }
    red[t] = acc;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        var v = red[0];
        if (q >= p.z && q < 2u * p.z) {
            let raw = mog[mog_row(c) + q];
            if (!(raw >= LOGVAR_MIN && raw <= LOGVAR_MAX)) {
                v = 0.0;
            }
        }
        dmog[e] = v;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn mog_sample(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = flat(gid);
    if (r >= p.n) {
        return;
    }
    let key = vec2<u32>(state[3], state[4]);
    let u = u32_to_unit(philox(vec4<u32>(r, state[p.counter_word], STREAM_LATENT_PRIOR, 0u), key).x);
    let lz = logit_lse();
    var cum = 0.0;
    var pick = p.k;
    var last = 0u;
    for (var c = 0u; c < p.k; c++) {
        let pi = exp(mog[mog_row(c) + 2u * p.z] - lz);
        if (pi > 0.0) {
            last = c;
            cum += pi;
            if (pick == p.k && u < cum) {
                pick = c;
            }
        }
    }
    if (pick == p.k) {
        pick = last;
    }
    let base = mog_row(pick);
    for (var j = 0u; j < p.z; j++) {
        let i = r * p.z + j;
        y_out[i] = mog[base + j] + exp(0.5 * mog_lv(pick, j)) * x_in[i];
    }
}
