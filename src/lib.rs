//! vaegpu: variational autoencoders trained end to end on the GPU through hand-written WGSL kernels.
//!
//! Layout: `shaders/X.wgsl` (kernels), `kernels::X` (launchers), `reference::X` (CPU twins in f64),
//! `models` (the step built from kernels), `train` (loop, checkpoints), `data`, `eval`, `viz`, `bench`.

pub mod analysis;
pub mod bench;
pub mod data;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod reference;
pub mod testing;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
