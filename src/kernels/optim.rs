//! Launcher for shaders/optim.wgsl: Adam over the flat parameter buffer.

use super::need_len;
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View, Work};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    #[serde(skip)]
    pub n: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    #[serde(skip)]
    pub _pad: [u32; 2],
}

/// The uniform of shaders/optim*.wgsl: Adam's settings and, for adam_tex, the texels at which grads, m,
/// v and the parameters start in their aliased textures.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    adam: Adam,
    bases: [u32; 4],
}

impl Default for Adam {
    fn default() -> Self {
        Adam { n: 0, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, _pad: [0; 2] }
    }
}

impl Adam {
    /// Adam's launch over `n` parameters; on lavapipe with aliased buffers the texture form (see
    /// [`Adam::launch_as`]).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        gpu: &Gpu,
        n: usize,
        state: View,
        params: View,
        grads: View,
        m: View,
        v: View,
        clip: View,
    ) -> Result<Launch> {
        self.launch_as(gpu, n, state, params, grads, m, v, clip, true)
    }

    /// [`Adam::launch`], with `textures` false keeping adam_v8's buffer reads where the texture form
    /// could run (tests and benchmarks compare the two). The texture form (adam_tex, optim64.wgsl)
    /// runs where the device has 64-bit accesses on and all four buffers are aliased by read-only
    /// textures ([`Gpu::alias_texture`], lavapipe): its reads are image loads, which lavapipe
    /// compiles to branch-free gathers rather than a loop over the lanes per component.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_as(
        &self,
        gpu: &Gpu,
        n: usize,
        state: View,
        params: View,
        grads: View,
        m: View,
        v: View,
        clip: View,
        textures: bool,
    ) -> Result<Launch> {
        for (what, view) in [("params", &params), ("grads", &grads), ("m", &m), ("v", &v)] {
            need_len("adam", what, view, n)?;
        }
        let p = AdamParams { adam: Adam { n: n as u32, ..*self }, bases: [0; 4] };
        // Parameters per invocation: 8 through 64-bit components (optim64.wgsl) where the device has
        // them on, else 4 through vec4 views, else 1; the vector forms bind params, grads, m, v at 7-10.
        let (shader, entry, per) = if n % 8 == 0 && gpu.wide_loads {
            ("optim64", "adam_v8", 8)
        } else if n % 4 == 0 {
            ("optim", "adam_v4", 4)
        } else {
            ("optim", "adam", 1)
        };
        let groups = grid_1d((n / per).div_ceil(256) as u32);
        if per == 8 && textures {
            if let [Some(g), Some(mt), Some(vt), Some(w)] =
                [&grads, &m, &v, &params].map(|view| gpu.alias_texture(view, n / 4))
            {
                let p = AdamParams { bases: [g.1, mt.1, vt.1, w.1], ..p };
                let bindings = [(1, state), (7, params), (9, m), (10, v), (6, clip)];
                let textures = [(12, g.0), (13, mt.0), (14, vt.0), (15, w.0)];
                let label = format!("adam[{n}]");
                return Ok(gpu
                    .launch_tex(label, shader, "adam_tex", &[], Some(&p), &bindings, &textures, Vec::new(), groups)?
                    .with_work(Work::words(4 * n, 3 * n)));
            }
        }
        let first = if per == 1 { 2 } else { 7 };
        let bindings = [(1, state), (first, params), (first + 1, grads), (first + 2, m), (first + 3, v), (6, clip)];
        // Reads the gradient, m, v and the parameter; writes the last three.
        Ok(gpu
            .launch(format!("adam[{n}]"), shader, entry, &[], Some(&p), &bindings, groups)?
            .with_work(Work::words(4 * n, 3 * n)))
    }
}
