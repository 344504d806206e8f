//! What every trained model has on the GPU: the flat parameter buffer with its gradient and Adam moments,
//! the step state, the metrics, and the gradient-norm/clip buffers; plus the update launches over them.

use crate::gpu::{Gpu, Launch, Result};
use crate::kernels::data::{self as kdata, STATE_WORDS};
use crate::kernels::optim::Adam;
use crate::kernels::reduce::{self, METRICS_WORDS, PARTIALS};
use crate::nn::ParamLayout;

pub struct Core {
    pub layout: ParamLayout,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub adam_m: wgpu::Buffer,
    pub adam_v: wgpu::Buffer,
    pub state: wgpu::Buffer,
    pub metrics: wgpu::Buffer,
    pub clip: wgpu::Buffer,
    pub partials: wgpu::Buffer,
}

impl Core {
    /// Buffers for `layout`, the parameters set to `init` (layout.total values).
    pub fn new(gpu: &Gpu, layout: ParamLayout, init: &[f32]) -> Core {
        let n = layout.total;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len);
        Core {
            params: gpu.upload("params", init),
            grads: f(format!("grads[{n}]"), n),
            adam_m: f(format!("adam.m[{n}]"), n),
            adam_v: f(format!("adam.v[{n}]"), n),
            state: gpu.upload("state", &[0u32; STATE_WORDS]),
            metrics: f("metrics".into(), METRICS_WORDS),
            clip: gpu.upload("clip", &[1.0f32]),
            partials: f("gradnorm.partials".into(), PARTIALS),
            layout,
        }
    }

    /// Gradient norm (and clip scale, finite flag), then Adam, over the first `n` parameters.
    pub fn update(&self, gpu: &Gpu, adam: &Adam, max_norm: f32, n: usize) -> Result<Vec<Launch>> {
        let [a, b] = reduce::grad_norm(
            gpu,
            n,
            max_norm,
            (&self.grads).into(),
            (&self.partials).into(),
            (&self.state).into(),
            (&self.metrics).into(),
            (&self.clip).into(),
        )?;
        let c = adam.launch(
            gpu,
            n,
            (&self.state).into(),
            (&self.params).into(),
            (&self.grads).into(),
            (&self.adam_m).into(),
            (&self.adam_v).into(),
            (&self.clip).into(),
        )?;
        Ok(vec![a, b, c])
    }

    /// Seeds the Philox key and sets the step counter.
    pub fn set_state(&self, gpu: &Gpu, seed: u64, step: u32) {
        let mut s = [0u32; STATE_WORDS];
        s[0] = step;
        s[kdata::W_SEED_LO] = seed as u32;
        s[kdata::W_SEED_HI] = (seed >> 32) as u32;
        gpu.write(&self.state, 0, &s);
    }

    pub fn set_cursor(&self, gpu: &Gpu, word: u32, value: u32) {
        gpu.write(&self.state, word as u64 * 4, &[value]);
    }

    pub fn reset_metrics(&self, gpu: &Gpu) {
        gpu.write(&self.metrics, 0, &[0f32; METRICS_WORDS]);
    }

    pub fn read_metrics(&self, gpu: &Gpu) -> Result<Metrics> {
        let m: Vec<f32> = gpu.read(&self.metrics, 0, METRICS_WORDS)?;
        Ok(Metrics::from_words(&m))
    }

    pub fn read_state(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        gpu.read(&self.state, 0, STATE_WORDS)
    }

    /// The training state that steps change: the parameters (with a VQ model's EMA statistics), Adam's
    /// moments and the state words. [`Core::put_back`] returns the model to it.
    pub fn snapshot(&self, gpu: &Gpu) -> Result<Snapshot> {
        let n = self.layout.total;
        Ok(Snapshot {
            params: gpu.read(&self.params, 0, n)?,
            adam_m: gpu.read(&self.adam_m, 0, n)?,
            adam_v: gpu.read(&self.adam_v, 0, n)?,
            state: self.read_state(gpu)?,
        })
    }

    /// Writes a [`Core::snapshot`] back (queued before the next submission).
    pub fn put_back(&self, gpu: &Gpu, s: &Snapshot) {
        gpu.write(&self.params, 0, &s.params);
        gpu.write(&self.adam_m, 0, &s.adam_m);
        gpu.write(&self.adam_v, 0, &s.adam_v);
        gpu.write(&self.state, 0, &s.state);
    }
}

/// [`Core::snapshot`]'s copy of the training state.
pub struct Snapshot {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub state: Vec<u32>,
}

/// Host view of the metrics buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    pub train: SlotMetrics,
    pub eval: SlotMetrics,
    pub grad_norm: f32,
    pub nonfinite_steps: u32,
    pub grad_norm_mean: f32,
}

/// Sums over the rows of one slot: for a VAE (rec, kl, rec + β·kl); for a VQ model (squared error,
/// VQ distance, unused).
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotMetrics {
    pub rec: f64,
    pub kl: f64,
    pub loss: f64,
    pub rows: f64,
}

impl SlotMetrics {
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.rows.max(1.0)
    }
    pub fn mean_rec(&self) -> f64 {
        self.rec / self.rows.max(1.0)
    }
    pub fn mean_kl(&self) -> f64 {
        self.kl / self.rows.max(1.0)
    }
}

impl Metrics {
    pub fn from_words(m: &[f32]) -> Metrics {
        let slot = |s: usize| SlotMetrics {
            rec: m[4 * s] as f64,
            kl: m[4 * s + 1] as f64,
            loss: m[4 * s + 2] as f64,
            rows: m[4 * s + 3] as f64,
        };
        Metrics {
            train: slot(0),
            eval: slot(1),
            grad_norm: m[reduce::M_GRAD_NORM],
            nonfinite_steps: m[reduce::M_NONFINITE] as u32,
            grad_norm_mean: m[reduce::M_GRAD_NORM_SUM] / m[reduce::M_GRAD_NORM_COUNT].max(1.0),
        }
    }
}
