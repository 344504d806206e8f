//! Launcher for shaders/optim.wgsl: Adam over the flat parameter buffer.

use super::need_len;
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View};

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

impl Default for Adam {
    fn default() -> Self {
        Adam { n: 0, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, _pad: [0; 2] }
    }
}

impl Adam {
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
        for (what, view) in [("params", &params), ("grads", &grads), ("m", &m), ("v", &v)] {
            need_len("adam", what, view, n)?;
        }
        let p = Adam { n: n as u32, ..*self };
        // Parameters per invocation: 8 through 64-bit components (optim64.wgsl) where the device has
        // them on, else 4 through vec4 views, else 1; the vector forms bind params, grads, m, v at 7-10.
        let (shader, entry, per) = if n % 8 == 0 && gpu.wide_loads {
            ("optim64", "adam_v8", 8)
        } else if n % 4 == 0 {
            ("optim", "adam_v4", 4)
        } else {
            ("optim", "adam", 1)
        };
        let first = if per == 1 { 2 } else { 7 };
        let bindings = [(1, state), (first, params), (first + 1, grads), (first + 2, m), (first + 3, v), (6, clip)];
        gpu.launch(
            format!("adam[{n}]"),
            shader,
            entry,
            &[],
            Some(&p),
            &bindings,
            grid_1d((n / per).div_ceil(256) as u32),
        )
    }
}
