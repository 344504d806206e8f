// iwae.wgsl: the sample-weighted objectives: the importance-weighted bound L_k (IWAE, Burda et al. 2016)
// and the Monte-Carlo ELBO (for priors without a closed-form KL), values and gradients; and the
// score-function (likelihood-ratio) gradient of the reconstruction term.
// Letters: B batch, D data dimension, Z latent size, M samples per input (rows r = m·B + b).
// Per row r:  log w_r = lpx_r + β·lat_r,  lpx_r = log p(x_b | z_r) = −Σ_d nll(out[r, d], x[b, d]),
//             nll as in elbo.wgsl: Bernoulli, Gaussian with the fixed σ (var_mode 0) or with the learned
//             s = log σ² (binding 15 logvar, [1] (var_mode 1) or [D] (var_mode 2), clamped to [lv_min, 20]),
//             lat_r = log p(z_r) − log q(z_r | x_b),  log q = Σ_j (−½ε² − ½lv_j − ½log 2π),
//             log p(z) = Σ_j (−½z² − ½log 2π) (standard prior) or logpz[r] (a learned prior's output).
// Per example b: IWAE L_b = log (1/M) Σ_m exp(log w_r) (stable log-mean-exp), weights w̃_r = softmax_m;
//                ELBO  L_b = (1/M) Σ_m log w_r, weights 1/M.   loss = −(1/B) Σ_b L_b.
// The gradient of the loss is Σ_r wt_r · ∇(−log w_r) with wt_r = w̃_r / B (the weights are constants).
// With ε fixed, log q = Σ_j (−½ε² − ½lv_j) + c, so its only parameter gradient is −½ per lv_j; log p(z)
// and log p(x|z) reach μ, lv through z = μ + exp(½lv)·ε.
//
// logw_rows: grid = (rows, 1, 1) or 2-D for more than 32768 rows (row = wid.y·32768 + wid.x), RWG
//   invocations (override: 64, or 8 on CPU adapters, `Gpu::row_lanes`); bindings 1 out (read,
//   [M·B, D]), 2 x (read, [B, D]), 3 head (read, [B, 2Z]), 4 eps (read, [M·B, Z]), 5 z (read,
//   [M·B, Z]), 6 logpz (read, [M·B]; read when ext_prior != 0), 7 terms (read_write, [row_offset +
//   M·B, 2] = (lpx_r, lat_r)), 15 logvar (read; unread when var_mode = 0). Rows with m ≥ valid are
//   skipped (the estimator's last chunk).
// logw_combine: one invocation per example, grid = (ceil(B / 64), 1, 1); bindings 7 terms (read, [M·B, 2],
//   as a read_write binding), 8 rows (read_write, [B, 3] = (−mean lpx, −mean lat, −L_b)), 9 wt (read_write,
//   [M·B] = wt_r; written when write_weights != 0), 10 wtp (the same times β, for a learned prior's backward).
// logw_grad_out: one element of [M·B, D] per invocation, 2-D grid of 256-wide workgroups (index =
//   (wid.y·32768 + wid.x)·256 + lid.x); bindings 1 out, 2 x, 9 wt (read), 11 dout (read_write, =),
//   15 logvar (read; unread when var_mode = 0). The learned variance's own gradient (weighted by wt) is
//   elbo.wgsl's logvar_grad.
// latent_backward: one (b, j) per invocation, grid = (ceil(B·Z / 64), 1, 1); bindings 3 head, 4 eps,
//   5 z, 9 wt (read), 12 dz (read: the decoder's input gradient), 13 dzp (read: a learned prior's dz, already
//   weighted by β·wt; read when ext_prior != 0), 14 dhead (read_write, =):
//     g_r = dz[r, j] + (ext ? dzp[r, j] : β·wt_r·z[r, j])
//     dμ = Σ_m g_r,  dlv = Σ_m g_r·ε_r·½exp(½lv) − ½β·Σ_m wt_r   (0 outside the logσ² clamp)
// score_backward: the score-function gradient of the reconstruction term E_q[−log p(x|z)]
//   (∇ = −E[lpx · ∇ log q(z|x)], ∇_μ log q = ε/σ, ∇_lv log q = ½(ε² − 1)), with the mean of the other
//   samples' lpx as a baseline when M > 1 (leave-one-out, unbiased); one (b, j) per invocation;
//   bindings 3 head, 4 eps, 7 terms (read), 14 dhead (read_write, +=: adds to the KL gradient elbo.wgsl wrote).
// Every launch is deterministic (fixed-order sums, no atomics).

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;
const HALF_LOG_2PI: f32 = 0.9189385332046727;
const ROW_SPLIT: u32 = 32768u;
const DEC_LOGVAR_MAX: f32 = 20.0;
// logw_rows, logw_grad_out: the likelihood (0 Bernoulli, 1 Gaussian with σ, 2 Gaussian with the learned
// s), fixed per pipeline.
override LIK: u32 = 0u;

