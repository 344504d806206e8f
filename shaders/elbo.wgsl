// elbo.wgsl: the fused negative ELBO: likelihood + β·KL, value and gradients in one pass; and the
// gradient of a learned decoder variance.
// Letters: B batch, D data dimension, Z latent size, M Monte-Carlo samples (sample rows m·B + b).
// Per example b (one workgroup of RWG invocations):
//   rec_b = (1/M) Σ_m Σ_d nll(out[m·B + b, d], x[b, d])
//     Bernoulli: nll = BCE-with-logits = max(l, 0) − l·x + log(1 + exp(−|l|)),  d/dl = sigmoid(l) − x
//     Gaussian (fixed σ): nll = ½(x − μ)²/σ² + ½·log(2πσ²),                   d/dμ = (μ − x)/σ²
//     Gaussian (learned s = log σ², var_mode 1: one s, 2: s_d per pixel; s clamped to [lv_min, 20]):
//       nll = ½(x − μ)²·e^{−s_d} + ½(log 2π + s_d),                          d/dμ = (μ − x)·e^{−s_d}
//   kl_b  = ½ Σ_j (μ_j² + exp(lv_j) − 1 − lv_j), lv = logσ² clamped to [−30, 20]
//   loss  = (1/B) Σ_b (rec_b + β·kl_b)   (per-example mean, as in the fixtures)
// Bindings: 0 uniform Params, 1 out (read, [M·B, D], logits or means), 2 x (read, [B, D], targets in [0,1]),
//   3 head (read, [B, 2Z]: μ | logσ²), 4 dout (read_write, [M·B, D], =), 5 dhead (read_write, [B, 2Z], =,
//   the KL part; sample_backward.wgsl then adds the pathwise part), 6 rows (read_write, [B, 2] = (rec_b, kl_b)),
//   7 logvar (read, [1] or [D]: the learned s; bound but unread when var_mode = 0).
// Gradients carry the factor grad_scale (1/B) so that they are d loss / d param.
// Dispatch: grid = (B, 1, 1), RWG invocations per workgroup (64, or 8 on CPU adapters); a fixed-order
//   tree reduction in workgroup memory (deterministic: no atomics).
// elbo_v4: the same over four pixels per invocation through vec4 views (bindings 10 out, 11 x, 12 dout)
//   when D is a multiple of 4; override LIK picks the likelihood (elbo too).
//
// logvar_grad: d loss / d s_d = Σ_r w_r·½(1 − (x_{b(r),d} − out_{r,d})²·e^{−s_d}) (0 outside the clamp),
//   w_r = wt[r] (use_wt = 1: the weighted objectives of iwae.wgsl) or grad_scale / M (this ELBO).
//   var_mode 1 (one s): one workgroup sums over every (r, d); var_mode 2: one workgroup per pixel d
//   (grid (D, 1, 1), 2-D beyond 32768: d = wid.y·32768 + wid.x) sums over the rows. LWG invocations
//   (override: 256 on GPUs, 8 on CPU adapters, where each barrier of a 256-wide tree is a turn of 32
//   lavapipe batches), fixed-order strided partial sums then a tree. Bindings 1 out, 2 x, 7 logvar
//   (read), 8 wt (read, [M·B]; bound but unread when use_wt = 0), 9 dlogvar (read_write, [1] or [D], =).
const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;
const DEC_LOGVAR_MAX: f32 = 20.0;
const LOG_2PI: f32 = 1.8378770664093453;
const ROW_SPLIT: u32 = 32768u;
// elbo, elbo_v4: the likelihood, fixed per pipeline: 0 Bernoulli, 1 Gaussian with the fixed σ, 2 Gaussian
// with the learned s (var_mode 1 or 2).
override LIK: u32 = 0u;
// Invocations per example of elbo and elbo_v4 (`Gpu::row_lanes`): 64 on GPUs; 8 on CPU adapters, where
// a workgroup of one 8-lane batch takes no turns at its barriers (2x faster on lavapipe). A power of two,
// at most 64.
override RWG: u32 = 64u;
// Invocations per workgroup of logvar_grad (see its header): a power of two, at most 256.
override LWG: u32 = 256u;

struct Params {
    batch: u32,
    dim: u32,
    latent: u32,
    samples: u32,
    _lik: u32, // unused: the likelihood is the override LIK
    beta: f32,
    sigma: f32,
    grad_scale: f32,
    var_mode: u32,
    lv_min: f32,
    use_wt: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> outp: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> head: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dhead: array<f32>;
@group(0) @binding(6) var<storage, read_write> rows: array<f32>;
@group(0) @binding(7) var<storage, read> logvar: array<f32>;
@group(0) @binding(8) var<storage, read> wt: array<f32>;
@group(0) @binding(9) var<storage, read_write> dlogvar: array<f32>;

var<workgroup> red_rec: array<f32, 64>;
var<workgroup> red_kl: array<f32, 64>;
var<workgroup> red_s: array<f32, 256>;

// The learned s for pixel d (unclamped).
fn raw_logvar(d: u32) -> f32 {
    return logvar[select(0u, d, p.var_mode == 2u)];
}

// Per-element likelihood terms of four pixels d .. d+3 (the scalar entry uses component x): the nll
// and d nll / d out. LIK selects the branch at pipeline creation, so that only
// one is compiled (lavapipe runs both sides of an `if` it cannot prove uniform, loads and stores
// included).
struct Lik4 {
    nll: vec4<f32>,
    grad: vec4<f32>,
}

fn lik4(l: vec4<f32>, xv: vec4<f32>, d: u32) -> Lik4 {
    if (LIK == 2u) {
        let raw = vec4<f32>(raw_logvar(d), raw_logvar(d + 1u), raw_logvar(d + 2u), raw_logvar(d + 3u));
        let s = clamp(raw, vec4<f32>(p.lv_min), vec4<f32>(DEC_LOGVAR_MAX));
        let iv = exp(-s);
        let diff = l - xv;
        let nll = 0.5 * diff * diff * iv + 0.5 * (LOG_2PI + s);
        return Lik4(nll, diff * iv);
    }
    if (LIK == 1u) {
        let inv_var = 1.0 / (p.sigma * p.sigma);
        let log_norm = 0.5 * log(6.283185307179586 * p.sigma * p.sigma);
        let diff = l - xv;
        let nll = 0.5 * diff * diff * inv_var + log_norm;
        return Lik4(nll, diff * inv_var);
    }
    let e = exp(-abs(l));
    let nll = max(l, vec4<f32>(0.0)) - l * xv + log(1.0 + e);
    let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), l >= vec4<f32>(0.0));
    return Lik4(nll, sig - xv);
}

