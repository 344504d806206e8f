// data.wgsl: batch gather from the GPU-resident dataset, and the step counters (state words).
// Dataset: n_items images of D pixels, u8, packed four to a u32 (little-endian), item-major (gather),
//   or n_items items of D u32 words (gather_words).
// State words (u32): 0 step (optimizer steps taken), 1 train batch within the epoch, 2 eval batch,
//   3..4 Philox seed, 5 non-finite flag of the current step (written by reduce.wgsl), 6 consecutive
//   non-finite steps up to the last one (the host stops a run when it reaches its limit), 7 unused.
// gather: x[r, d] = pixel(perm[state[batch_word]·B + r], d) / 255, r < B, d < D. Rows past n_items
//   (a partial last batch) repeat the last item; reduce.wgsl leaves them out of the metrics.
//   With BINARIZE (an override: a pipeline per setting): x = 1 if u < pixel/255 else 0, u from
//   philox((r·D + d, state[0], 2, 0), seed).
//   Bindings: 0 uniform Params, 1 state (read), 2 data (read, packed u8), 3 perm (read, [n_items]),
//   4 x (read_write, [B, D], =). Dispatch: 256 per workgroup, one pixel each, grid = (ceil(B·D/256), 1, 1).
// gather_v4: gather for D a multiple of 4, where each row's pixels are whole data words: invocation
//   (w, r) unpacks word w of row r's item into x[r, 4w .. 4w+3], the same values and the same Philox
//   counters as gather. No division per pixel and one load per four pixels (on lavapipe, integer
//   division runs lane by lane, and so does every storage load). Bindings as gather, with 7 x4
//   (read_write, [B, D/4] vec4, =) instead of 4. Dispatch: 64 per workgroup, grid = (ceil(D / 256), B, 1).
// gather_words: words[r, d] = data[perm[min(state[batch_word]·B + r, n_items − 1)]·D + d], the same
//   cursor as gather over a dataset of n_items items of D full u32 words each (code maps), item-major.
//   Bindings: 0 uniform Params, 1 state (read), 2 data (read, [n_items, D] u32),
//   3 perm (read), 6 words (read_write, [B, D] u32, =). Dispatch: as gather.
// advance: a finite step: state[0] += 1 (step), state[6] = 0; a non-finite one (state[5] != 0): state[6] += 1
//   and the step counter stays. Either way state[1] += 1 (train cursor). (cursor.wgsl; reduce.wgsl's
//   metrics_advance does the same after a batch's metrics, in the same launch.)
// advance_eval: state[2] += 1. Bindings: 5 state (read_write). Dispatch: grid = (1, 1, 1).

//!include philox.wgsl
//!include cursor.wgsl

struct Params {
    batch: u32,
    dim: u32,
    n_items: u32,
    batch_word: u32,
}

// gather, gather_v4: binarize, fixed per pipeline (lavapipe runs both sides of a branch it cannot
// prove uniform: the Philox draws cost every pixel otherwise).
override BINARIZE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> data: array<u32>;
@group(0) @binding(3) var<storage, read> perm: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> state_w: array<u32>;
@group(0) @binding(6) var<storage, read_write> words: array<u32>;
@group(0) @binding(7) var<storage, read_write> x4: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.batch * p.dim) {
        return;
    }
    let r = i / p.dim;
    let d = i % p.dim;
    let item = perm[min(state[p.batch_word] * p.batch + r, p.n_items - 1u)];
    let at = item * p.dim + d;
    let px = (data[at >> 2u] >> ((at & 3u) * 8u)) & 0xffu;
    var v = f32(px) / 255.0;
    if (BINARIZE) {
        let u = u32_to_unit(philox(vec4<u32>(i, state[0], 2u, 0u), vec2<u32>(state[3], state[4])).x);
        v = select(0.0, 1.0, u < v);
    }
    x[i] = v;
}

@compute @workgroup_size(64, 1, 1)
fn gather_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let r = gid.y;
    let per_row = p.dim >> 2u;
    if (w >= per_row) {
        return;
    }
    let item = perm[min(state[p.batch_word] * p.batch + r, p.n_items - 1u)];
    let word = data[item * per_row + w];
    let px = vec4<u32>(word & 0xffu, (word >> 8u) & 0xffu, (word >> 16u) & 0xffu, word >> 24u);
    var v = vec4<f32>(px) / 255.0;
    if (BINARIZE) {
        let i = r * p.dim + 4u * w;
        let key = vec2<u32>(state[3], state[4]);
        let u = vec4<f32>(u32_to_unit(philox(vec4<u32>(i, state[0], 2u, 0u), key).x),
                          u32_to_unit(philox(vec4<u32>(i + 1u, state[0], 2u, 0u), key).x),
                          u32_to_unit(philox(vec4<u32>(i + 2u, state[0], 2u, 0u), key).x),
                          u32_to_unit(philox(vec4<u32>(i + 3u, state[0], 2u, 0u), key).x));
        v = select(vec4<f32>(0.0), vec4<f32>(1.0), u < v);
    }
    x4[r * per_row + w] = v;
}

@compute @workgroup_size(256, 1, 1)
fn gather_words(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.batch * p.dim) {
        return;
    }
    let r = i / p.dim;
    let d = i % p.dim;
    let item = perm[min(state[p.batch_word] * p.batch + r, p.n_items - 1u)];
    words[i] = data[item * p.dim + d];
}

@compute @workgroup_size(1, 1, 1)
fn advance() {
    advance_train_words();
}

@compute @workgroup_size(1, 1, 1)
fn advance_eval() {
    advance_eval_words();
}
