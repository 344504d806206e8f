//! One launcher per shader file: the params struct (bytemuck Pod), shape checks, dispatch geometry.

pub mod ae;
pub mod conv;
pub mod data;
pub mod elbo;
pub mod elementwise;
pub mod iwae;
pub mod latent_prior;
pub mod matmul;
pub mod optim;
pub mod prior;
pub mod reduce;
pub mod sample;
pub mod tune;
pub mod vq;

use crate::gpu::{GpuError, Result, View};

/// Activation codes shared by matmul.wgsl and elementwise.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    #[default]
    Identity,
    Relu,
    LeakyRelu,
    Tanh,
    Sigmoid,
}

impl Act {
    pub fn code(self) -> u32 {
        match self {
            Act::Identity => 0,
            Act::Relu => 1,
            Act::LeakyRelu => 2,
            Act::Tanh => 3,
            Act::Sigmoid => 4,
        }
    }
    pub const LEAKY_SLOPE: f32 = 0.01;
    pub fn parse(s: &str) -> Option<Act> {
        Some(match s.to_ascii_lowercase().as_str() {
            "identity" | "none" | "linear" => Act::Identity,
            "relu" => Act::Relu,
            "leakyrelu" | "leaky_relu" | "leaky-relu" => Act::LeakyRelu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            _ => return None,
        })
    }
}

/// Workgroup width of the one-item-per-invocation kernels: 64 lanes on GPUs; on CPU adapters (fewer,
/// wider lanes) 16 pads less.
pub(crate) fn lane_width(gpu: &crate::gpu::Gpu) -> usize {
    if gpu.is_cpu() {
        16
    } else {
        64
    }
}

/// The override RWG of the per-example loss reductions (elbo, iwae's logw_rows, ae's losses, prior's
/// cross-entropy):
/// [`crate::gpu::Gpu::row_lanes`], which their 64-slot trees need to be a power of two from 2 to 64.
pub(crate) fn row_lanes(op: &'static str, gpu: &crate::gpu::Gpu) -> Result<(&'static str, f64)> {
    let n = gpu.row_lanes;
    need(op, crate::gpu::row_lanes_ok(n), || format!("row_lanes {n} is not a power of two from 2 to 64"))?;
    Ok(("RWG", f64::from(n)))
}

pub(crate) fn need(op: &'static str, ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(GpuError::Shape { op, message: msg() })
    }
}

pub(crate) fn need_len(op: &'static str, what: &str, v: &View<'_>, len: usize) -> Result<()> {
    need(op, v.len >= len, || format!("{what} holds {} elements, needs {len}", v.len))
}

/// Whether rows of `dim` values can be read four at a time through vec4 views of `views` (the `_v4`
/// entries): whole vec4s per row and every view starting on 16 bytes.
pub(crate) fn vec4_rows(dim: usize, views: &[&View<'_>]) -> bool {
    dim % 4 == 0 && views.iter().all(|v| v.offset % 16 == 0)
}
