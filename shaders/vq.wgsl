// vq.wgsl: vector quantisation for VQ-VAE: nearest-codebook assignment fused with the gather of the chosen
// codes, the straight-through backward fused with the commitment gradient, per-code statistics (counts and
// sums) for the EMA codebook update or the codebook-loss gradient, the EMA finish (Laplace-smoothed
// e = m / N and dead-code restart), code usage (perplexity, used codes) and the reconstruction MSE.
// Every sum runs in a fixed order (no float atomics), so runs repeat bit for bit. The CPU twins are in
// src/reference/vq.rs.
//
// Shapes: z [N, D] encoder outputs (row n = one vector), code [K, D] codebook, idx [N] u32, all row-major.
//
// The assignment takes three launches: vq_enorm (enorm_w[k] = Σ_j code[k, j]², one invocation per code;
//   bindings 2 code, 27 enorm_w), the matmul dots = z · codeᵀ [N, K] (matmul.wgsl), then
// vq_argmin: idx[n] = argmin_k (enorm[k] − 2·dots[n, k]) (= argmin of ||z_n − e_k||², ties to the lowest
//   k), zq[n, :] = code[idx[n], :] and dist[n] = Σ_j (z[n, j] − code[idx[n], j])² computed directly.
//   One invocation per vector. Bindings 1 z, 2 code, 3 idx_w, 4 zq, 5 dist, 28 enorm, 29 dots.
//   vq_argmin_v4: the same through vec4 views where K and D are multiples of 4: bindings 30 z, 31 code,
//   3 idx_w, 32 zq, 5 dist, 33 enorm, 34 dots.
// vq_backward: dz[i] = dzq[i] + scale·(z[i] − code[idx[n], j]), i = n·D + j (straight-through plus the
//   commitment gradient, scale = 2β / (N·D)). One invocation per element. Bindings 1, 2, 6 idx, 7 dzq, 8 dz.
// vq_counts: counts_w[k] = #{n < valid : idx[n] = k}, valid = N, or (batch_word != NONE) the vectors of
//   the rows of this batch that are inside the dataset (min(B, n_items − state[batch_word]·B) · per_row).
//   One invocation per code. Bindings 6 idx, 9 counts_w, 13 state. vq_counts_v4 (N >= 4): the same with
//   the indices also bound as vec4 (35) and read 4 a load.
// vq_scan: one workgroup. starts_w[k] = Σ_{c < k} counts[c] (exclusive prefix sum). Bindings 10, 23.
// vq_fill: order_w[starts[k] + r] = the r-th vector (in n order) assigned to code k: a stable counting
//   sort, one invocation per code. Bindings 6 idx, 23 starts_w (read: both halves of one buffer must
//   share an access mode), 25 order_w. vq_fill_v4 (N >= 4): idx also as vec4 (35), read 4 a load.
// vq_stats_ema: with s = Σ_{n : idx[n] = k} z[n, j] (in n order, read through starts and order), over the table (a slice of the
//   parameter buffer holding the EMA count N at off_count [K], the EMA sum m at off_sum [K, D]):
//   m[k, j] ← decay·m[k, j] + (1 − decay)·s, and (j = 0) N[k] ← decay·N[k] + (1 − decay)·counts[k], each
//   0 where below f32's least normal (flush_subnormal1).
//   One invocation per (k, j). Bindings 1 z, 10 counts, 11 table, 24 starts, 26 order.
// vq_stats_grad: gcode[k, j] = scale·(counts[k]·code[k, j] − s): the gradient of the codebook loss
//   Σ ||sg[z_n] − e_idx[n]||² · scale / 2 (scale = 2 / (N·D)). Bindings 1, 2, 10, 12 gcode, 24, 26.
// vq_ema_finish: one workgroup. S = Σ_k N[k]; per code, Ns = (N[k] + eps) / (S + K·eps) · S and
//   code[k, :] = m[k, :] / Ns (the codebook at off_code in the table). With restart != 0 a code whose N
//   is below threshold is reset to a vector of this batch: r = ⌊philox((k, state[0], 11, 0), seed).x · N
//   / 2³²⌋, code[k, :] = m[k, :] = z[r, :], N[k] = 1; the number reset is added to vqm[slot + 3].
//   Bindings 1 z, 11 table, 13 state, 14 vqm.
// vq_usage: one workgroup. T = Σ counts, perplexity = exp(−Σ p ln p) with p = counts / T (0 ln 0 = 0),
//   used = #{counts > 0}: vqm[slot] += perplexity, vqm[slot + 1] += used, vqm[slot + 2] += 1, and
//   usage[k] += counts[k]. Bindings 10 counts, 14 vqm, 15 usage.
// recon_mse: one workgroup per image b of [B, H, W, C] (NHWC): inside the window (rows top..top+vh,
//   columns left..left+vw) e = xhat − x, dxhat = scale·e, rows[2b] = Σ e²; outside dxhat = 0.
//   rows[2b + 1] = Σ of dist over the image's vectors: dist[b·per_row + v] (v < per_row) plus, for a
//   second level, dist[n1 + b·per_row2 + v] (v < per_row2). Bindings 16 xhat, 17 x, 18 dxhat, 19 rows,
//   20 dist (read).
//
// Dispatch: one-invocation-per-item entries use WG invocations per workgroup over grid_1d (flattened as
// x + y·65535·WG); the one-workgroup entries use grid (1, 1, 1); recon_mse uses grid (B, 1, 1).

