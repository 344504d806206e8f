//! The training configuration: TOML file and/or CLI flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::optim::Adam;
use crate::models::ae::AeConfig;
use crate::models::vae::VaeConfig;
use crate::models::vq::VqConfig;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Model family: "vae" (the MLP VAE; also "mlp-vae"), "conv-vae" (vae.conv, defaults if absent),
    /// "vq-vae" or "vq-vae-2" (the \[vq\] table; vq-vae-2 sets its levels = 2), or the autoencoders "ae"
    /// (MLP; also "mlp-ae") and "conv-ae" (the \[ae\] table; ae.conv, defaults if absent).
    pub model: String,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    /// IDX folder (MNIST family) or image folder (PNG/JPEG/BMP); none = Fashion-MNIST from
    /// /usr/share/datasets, else the bundled subset.
    pub data: Option<PathBuf>,
    /// Image folders: every image is centre-cropped and resized to [height, width] ...
    pub image_size: [usize; 2],
    /// ... with 1 (grayscale) or 3 (RGB) channels.
    pub channels: usize,
    /// Image folders: skip an unreadable or undecodable file with a warning (false: stop with an error).
    pub skip_bad_images: bool,
    /// Image folders without train/ and test/ subfolders: the fraction held out for testing.
    pub test_fraction: f64,
    pub out: PathBuf,
    /// Training steps recorded into one command buffer.
    pub steps_per_submit: usize,
    /// Read the running loss back every this many steps (progress bar).
    pub log_every: usize,
    /// Global-norm gradient clipping (0 = off).
    pub max_grad_norm: f32,
    /// Decoupled weight decay (AdamW); 0 = plain Adam.
    pub weight_decay: f32,
    pub adam_beta1: f32,
    pub adam_beta2: f32,
    pub adam_eps: f32,
    /// Dynamic binarization of training inputs (x ~ Bernoulli(pixel)).
    pub binarize: bool,
    /// Use only the first N training / test images (0 = all).
    pub train_limit: usize,
    pub test_limit: usize,
    /// Checkpoint folders kept under `<out>/checkpoint` (the newest; at least 1).
    pub keep_checkpoints: usize,
    /// Stop the run (exit code 7) after this many consecutive steps with a non-finite gradient, each
    /// skipped (0 = never stop).
    pub max_nonfinite: u32,
    pub vae: VaeConfig,
    /// The VQ models (model = "vq-vae" or "vq-vae-2").
    pub vq: VqConfig,
    /// The autoencoders (model = "ae" or "conv-ae").
    pub ae: AeConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "vae".into(),
            epochs: 10,
            batch: 128,
            lr: 1e-3,
            seed: 0,
            data: None,
            image_size: [32, 32],
            channels: 3,
            skip_bad_images: true,
            test_fraction: 0.1,
            out: PathBuf::from("runs/vae"),
            steps_per_submit: 16,
            log_every: 50,
            max_grad_norm: 0.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            binarize: false,
            train_limit: 0,
            test_limit: 0,
            keep_checkpoints: 3,
            max_nonfinite: 100,
            vae: VaeConfig::default(),
            vq: VqConfig::default(),
            ae: AeConfig::default(),
        }
    }
}

