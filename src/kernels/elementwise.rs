//! Launcher for shaders/elementwise.wgsl: standalone activations, forward and backward.

use super::{need, need_len, Act};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    code: u32,
    slope: f32,
    _pad: u32,
}

fn params(act: Act, n: usize) -> Params {
    Params { n: n as u32, code: act.code(), slope: Act::LEAKY_SLOPE, _pad: 0 }
}

/// y = act(x) over n elements.
pub fn act_forward(gpu: &Gpu, act: Act, n: usize, x: View, y: View) -> Result<Launch> {
    need(OP, n > 0, || "empty".into())?;
    need_len(OP, "x", &x, n)?;
    need_len(OP, "y", &y, n)?;
    let groups = grid_1d(n.div_ceil(256) as u32);
    gpu.launch(
        format!("act_forward[{act:?} {n}]"),
        "elementwise",
        "act_forward",
        &[],
        Some(&params(act, n)),
        &[(1, x), (2, y)],
        groups,
    )
}

/// dx = dy ⊙ act'(x), computed through y = act(x).
pub fn act_backward(gpu: &Gpu, act: Act, n: usize, y: View, dy: View, dx: View) -> Result<Launch> {
    need(OP, n > 0, || "empty".into())?;
    need_len(OP, "y", &y, n)?;
    need_len(OP, "dy", &dy, n)?;
    need_len(OP, "dx", &dx, n)?;
    let groups = grid_1d(n.div_ceil(256) as u32);
    gpu.launch(
        format!("act_backward[{act:?} {n}]"),
        "elementwise",
        "act_backward",
        &[],
        Some(&params(act, n)),
        &[(1, y), (2, dx), (3, dy)],
        groups,
    )
}

const OP: &str = "elementwise";
