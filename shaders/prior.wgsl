// prior.wgsl: the kernels of a gated PixelCNN prior over VQ code maps: the gated activation and its
// backward, the code-embedding lookup (optionally of one position per image), the fused softmax
// cross-entropy with its gradient, its per-image sums, categorical sampling of one position and the
// weight mask. Every sum runs in a fixed order (no atomics), so runs repeat bit for bit. The CPU twins
// are in src/reference/prior.rs.
//
// Letters: n rows (n = B·P: B images of P positions, row r = b·P + p), C gate channels, K classes
// (codes), D code size. All arrays row-major.
//
// gate_forward: pre [n, 2C] (per row C "tanh" values a, then C "sigmoid" values g) -> y [n, C],
//   y = tanh(a)·σ(g). One invocation per output element. Bindings 1 pre, 2 y.
// gate_backward: dpre[r, j] = dy·σ(g)·(1 − tanh²a), dpre[r, C + j] = dy·tanh(a)·σ(g)·(1 − σ(g)),
//   recomputed from pre. One invocation per (r, j). Bindings 1 pre, 3 dy, 4 dpre.
//   (tanh and σ are act.wgsl's: exp of non-positive arguments only, finite at ±100 and beyond.)
// code_lookup: out[r, :] = table[idx[r], :], or NaN in the whole row when idx[r] >= K (a bad index
//   shows). With all = 1 every row r < n; with all = 0 only the rows r = b·P + pos (b < n / P), the
//   others untouched. One invocation per written element. Bindings 5 idx, 6 table, 7 out.
// ce_forward: per row r, with l = logits[r, :], t = target[r], m = max l, S = Σ exp(l − m):
//   dlogits[r, k] = scale·(exp(l_k − m)/S − [k = t]),
//   stats[2r]     = nll = m + log S − l_t (NaN when t >= K),
//   stats[2r + 1] = correct = 1 if the lowest-index argmax of l equals t, else 0.
//   So stats is [n, 2] (nll, correct) interleaved: the layout of `rows` in reduce.wgsl.
//   One workgroup of RWG invocations per row (64, or 8 on CPU adapters); invocation i takes k = i,
//   i + RWG, ... in order, then a fixed tree over the workgroup. Bindings 5 target (idx), 8 logits,
//   9 dlogits, 10 stats.
// ce_rows: per image b, rows[2b] = Σ_p stats[2(b·P + p)], rows[2b + 1] = Σ_p stats[2(b·P + p) + 1].
//   One workgroup per image (strided partial sums, fixed tree). Bindings 11 stats (read), 12 rows.
// categorical_sample: per image b, row r = b·P + pos: draws k ~ softmax(logits[r, :] / τ) (inv_temp
//   = 1/τ) by inverse CDF in index order: with e_k = exp((l_k − m)·inv_temp), S = Σ e_k and
//   u = u32_to_unit(philox((b, pos, state[0], STREAM_PRIOR_SAMPLE = 12), (state[3], state[4])).x),
//   k = the first index with e_k > 0 and u·S < e_0 + ... + e_k, or the last index with e_k > 0 when
//   rounding leaves u·S above the total. idx_w[r] = k. One workgroup per image: invocation i sums the
//   contiguous chunk [i·c, (i + 1)·c) (c = ⌈K / WG⌉), invocation 0 then walks the chunk totals and the
//   chosen chunk in index order. Bindings 8 logits, 13 state, 14 idx_w.
// categorical_sample_lookup: the same, then out[r, :] = table[k, :] (bindings also 6 table, 7 out).
// mask_mul: x[i] *= mask[i] for i < n. One invocation per element. Bindings 15 x, 16 mask.
//
// Dispatch: the elementwise entries (gate_*, code_lookup, mask_mul) use EW = 256 invocations per
// workgroup over grid_1d (flattened as x + y·65535·EW); the per-row entries (ce_forward, ce_rows,
// categorical_sample*) use WG = 64 invocations per workgroup (ce_forward and ce_rows RWG), one
// workgroup per row or image over grid_1d (workgroup x + y·65535).

//!include act.wgsl
//!include philox.wgsl

