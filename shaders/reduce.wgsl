// reduce.wgsl: deterministic reductions: per-step loss metrics, and the global gradient norm.
// All reductions are fixed-order trees in workgroup memory (no float atomics), so runs repeat bit for bit.
//
// State words (u32, see data.wgsl): 0 step, 1 train batch, 2 eval batch, 3..4 seed, 5 non-finite flag.
// Metrics (f32, 16 words): slot s at 4s (s = 0 train, 1 eval): [Σ rec_b, Σ kl_b, Σ (rec_b + β·kl_b), rows],
//   8: last gradient norm, 9: steps skipped as non-finite, 10: Σ gradient norms, 11: steps normed.
//
// metrics_accumulate: bindings 0 Params, 1 state (read), 2 rows (read, [B, cols]), 3 metrics (read_write, +=):
//   (rec, kl, loss, count) with loss = rec + β·kl for 2 columns, the third column for 3.
//   Row b counts when state[batch_word]·B + b < n_items (the last eval batch may be partial).
//   Dispatch: grid = (1, 1, 1), 64 invocations.
// metrics_advance: metrics_accumulate, then data.wgsl's advance (ADVANCE_TRAIN) or advance_eval by
//   invocation 0 (cursor.wgsl), in one launch: the state at 6 (read_write) in place of 1.
// sumsq_partial: bindings 0 Params, 4 grads (read, [n]), 5 partials (read_write, [64·256], =).
//   Dispatch: grid = (64, 1, 1), 256 invocations; invocation t of workgroup g sums the squares of a
//   strided share into partials[256·g + t].
// sumsq_partial_v4: the same through a vec4 view (binding 8) when n is a multiple of 4.
// sumsq_tex: sumsq_partial_v4 reading the grads through a read-only texture that aliases their buffer
//   (binding 9; src/gpu/alias.rs, lavapipe): float i at texel base + i/4 (matmul_sgtex.wgsl's layout).
//   The same sums in the same order: sumsq_partial_v4's bits.
// norm_finalize: bindings 0 Params, 5 partials (read), 6 state (read_write: word 5 = non-finite flag),
//   3 metrics (read_write), 7 clip (read_write, [1] = scale min(1, max_norm / (norm + 1e-6)), or 1).
//   Dispatch: grid = (1, 1, 1), 64 invocations.

//!include cursor.wgsl
//!include texel.wgsl

struct Params {
    batch: u32,
    n_items: u32,
    batch_word: u32,
    slot: u32,
    beta: f32,
    n: u32,
    max_norm: f32,
    cols: u32,
    // sumsq_tex only: the texel at which the grads start in their texture.
    base: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// metrics_advance: the training step's cursor (true) or the eval batch's (false).
override ADVANCE_TRAIN: bool = true;

// Workgroups of sumsq_partial, and the partial sums it leaves (one per invocation).
const GROUPS: u32 = 64u;
const PARTIALS: u32 = GROUPS * 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> state_r: array<u32>;
@group(0) @binding(2) var<storage, read> rows: array<f32>;
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(4) var<storage, read> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> state_w: array<u32>;
@group(0) @binding(7) var<storage, read_write> clip: array<f32>;

var<workgroup> r0: array<f32, 256>;
var<workgroup> r1: array<f32, 256>;
var<workgroup> r2: array<f32, 256>;
var<workgroup> r3: array<f32, 64>;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(64, 1, 1)
fn metrics_accumulate(@builtin(local_invocation_id) lid: vec3<u32>) {
    accumulate(lid.x, state_r[p.batch_word] * p.batch);
}

// The same, then the cursor of p.batch_word advances (cursor.wgsl: ADVANCE_TRAIN, the training step's
// words; else the eval batch's): one launch where a step or eval batch ends.
@compute @workgroup_size(64, 1, 1)
fn metrics_advance(@builtin(local_invocation_id) lid: vec3<u32>) {
    accumulate(lid.x, state_w[p.batch_word] * p.batch);
    // Every invocation read the cursor above; the barriers inside `accumulate` order those reads
    // before this write.
    storageBarrier();
    if (lid.x == 0u) {
        if (ADVANCE_TRAIN) {
            advance_train_words();
        } else {
            advance_eval_words();
        }
    }
}

// metrics[slot] += the valid rows' sums, invocation t of 64; `first`: the batch's first item.
fn accumulate(t: u32, first: u32) {
    var rec = 0.0;
    var kl = 0.0;
    var loss = 0.0;
    var cnt = 0.0;
    for (var b = t; b < p.batch; b += 64u) {
        if (first + b < p.n_items) {
            let r = rows[p.cols * b];
            let k = rows[p.cols * b + 1u];
            rec += r;
            kl += k;
            loss += select(r + p.beta * k, rows[p.cols * b + 2u], p.cols == 3u);
            cnt += 1.0;
        }
    }
    r0[t] = rec;
    r1[t] = kl;
    r2[t] = cnt;
    r3[t] = loss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            r0[t] += r0[t + s];
            r1[t] += r1[t + s];
            r2[t] += r2[t + s];
            r3[t] += r3[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        let base = 4u * p.slot;
        metrics[base] += r0[0];
        metrics[base + 1u] += r1[0];
        metrics[base + 2u] += r3[0];
        metrics[base + 3u] += r2[0];
    }
}

// Each invocation's sum lands in partials[256·g + t]: no workgroup reduction here (on lavapipe the
// barriers of a 256-invocation tree cost as much as the loads); norm_finalize sums them in fixed order.
@compute @workgroup_size(256, 1, 1)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var acc = 0.0;
    for (var i = wid.x * 256u + t; i < p.n; i += GROUPS * 256u) {
        let g = grads[i];
        acc += g * g;
    }
    partials[wid.x * 256u + t] = acc;
}

@group(0) @binding(8) var<storage, read> grads4: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn sumsq_partial_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var acc = vec4<f32>(0.0);
    for (var i = wid.x * 256u + t; 4u * i < p.n; i += GROUPS * 256u) {
        let g = grads4[i];
        acc += g * g;
    }
    partials[wid.x * 256u + t] = (acc.x + acc.y) + (acc.z + acc.w);
}

@group(0) @binding(9) var grads_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256, 1, 1)
fn sumsq_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var acc = vec4<f32>(0.0);
    for (var i = wid.x * 256u + t; 4u * i < p.n; i += GROUPS * 256u) {
        let j = p.base + i;
        let g = textureLoad(grads_tex, texel(j));
        acc += g * g;
    }
    partials[wid.x * 256u + t] = (acc.x + acc.y) + (acc.z + acc.w);
}

@compute @workgroup_size(64, 1, 1)
fn norm_finalize(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    // Invocation t: the partials t, t + 64, ... (4 of each 256-invocation group), summed in order.
    var sum = 0.0;
    for (var i = t; i < PARTIALS; i += 64u) {
        sum += partials[i];
    }
    r0[t] = sum;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            r0[t] += r0[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        let norm = sqrt(r0[0]);
        let ok = finite(norm);
        state_w[5] = select(1u, 0u, ok);
        metrics[8] = norm;
        if (ok) {
            metrics[10] += norm;
            metrics[11] += 1.0;
        } else {
            metrics[9] += 1.0;
        }
        var scale = 1.0;
        if (p.max_norm > 0.0 && ok) {
            scale = min(1.0, p.max_norm / (norm + 1e-6));
        }
        clip[0] = scale;
    }
}