//!include philox.wgsl

override WG: u32 = 64u;
const NONE: u32 = 0xffffffffu;
const RED: u32 = 256u;

struct Params {
    n: u32,
    d: u32,
    k: u32,
    slot: u32,
    decay: f32,
    eps: f32,
    scale: f32,
    threshold: f32,
    off_count: u32,
    off_sum: u32,
    off_code: u32,
    restart: u32,
    batch: u32,
    n_items: u32,
    batch_word: u32,
    per_row: u32,
    h: u32,
    w: u32,
    c: u32,
    top: u32,
    left: u32,
    vh: u32,
    vw: u32,
    per_row2: u32,
    n1: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> code: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx_w: array<u32>;
@group(0) @binding(4) var<storage, read_write> zq: array<f32>;
@group(0) @binding(5) var<storage, read_write> dist: array<f32>;
@group(0) @binding(6) var<storage, read> idx: array<u32>;
@group(0) @binding(7) var<storage, read> dzq: array<f32>;
@group(0) @binding(8) var<storage, read_write> dz: array<f32>;
@group(0) @binding(9) var<storage, read_write> counts_w: array<f32>;
@group(0) @binding(10) var<storage, read> counts: array<f32>;
@group(0) @binding(11) var<storage, read_write> table: array<f32>;
@group(0) @binding(12) var<storage, read_write> gcode: array<f32>;
@group(0) @binding(13) var<storage, read> state: array<u32>;
@group(0) @binding(14) var<storage, read_write> vqm: array<f32>;
@group(0) @binding(15) var<storage, read_write> usage: array<f32>;
@group(0) @binding(16) var<storage, read> xhat: array<f32>;
@group(0) @binding(17) var<storage, read> x: array<f32>;
@group(0) @binding(18) var<storage, read_write> dxhat: array<f32>;
@group(0) @binding(19) var<storage, read_write> rows: array<f32>;
@group(0) @binding(20) var<storage, read> dist_r: array<f32>;
@group(0) @binding(23) var<storage, read_write> starts_w: array<u32>;
@group(0) @binding(24) var<storage, read> starts: array<u32>;
@group(0) @binding(25) var<storage, read_write> order_w: array<u32>;
@group(0) @binding(26) var<storage, read> order: array<u32>;
@group(0) @binding(27) var<storage, read_write> enorm_w: array<f32>;
@group(0) @binding(28) var<storage, read> enorm: array<f32>;
@group(0) @binding(29) var<storage, read> dots: array<f32>;
// vq_argmin_v4's vec4 views of z, code, zq, enorm and dots.
@group(0) @binding(30) var<storage, read> z4: array<vec4<f32>>;
@group(0) @binding(31) var<storage, read> code4: array<vec4<f32>>;
@group(0) @binding(32) var<storage, read_write> zq4: array<vec4<f32>>;
@group(0) @binding(33) var<storage, read> enorm4: array<vec4<f32>>;
@group(0) @binding(34) var<storage, read> dots4: array<vec4<f32>>;
// idx again, 4 indices a load (vq_counts, vq_fill: every invocation reads every index, at the same
// address; lavapipe makes each storage load a loop over the lanes, so one load for 4 is 4x fewer).
@group(0) @binding(35) var<storage, read> idx4: array<vec4<u32>>;

var<workgroup> red_a: array<f32, RED>;
var<workgroup> red_b: array<f32, RED>;

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * WG;
}

