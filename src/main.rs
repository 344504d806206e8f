//! The `vaegpu` command line, thin over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use vaegpu::gpu::{Gpu, GpuOptions};
use vaegpu::models::vae::{Gradient, Objective};
use vaegpu::train::{TrainConfig, TrainOptions};
use vaegpu::{Error, Result};

#[derive(Parser)]
#[command(
    name = "vaegpu",
    version,
    about = "Variational autoencoders trained end to end on the GPU (WGSL kernels through wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Default)]
struct GpuArgs {
    /// Graphics backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else the best available)
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (default: WGPU_ADAPTER_NAME)
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Force a CPU adapter (lavapipe, WARP, SwiftShader)
    #[arg(long, global = true)]
    cpu: bool,
    /// Matmul kernel: register (made for CPU adapters), subgroup (the same sharing rows through
    /// subgroup broadcasts: CPU adapters with subgroups), tiled (workgroup memory, made for GPUs), or
    /// auto (timed on the adapter the first time it is seen, then cached)
    #[arg(long, global = true, env = "VAEGPU_MATMUL", default_value = "auto")]
    matmul: vaegpu::gpu::MatmulKernel,
    /// Conv kernel: gather (no workgroup memory; every launch), tiled (an implicit GEMM through
    /// workgroup memory, made for GPUs; layers with 16+ output channels), matmul (im2col or col2im
    /// around one matmul, where a launch has that form), or auto (matmul on CPU adapters; on GPUs the
    /// fastest of the three timed the first time the adapter is seen, then cached)
    #[arg(long, global = true, env = "VAEGPU_CONV", default_value = "auto")]
    conv: vaegpu::gpu::ConvKernel,
    /// Split the K of products with few output tiles over workgroups (weight gradients: the batch's
    /// rows or pixels; with the tiled matmul, dense forwards and input gradients too): true or false
    /// (default: true on GPUs, false on CPU adapters)
    #[arg(long, global = true, env = "VAEGPU_SPLIT_K")]
    split_k: Option<bool>,
    /// Invocations per example of the loss reductions (ELBO, IWAE weights, autoencoder losses, code
    /// prior cross-entropy, mixture prior gradient): 2, 4, 8, 16, 32 or 64 (default: 64 on GPUs, 8 on
    /// CPU adapters, where one 8-lane batch per workgroup takes no turns at the barriers)
    #[arg(long, global = true, env = "VAEGPU_ROW_LANES", value_parser = parse_row_lanes)]
    row_lanes: Option<u32>,
    /// The subgroup matmul, Adam and the conv's col2im (where the shape allows) with every buffer access
    /// 64 bits wide: true or false (default: true on CPU adapters with 64-bit integers in shaders, such
    /// as lavapipe)
    #[arg(long, global = true, env = "VAEGPU_WIDE_LOADS")]
    wide_loads: Option<bool>,
    /// The subgroup matmul's 64-bit form reading its operands from textures, each filled by a copy
    /// before the launch, where the copies are small beside the product: true or false (default: as
    /// --wide-loads)
    #[arg(long, global = true, env = "VAEGPU_TEX_OPERANDS")]
    tex_operands: Option<bool>,
    /// Large buffers made in memory that those textures alias, so that no copy fills them (Adam and
    /// the gradient norm read through such textures too): true or false (default: true on lavapipe,
    /// the only driver where this is safe; no effect elsewhere)
    #[arg(long, global = true, env = "VAEGPU_ALIAS_OPERANDS")]
    alias_operands: Option<bool>,
}

fn parse_row_lanes(s: &str) -> std::result::Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if vaegpu::gpu::row_lanes_ok(n) => Ok(n),
        _ => Err(format!("'{s}' is not one of 2, 4, 8, 16, 32, 64")),
    }
}

