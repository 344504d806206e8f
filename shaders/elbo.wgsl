// elbo.wgsl: the fused negative ELBO: likelihood + β·KL, value and gradients in one pass.
// Letters: B batch, D data dimension, Z latent size, M Monte-Carlo samples (sample rows m·B + b).
// Per example b (one workgroup of 64 invocations):
//   rec_b = (1/M) Σ_m Σ_d nll(out[m·B + b, d], x[b, d])
//     Bernoulli: nll = BCE-with-logits = max(l, 0) − l·x + log(1 + exp(−|l|)),  d/dl = sigmoid(l) − x
//     Gaussian (fixed σ): nll = ½(x − μ)²/σ² + ½·log(2πσ²),                   d/dμ = (μ − x)/σ²
//   kl_b  = ½ Σ_j (μ_j² + exp(lv_j) − 1 − lv_j), lv = logσ² clamped to [−30, 20]
//   loss  = (1/B) Σ_b (rec_b + β·kl_b)   (per-example mean, as in the fixtures)
// Bindings: 0 uniform Params, 1 out (read, [M·B, D], logits or means), 2 x (read, [B, D], targets in [0,1]),
//   3 head (read, [B, 2Z]: μ | logσ²), 4 dout (read_write, [M·B, D], =), 5 dhead (read_write, [B, 2Z], =,
//   the KL part; sample_backward.wgsl then adds the pathwise part), 6 rows (read_write, [B, 2] = (rec_b, kl_b)).
// Gradients carry the factor grad_scale (1/B) so that they are d loss / d param.
// Dispatch: grid = (B, 1, 1), 64 invocations per workgroup; a fixed-order tree reduction in workgroup
//   memory (deterministic: no atomics).

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

struct Params {
    batch: u32,
    dim: u32,
    latent: u32,
    samples: u32,
    gaussian: u32,
    beta: f32,
    sigma: f32,
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> outp: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> head: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dhead: array<f32>;
@group(0) @binding(6) var<storage, read_write> rows: array<f32>;

var<workgroup> red_rec: array<f32, 64>;
var<workgroup> red_kl: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn elbo(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.x;
    let t = lid.x;
    let inv_m = 1.0 / f32(p.samples);
    let gscale = p.grad_scale * inv_m;
    let inv_var = 1.0 / (p.sigma * p.sigma);
    let log_norm = 0.5 * log(6.283185307179586 * p.sigma * p.sigma);
    var rec = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let row = (m * p.batch + b) * p.dim;
        for (var d = t; d < p.dim; d += 64u) {
            let l = outp[row + d];
            let xv = x[b * p.dim + d];
            if (p.gaussian != 0u) {
                let diff = l - xv;
                rec += 0.5 * diff * diff * inv_var + log_norm;
                dout[row + d] = diff * inv_var * gscale;
            } else {
                let e = exp(-abs(l));
                rec += max(l, 0.0) - l * xv + log(1.0 + e);
                let s = select(e / (1.0 + e), 1.0 / (1.0 + e), l >= 0.0);
                dout[row + d] = (s - xv) * gscale;
            }
        }
    }
    var kl = 0.0;
    let hz = b * 2u * p.latent;
    for (var j = t; j < p.latent; j += 64u) {
        let mu = head[hz + j];
        let raw_lv = head[hz + p.latent + j];
        let lv = clamp(raw_lv, LOGVAR_MIN, LOGVAR_MAX);
        let ev = exp(lv);
        kl += 0.5 * (mu * mu + ev - 1.0 - lv);
        let inside = raw_lv >= LOGVAR_MIN && raw_lv <= LOGVAR_MAX;
        dhead[hz + j] = p.beta * mu * p.grad_scale;
        dhead[hz + p.latent + j] = select(0.0, p.beta * 0.5 * (ev - 1.0) * p.grad_scale, inside);
    }
    red_rec[t] = rec * inv_m;
    red_kl[t] = kl;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
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