// Example b's KL terms (lanes t, t+RWG, ...) into dhead, and the workgroup's reduction of (rec, kl) into
// rows[b]: a fixed-order tree.
fn kl_and_rows(b: u32, t: u32, rec: f32) {
    var kl = 0.0;
    let hz = b * 2u * p.latent;
    for (var j = t; j < p.latent; j += RWG) {
        let mu = head[hz + j];
        let raw_lv = head[hz + p.latent + j];
        let lv = clamp(raw_lv, LOGVAR_MIN, LOGVAR_MAX);
        let ev = exp(lv);
        kl += 0.5 * (mu * mu + ev - 1.0 - lv);
        let inside = raw_lv >= LOGVAR_MIN && raw_lv <= LOGVAR_MAX;
        dhead[hz + j] = p.beta * mu * p.grad_scale;
        dhead[hz + p.latent + j] = select(0.0, p.beta * 0.5 * (ev - 1.0) * p.grad_scale, inside);
    }
    red_rec[t] = rec;
    red_kl[t] = kl;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_rec[t] += red_rec[t + s];
            red_kl[t] += red_kl[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        rows[2u * b] = red_rec[0];
        rows[2u * b + 1u] = red_kl[0];
    }
}

@compute @workgroup_size(RWG, 1, 1)
fn elbo(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.x;
    let t = lid.x;
    let inv_m = 1.0 / f32(p.samples);
    let gscale = p.grad_scale * inv_m;
    var rec = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let row = (m * p.batch + b) * p.dim;
        for (var d = t; d < p.dim; d += RWG) {
            let r = lik4(vec4<f32>(outp[row + d]), vec4<f32>(x[b * p.dim + d]), d);
            rec += r.nll.x;
            dout[row + d] = r.grad.x * gscale;
        }
    }
    kl_and_rows(b, t, rec * inv_m);
}

// elbo over four pixels per invocation through vec4 views (bindings 10 out4, 11 x4, 12 dout4) when D
// is a multiple of 4 and the views start on 16 bytes: a quarter of the loads and stores, which on
// lavapipe are per-lane loops.
@group(0) @binding(10) var<storage, read> out4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> dout4: array<vec4<f32>>;

@compute @workgroup_size(RWG, 1, 1)
fn elbo_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.x;
    let t = lid.x;
    let inv_m = 1.0 / f32(p.samples);
    let gscale = p.grad_scale * inv_m;
    let d4 = p.dim >> 2u;
    var rec = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let row = (m * p.batch + b) * d4;
        for (var q = t; q < d4; q += RWG) {
            let r = lik4(out4[row + q], x4[b * d4 + q], 4u * q);
            rec += (r.nll.x + r.nll.y) + (r.nll.z + r.nll.w);
            dout4[row + q] = r.grad * gscale;
        }
    }
    kl_and_rows(b, t, rec * inv_m);
}

@compute @workgroup_size(LWG, 1, 1)
fn logvar_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let n = p.samples * p.batch;
    let w_const = p.grad_scale / f32(p.samples);
    var d0 = 0u;
    if (p.var_mode == 2u) {
        d0 = wid.y * ROW_SPLIT + wid.x;
        if (d0 >= p.dim) {
            return;
        }
    }
    let raw = raw_logvar(d0);
    let iv = exp(-clamp(raw, p.lv_min, DEC_LOGVAR_MAX));
    var acc = 0.0;
    if (p.var_mode == 2u) {
        for (var r = t; r < n; r += LWG) {
            let b = r % p.batch;
            let diff = outp[r * p.dim + d0] - x[b * p.dim + d0];
            var w = w_const;
            if (p.use_wt != 0u) {
                w = wt[r];
            }
            acc += w * (1.0 - diff * diff * iv);
        }
    } else {
        for (var i = t; i < n * p.dim; i += LWG) {
            let r = i / p.dim;
            let d = i % p.dim;
            let b = r % p.batch;
            let diff = outp[i] - x[b * p.dim + d];
            var w = w_const;
            if (p.use_wt != 0u) {
                w = wt[r];
            }
            acc += w * (1.0 - diff * diff * iv);
        }
    }
    red_s[t] = acc;
    workgroupBarrier();
    for (var s = LWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_s[t] += red_s[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        let inside = raw >= p.lv_min && raw <= DEC_LOGVAR_MAX;
        dlogvar[d0] = select(0.0, 0.5 * red_s[0], inside);
    }
}
