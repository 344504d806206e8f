//! Model families; each builds its training step from layers and kernels.

pub mod vae;