// Tree sums of red_a and red_b over RED invocations (fixed order); every invocation must call it.
fn reduce2(t: u32) {
    workgroupBarrier();
    for (var s = RED / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_a[t] += red_a[t + s];
            red_b[t] += red_b[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG, 1, 1)
fn vq_enorm(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = flat(gid);
    if (k >= p.k) {
        return;
    }
    var s = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let v = code[k * p.d + j];
        s += v * v;
    }
    enorm_w[k] = s;
}

@compute @workgroup_size(WG, 1, 1)
fn vq_argmin(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = flat(gid);
    if (n >= p.n) {
        return;
    }
    let row = n * p.k;
    var best = 0u;
    var bs = 0.0;
    for (var k = 0u; k < p.k; k++) {
        let s = enorm[k] - 2.0 * dots[row + k];
        if (k == 0u || s < bs) {
            bs = s;
            best = k;
        }
    }
    idx_w[n] = best;
    let zb = n * p.d;
    let cb = best * p.d;
    var dd = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let e = code[cb + j];
        let t = z[zb + j] - e;
        dd += t * t;
        zq[zb + j] = e;
    }
    dist[n] = dd;
}

// vq_argmin where K and D are multiples of 4: the same scores, comparisons and sums in the same order
// through vec4 loads and stores (a quarter of the per-lane load loops on lavapipe).
@compute @workgroup_size(WG, 1, 1)
fn vq_argmin_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = flat(gid);
    if (n >= p.n) {
        return;
    }
    let k4s = p.k >> 2u;
    let row = n * k4s;
    var best = 0u;
    var bs = 0.0;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let s = enorm4[k4] - 2.0 * dots4[row + k4];
        for (var c = 0u; c < 4u; c++) {
            let k = 4u * k4 + c;
            let take = k == 0u || s[c] < bs;
            bs = select(bs, s[c], take);
            best = select(best, k, take);
        }
    }
    idx_w[n] = best;
    let d4s = p.d >> 2u;
    let zb = n * d4s;
    let cb = best * d4s;
    var dd = 0.0;
    for (var j = 0u; j < d4s; j++) {
        let e = code4[cb + j];
        let t = z4[zb + j] - e;
        dd += t.x * t.x;
        dd += t.y * t.y;
        dd += t.z * t.z;
        dd += t.w * t.w;
        zq4[zb + j] = e;
    }
    dist[n] = dd;
}

@compute @workgroup_size(WG, 1, 1)
fn vq_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n * p.d) {
        return;
    }
    let n = i / p.d;
    let j = i - n * p.d;
    dz[i] = dzq[i] + p.scale * (z[i] - code[idx[n] * p.d + j]);
}

// Vectors of this batch that belong to dataset items (see the header).
fn valid_vectors() -> u32 {
    if (p.batch_word == NONE) {
        return p.n;
    }
    let first = state[p.batch_word] * p.batch;
    let left = select(0u, p.n_items - first, p.n_items > first);
    return min(p.batch, left) * p.per_row;
}

// #{n in [first, end) : idx[n] = k}, one index a load.
fn count_from(k: u32, first: u32, end: u32) -> u32 {
    var c = 0u;
    for (var n = first; n < end; n++) {
        c += select(0u, 1u, idx[n] == k);
    }
    return c;
}

