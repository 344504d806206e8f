// optim_common.wgsl: what optim.wgsl and optim64.wgsl share (by textual include): Adam's Params, the
// bindings of the step state and the clip factor, and the update of four parameters (see optim.wgsl's
// header for the formulas).

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    _pad0: u32,
    _pad1: u32,
    // adam_tex only: the texels at which grads, m, v and the parameters start in their textures.
    g_base: u32,
    m_base: u32,
    v_base: u32,
    w_base: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(6) var<storage, read> clip: array<f32>;

// Adam's update of four parameters from their gradient g (clipped), moments m0, v0 and values w0 at
// step t: the new moments and values.
struct AdamStep {
    m: vec4<f32>,
    v: vec4<f32>,
    w: vec4<f32>,
}

// x with its subnormal components (below f32's least normal, 2^-126) set to zero. The moments of a
// parameter whose gradient stays zero (a dead unit's weights, an always-black pixel's) decay by β1 and
// β2 a step into the subnormals, and x86 CPUs take a microcode assist for each operation on one unless
// the thread flushes them, which lavapipe's compute threads do not: after about 700 steps of the MLP
// VAE Adam ran 4.4x slower and the step 1.4-1.9x slower (benches/RESULTS.md, 2026-11-29, the
// nineteenth session). Flushed, such a moment is zero a little sooner: a parameter's step differs by
// at most lr·2^-126/((1 − β1ᵗ)·ε), about 1e-32 at the defaults.
fn flush_subnormal(x: vec4<f32>) -> vec4<f32> {
    return select(x, vec4<f32>(0.0), abs(x) < vec4<f32>(1.17549435e-38));
}

fn adam_step(g: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>, w0: vec4<f32>, t: f32) -> AdamStep {
    let m = flush_subnormal(p.beta1 * m0 + (1.0 - p.beta1) * g);
    let v = flush_subnormal(p.beta2 * v0 + (1.0 - p.beta2) * g * g);
    let mhat = m / (1.0 - pow(p.beta1, t));
    let vhat = v / (1.0 - pow(p.beta2, t));
    let w = w0 - p.lr * p.weight_decay * w0;
    return AdamStep(m, v, w - p.lr * mhat / (sqrt(vhat) + p.eps));
}
