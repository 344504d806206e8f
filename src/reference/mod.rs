//! Plain CPU twins of every kernel, in f64: the oracle for GPU tests and for finite-difference checks.
//! Same names as shaders/ and src/kernels/; gradients carry a `d` prefix.

pub mod ae;
pub mod conv;
pub mod data;
pub mod elbo;
pub mod elementwise;
pub mod iwae;
pub mod latent_prior;
pub mod matmul;
pub mod net;
pub mod optim;
pub mod prior;
pub mod sample;
pub mod vae;
pub mod vq;