impl TrainConfig {
    pub fn from_toml(text: &str) -> Result<TrainConfig> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        Ok(cfg)
    }

    pub fn load(path: &std::path::Path) -> Result<TrainConfig> {
        // An unreadable config file is a usage error (exit code 2), like a bad one.
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must be rejected
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        match self.model.as_str() {
            "vae" | "mlp-vae" if self.vae.conv.is_some() => {
                return bad(format!("[vae.conv] is set but model is '{}': use model = \"conv-vae\"", self.model))
            }
            "ae" | "mlp-ae" if self.ae.conv.is_some() => {
                return bad(format!("[ae.conv] is set but model is '{}': use model = \"conv-ae\"", self.model))
            }
            "vae" | "mlp-vae" | "conv-vae" | "vq-vae" | "vq-vae-2" | "ae" | "mlp-ae" | "conv-ae" => {}
            _ => {
                return bad(format!(
                    "unknown model '{}' (available: vae, conv-vae, vq-vae, vq-vae-2, ae, conv-ae)",
                    self.model
                ))
            }
        }
        if self.batch == 0 || self.batch > 65535 {
            return bad(format!("batch must be in 1..=65535, got {}", self.batch));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be a finite number > 0, got {}", self.lr));
        }
        if self.steps_per_submit == 0 || self.log_every == 0 {
            return bad("steps_per_submit and log_every must be >= 1".into());
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.adam_beta1) || !(0.0..1.0).contains(&self.adam_beta2) {
            return bad("adam betas must be in [0, 1)".into());
        }
        if !(self.adam_eps > 0.0 && self.adam_eps.is_finite()) {
            return bad(format!("adam_eps must be a finite number > 0, got {}", self.adam_eps));
        }
        for (key, v) in [("weight_decay", self.weight_decay), ("max_grad_norm", self.max_grad_norm)] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("{key} must be a finite number >= 0, got {v}"));
            }
        }
        if self.epochs == 0 {
            return bad("epochs must be >= 1, got 0".into());
        }
        // The image-folder options, checked whatever the data so a bad value never waits for a folder.
        let max_side = crate::data::folder::MAX_SIDE;
        if self.image_size.iter().any(|s| !(1..=max_side).contains(s)) {
            return bad(format!(
                "image_size must be [height, width], each in 1..={max_side}, got {:?}",
                self.image_size
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return bad(format!("channels must be 1 (grayscale) or 3 (RGB), got {}", self.channels));
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(format!("test_fraction must be in (0, 1), got {}", self.test_fraction));
        }
        if self.is_vq() && !self.vq.eps.is_finite() {
            return bad(format!("vq: eps must be a finite number > 0, got {}", self.vq.eps));
        }
        if self.is_vq() {
            if self.binarize {
                return bad("binarize is for the VAEs' Bernoulli likelihood; VQ models use MSE".into());
            }
            if self.weight_decay > 0.0 && !self.vq.ema {
                return bad("weight_decay would shrink the gradient-trained codebook; use vq.ema or no decay".into());
            }
            let levels = if self.model == "vq-vae-2" { 2 } else { 1 };
            if self.vq.levels != levels {
                return bad(format!("model {} has {levels} level(s), [vq] levels = {}", self.model, self.vq.levels));
            }
            return self.vq.validate().map_err(|m| Error::Config(format!("vq: {m}")));
        }
        if self.is_ae() {
            return self.ae.validate().map_err(|m| Error::Config(format!("ae: {m}")));
        }
        self.vae.validate().map_err(|m| Error::Config(format!("vae: {m}")))
    }

    /// A VQ model (vq-vae or vq-vae-2).
    pub fn is_vq(&self) -> bool {
        self.model == "vq-vae" || self.model == "vq-vae-2"
    }

    /// An autoencoder (ae or conv-ae).
    pub fn is_ae(&self) -> bool {
        matches!(self.model.as_str(), "ae" | "mlp-ae" | "conv-ae")
    }

    /// Fills in what the model name implies: the conv VAE's (conv AE's) default architecture when none
    /// is given.
    pub fn resolve(&mut self) {
        if self.model == "vq-vae-2" {
            self.vq.levels = 2;
        }
        if self.model == "conv-vae" && self.vae.conv.is_none() {
            self.vae.conv = Some(Default::default());
        }
        if self.model == "conv-ae" && self.ae.conv.is_none() {
            self.ae.conv = Some(Default::default());
        }
    }

    /// How image folders are read.
    pub fn folder_options(&self) -> crate::data::FolderOptions {
        crate::data::FolderOptions {
            height: self.image_size[0],
            width: self.image_size[1],
            channels: self.channels,
            test_fraction: self.test_fraction,
            skip_bad: self.skip_bad_images,
            seed: self.seed,
        }
    }

    /// Loads the configured data: an IDX folder, an image folder, or the default Fashion-MNIST.
    pub fn load_data(&self) -> Result<crate::data::Dataset> {
        match &self.data {
            Some(dir) if dir.is_dir() && !crate::data::has_dataset(dir) => {
                let f = crate::data::load_folder(dir, &self.folder_options())?;
                for (path, why) in &f.skipped {
                    eprintln!("warning: skipped {}: {why}", path.display());
                }
                Ok(f.dataset)
            }
            d => Ok(crate::data::load_limited(
                d.as_deref(),
                crate::data::Limits::from_counts(self.train_limit, self.test_limit),
            )?),
        }
    }

    pub fn adam(&self) -> Adam {
        Adam {
            lr: self.lr,
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
            ..Adam::default()
        }
    }
}
