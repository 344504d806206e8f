// elementwise.wgsl: activations as standalone kernels (the dense layer fuses them into matmul.wgsl's
// epilogue; these serve layers that do not, and are the tested form of the same functions).
// Shapes: any; N = number of elements.
// Bindings: 0 uniform Params, 1 input (read), 2 output (read_write, overwritten =), 3 upstream (read).
//   act_forward : y = act(x)                          (1 = x, 2 = y)
//   act_backward: dx = dy ⊙ act'(x) written via y     (1 = y, 2 = dx, 3 = dy)
//   add_into    : dst += up                           (2 = dst, 3 = up)
//   add_into_v4 : the same four at a time through vec4 views (4 = dst, 5 = up) when N is a multiple of 4;
//                 one invocation per vec4
// Dispatch: 256 invocations per workgroup, one element each, grid = (min(ceil(N/256), 65535), ceil(...), 1)
//   flattened as x + y * 65535 * 256.

//!include act.wgsl

struct Params {
    n: u32,
    code: u32,
    slope: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn act_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n) {
        return;
    }
    dst[i] = act_fwd(p.code, src[i], p.slope);
}

@compute @workgroup_size(256, 1, 1)
fn act_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n) {
        return;
    }
    dst[i] = up[i] * act_grad_from_y(p.code, src[i], p.slope);
}

@compute @workgroup_size(256, 1, 1)
fn add_into(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (i >= p.n) {
        return;
    }
    dst[i] += up[i];
}

@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> up4: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn add_into_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if (4u * i >= p.n) {
        return;
    }
    dst4[i] += up4[i];
}