@compute @workgroup_size(WG, 1, 1)
fn vq_counts(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = flat(gid);
    if (k >= p.k) {
        return;
    }
    counts_w[k] = f32(count_from(k, 0u, min(valid_vectors(), p.n)));
}

// vq_counts with the indices read 4 a load (binding 35), the last N mod 4 one at a time (N >= 4).
@compute @workgroup_size(WG, 1, 1)
fn vq_counts_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = flat(gid);
    if (k >= p.k) {
        return;
    }
    let nv = min(valid_vectors(), p.n);
    var c = 0u;
    let q4 = nv / 4u;
    for (var q = 0u; q < q4; q++) {
        c += dot(select(vec4<u32>(0u), vec4<u32>(1u), idx4[q] == vec4<u32>(k)), vec4<u32>(1u));
    }
    counts_w[k] = f32(c + count_from(k, 4u * q4, nv));
}

@compute @workgroup_size(256, 1, 1)
fn vq_scan(@builtin(local_invocation_id) lid: vec3<u32>) {
    // Each invocation owns a contiguous chunk of codes; chunk totals are scanned in workgroup memory.
    let t = lid.x;
    let chunk = (p.k + RED - 1u) / RED;
    let lo = min(t * chunk, p.k);
    let hi = min(lo + chunk, p.k);
    var tot = 0u;
    for (var k = lo; k < hi; k++) {
        tot += u32(counts[k]);
    }
    red_a[t] = f32(tot);
    workgroupBarrier();
    // Exclusive scan of the chunk totals (exact: totals are integers below 2^24).
    if (t == 0u) {
        var run = 0.0;
        for (var i = 0u; i < RED; i++) {
            let v = red_a[i];
            red_a[i] = run;
            run += v;
        }
    }
    workgroupBarrier();
    var at = u32(red_a[t]);
    for (var k = lo; k < hi; k++) {
        starts_w[k] = at;
        at += u32(counts[k]);
    }
}

// The indices in [first, N) equal to k, in order, into order_w from at; returns where the next goes.
fn fill_from(k: u32, first: u32, at0: u32) -> u32 {
    var at = at0;
    for (var n = first; n < p.n; n++) {
        if (idx[n] == k) {
            order_w[at] = n;
            at += 1u;
        }
    }
    return at;
}

@compute @workgroup_size(WG, 1, 1)
fn vq_fill(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = flat(gid);
    if (k >= p.k) {
        return;
    }
    fill_from(k, 0u, starts_w[k]);
}

// vq_fill with the indices read 4 a load (binding 35), the last N mod 4 one at a time (N >= 4).
@compute @workgroup_size(WG, 1, 1)
fn vq_fill_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = flat(gid);
    if (k >= p.k) {
        return;
    }
    var at = starts_w[k];
    let q4 = p.n / 4u;
    for (var q = 0u; q < q4; q++) {
        let v = idx4[q];
        for (var i = 0u; i < 4u; i++) {
            if (v[i] == k) {
                order_w[at] = 4u * q + i;
                at += 1u;
            }
        }
    }
    fill_from(k, 4u * q4, at);
}

// Σ z[n, j] over the vectors assigned to code k, in n order (its run of the sorted order).
fn code_sum(k: u32, j: u32) -> f32 {
    var s = 0.0;
    let lo = starts[k];
    let hi = lo + u32(counts[k]);
    for (var i = lo; i < hi; i++) {
        s += z[order[i] * p.d + j];
    }
    return s;
}

// x, or 0 where it lies below f32's least normal (2^-126): an unused code's N and m decay by `decay` a
// step into the subnormals, which lavapipe's threads do not flush and x86 CPUs handle slowly (Adam's
// moments likewise: optim_common.wgsl, flush_subnormal).
fn flush_subnormal1(x: f32) -> f32 {
    return select(x, 0.0, abs(x) < 1.17549435e-38);
}

