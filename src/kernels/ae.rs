//! Launchers for shaders/ae.wgsl: input corruption, the reconstruction loss and the sparsity penalties
//! of the autoencoder family (models::ae). The CPU twins are in reference::ae.

use super::{need, need_len, row_lanes, vec4_rows, Act};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View, Work};

/// The Philox stream (third counter word) of the corruption noise.
pub const STREAM_CORRUPT: u32 = 13;

/// Clamp of the batch-mean activation ρ̂ in the KL sparsity penalty: [KL_EPS, 1 − KL_EPS].
pub const KL_EPS: f64 = 1e-6;

/// Reconstruction loss per example, summed over its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecLoss {
    /// Σ_d (x̂ − x)² (the decoder's output is x̂, no activation).
    Mse,
    /// Bernoulli negative log-likelihood with logits (the decoder's output is the logit), as elbo.wgsl.
    #[default]
    Bce,
}

/// Sparsity penalty on one encoder layer's activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sparsity {
    #[default]
    None,
    /// λ·Σ_j |a_j| per example.
    L1,
    /// β·Σ_j KL(ρ ‖ ρ̂_j), ρ̂_j the batch mean of unit j's (sigmoid) activation; once per batch.
    Kl,
}

/// Corruption of the encoder's input (denoising AE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Noise {
    #[default]
    None,
    /// x + level·N(0, 1), not clipped.
    Gaussian,
    /// Each value set to 0 with probability `level`.
    Mask,
}

impl Noise {
    fn code(self) -> u32 {
        match self {
            Noise::None => 0,
            Noise::Gaussian => 1,
            Noise::Mask => 2,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
struct Params {
    batch: u32,
    dim: u32,
    /// Unused: the mode, with_grad and the activation are the pipeline constants MODE, WITH_GRAD, ACT.
    _unused: [u32; 3],
    counter_word: u32,
    stream: u32,
    _pad: u32,
    weight: f32,
    level: f32,
    grad_scale: f32,
    slope: f32,
}

const OP: &str = "ae";

/// xin = corrupt(x) over [B, D] (see the header of shaders/ae.wgsl).
#[derive(Clone, Copy, Debug)]
pub struct Corrupt {
    pub batch: usize,
    pub dim: usize,
    pub noise: Noise,
    /// σ (gaussian) or the drop probability (mask).
    pub level: f32,
    /// The state word that is the second counter word (kernels::data::W_STEP in training).
    pub counter_word: u32,
    pub stream: u32,
}

impl Corrupt {
    pub fn launch(&self, gpu: &Gpu, label: &str, state: View, x: View, xin: View) -> Result<Launch> {
        let n = self.batch * self.dim;
        need(OP, n > 0, || format!("empty shape {self:?}"))?;
        need(OP, n.div_ceil(256) <= 65535 * 65535, || format!("{self:?}: too many elements"))?;
        need_len(OP, "state", &state, 5)?;
        need_len(OP, "x", &x, n)?;
        need_len(OP, "xin", &xin, n)?;
        let p = Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            counter_word: self.counter_word,
            stream: self.stream,
            level: self.level,
            ..Default::default()
        };
        gpu.launch(
            format!("{label} ae_corrupt[{}x{} {:?}]", self.batch, self.dim, self.noise),
            "ae",
            "ae_corrupt",
            &[("MODE", f64::from(self.noise.code()))],
            Some(&p),
            &[(1, state), (2, x), (3, xin)],
            grid_1d(n.div_ceil(256) as u32),
        )
        .map(|l| l.with_work(Work::words(n, n)))
    }
}

/// rec_b and d loss / d out for decoder outputs `out` [B, D] against clean targets `x` [B, D]; the
/// gradient carries 1/B (the loss is the batch mean).
#[derive(Clone, Copy, Debug)]
pub struct AeLoss {
    pub batch: usize,
    pub dim: usize,
    pub loss: RecLoss,
}

impl AeLoss {
    pub fn launch(&self, gpu: &Gpu, label: &str, out: View, x: View, dout: View, rows: View) -> Result<Launch> {
        let n = self.batch * self.dim;
        need(OP, n > 0, || format!("empty shape {self:?}"))?;
        need(OP, self.batch <= 65535, || format!("{self:?}: at most 65535 rows"))?;
        need_len(OP, "out", &out, n)?;
        need_len(OP, "x", &x, n)?;
        need_len(OP, "dout", &dout, n)?;
        need_len(OP, "rows", &rows, 2 * self.batch)?;
        let p = Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            grad_scale: 1.0 / self.batch as f32,
            ..Default::default()
        };
        // Whole vec4s per row and 16-byte aligned views: four values per invocation.
        let v4 = vec4_rows(self.dim, &[&out, &x, &dout]);
        let (entry, [o, xb, d]) = if v4 { ("ae_loss_v4", [10, 11, 12]) } else { ("ae_loss", [4, 2, 5]) };
        gpu.launch(
            format!("{label} {entry}[{}x{} {:?}]", self.batch, self.dim, self.loss),
            "ae",
            entry,
            &[("MODE", f64::from(u8::from(self.loss == RecLoss::Bce))), row_lanes(OP, gpu)?],
            Some(&p),
            &[(o, out), (xb, x), (d, dout), (6, rows)],
            [self.batch as u32, 1, 1],
        )
        // Reads the output and x; writes the output's gradient and two sums a row.
        .map(|l| l.with_work(Work::words(2 * n, n + 2 * self.batch)))
    }
}

/// The sparsity penalty of a layer's output `a` [B, U] (after its activation `act`): its value into the
/// second column of `rows` and, with `with_grad`, its gradient with respect to the layer's
/// pre-activation ADDED into `grad` [B, U] (1/B included).
#[derive(Clone, Copy, Debug)]
pub struct Sparse {
    pub batch: usize,
    pub units: usize,
    pub kind: Sparsity,
    /// λ (L1) or β (KL).
    pub weight: f32,
    /// ρ (KL).
    pub target: f32,
    /// The layer's activation (for act'(a)).
    pub act: Act,
    pub with_grad: bool,
}

impl Sparse {
    /// Words of the `stats` buffer the KL penalty needs: KL_j, then ρ̂_j.
    pub fn stats_len(&self) -> usize {
        2 * self.units
    }

