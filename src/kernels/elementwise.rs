//! Launcher for shaders/elementwise.wgsl: standalone activations, forward and backward, and a sum in
//! place.

use super::{need, need_len, vec4_rows, Act};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View, Work};

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
    .map(|l| l.with_work(Work::words(n, n)))
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
    .map(|l| l.with_work(Work::words(2 * n, n)))
}

/// dst += src over n elements (four at a time where n and both views allow vec4s). `dst` and `src`
/// must be different buffers (one dispatch cannot bind a buffer both read-write and read-only).
pub fn add_into(gpu: &Gpu, label: &str, n: usize, dst: View, src: View) -> Result<Launch> {
    need(OP, n > 0, || "empty".into())?;
    need_len(OP, "dst", &dst, n)?;
    need_len(OP, "src", &src, n)?;
    need(OP, !std::ptr::eq(dst.buffer, src.buffer), || "dst and src share a buffer".into())?;
    let (entry, slots, units) =
        if vec4_rows(n, &[&dst, &src]) { ("add_into_v4", [4, 5], n / 4) } else { ("add_into", [2, 3], n) };
    gpu.launch(
        format!("{label} {entry}[{n}]"),
        "elementwise",
        entry,
        &[],
        Some(&params(Act::Identity, n)),
        &[(slots[0], dst), (slots[1], src)],
        grid_1d(units.div_ceil(256) as u32),
    )
    .map(|l| l.with_work(Work::words(2 * n, n)))
}

const OP: &str = "elementwise";
