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
        if n % 8 == 0 && gpu.wide_loads {
            return gpu.launch(
                format!("adam[{n}]"),
                "optim64",
                "adam_v8",
                &[],
                Some(&p),
                &[(1, state), (7, params), (8, grads), (9, m), (10, v), (6, clip)],
                grid_1d((n / 8).div_ceil(256) as u32),
            );
        }
        if n % 4 == 0 {
            return gpu.launch(
                format!("adam[{n}]"),
                "optim",
                "adam_v4",
                &[],
                Some(&p),
                &[(1, state), (7, params), (8, grads), (9, m), (10, v), (6, clip)],
                grid_1d((n / 4).div_ceil(256) as u32),
            );
        }
        gpu.launch(
            format!("adam[{n}]"),
            "optim",
            "adam",
            &[],
            Some(&p),
            &[(1, state), (2, params), (3, grads), (4, m), (5, v), (6, clip)],
            grid_1d(n.div_ceil(256) as u32),
        )
    }
}