    /// One launch (L1), two (KL: per-unit statistics and gradient, then the total), none (Sparsity::None).
    pub fn launch(&self, gpu: &Gpu, label: &str, a: View, grad: View, stats: View, rows: View) -> Result<Vec<Launch>> {
        let n = self.batch * self.units;
        need(OP, n > 0, || format!("empty shape {self:?}"))?;
        need(OP, self.batch <= 65535, || format!("{self:?}: at most 65535 rows"))?;
        need_len(OP, "a", &a, n)?;
        need_len(OP, "grad", &grad, n)?;
        need_len(OP, "rows", &rows, 2 * self.batch)?;
        let p = Params {
            batch: self.batch as u32,
            dim: self.units as u32,
            weight: self.weight,
            level: self.target,
            grad_scale: 1.0 / self.batch as f32,
            slope: Act::LEAKY_SLOPE,
            ..Default::default()
        };
        let shape = format!("{}x{}", self.batch, self.units);
        let constants = [("ACT", f64::from(self.act.code())), ("WITH_GRAD", f64::from(u8::from(self.with_grad)))];
        match self.kind {
            Sparsity::None => Ok(Vec::new()),
            Sparsity::L1 => Ok(vec![gpu
                .launch(
                    format!("{label} ae_l1[{shape}]"),
                    "ae",
                    "ae_l1",
                    &[constants[0], constants[1], row_lanes(OP, gpu)?],
                    Some(&p),
                    &[(7, a), (8, grad), (6, rows)],
                    [self.batch as u32, 1, 1],
                )?
                // Reads the activations (and the gradient it adds to); writes that and a sum a row.
                .with_work(Work::words(
                    self.batch * self.units * (1 + usize::from(self.with_grad)),
                    self.batch * (self.units * usize::from(self.with_grad) + 1),
                ))]),
            Sparsity::Kl => {
                need(OP, self.target > 0.0 && self.target < 1.0, || format!("target must be in (0, 1): {self:?}"))?;
                need_len(OP, "stats", &stats, self.stats_len())?;
                let cols = gpu.launch(
                    format!("{label} ae_kl_columns[{shape}]"),
                    "ae",
                    "ae_kl_columns",
                    &constants,
                    Some(&p),
                    &[(7, a), (8, grad), (9, stats)],
                    grid_1d(self.units.div_ceil(64) as u32),
                )?;
                let total = gpu.launch(
                    format!("{label} ae_kl_total[{shape}]"),
                    "ae",
                    "ae_kl_total",
                    &[row_lanes(OP, gpu)?],
                    Some(&p),
                    &[(9, stats), (6, rows)],
                    [1, 1, 1],
                )?;
                Ok(vec![cols, total])
            }
        }
    }
}