const WG: u32 = 64u;
// Invocations per row of ce_forward and ce_rows (`Gpu::row_lanes`): 64 on GPUs, 8 on CPU adapters (one
// lavapipe batch: no turns at the trees' barriers). The trees use it; the categorical_sample entries
// take no value for it, so that it is WG there. A power of two, at most WG.
override RWG: u32 = 64u;
const EW: u32 = 256u;
const NONE: u32 = 0xffffffffu;
const NAN_BITS: u32 = 0x7fc00000u;
const STREAM_PRIOR_SAMPLE: u32 = 12u;

struct Params {
    n: u32,
    c: u32,
    k: u32,
    d: u32,
    per_row: u32,
    pos: u32,
    all: u32,
    batch: u32,
    scale: f32,
    inv_temp: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dpre: array<f32>;
@group(0) @binding(5) var<storage, read> idx: array<u32>;
@group(0) @binding(6) var<storage, read> table: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read> logits: array<f32>;
@group(0) @binding(9) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(10) var<storage, read_write> stats: array<f32>;
@group(0) @binding(11) var<storage, read> stats_r: array<f32>;
@group(0) @binding(12) var<storage, read_write> rows: array<f32>;
@group(0) @binding(13) var<storage, read> state: array<u32>;
@group(0) @binding(14) var<storage, read_write> idx_w: array<u32>;
@group(0) @binding(15) var<storage, read_write> x: array<f32>;
@group(0) @binding(16) var<storage, read> mask: array<f32>;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> chosen: u32;

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * EW;
}

fn group_index(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * 65535u;
}

// A quiet NaN built at run time (a NaN constant expression is a shader-creation error).
fn nan() -> f32 {
    return bitcast<f32>(NAN_BITS | (p._pad0 & 0u));
}

@compute @workgroup_size(EW, 1, 1)
fn gate_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.c) {
        return;
    }
    let r = i / p.c;
    let j = i - r * p.c;
    let base = 2u * p.c * r;
    y[i] = act_tanh(pre[base + j]) * act_sigmoid(pre[base + p.c + j]);
}

@compute @workgroup_size(EW, 1, 1)
fn gate_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.c) {
        return;
    }
    let r = i / p.c;
    let j = i - r * p.c;
    let base = 2u * p.c * r;
    let t = act_tanh(pre[base + j]);
    let s = act_sigmoid(pre[base + p.c + j]);
    let g = dy[i];
    dpre[base + j] = g * s * (1.0 - t * t);
    dpre[base + p.c + j] = g * t * s * (1.0 - s);
}

@compute @workgroup_size(EW, 1, 1)
fn code_lookup(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    let n_rows = select(p.n / p.per_row, p.n, p.all != 0u);
    if (i >= n_rows * p.d) {
        return;
    }
    let q = i / p.d;
    let j = i - q * p.d;
    let r = select(q * p.per_row + p.pos, q, p.all != 0u);
    let k = idx[r];
    if (k < p.k) {
        out[r * p.d + j] = table[k * p.d + j];
    } else {
        out[r * p.d + j] = nan();
    }
}

// Tree sum of red_s over the workgroup (fixed order); every invocation must call it.
fn tree_sum(t: u32) -> f32 {
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_s[t] += red_s[t + s];
        }
        workgroupBarrier();
    }
    let v = red_s[0];
    workgroupBarrier();
    return v;
}

