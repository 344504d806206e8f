// sample_backward.wgsl: backward of sample.wgsl's z = μ + exp(½·logσ²)·ε (see sample.wgsl for letters).
//   dμ[b, j]     += Σ_m dz[m·B + b, j]
//   dlogσ²[b, j] += Σ_m dz[m·B + b, j] · ε[m·B + b, j] · ½·exp(½·logσ²[b, j])   (0 outside the clamp)
// Bindings: 0 uniform Params, 1 head (read, [B, 2Z]), 2 eps (read, [M·B, Z]), 3 dz (read, [M·B, Z]),
//           4 dhead (read_write, [B, 2Z], += : adds to the KL gradient written by elbo.wgsl).
// Dispatch: 64 invocations per workgroup, one (b, j) each, grid = (ceil(B·Z / 64), 1, 1).
// Kept apart from sample.wgsl because a storage binding's access mode is part of the shader interface.

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

struct Params {
    batch: u32,
    latent: u32,
    samples: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> head: array<f32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> dhead: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn sample_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.batch * p.latent) {
        return;
    }
    let b = i / p.latent;
    let j = i % p.latent;
    let raw_lv = head[b * 2u * p.latent + p.latent + j];
    let lv = clamp(raw_lv, LOGVAR_MIN, LOGVAR_MAX);
    let half_std = 0.5 * exp(0.5 * lv);
    var dmu = 0.0;
    var dlv = 0.0;
    for (var m = 0u; m < p.samples; m++) {
        let r = (m * p.batch + b) * p.latent + j;
        let g = dz[r];
        dmu += g;
        dlv += g * eps[r];
    }
    let inside = raw_lv >= LOGVAR_MIN && raw_lv <= LOGVAR_MAX;
    dhead[b * 2u * p.latent + j] += dmu;
    dhead[b * 2u * p.latent + p.latent + j] += select(0.0, dlv * half_std, inside);
}
