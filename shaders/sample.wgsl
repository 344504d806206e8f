// sample.wgsl: reparameterized sampling z = μ + exp(½·logσ²)·ε with ε ~ N(0, I) from Philox, and its backward.
// Letters: B batch, Z latent size, M Monte-Carlo samples per input. Sample rows are m-major: row m·B + b.
// head [B, 2Z]: the encoder's output, μ in columns 0..Z, logσ² in columns Z..2Z (clamped to
//   [LOGVAR_MIN, LOGVAR_MAX] before use; the gradient is zero outside the clamp).
// ε for element i = (m·B + b)·Z + j comes from philox(counter = (i, state[p.counter_word], p.stream, 0),
//   key = (state[3], state[4])) words 0 and 1 through Box–Muller, so the CPU twin draws the same ε.
//   With given_eps != 0 the ε already in `eps` is used instead (fixture tests that prescribe ε).
// Bindings: 0 uniform Params, 1 state (read), 2 head (read), 3 eps (read_write, [M·B, Z], =), 4 z (read_write, [M·B, Z], =)
// Dispatch: 64 invocations per workgroup, one output element each over M·B·Z; grid = (ceil(M·B·Z / 64), 1, 1).
// The backward is in sample_backward.wgsl.
//   philox_words (tests): words for counters (i, p.counter_word, p.stream, 0) into eps as bit patterns.

//!include philox.wgsl

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

struct Params {
    batch: u32,
    latent: u32,
    samples: u32,
    counter_word: u32,
    stream: u32,
    given_eps: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> head: array<f32>;
@group(0) @binding(3) var<storage, read_write> eps: array<f32>;
@group(0) @binding(4) var<storage, read_write> zout: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn sample_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let count = p.samples * p.batch * p.latent;
    if (i >= count) {
        return;
    }
    let j = i % p.latent;
    let b = (i / p.latent) % p.batch;
    // No branch on the uniform flag here: with one around the Philox loop, lavapipe (Mesa 22.3)
    // recompiled this kernel at every bind of its pipeline and never freed the old code (~0.24 MB of
    // host memory per training step). So ε is always drawn, the given one selected, and stored.
    let r = philox(vec4<u32>(i, state[p.counter_word], p.stream, 0u), vec2<u32>(state[3], state[4]));
    let e = select(box_muller(r.x, r.y), eps[i], p.given_eps != 0u);
    let mu = head[b * 2u * p.latent + j];
    let lv = clamp(head[b * 2u * p.latent + p.latent + j], LOGVAR_MIN, LOGVAR_MAX);
    eps[i] = e;
    zout[i] = mu + exp(0.5 * lv) * e;
}

@compute @workgroup_size(64, 1, 1)
fn philox_words(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.batch) {
        return;
    }
    let r = philox(vec4<u32>(i, p.counter_word, p.stream, 0u), vec2<u32>(state[3], state[4]));
    eps[4u * i] = bitcast<f32>(r.x);
    eps[4u * i + 1u] = bitcast<f32>(r.y);
    eps[4u * i + 2u] = bitcast<f32>(r.z);
    eps[4u * i + 3u] = bitcast<f32>(r.w);
}