impl GpuArgs {
    fn open(&self) -> Result<Gpu> {
        let g = Gpu::new(&GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            cpu: self.cpu,
            matmul: self.matmul,
            conv: self.conv,
            split_k: self.split_k,
            row_lanes: self.row_lanes,
            wide_loads: self.wide_loads,
            tex_operands: self.tex_operands,
            alias_operands: self.alias_operands,
        })?;
        let on = |b: bool| if b { "on" } else { "off" };
        eprintln!(
            "adapter: {} (matmul kernel: {}, conv kernel: {}, split K: {}, loss lanes: {}, wide loads: {}, texture \
             operands: {})",
            g.summary,
            g.matmul,
            g.conv,
            on(g.split_k),
            g.row_lanes,
            on(g.wide_loads),
            match (g.tex_operands && g.wide_loads, g.alias_operands) {
                (false, _) => "off",
                (true, true) => "on, aliased",
                (true, false) => "on, copied",
            }
        );
        Ok(g)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model; writes metrics.jsonl, samples.png, recon.png and checkpoint/ under --out
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on the test split
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// IDX folder to take the test split from (default: the one the model was trained on)
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
        /// VAEs: samples k of the importance-sampled log-likelihood estimate L_k (0 = skip)
        #[arg(long, default_value_t = 5000)]
        k: usize,
        /// VAEs: run L_k over the first N test images only (0 = all)
        #[arg(long, default_value_t = 0)]
        ll_images: usize,
        /// VAEs: skip the latent-space analyses (marginal KL, mutual information, active units)
        #[arg(long)]
        no_analysis: bool,
        /// VAEs: write interpolations.png (and for a 2-D latent space manifold.png and
        /// latent_scatter.png) into this folder
        #[arg(long)]
        pictures: Option<PathBuf>,
        /// Seed of the estimator's and the analyses' draws
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Train gated PixelCNN priors over the code maps of a VQ checkpoint (vq-vae: one; vq-vae-2: top,
    /// and bottom conditioned on top); writes prior/, prior_metrics.jsonl and samples.png
    TrainPrior(Box<PriorArgs>),
    /// Decode samples from the prior of a checkpoint into a PNG grid (VQ models: from their trained
    /// PixelCNN priors, see train-prior)
    Sample {
        #[arg(long)]
        checkpoint: PathBuf,
        /// VQ models: the folder of the priors (default: <checkpoint>/../prior)
        #[arg(long)]
        prior: Option<PathBuf>,
        /// VQ models: sampling temperature of the priors
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Output PNG (default: <checkpoint>/../samples-<seed>.png)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Number of samples (at most the model's batch × M)
        #[arg(long, default_value_t = 64)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// VAEs: variance of the encoder gradient under the pathwise and the score-function estimators on
    /// the first test batch, over --draws draws of ε (prints JSON)
    Gradvar {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 100)]
        draws: usize,
        /// Monte-Carlo samples M per image (default: the model's)
        #[arg(long)]
        samples: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// List adapters with their limits and features
    Info {
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Time every kernel at the default model's shapes and a whole training step
    Bench {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Batch size of the step benchmark
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed repetitions per kernel
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Least warm-up per timed kernel or step, in milliseconds (a GPU raises its clocks during it)
        #[arg(long, default_value_t = 200)]
        warmup_ms: u64,
        /// --model matmul: the sizes of the square products (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "128,256,512,1024,2048")]
        sizes: Vec<usize>,
        /// Model whose kernels and step are timed: vae (MLP), conv-vae, vq-vae or vq-vae-2; with
        /// --steps also ae, conv-ae, or all (every family); matmul: every matmul kernel on square
        /// products of --sizes
        #[arg(long, default_value = "vae")]
        model: String,
        /// Time whole training steps instead of kernels: steps per second through the trainer's loop
        /// at each of --batches and --submits
        #[arg(long)]
        steps: bool,
        /// Time each launch of one training step of --model (a family --steps takes) alone, in step
        /// order, then the whole step: where a step's time goes
        #[arg(long, conflicts_with = "steps")]
        launches: bool,
        /// Run the kernel table (or, with --launches, every launch and the step) this many times in
        /// turns and report the median with the fastest and slowest round: a host or GPU clock whose
        /// speed drifts then spreads over every row alike
        #[arg(long, default_value_t = 1, conflicts_with = "steps")]
        rounds: usize,
        /// --steps: batch sizes (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "128")]
        batches: Vec<usize>,
        /// --steps: training steps recorded into one command buffer (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        submits: Vec<usize>,
        /// --steps: least seconds timed per point
        #[arg(long, default_value_t = 1.0)]
        min_seconds: f64,
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

#[derive(Args)]
struct PriorArgs {
    /// The VQ model's checkpoint folder (<run>/checkpoint)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output folder (default: the VQ run's folder, <checkpoint>/..)
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Channels of the vertical and horizontal stacks
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Gated masked-conv layers
    #[arg(long, default_value_t = 6)]
    layers: usize,
    /// Odd kernel size of the masked convs
    #[arg(long, default_value_t = 3)]
    kernel: usize,
    /// Hidden channels of the output head
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Use only the first N training / test images (0 = as the VQ run)
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Maps drawn and decoded into samples.png (at most --batch)
    #[arg(long, default_value_t = 64)]
    samples: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// No per-epoch lines
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct TrainArgs {
    /// TOML config file; flags given here override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model family: vae (MLP), conv-vae, vq-vae, vq-vae-2, ae (MLP autoencoder) or conv-ae
    #[arg(long)]
    model: Option<String>,
    /// conv-vae, conv-ae: channels of each encoder stage, comma-separated (default 32,64); vq-vae: of
    /// its two stages (default 64,128)
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<usize>>,
    /// conv-vae, conv-ae: stride of each stage (default 2 for every stage)
    #[arg(long, value_delimiter = ',')]
    strides: Option<Vec<usize>>,
    /// conv-vae, conv-ae: residual blocks per stage; vq-vae: residual blocks (default 2)
    #[arg(long)]
    blocks: Option<usize>,
    /// vq-vae: codebook size K (default 512)
    #[arg(long)]
    codes: Option<usize>,
    /// vq-vae: code vector size D (default 64)
    #[arg(long)]
    code_dim: Option<usize>,
    /// vq-vae: train the codebook by its loss through Adam instead of EMA updates
    #[arg(long)]
    no_ema: bool,
    /// vq-vae: reset codes whose EMA count falls below --restart-threshold to batch encoder outputs
    #[arg(long)]
    restart: bool,
    /// vq-vae: EMA count below which a code is reset (default 1)
    #[arg(long)]
    restart_threshold: Option<f32>,
    /// Image folders: size every image is centre-cropped and resized to, HxW or N (default 32x32)
    #[arg(long)]
    image_size: Option<String>,
    /// Image folders: 1 (grayscale) or 3 (RGB, default)
    #[arg(long)]
    image_channels: Option<usize>,
    /// Image folders: stop at an unreadable or undecodable file instead of skipping it
    #[arg(long)]
    strict_images: bool,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder
    #[arg(long)]
    out: Option<PathBuf>,
    /// IDX folder (MNIST family); default Fashion-MNIST from /usr/share/datasets, else the bundled subset
    #[arg(long)]
    data: Option<PathBuf>,
    /// Latent size
    #[arg(long)]
    latent: Option<usize>,
    /// Hidden widths, comma-separated (e.g. 400 or 512,256); for conv-vae and conv-ae the dense layers
    /// after the convs
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Activation of the hidden layers: relu, leakyrelu, tanh, sigmoid
    #[arg(long)]
    act: Option<String>,
    /// ae: activation of the code layer (default identity; sigmoid for --sparsity kl on the code)
    #[arg(long)]
    code_act: Option<String>,
    /// ae: reconstruction loss: mse (summed squared error) or bce (with logits; default)
    #[arg(long)]
    loss: Option<String>,
    /// ae: sparsity penalty on one encoder layer: none, l1 (λ·Σ|a|) or kl (β·Σ KL(ρ ‖ ρ̂), sigmoid layer)
    #[arg(long)]
    sparsity: Option<String>,
    /// ae: weight of the sparsity penalty, λ or β (default 0.001)
    #[arg(long)]
    sparse_weight: Option<f32>,
    /// ae: target mean activation ρ of the kl penalty (default 0.05)
    #[arg(long)]
    sparse_target: Option<f32>,
    /// ae: the penalised encoder layer: its index (0 = the first hidden layer) or "code" (default)
    #[arg(long)]
    sparse_layer: Option<String>,
    /// ae: corruption of the training input (denoising): none, gaussian (x + σ·n) or mask (zeroes)
    #[arg(long)]
    noise: Option<String>,
    /// ae: σ of the gaussian noise or the masked fraction (default 0.3)
    #[arg(long)]
    noise_level: Option<f32>,
    /// Likelihood: bernoulli or gaussian
    #[arg(long)]
    likelihood: Option<String>,
    /// KL weight (β-VAE); vq-vae: commitment weight (default 0.25)
    #[arg(long)]
    beta: Option<f32>,
    /// Monte-Carlo samples per input (k of the IWAE bound)
    #[arg(long)]
    samples: Option<usize>,
    /// Objective: elbo, or iwae (the importance-weighted bound L_k, k = --samples)
    #[arg(long)]
    objective: Option<String>,
    /// Encoder gradient estimator: pathwise (reparameterization) or score (likelihood ratio; elbo only)
    #[arg(long)]
    gradient: Option<String>,
    /// σ of the gaussian likelihood (its initial value when the variance is learned)
    #[arg(long)]
    sigma: Option<f32>,
    /// gaussian likelihood: fixed (σ = --sigma), or learned: global (one σ) or pixel (one σ per value)
    #[arg(long)]
    variance: Option<String>,
    /// floor of a learned σ (default 0.001)
    #[arg(long)]
    sigma_min: Option<f32>,
    /// Prior p(z): standard (N(0, I)), flow (RealNVP, learned jointly) or mog (Gaussian mixture, learned)
    #[arg(long)]
    prior: Option<String>,
    /// flow prior: affine coupling layers (default 4)
    #[arg(long)]
    flow_layers: Option<usize>,
    /// flow prior: hidden width of each coupling layer's MLP (default 64)
    #[arg(long)]
    flow_hidden: Option<usize>,
    /// mog prior: mixture components (default 10)
    #[arg(long)]
    mog_components: Option<usize>,
    /// Training steps per command buffer
    #[arg(long)]
    steps_per_submit: Option<usize>,
    /// Global-norm gradient clipping (0 = off)
    #[arg(long)]
    max_grad_norm: Option<f32>,
    /// Decoupled weight decay
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Dynamic binarization of the training inputs
    #[arg(long)]
    binarize: bool,
    /// Use only the first N training images
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test images
    #[arg(long)]
    test_limit: Option<usize>,
    /// Continue a run from its checkpoint (<run>/checkpoint: the newest; or one of its folders) with its
    /// config; --epochs may raise the total
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Checkpoint folders kept under <out>/checkpoint, the newest (default 3)
    #[arg(long)]
    keep_checkpoints: Option<usize>,
    /// Stop with exit code 7 after this many consecutive steps with a non-finite gradient, each skipped
    /// (default 100; 0 = never)
    #[arg(long)]
    max_nonfinite: Option<u32>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let mut c = match (&self.resume, &self.config) {
            (Some(ck), _) => vaegpu::train::checkpoint::load_meta(ck)?.config,
            (None, Some(p)) => TrainConfig::load(p)?,
            (None, None) => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident => $dst:expr),*) => { $( if let Some(v) = self.$f.clone() { $dst = v; } )* };
        }
        set!(model => c.model, epochs => c.epochs, batch => c.batch, lr => c.lr, seed => c.seed, out => c.out,
             samples => c.vae.samples, image_channels => c.channels,
             steps_per_submit => c.steps_per_submit, max_grad_norm => c.max_grad_norm,
             weight_decay => c.weight_decay, train_limit => c.train_limit, test_limit => c.test_limit,
             keep_checkpoints => c.keep_checkpoints, max_nonfinite => c.max_nonfinite);
        if let Some(d) = &self.data {
            c.data = Some(d.clone());
        }
        c.resolve();
        if let Some(l) = self.latent {
            if c.is_ae() {
                c.ae.latent = l;
            } else {
                c.vae.latent = l;
            }
        }
        let ae_flags = self.code_act.is_some()
            || self.loss.is_some()
            || self.sparsity.is_some()
            || self.sparse_weight.is_some()
            || self.sparse_target.is_some()
            || self.sparse_layer.is_some()
            || self.noise.is_some()
            || self.noise_level.is_some();
        if c.is_ae() {
            if let Some(flag) = self.vae_flag() {
                return Err(Error::Config(format!(
                    "{flag} is a VAE option; model {} is an \
                     autoencoder (its options: --loss, --sparsity, --sparse-weight, --sparse-target, \
                     --sparse-layer, --noise, --noise-level, --code-act)",
                    c.model
                )));
            }
            self.ae_options(&mut c)?;
        } else if ae_flags {
            return Err(Error::Config(format!(
                "--loss, --sparsity, --sparse-weight, --sparse-target, --sparse-layer, --noise, --noise-level and \
                 --code-act need --model ae or conv-ae (model is {})",
                c.model
            )));
        }
        if let Some(b) = self.beta {
            if c.is_vq() {
                c.vq.beta = b;
            } else {
                c.vae.beta = b;
            }
        }
        let vq_flags = self.codes.is_some()
            || self.code_dim.is_some()
            || self.no_ema
            || self.restart
            || self.restart_threshold.is_some();
        if c.is_vq() {
            set!(codes => c.vq.codes, code_dim => c.vq.dim, restart_threshold => c.vq.restart_threshold,
                 channels => c.vq.channels, blocks => c.vq.blocks);
            if self.no_ema {
                c.vq.ema = false;
            }
            if self.restart {
                c.vq.restart = true;
            }
            if self.strides.is_some() || self.hidden.is_some() {
                return Err(Error::Config("--strides and --hidden are not vq-vae options".into()));
            }
        } else if vq_flags {
            return Err(Error::Config(
                "--codes, --code-dim, --no-ema, --restart and --restart-threshold need --model vq-vae or vq-vae-2"
                    .into(),
            ));
        } else if let Some(conv) = if c.is_ae() { c.ae.conv.as_mut() } else { c.vae.conv.as_mut() } {
            if let Some(ch) = &self.channels {
                conv.channels = ch.clone();
                if self.strides.is_none() {
                    conv.strides = vec![2; ch.len()];
                }
            }
            if let Some(s) = &self.strides {
                conv.strides = s.clone();
            }
            if let Some(b) = self.blocks {
                conv.blocks = b;
            }
            if let Some(h) = &self.hidden {
                conv.fc = h.clone();
            }
        } else {
            if self.channels.is_some() || self.strides.is_some() || self.blocks.is_some() {
                return Err(Error::Config(
                    "--channels, --strides and --blocks need --model conv-vae or conv-ae".into(),
                ));
            }
            if let Some(h) = &self.hidden {
                if c.is_ae() {
                    c.ae.hidden = h.clone();
                } else {
                    c.vae.hidden = h.clone();
                }
            }
        }
        if let Some(size) = &self.image_size {
            let parse = |t: &str| t.trim().parse::<usize>().ok().filter(|&v| v > 0);
            c.image_size = match size.split_once(['x', 'X']) {
                Some((h, w)) => [parse(h), parse(w)],
                None => [parse(size), parse(size)],
            }
            .map(|v| v.ok_or_else(|| Error::Config(format!("--image-size: expected HxW or N, got '{size}'"))))
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .try_into()
            .unwrap();
        }
        if self.strict_images {
            c.skip_bad_images = false;
        }
        if let Some(a) = &self.act {
            let act =
                vaegpu::kernels::Act::parse(a).ok_or_else(|| Error::Config(format!("unknown activation '{a}'")))?;
            if c.is_ae() {
                c.ae.act = act;
            } else {
                c.vae.act = act;
            }
        }
        if let Some(l) = &self.likelihood {
            c.vae.likelihood = match l.as_str() {
                "bernoulli" => vaegpu::kernels::elbo::Likelihood::Bernoulli,
                "gaussian" => vaegpu::kernels::elbo::Likelihood::Gaussian,
                _ => return Err(Error::Config(format!("unknown likelihood '{l}' (bernoulli or gaussian)"))),
            };
        }
        if let Some(o) = &self.objective {
            c.vae.objective = match o.as_str() {
                "elbo" => Objective::Elbo,
                "iwae" => Objective::Iwae,
                _ => return Err(Error::Config(format!("unknown objective '{o}' (elbo or iwae)"))),
            };
        }
        if let Some(g) = &self.gradient {
            c.vae.gradient = match g.as_str() {
                "pathwise" => Gradient::Pathwise,
                "score" => Gradient::Score,
                _ => return Err(Error::Config(format!("unknown gradient '{g}' (pathwise or score)"))),
            };
        }
        if c.is_vq() {
            // --beta is the commitment weight there
            if let Some(flag) = self.vae_flag().filter(|f| *f != "--beta") {
                return Err(Error::Config(format!("{flag} is a VAE option; model {} is a VQ-VAE", c.model)));
            }
        }
        if let Some(v) = self.sigma {
            c.vae.sigma = v;
        }
        if let Some(v) = self.sigma_min {
            c.vae.sigma_min = v;
        }
        if let Some(v) = &self.variance {
            use vaegpu::models::vae::DecoderVariance;
            c.vae.variance = match v.as_str() {
                "fixed" => DecoderVariance::Fixed,
                "global" => DecoderVariance::Global,
                "pixel" => DecoderVariance::Pixel,
                _ => return Err(Error::Config(format!("unknown variance '{v}' (fixed, global or pixel)"))),
            };
        }
        self.prior_options(&mut c.vae.prior)?;
        if self.binarize {
            c.binarize = true;
        }
        c.validate()?;
        Ok(c)
    }

    /// The first VAE-only flag given, by name.
    fn vae_flag(&self) -> Option<&'static str> {
        [
            ("--beta", self.beta.is_some()),
            ("--samples", self.samples.is_some()),
            ("--objective", self.objective.is_some()),
            ("--gradient", self.gradient.is_some()),
            ("--likelihood", self.likelihood.is_some()),
            ("--sigma", self.sigma.is_some()),
            ("--variance", self.variance.is_some()),
            ("--sigma-min", self.sigma_min.is_some()),
            ("--prior", self.prior.is_some()),
            ("--flow-layers", self.flow_layers.is_some()),
            ("--flow-hidden", self.flow_hidden.is_some()),
            ("--mog-components", self.mog_components.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }

    /// The prior flags into `p`.
    fn prior_options(&self, p: &mut vaegpu::models::latent_prior::LatentPriorConfig) -> Result<()> {
        use vaegpu::models::latent_prior::PriorKind;
        if let Some(k) = &self.prior {
            p.kind = match k.as_str() {
                "standard" | "normal" => PriorKind::Standard,
                "flow" => PriorKind::Flow,
                "mog" => PriorKind::Mog,
                _ => return Err(Error::Config(format!("unknown prior '{k}' (standard, flow or mog)"))),
            };
        }
        let flow = self.flow_layers.is_some() || self.flow_hidden.is_some();
        if flow && p.kind != PriorKind::Flow {
            return Err(Error::Config("--flow-layers and --flow-hidden need --prior flow".into()));
        }
        if self.mog_components.is_some() && p.kind != PriorKind::Mog {
            return Err(Error::Config("--mog-components needs --prior mog".into()));
        }
        if let Some(v) = self.flow_layers {
            p.flow_layers = v;
        }
        if let Some(v) = self.flow_hidden {
            p.flow_hidden = v;
        }
        if let Some(v) = self.mog_components {
            p.mog_components = v;
        }
        Ok(())
    }

    /// The autoencoder flags into `c.ae`.
    fn ae_options(&self, c: &mut TrainConfig) -> Result<()> {
        use vaegpu::kernels::ae::{Noise, RecLoss, Sparsity};
        let a = &mut c.ae;
        if let Some(v) = &self.code_act {
            a.code_act =
                vaegpu::kernels::Act::parse(v).ok_or_else(|| Error::Config(format!("unknown activation '{v}'")))?;
        }
        if let Some(v) = &self.loss {
            a.loss = match v.as_str() {
                "mse" => RecLoss::Mse,
                "bce" => RecLoss::Bce,
                _ => return Err(Error::Config(format!("unknown loss '{v}' (mse or bce)"))),
            };
        }
        if let Some(v) = &self.sparsity {
            a.sparsity = match v.as_str() {
                "none" => Sparsity::None,
                "l1" => Sparsity::L1,
                "kl" => Sparsity::Kl,
                _ => return Err(Error::Config(format!("unknown sparsity '{v}' (none, l1 or kl)"))),
            };
        }
        if let Some(v) = &self.noise {
            a.noise = match v.as_str() {
                "none" => Noise::None,
                "gaussian" => Noise::Gaussian,
                "mask" => Noise::Mask,
                _ => return Err(Error::Config(format!("unknown noise '{v}' (none, gaussian or mask)"))),
            };
        }
        if let Some(v) = &self.sparse_layer {
            a.sparse_layer = match v.as_str() {
                "code" => None,
                n => Some(n.parse().map_err(|_| {
                    Error::Config(format!("--sparse-layer: expected a layer index or 'code', got '{v}'"))
                })?),
            };
        }
        if let Some(v) = self.sparse_weight {
            a.sparse_weight = v;
        }
        if let Some(v) = self.sparse_target {
            a.sparse_target = v;
        }
        if let Some(v) = self.noise_level {
            a.noise_level = v;
        }
        Ok(())
    }
}

fn info(gpu: &GpuArgs) -> Result<()> {
    let adapters = vaegpu::gpu::list_adapters(&GpuOptions { backend: gpu.backend.clone(), ..Default::default() })?;
    if adapters.is_empty() {
        return Err(vaegpu::gpu::GpuError::NoAdapter(String::new()).into());
    }
    let chosen = vaegpu::gpu::choose_adapter(&GpuOptions {
        backend: gpu.backend.clone(),
        adapter: gpu.adapter.clone(),
        cpu: gpu.cpu,
        ..Default::default()
    })
    .ok()
    .map(|a| a.get_info());
    for a in adapters {
        let i = a.get_info();
        let l = a.limits();
        let mark = if chosen.as_ref() == Some(&i) { " (chosen)" } else { "" };
        println!("{}{mark}", vaegpu::gpu::AdapterSummary::of(&i));
        println!("  max_buffer_size                      {}", l.max_buffer_size);
        println!("  max_storage_buffer_binding_size      {}", l.max_storage_buffer_binding_size);
        println!("  max_storage_buffers_per_shader_stage {}", l.max_storage_buffers_per_shader_stage);
        println!("  max_compute_workgroups_per_dimension {}", l.max_compute_workgroups_per_dimension);
        println!("  max_compute_invocations_per_workgroup {}", l.max_compute_invocations_per_workgroup);
        println!("  max_compute_workgroup_storage_size   {}", l.max_compute_workgroup_storage_size);
        println!("  min_storage_buffer_offset_alignment  {}", l.min_storage_buffer_offset_alignment);
        println!("  features: {:?}", a.features());
    }
    Ok(())
}

/// SIGINT and SIGTERM set the returned flag to their number, and training stops after the submission in
/// flight with a checkpoint (exit code 128 + the number); a second one ends the process at once (the
/// checkpoints already written are complete).
fn stop_on_signals() -> Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    let fail = |e: std::io::Error| Error::Output(format!("cannot install the signal handlers: {e}"));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so that it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone()).map_err(fail)?;
        signal_hook::flag::register_usize(sig, stop.clone(), sig as usize).map_err(fail)?;
        signal_hook::flag::register(sig, armed.clone()).map_err(fail)?;
    }
    Ok(stop)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Train(args) => {
            let stop = stop_on_signals()?;
            let cfg = args.config()?;
            let gpu = args.gpu.open()?;
            let data = cfg.load_data()?;
            let progress = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let opts = TrainOptions { progress, resume: args.resume.clone(), stop: Some(stop) };
            let recs = vaegpu::train::run(&gpu, &cfg, &data, &opts)?;
            if let Some(last) = recs.last() {
                println!(
                    "final test_loss {:.3} after {} epochs; outputs in {}",
                    last.test_loss,
                    last.epoch,
                    cfg.out.display()
                );
            }
            Ok(())
        }
        Cmd::Eval { checkpoint, data, json, k, ll_images, no_analysis, pictures, seed, gpu } => {
            // A bad checkpoint is reported before the adapter is opened.
            vaegpu::train::checkpoint::load_meta(&checkpoint)?;
            let gpu = gpu.open()?;
            let opts = vaegpu::eval::EvalOptions { k, ll_images, analyze: !no_analysis, pictures, seed };
            let r = vaegpu::eval::evaluate(&gpu, &checkpoint, data.as_deref(), &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Error::Output(e.to_string()))?);
            } else {
                let terms = match r.model.as_str() {
                    "vq-vae" | "vq-vae-2" => {
                        format!("mse {:.6} per pixel, vq distance {:.6}", r.test_rec, r.test_kl)
                    }
                    "ae" | "mlp-ae" | "conv-ae" => {
                        format!("rec {:.4} + penalty {:.4} per image", r.test_rec, r.test_kl)
                    }
                    _ => format!("rec {:.4} + kl {:.4} nats per image", r.test_rec, r.test_kl),
                };
                println!(
                    "test_loss {:.4}  ({terms}) over {} test images of {}; step {}",
                    r.test_loss, r.test_images, r.dataset, r.step
                );
                if let Some(e) = r.test_elbo {
                    println!("test ELBO {e:.4}");
                }
                if let Some(l) = &r.loglik {
                    println!(
                        "log p(x) ≈ L_{} = {:.4} nats per image over {} test images (ELBO from the same samples {:.4}; {:.1} s)",
                        l.k, l.log_likelihood, l.images, l.elbo, l.seconds
                    );
                }
                if let Some(a) = &r.latent {
                    println!(
                        "latent: avg KL {:.4} = mutual information {:.4} + marginal KL {:.4} (± {:.4}); {}/{} active units",
                        a.avg_kl, a.mutual_info, a.marginal_kl, a.marginal_kl_stderr, a.active_units, a.latent
                    );
                }
                for p in &r.pictures {
                    println!("wrote {p}");
                }
            }
            Ok(())
        }
        Cmd::Gradvar { checkpoint, draws, samples, seed, gpu } => {
            let gpu = gpu.open()?;
            let r = vaegpu::eval::gradient_variance(&gpu, &checkpoint, None, draws, samples, seed)?;
            println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Error::Output(e.to_string()))?);
            Ok(())
        }
        Cmd::TrainPrior(a) => {
            let gpu = a.gpu.open()?;
            let arch = vaegpu::models::prior::PriorConfig {
                channels: a.channels,
                layers: a.layers,
                kernel: a.kernel,
                hidden: a.hidden,
                ..Default::default()
            };
            let o = vaegpu::train::prior::PriorOptions {
                checkpoint: a.checkpoint.clone(),
                out: a.out.clone(),
                epochs: a.epochs,
                batch: a.batch,
                lr: a.lr,
                seed: a.seed,
                arch,
                train_limit: a.train_limit,
                test_limit: a.test_limit,
                samples: a.samples,
                temperature: a.temperature,
                quiet: a.quiet,
            };
            let recs = vaegpu::train::prior::train_prior(&gpu, &o)?;
            for r in recs.iter().filter(|r| r.epoch == a.epochs) {
                println!("prior {}: test {:.4} bits per code after {} epochs", r.prior, r.test_bits_per_code, r.epoch);
            }
            Ok(())
        }
        Cmd::Sample { checkpoint, prior, temperature, out, n, seed, gpu } => {
            let gpu = gpu.open()?;
            let (s, _) = vaegpu::eval::open(&gpu, &checkpoint, None)?;
            let imgs = if s.cfg.is_vq() {
                let dir = prior.unwrap_or_else(|| vaegpu::train::prior::run_dir(&checkpoint).join("prior"));
                let priors = vaegpu::train::prior::load_priors(&gpu, &s, &dir, n)?;
                let maps = vaegpu::train::prior::sample_codes(&gpu, &priors, n, seed, temperature)?;
                s.decode_codes(&gpu, &maps, n)?
            } else {
                s.prior_samples(&gpu, n, seed)?
            };
            let out = out.unwrap_or_else(|| checkpoint.join("..").join(format!("samples-{seed}.png")));
            vaegpu::viz::save_grid(&out, &imgs, n, s.image_shape, 8).map_err(Error::Output)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Cmd::Info { gpu } => info(&gpu),
        Cmd::Bench {
            json,
            batch,
            reps,
            warmup_ms,
            sizes,
            model,
            steps,
            launches,
            rounds,
            batches,
            submits,
            min_seconds,
            gpu,
        } => {
            if rounds == 0 {
                return Err(Error::Config("--rounds must be at least 1".into()));
            }
            let gpu = gpu.open()?;
            if steps {
                return bench_steps(&gpu, &model, &batches, &submits, min_seconds, json);
            }
            let t = vaegpu::bench::Timing { reps, warmup: std::time::Duration::from_millis(warmup_ms) };
            if launches {
                let r = vaegpu::bench::run_launches(&gpu, &model, batch, t, rounds)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Error::Output(e.to_string()))?);
                } else {
                    print!("{}", r.table());
                }
                return Ok(());
            }
            let once = || match model.as_str() {
                "vae" | "mlp-vae" => vaegpu::bench::run(&gpu, batch, t),
                "conv-vae" => vaegpu::bench::run_conv(&gpu, batch, t),
                "matmul" => {
                    if sizes.is_empty() || sizes.contains(&0) {
                        return Err(Error::Config("--sizes needs at least one size, each >= 1".into()));
                    }
                    vaegpu::bench::run_matmul(&gpu, &sizes, t)
                }
                "vq-vae" => vaegpu::bench::run_vq(&gpu, &Default::default(), batch, t),
                "vq-vae-2" => {
                    let cfg = vaegpu::models::vq::VqConfig { levels: 2, ..Default::default() };
                    vaegpu::bench::run_vq(&gpu, &cfg, batch, t)
                }
                m => Err(Error::Config(format!("unknown model '{m}' (vae, conv-vae, vq-vae, vq-vae-2 or matmul)"))),
            };
            let report = vaegpu::bench::merge_rounds((0..rounds).map(|_| once()).collect::<Result<Vec<_>>>()?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::Output(e.to_string()))?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
    }
}