struct Params {
    batch: u32,
    dim: u32,
    latent: u32,
    samples: u32,
    _lik: u32, // unused: the likelihood is the override LIK
    sigma: f32,
    grad_scale: f32,
    beta: f32,
    iwae: u32,
    ext_prior: u32,
    row_offset: u32,
    valid: u32,
    write_weights: u32,
    var_mode: u32,
    lv_min: f32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> outp: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> head: array<f32>;
@group(0) @binding(4) var<storage, read> eps: array<f32>;
@group(0) @binding(5) var<storage, read> zs: array<f32>;
@group(0) @binding(6) var<storage, read> logpz: array<f32>;
@group(0) @binding(7) var<storage, read_write> terms: array<f32>;
@group(0) @binding(8) var<storage, read_write> rows: array<f32>;
@group(0) @binding(9) var<storage, read_write> wt: array<f32>;
@group(0) @binding(10) var<storage, read_write> wtp: array<f32>;
@group(0) @binding(11) var<storage, read_write> dout: array<f32>;
@group(0) @binding(12) var<storage, read> dz: array<f32>;
@group(0) @binding(13) var<storage, read> dzp: array<f32>;
@group(0) @binding(14) var<storage, read_write> dhead: array<f32>;
@group(0) @binding(15) var<storage, read> logvar: array<f32>;

// Invocations per row of logw_rows and logw_rows_v4 (see their header); a power of two, at most 64.
override RWG: u32 = 64u;
var<workgroup> red_px: array<f32, 64>;
var<workgroup> red_lat: array<f32, 64>;

// (nll, d nll / d l) of pixel d.
// (nll, d nll / d l) of pixels d .. d+3 (the scalar entries use component x). LIK picks the likelihood
// at pipeline creation, as in elbo.wgsl (lavapipe would otherwise run all three).
struct Nll4 {
    v: vec4<f32>,
    g: vec4<f32>,
}

fn nll4(l: vec4<f32>, xv: vec4<f32>, d: u32) -> Nll4 {
    if (LIK == 2u) {
        let raw = vec4<f32>(logvar[select(0u, d, p.var_mode == 2u)], logvar[select(0u, d + 1u, p.var_mode == 2u)],
                            logvar[select(0u, d + 2u, p.var_mode == 2u)], logvar[select(0u, d + 3u, p.var_mode == 2u)]);
        let s = clamp(raw, vec4<f32>(p.lv_min), vec4<f32>(DEC_LOGVAR_MAX));
        let iv = exp(-s);
        let diff = l - xv;
        return Nll4(0.5 * diff * diff * iv + 0.5 * s + HALF_LOG_2PI, diff * iv);
    }
    if (LIK == 1u) {
        let inv_var = 1.0 / (p.sigma * p.sigma);
        let diff = l - xv;
        return Nll4(0.5 * diff * diff * inv_var + log(p.sigma) + HALF_LOG_2PI, diff * inv_var);
    }
    let e = exp(-abs(l));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), l >= vec4<f32>(0.0));
    return Nll4(max(l, vec4<f32>(0.0)) - l * xv + log(1.0 + e), s - xv);
}

