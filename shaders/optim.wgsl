// optim.wgsl: Adam (Kingma & Ba) with bias correction, optional decoupled weight decay (AdamW) and
// global-norm gradient clipping, over every parameter of the model at once (one flat buffer).
//   t = state[0] + 1;  g = clip[0] · grad
//   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²  (each then 0 where below f32's least normal:
//   optim_common.wgsl, flush_subnormal)
//   θ = θ − lr·wd·θ − lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + ε)
// A step whose gradient norm was not finite (state[5] != 0, set by reduce.wgsl) changes nothing.
// Bindings: 0 uniform Params, 1 state (read), 2 params (read_write, [n]), 3 grads (read, [n]),
//           4 m (read_write, [n]), 5 v (read_write, [n]), 6 clip (read, [1]).
// Dispatch: 256 invocations per workgroup, one parameter each; grid = (min(ceil(n/256), 65535), rows, 1)
//   flattened as x + y · 65535 · 256.
// adam_v4: the same update four parameters at a time through vec4 views (bindings 7 params, 8 grads,
//   9 m, 10 v) when n is a multiple of 4 (always so for a model's flat buffers, padded to 64 floats);
//   grid over n/4. A quarter of the loads: on lavapipe each storage load is a per-lane loop.

//!include optim_common.wgsl

@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> m1: array<f32>;
@group(0) @binding(5) var<storage, read_write> m2: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= p.n || state[5] != 0u) {
        return;
    }
    let t = f32(state[0] + 1u);
    // The vector update on one parameter (its other lanes computed and dropped): one copy of the
    // formulas; this form runs only where n is not a multiple of 4 (never for a model's buffers).
    let r = adam_step(vec4<f32>(grads[i] * clip[0]), vec4<f32>(m1[i]), vec4<f32>(m2[i]), vec4<f32>(params[i]), t);
    m1[i] = r.m.x;
    m2[i] = r.v.x;
    params[i] = r.w.x;
}

@group(0) @binding(7) var<storage, read_write> params4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> grads4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> m14: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> m24: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn adam_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (4u * i >= p.n || state[5] != 0u) {
        return;
    }
    let t = f32(state[0] + 1u);
    let r = adam_step(grads4[i] * clip[0], m14[i], m24[i], params4[i], t);
    m14[i] = r.m;
    m24[i] = r.v;
    params4[i] = r.w;
}
