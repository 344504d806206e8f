//! vaegpu: variational autoencoders trained end to end on the GPU through hand-written WGSL kernels.

pub mod gpu;
pub mod kernels;
pub mod reference;
pub mod testing;
pub mod models;
pub mod nn;
pub mod data;