fn nll(l: f32, xv: f32, d: u32) -> vec2<f32> {
    let r = nll4(vec4<f32>(l), vec4<f32>(xv), d);
    return vec2<f32>(r.v.x, r.g.x);
}

// Whether row r = m·B + b is one to compute: a sample below M and below the chunk's valid count.
fn row_valid(r: u32) -> bool {
    let m = r / p.batch;
    return m < p.samples && m < p.valid;
}

@compute @workgroup_size(RWG, 1, 1)
fn logw_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wid.y * ROW_SPLIT + wid.x;
    if (!row_valid(r)) {
        return;
    }
    let b = r % p.batch;
    let t = lid.x;
    var px = 0.0;
    for (var d = t; d < p.dim; d += RWG) {
        px -= nll(outp[r * p.dim + d], x[b * p.dim + d], d).x;
    }
    row_terms(r, b, t, px);
}

// logw_rows over four pixels per invocation through vec4 views (bindings 16 out, 17 x) when D is a
// multiple of 4.
@group(0) @binding(16) var<storage, read> out4: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read_write> dout4: array<vec4<f32>>;

@compute @workgroup_size(RWG, 1, 1)
fn logw_rows_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wid.y * ROW_SPLIT + wid.x;
    if (!row_valid(r)) {
        return;
    }
    let b = r % p.batch;
    let t = lid.x;
    let d4 = p.dim >> 2u;
    var px = 0.0;
    for (var q = t; q < d4; q += RWG) {
        let v = nll4(out4[r * d4 + q], x4[b * d4 + q], 4u * q).v;
        px -= (v.x + v.y) + (v.z + v.w);
    }
    row_terms(r, b, t, px);
}

// Row r's latent terms (lanes t, t+RWG, ...), the workgroup's fixed-order tree over (px, lat), and the
// row's (lpx_r, lat_r) into terms.
fn row_terms(r: u32, b: u32, t: u32, px: f32) {
    var lat = 0.0;
    for (var j = t; j < p.latent; j += RWG) {
        let e = eps[r * p.latent + j];
        let lv = clamp(head[b * 2u * p.latent + p.latent + j], LOGVAR_MIN, LOGVAR_MAX);
        lat += 0.5 * e * e + 0.5 * lv + HALF_LOG_2PI;
        if (p.ext_prior == 0u) {
            let zv = zs[r * p.latent + j];
            lat -= 0.5 * zv * zv + HALF_LOG_2PI;
        }
    }
    red_px[t] = px;
    red_lat[t] = lat;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_px[t] += red_px[t + s];
            red_lat[t] += red_lat[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        var l = red_lat[0];
        if (p.ext_prior != 0u) {
            l += logpz[r];
        }
        let o = 2u * (p.row_offset + r);
        terms[o] = red_px[0];
        terms[o + 1u] = l;
    }
}