/// `vaegpu bench --steps`: the step sweep of one model family or of all of them.
fn bench_steps(
    gpu: &Gpu,
    model: &str,
    batches: &[usize],
    submits: &[usize],
    min_seconds: f64,
    json: bool,
) -> Result<()> {
    const FAMILIES: [&str; 6] = ["vae", "conv-vae", "ae", "conv-ae", "vq-vae", "vq-vae-2"];
    let models: Vec<&str> = if model == "all" { FAMILIES.to_vec() } else { vec![model] };
    if batches.is_empty() || submits.is_empty() || batches.contains(&0) || submits.contains(&0) {
        return Err(Error::Config("--batches and --submits need at least one value, each >= 1".into()));
    }
    if !(min_seconds > 0.0 && min_seconds.is_finite()) {
        return Err(Error::Config(format!("--min-seconds must be a positive number, got {min_seconds}")));
    }
    let mut rows = Vec::new();
    for m in models {
        let r = vaegpu::bench::step_sweep(gpu, m, batches, submits, min_seconds)?;
        if !json {
            print!("{}", vaegpu::bench::step_table(&r));
        }
        rows.extend(r);
    }
    if json {
        let v = serde_json::json!({ "adapter": gpu.summary.to_string(), "steps": rows });
        println!("{}", serde_json::to_string_pretty(&v).map_err(|e| Error::Output(e.to_string()))?);
    }
    Ok(())
}

fn main() -> ExitCode {
    use tracing_subscriber::prelude::*;
    // VAEGPU_LOG: `info`, or per target, `vaegpu=debug,wgpu=warn`.
    let targets = std::env::var("VAEGPU_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| "vaegpu=warn,wgpu=error".parse().expect("a valid default filter"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(targets)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Interrupted { .. }) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
