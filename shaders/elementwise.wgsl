// elementwise.wgsl: activations as standalone kernels (the dense layer fuses them into matmul.wgsl's
// epilogue; these serve layers that do not, and are the tested form of the same functions).
// Shapes: any; N = number of elements.
// Bindings: 0 uniform Params, 1 input (read), 2 output (read_write, overwritten =), 3 upstream (read).
//   act_forward : y = act(x)                          (1 = x, 2 = y)
//   act_backward: dx = dy ⊙ act'(x) written via y     (1 = y, 2 = dx, 3 = dy)
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