@compute @workgroup_size(64, 1, 1)
fn logw_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= p.batch) {
        return;
    }
    let inv_m = 1.0 / f32(p.samples);
    var mx = -3.0e38;
    var px = 0.0;
    var lat = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let o = 2u * (m * p.batch + b);
        px += terms[o];
        lat += terms[o + 1u];
        mx = max(mx, terms[o] + p.beta * terms[o + 1u]);
    }
    var bound: f32;
    var total = 0.0;
    if (p.iwae != 0u) {
        for (var m = 0u; m < p.samples; m++) {
            let o = 2u * (m * p.batch + b);
            total += exp(terms[o] + p.beta * terms[o + 1u] - mx);
        }
        bound = mx + log(total) - log(f32(p.samples));
    } else {
        bound = (px + p.beta * lat) * inv_m;
    }
    rows[3u * b] = -px * inv_m;
    rows[3u * b + 1u] = -lat * inv_m;
    rows[3u * b + 2u] = -bound;
    if (p.write_weights != 0u) {
        for (var m = 0u; m < p.samples; m++) {
            let r = m * p.batch + b;
            var w = inv_m;
            if (p.iwae != 0u) {
                w = exp(terms[2u * r] + p.beta * terms[2u * r + 1u] - mx) / total;
            }
            wt[r] = w * p.grad_scale;
            wtp[r] = w * p.grad_scale * p.beta;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn logw_grad_out(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * ROW_SPLIT + wid.x) * 256u + lid.x;
    if (i >= p.samples * p.batch * p.dim) {
        return;
    }
    let r = i / p.dim;
    let d = i % p.dim;
    let b = r % p.batch;
    dout[i] = wt[r] * nll(outp[i], x[b * p.dim + d], d).y;
}

// logw_grad_out over four elements per invocation through the vec4 views (16 out, 17 x, 18 dout) when D
// is a multiple of 4 (the four share a row): a quarter of the loads, stores and divisions.
@compute @workgroup_size(256, 1, 1)
fn logw_grad_out_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i4 = (wid.y * ROW_SPLIT + wid.x) * 256u + lid.x;
    let d4 = p.dim >> 2u;
    if (i4 >= p.samples * p.batch * d4) {
        return;
    }
    let r = i4 / d4;
    let q = i4 % d4;
    let b = r % p.batch;
    dout4[i4] = wt[r] * nll4(out4[i4], x4[b * d4 + q], 4u * q).g;
}

@compute @workgroup_size(64, 1, 1)
fn latent_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.batch * p.latent) {
        return;
    }
    let b = i / p.latent;
    let j = i % p.latent;
    let raw = head[b * 2u * p.latent + p.latent + j];
    let half_sd = 0.5 * exp(0.5 * clamp(raw, LOGVAR_MIN, LOGVAR_MAX));
    var dmu = 0.0;
    var dlv = 0.0;
    var wsum = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let r = m * p.batch + b;
        let k = r * p.latent + j;
        var g = dz[k];
        if (p.ext_prior != 0u) {
            g += dzp[k];
        } else {
            g += p.beta * wt[r] * zs[k];
        }
        dmu += g;
        dlv += g * eps[k];
        wsum += wt[r];
    }
    let inside = raw >= LOGVAR_MIN && raw <= LOGVAR_MAX;
    dhead[b * 2u * p.latent + j] = dmu;
    dhead[b * 2u * p.latent + p.latent + j] = select(0.0, dlv * half_sd - 0.5 * p.beta * wsum, inside);
}

@compute @workgroup_size(64, 1, 1)
fn score_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.batch * p.latent) {
        return;
    }
    let b = i / p.latent;
    let j = i % p.latent;
    let raw = head[b * 2u * p.latent + p.latent + j];
    let inv_sd = exp(-0.5 * clamp(raw, LOGVAR_MIN, LOGVAR_MAX));
    var total = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        total += terms[2u * (m * p.batch + b)];
    }
    var gmu = 0.0;
    var glv = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let r = m * p.batch + b;
        var f = terms[2u * r];
        if (p.samples > 1u) {
            f -= (total - f) / f32(p.samples - 1u);
        }
        let e = eps[r * p.latent + j];
        gmu += f * e * inv_sd;
        glv += f * 0.5 * (e * e - 1.0);
    }
    let scale = p.grad_scale / f32(p.samples);
    let inside = raw >= LOGVAR_MIN && raw <= LOGVAR_MAX;
    dhead[b * 2u * p.latent + j] -= gmu * scale;
    dhead[b * 2u * p.latent + p.latent + j] -= select(0.0, glv * scale, inside);
}
