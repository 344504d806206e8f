//! Model families; each builds its training step from layers and kernels.

pub mod ae;
pub mod core;
pub mod latent_prior;
pub mod prior;
pub mod vae;
pub mod vq;
