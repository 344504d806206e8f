//! The integration tests, one binary (`cargo test --test it`; a module: `cargo test --test it resume::`).
//! One binary instead of one per file: the crate and its dependencies are linked once, which keeps a
//! cold `cargo test --tests` (CI) within its time budget on two cores.

mod ae;
mod ae_cli;
mod analysis;
mod bad_input;
mod bench_ceiling;
mod bench_steps;
mod checkpoint_bad;
mod checkpoint_kill;
mod cli;
mod common;
mod conv_folder;
mod data_folder;
mod data_idx;
mod decoder_variance;
mod determinism;
mod fixture;
mod gpu_errors;
mod gradcheck;
mod kernels_conv;
mod kernels_data_words;
mod kernels_iwae;
mod kernels_matmul;
mod kernels_misc;
mod kernels_prior;
mod kernels_vq;
mod latent_prior;
mod loglik;
mod memory;
mod model;
mod nn_cols;
mod nonfinite;
mod pipelines;
mod prior_cli;
mod prior_model;
mod prior_reference;
mod resume;
mod shaders_validate;
mod viz_pad;
mod vq_cli;