@compute @workgroup_size(WG, 1, 1)
fn vq_stats_ema(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.k * p.d) {
        return;
    }
    let k = i / p.d;
    let j = i - k * p.d;
    let s = code_sum(k, j);
    let m = p.off_sum + i;
    table[m] = flush_subnormal1(p.decay * table[m] + (1.0 - p.decay) * s);
    if (j == 0u) {
        let c = p.off_count + k;
        table[c] = flush_subnormal1(p.decay * table[c] + (1.0 - p.decay) * counts[k]);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn vq_stats_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.k * p.d) {
        return;
    }
    let k = i / p.d;
    let j = i - k * p.d;
    let s = code_sum(k, j);
    gcode[i] = p.scale * (counts[k] * code[i] - s);
}

@compute @workgroup_size(256, 1, 1)
fn vq_ema_finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var acc = 0.0;
    for (var k = t; k < p.k; k += RED) {
        acc += table[p.off_count + k];
    }
    red_a[t] = acc;
    red_b[t] = 0.0;
    reduce2(t);
    let total = red_a[0];
    workgroupBarrier();
    let denom = total + f32(p.k) * p.eps;
    let key = vec2<u32>(state[3], state[4]);
    var reset = 0.0;
    for (var k = t; k < p.k; k += RED) {
        let cnt = table[p.off_count + k];
        let row = k * p.d;
        if (p.restart != 0u && cnt < p.threshold) {
            let r = mulhilo(philox(vec4<u32>(k, state[0], 11u, 0u), key).x, p.n).x;
            for (var j = 0u; j < p.d; j++) {
                let v = z[r * p.d + j];
                table[p.off_code + row + j] = v;
                table[p.off_sum + row + j] = v;
            }
            table[p.off_count + k] = 1.0;
            reset += 1.0;
        } else {
            let ns = (cnt + p.eps) / denom * total;
            for (var j = 0u; j < p.d; j++) {
                table[p.off_code + row + j] = table[p.off_sum + row + j] / ns;
            }
        }
    }
    red_a[t] = reset;
    reduce2(t);
    if (t == 0u) {
        vqm[p.slot + 3u] += red_a[0];
    }
}

@compute @workgroup_size(256, 1, 1)
fn vq_usage(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var tot = 0.0;
    var used = 0.0;
    for (var k = t; k < p.k; k += RED) {
        let c = counts[k];
        tot += c;
        used += select(0.0, 1.0, c > 0.0);
        usage[k] += c;
    }
    red_a[t] = tot;
    red_b[t] = used;
    reduce2(t);
    let total = red_a[0];
    let n_used = red_b[0];
    workgroupBarrier();
    var h = 0.0;
    for (var k = t; k < p.k; k += RED) {
        let c = counts[k];
        if (c > 0.0) {
            let q = c / total;
            h -= q * log(q);
        }
    }
    red_a[t] = h;
    red_b[t] = 0.0;
    reduce2(t);
    if (t == 0u) {
        vqm[p.slot] += select(1.0, exp(red_a[0]), total > 0.0);
        vqm[p.slot + 1u] += n_used;
        vqm[p.slot + 2u] += 1.0;
    }
}

@compute @workgroup_size(256, 1, 1)
fn recon_mse(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.x;
    let b = wid.x;
    let per = p.h * p.w * p.c;
    let base = b * per;
    var sse = 0.0;
    for (var i = t; i < per; i += RED) {
        let pix = i / p.c;
        let yy = pix / p.w;
        let xx = pix - yy * p.w;
        let inside = yy >= p.top && yy < p.top + p.vh && xx >= p.left && xx < p.left + p.vw;
        let e = xhat[base + i] - x[base + i];
        if (inside) {
            sse += e * e;
            dxhat[base + i] = p.scale * e;
        } else {
            dxhat[base + i] = 0.0;
        }
    }
    var ds = 0.0;
    for (var v = t; v < p.per_row; v += RED) {
        ds += dist_r[b * p.per_row + v];
    }
    for (var v = t; v < p.per_row2; v += RED) {
        ds += dist_r[p.n1 + b * p.per_row2 + v];
    }
    red_a[t] = sse;
    red_b[t] = ds;
    reduce2(t);
    if (t == 0u) {
        rows[2u * b] = red_a[0];
        rows[2u * b + 1u] = red_b[0];
    }
}
