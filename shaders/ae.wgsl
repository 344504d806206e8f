// ae.wgsl: the autoencoder family's kernels: input corruption (denoising AE), the reconstruction loss
// (MSE or BCE with logits) and the sparsity penalties (L1 on activations, KL to a target rate), values
// and gradients. The CPU twins are in src/reference/ae.rs; the launchers in src/kernels/ae.rs.
// Letters: B batch, D values per example, U units of the penalised layer.
//
// ae_corrupt: xin[i] = corrupt(x[i]), i < B·D, from r = philox((i, state[counter_word], stream, 0),
//   key = (state[3], state[4])) (stream 13 for the AE; the step word counts training steps, so a run
//   repeats and every step draws afresh):
//     mode 0 none:     xin = x
//     mode 1 gaussian: xin = x + level·n, n = box_muller(r.x, r.y) ~ N(0, 1) (not clipped to [0, 1])
//     mode 2 mask:     xin = 0 if u32_to_unit(r.x) < level, else x (each value dropped with probability level)
//   Bindings: 0 uniform Params, 1 state (read), 2 x (read, [B, D]), 3 xin (read_write, [B, D], =).
//   Dispatch: 256 invocations per workgroup, one element each, grid_1d(ceil(B·D / 256)) flattened as
//   x + y·65535·256.
// ae_loss: one workgroup of RWG (64; 8 on CPU adapters) per example b; out [B, D] decoder outputs,
//   x [B, D] clean targets:
//     mode 0 MSE: rec_b = Σ_d (out − x)²,                                  d/d out = 2(out − x)
//     mode 1 BCE: rec_b = Σ_d max(l, 0) − l·x + log(1 + exp(−|l|)), l = out, d/d out = sigmoid(l) − x
//   dout[b, d] = grad_scale·(d/d out) (grad_scale = 1/B: the loss is the batch mean of rec_b + pen_b);
//   rows[2b] = rec_b, rows[2b + 1] = 0 (the penalty kernels overwrite it). Fixed-order tree reduction.
//   Bindings: 0, 4 out (read), 2 x (read), 5 dout (read_write, =), 6 rows (read_write, [B, 2], =).
// ae_l1: one workgroup of RWG per example b; a [B, U] the penalised layer's output (after its activation
//   `act`): pen_b = weight·Σ_j |a[b, j]| into rows[2b + 1] (=); with with_grad != 0 also
//   grad[b, j] += grad_scale·weight·sign(a)·act'(a) (the gradient with respect to the layer's
//   PRE-activation, as every gradient buffer of nn::gpu holds; sign(0) = 0).
//   Bindings: 0, 7 a (read), 8 grad (read_write, +=), 6 rows.
// ae_kl_columns: one invocation per unit j (64 per workgroup, grid_1d(ceil(U / 64))):
//   ρ̂_j = (1/B) Σ_b a[b, j] (b in order), ρ̂c = clamp(ρ̂_j, KL_EPS, 1 − KL_EPS),
//   stats[j] = ρ log(ρ/ρ̂c) + (1 − ρ) log((1 − ρ)/(1 − ρ̂c)) (ρ = target), stats[U + j] = ρ̂_j;
//   with with_grad != 0: grad[b, j] += grad_scale·weight·(−ρ/ρ̂c + (1 − ρ)/(1 − ρ̂c))·act'(a[b, j]) for
//   every b, or += 0 where the clamp is active (the gradient of the clamped function).
//   Bindings: 0, 7 a, 8 grad (+=), 9 stats (read_write, [2U], =).
// ae_kl_total: one workgroup of RWG: P = weight·Σ_j stats[j] (a fixed-order tree), rows[2b + 1] = P for
//   every b (the KL penalty is a batch quantity: each row carries it, so the batch mean of the rows is P).
//   Bindings: 0, 9 stats (read), 6 rows.
// ae_loss_v4: ae_loss over four values per invocation through vec4 views (bindings 10 out, 11 x, 12 dout)
//   when D is a multiple of 4.
// The mode (ae_corrupt, ae_loss), the activation and with_grad (ae_l1, ae_kl_columns) are override
// constants MODE, ACT and WITH_GRAD, not uniforms: lavapipe runs both sides of a branch it cannot prove
// uniform (every mode's Philox draws or loss, every activation's derivative).
// Nothing uses float atomics: every result repeats bit for bit.

//!include philox.wgsl
//!include act.wgsl

const KL_EPS: f32 = 1e-6;

override MODE: u32 = 0u;
override ACT: u32 = 0u;
override WITH_GRAD: bool = false;