// Tree (max, lowest index of the max) of (red_v, red_i), NONE marking an empty slot; every invocation
// must call it. Leaves the result in red_v[0], red_i[0].
fn tree_argmax(t: u32) {
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let ia = red_i[t];
            let ib = red_i[t + s];
            let va = red_v[t];
            let vb = red_v[t + s];
            if (ib != NONE && (ia == NONE || vb > va || (vb == va && ib < ia))) {
                red_v[t] = vb;
                red_i[t] = ib;
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(RWG, 1, 1)
fn ce_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = group_index(wid);
    if (r >= p.n) {
        return;
    }
    let t = lid.x;
    let base = r * p.k;
    var bv = 0.0;
    var bi = NONE;
    for (var k = t; k < p.k; k += RWG) {
        let v = logits[base + k];
        if (bi == NONE || v > bv) {
            bv = v;
            bi = k;
        }
    }
    red_v[t] = bv;
    red_i[t] = bi;
    tree_argmax(t);
    let m = red_v[0];
    let am = red_i[0];
    var s = 0.0;
    for (var k = t; k < p.k; k += RWG) {
        s += exp(logits[base + k] - m);
    }
    red_s[t] = s;
    let total = tree_sum(t);
    let inv = 1.0 / total;
    let tgt = idx[r];
    for (var k = t; k < p.k; k += RWG) {
        let q = exp(logits[base + k] - m) * inv;
        dlogits[base + k] = p.scale * (q - select(0.0, 1.0, k == tgt));
    }
    if (t == 0u) {
        if (tgt < p.k) {
            stats[2u * r] = (m - logits[base + tgt]) + log(total);
        } else {
            stats[2u * r] = nan();
        }
        stats[2u * r + 1u] = select(0.0, 1.0, am == tgt);
    }
}

@compute @workgroup_size(RWG, 1, 1)
fn ce_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = group_index(wid);
    if (b >= p.batch) {
        return;
    }
    let t = lid.x;
    let base = b * p.per_row;
    var nll = 0.0;
    var cor = 0.0;
    for (var q = t; q < p.per_row; q += RWG) {
        nll += stats_r[2u * (base + q)];
        cor += stats_r[2u * (base + q) + 1u];
    }
    red_s[t] = nll;
    let total_nll = tree_sum(t);
    red_s[t] = cor;
    let total_cor = tree_sum(t);
    if (t == 0u) {
        rows[2u * b] = total_nll;
        rows[2u * b + 1u] = total_cor;
    }
}

// The draw of categorical_sample for image b (see the header): writes idx_w and `chosen`. Every
// invocation of the workgroup must call it.
fn sample_row(t: u32, b: u32) {
    let row = b * p.per_row + p.pos;
    let base = row * p.k;
    let chunk = (p.k + WG - 1u) / WG;
    let lo = min(t * chunk, p.k);
    let hi = min(lo + chunk, p.k);
    var bv = 0.0;
    var bi = NONE;
    for (var k = lo; k < hi; k++) {
        let v = logits[base + k];
        if (bi == NONE || v > bv) {
            bv = v;
            bi = k;
        }
    }
    red_v[t] = bv;
    red_i[t] = bi;
    tree_argmax(t);
    let m = red_v[0];
    var s = 0.0;
    for (var k = lo; k < hi; k++) {
        s += exp((logits[base + k] - m) * p.inv_temp);
    }
    red_s[t] = s;
    workgroupBarrier();
    if (t == 0u) {
        var total = 0.0;
        for (var i = 0u; i < WG; i++) {
            total += red_s[i];
        }
        let key = vec2<u32>(state[3], state[4]);
        let u = u32_to_unit(philox(vec4<u32>(b, p.pos, state[0], STREAM_PRIOR_SAMPLE), key).x);
        let goal = u * total;
        // The chunk holding the target u·S (or the last chunk with mass) and the mass before it.
        var run = 0.0;
        var c = NONE;
        var start = 0.0;
        var last_c = 0u;
        var last_start = 0.0;
        for (var i = 0u; i < WG; i++) {
            let tot = red_s[i];
            if (tot > 0.0) {
                if (goal < run + tot) {
                    c = i;
                    start = run;
                    break;
                }
                last_c = i;
                last_start = run;
            }
            run += tot;
        }
        if (c == NONE) {
            c = last_c;
            start = last_start;
        }
        let clo = c * chunk;
        let chi = min(clo + chunk, p.k);
        var cum = start;
        var pick = NONE;
        var last_k = clo;
        for (var k = clo; k < chi; k++) {
            let e = exp((logits[base + k] - m) * p.inv_temp);
            if (e > 0.0) {
                last_k = k;
                cum += e;
                if (goal < cum) {
                    pick = k;
                    break;
                }
            }
        }
        if (pick == NONE) {
            pick = last_k;
        }
        idx_w[row] = pick;
        chosen = pick;
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG, 1, 1)
fn categorical_sample(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = group_index(wid);
    if (b >= p.batch) {
        return;
    }
    sample_row(lid.x, b);
}

@compute @workgroup_size(WG, 1, 1)
fn categorical_sample_lookup(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let b = group_index(wid);
    if (b >= p.batch) {
        return;
    }
    sample_row(lid.x, b);
    let k = chosen;
    let row = b * p.per_row + p.pos;
    for (var j = lid.x; j < p.d; j += WG) {
        out[row * p.d + j] = table[k * p.d + j];
    }
}

@compute @workgroup_size(EW, 1, 1)
fn mask_mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n) {
        return;
    }
    x[i] = x[i] * mask[i];
}
