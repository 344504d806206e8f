//! The crate's error type and the process exit codes the CLI maps it to.

use std::path::PathBuf;

use crate::data::DataError;
use crate::gpu::GpuError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Gpu(#[from] GpuError),
    #[error("{0}")]
    Data(#[from] DataError),
    #[error("config: {0}")]
    Config(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Output(String),
    #[error("training diverged: {0}")]
    NonFinite(String),
    /// Training stopped on a signal (SIGINT, SIGTERM) after writing a checkpoint.
    #[error("interrupted by {}: checkpoint written to {} (continue with `vaegpu train --resume {}`)", signal_name(*.signal), .checkpoint.display(), .root.display())]
    Interrupted {
        signal: i32,
        /// The checkpoint folder written (or the newest one, when the stop came right after it).
        checkpoint: PathBuf,
        /// The run's checkpoint root, whose `latest` names that folder.
        root: PathBuf,
    },
}

/// SIGINT and SIGTERM by name (the numbers POSIX fixes), others by number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Exit codes (documented in README.md): 2 usage/config, 3 data, 4 GPU, 5 checkpoint,
    /// 6 output files, 7 non-finite training, 128 + the signal's number for a run stopped by a signal
    /// after writing its checkpoint (130 SIGINT, 143 SIGTERM).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Data(_) => 3,
            Error::Gpu(_) => 4,
            Error::Checkpoint { .. } => 5,
            Error::Io { .. } | Error::Output(_) => 6,
            Error::NonFinite(_) => 7,
            Error::Interrupted { signal, .. } => 128 + signal,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}