struct Params {
    batch: u32,
    dim: u32,
    // Unused: the mode, with_grad and the activation are the overrides MODE, WITH_GRAD and ACT.
    _unused0: u32,
    _unused1: u32,
    _unused2: u32,
    counter_word: u32,
    stream: u32,
    _pad: u32,
    weight: f32,
    level: f32,
    grad_scale: f32,
    slope: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> xin: array<f32>;
@group(0) @binding(4) var<storage, read> outp: array<f32>;
@group(0) @binding(5) var<storage, read_write> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> rows: array<f32>;
@group(0) @binding(7) var<storage, read> acts: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad: array<f32>;
@group(0) @binding(9) var<storage, read_write> stats: array<f32>;

var<workgroup> red: array<f32, 64>;

// Invocations per workgroup of the reducing entries (ae_loss, ae_loss_v4, ae_l1, ae_kl_total;
// `Gpu::row_lanes`): 64 on GPUs, 8 on CPU adapters (one lavapipe batch: no turns at the barriers).
override RWG: u32 = 64u;

// Fixed-order tree over red[0..RWG]; the sum ends in red[0].
fn reduce_red(t: u32) {
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256, 1, 1)
fn ae_corrupt(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= p.batch * p.dim) {
        return;
    }
    let v = x[i];
    if (MODE == 0u) {
        xin[i] = v;
        return;
    }
    let r = philox(vec4<u32>(i, state[p.counter_word], p.stream, 0u), vec2<u32>(state[3], state[4]));
    if (MODE == 1u) {
        xin[i] = v + p.level * box_muller(r.x, r.y);
    } else {
        xin[i] = select(v, 0.0, u32_to_unit(r.x) < p.level);
    }
}

// The reconstruction terms of four values (the scalar entry uses component x): rec, d rec / d out.
struct Rec4 {
    rec: vec4<f32>,
    grad: vec4<f32>,
}

fn rec4(l: vec4<f32>, xv: vec4<f32>) -> Rec4 {
    if (MODE == 0u) {
        let e = l - xv;
        return Rec4(e * e, 2.0 * e);
    }
    let e = exp(-abs(l));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), l >= vec4<f32>(0.0));
    return Rec4(max(l, vec4<f32>(0.0)) - l * xv + log(1.0 + e), s - xv);
}

fn loss_rows(b: u32, t: u32, rec: f32) {
    red[t] = rec;
    reduce_red(t);
    if (t == 0u) {
        rows[2u * b] = red[0];
        rows[2u * b + 1u] = 0.0;
    }
}

@compute @workgroup_size(RWG, 1, 1)
fn ae_loss(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.x;
    let t = lid.x;
    let row = b * p.dim;
    var rec = 0.0;
    for (var d = t; d < p.dim; d += RWG) {
        let r = rec4(vec4<f32>(outp[row + d]), vec4<f32>(x[row + d]));
        rec += r.rec.x;
        dout[row + d] = r.grad.x * p.grad_scale;
    }
    loss_rows(b, t, rec);
}

@group(0) @binding(10) var<storage, read> out4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> dout4: array<vec4<f32>>;

@compute @workgroup_size(RWG, 1, 1)
fn ae_loss_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.x;
    let t = lid.x;
    let d4 = p.dim >> 2u;
    let row = b * d4;
    var rec = 0.0;
    for (var q = t; q < d4; q += RWG) {
        let r = rec4(out4[row + q], x4[row + q]);
        rec += (r.rec.x + r.rec.y) + (r.rec.z + r.rec.w);
        dout4[row + q] = r.grad * p.grad_scale;
    }
    loss_rows(b, t, rec);
}

@compute @workgroup_size(RWG, 1, 1)
fn ae_l1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.x;
    let t = lid.x;
    let row = b * p.dim;
    let g = p.grad_scale * p.weight;
    var s = 0.0;
    for (var j = t; j < p.dim; j += RWG) {
        let a = acts[row + j];
        s += abs(a);
        if (WITH_GRAD) {
            grad[row + j] += g * sign(a) * act_grad_from_y(ACT, a, p.slope);
        }
    }
    red[t] = s;
    reduce_red(t);
    if (t == 0u) {
        rows[2u * b + 1u] = p.weight * red[0];
    }
}

@compute @workgroup_size(64, 1, 1)
fn ae_kl_columns(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x + gid.y * 65535u * 64u;
    if (j >= p.dim) {
        return;
    }
    var s = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        s += acts[b * p.dim + j];
    }
    let rho_hat = s / f32(p.batch);
    let rc = clamp(rho_hat, KL_EPS, 1.0 - KL_EPS);
    let rho = p.level;
    stats[j] = rho * log(rho / rc) + (1.0 - rho) * log((1.0 - rho) / (1.0 - rc));
    stats[p.dim + j] = rho_hat;
    if (WITH_GRAD) {
        let inside = rho_hat >= KL_EPS && rho_hat <= 1.0 - KL_EPS;
        let d = select(0.0, p.grad_scale * p.weight * (-rho / rc + (1.0 - rho) / (1.0 - rc)), inside);
        for (var b = 0u; b < p.batch; b++) {
            let a = acts[b * p.dim + j];
            grad[b * p.dim + j] += d * act_grad_from_y(ACT, a, p.slope);
        }
    }
}

@compute @workgroup_size(RWG, 1, 1)
fn ae_kl_total(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var s = 0.0;
    for (var j = t; j < p.dim; j += RWG) {
        s += stats[j];
    }
    red[t] = s;
    reduce_red(t);
    let total = p.weight * red[0];
    for (var b = t; b < p.batch; b += RWG) {
        rows[2u * b + 1u] = total;
    }
}
