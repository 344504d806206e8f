//! Launcher for shaders/elbo.wgsl: the fused negative ELBO (likelihood + β·KL) and its gradients, and
//! the gradient of a learned Gaussian decoder variance (`logvar_grad`).

use super::{need, need_len, row_lanes, vec4_rows};
use crate::gpu::{Gpu, GpuError, Launch, Result, View, Work};

/// Upper clamp of a learned decoder log-variance s = log σ² (the lower one is 2·ln σ_min).
pub const DEC_LOGVAR_MAX: f32 = 20.0;

/// Rows per grid row of the 2-D dispatches (keeps every grid dimension under 65535).
const ROW_SPLIT: usize = 32768;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    dim: u32,
    latent: u32,
    samples: u32,
    /// Unused (was the likelihood flag): the likelihood is the pipeline constant LIK.
    _lik: u32,
    beta: f32,
    sigma: f32,
    grad_scale: f32,
    /// 0 fixed σ, 1 one learned s, 2 one learned s per pixel.
    var_mode: u32,
    /// Lower clamp of s (2·ln σ_min).
    lv_min: f32,
    /// logvar_grad: 1 = row weights from `wt`, 0 = grad_scale / M.
    use_wt: u32,
    _pad: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    #[default]
    Bernoulli,
    Gaussian,
}

/// The override LIK of elbo.wgsl and iwae.wgsl: 0 Bernoulli, 1 Gaussian with the fixed σ, 2 Gaussian
/// with a learned s (`var_mode` 1 or 2). A pipeline constant, not a uniform: lavapipe runs both sides of
/// a branch on a uniform, so all three likelihoods would cost every pixel.
pub(crate) fn lik_constant(gaussian: bool, var_mode: u32) -> f64 {
    if !gaussian {
        0.0
    } else if var_mode == 0 {
        1.0
    } else {
        2.0
    }
}

/// The checks every loss launch makes: a non-empty (B, D, Z, M) and σ > 0 for the Gaussian likelihood.
pub(crate) fn check_loss(
    op: &'static str,
    dims: [usize; 4],
    likelihood: Likelihood,
    sigma: f32,
    what: impl FnOnce() -> String,
) -> Result<()> {
    need(op, dims.iter().all(|&d| d > 0), || format!("empty shape {}", what()))?;
    need(op, sigma > 0.0 || likelihood == Likelihood::Bernoulli, || "sigma must be > 0".into())
}

/// The variance of the Gaussian decoder: σ fixed by the config, or the learned parameter s = log σ²,
/// one value for all pixels (global) or one per pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecoderVariance {
    #[default]
    Fixed,
    Global,
    Pixel,
}

impl DecoderVariance {
    /// Values of the learned parameter for `dim` pixels (0 when fixed).
    pub fn len(self, dim: usize) -> usize {
        match self {
            DecoderVariance::Fixed => 0,
            DecoderVariance::Global => 1,
            DecoderVariance::Pixel => dim,
        }
    }
}

/// A learned decoder log-variance s = log σ² as the kernels read it: a view of 1 value (global) or D
/// values (per pixel; for D = 1 both are the same), clamped in the kernels to [`lv_min`, 20].
#[derive(Clone, Copy)]
pub struct LearnedVar<'a> {
    pub logvar: View<'a>,
    /// 2·ln σ_min.
    pub lv_min: f32,
}

impl LearnedVar<'_> {
    /// The shader's var_mode (1 global, 2 per pixel) after checking the view's length against `dim`.
    pub(crate) fn mode(&self, op: &'static str, dim: usize) -> Result<u32> {
        need(op, self.lv_min.is_finite() && self.lv_min < DEC_LOGVAR_MAX, || {
            format!("the learned variance's lower clamp must be finite and < {DEC_LOGVAR_MAX}, got {}", self.lv_min)
        })?;
        match self.logvar.len {
            1 => Ok(1),
            n if n == dim => Ok(2),
            n => Err(GpuError::Shape {
                op,
                message: format!("logvar has {n} values: need 1 (global) or {dim} (per pixel)"),
            }),
        }
    }
}

/// The binding and the (var_mode, lv_min) of an optional learned variance; `dummy` is bound (never
/// read) when the variance is fixed.
pub(crate) fn var_binding<'a>(
    op: &'static str,
    var: Option<LearnedVar<'a>>,
    dim: usize,
    gaussian: bool,
    dummy: View<'a>,
) -> Result<(View<'a>, u32, f32)> {
    match var {
        None => Ok((View::new(dummy.buffer, dummy.offset, 1), 0, 0.0)),
        Some(v) => {
            need(op, gaussian, || "a learned variance needs the Gaussian likelihood".into())?;
            Ok((v.logvar, v.mode(op, dim)?, v.lv_min))
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Elbo {
    pub batch: usize,
    pub dim: usize,
    pub latent: usize,
    pub samples: usize,
    pub likelihood: Likelihood,
    pub beta: f32,
    /// σ of the Gaussian likelihood (ignored for Bernoulli, and with a learned variance).
    pub sigma: f32,
}

impl Elbo {
    fn params(&self, var_mode: u32, lv_min: f32, use_wt: bool) -> Params {
        Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            latent: self.latent as u32,
            samples: self.samples as u32,
            _lik: 0,
            beta: self.beta,
            sigma: self.sigma,
            grad_scale: 1.0 / self.batch as f32,
            var_mode,
            lv_min,
            use_wt: u32::from(use_wt),
            _pad: 0,
        }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        let dims = [self.batch, self.dim, self.latent, self.samples];
        check_loss(op, dims, self.likelihood, self.sigma, || format!("{self:?}"))
    }

    /// The fused ELBO with the fixed σ (see [`Elbo::launch_var`]).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        gpu: &Gpu,
        label: &str,
        out: View,
        x: View,
        head: View,
        dout: View,
        dhead: View,
        rows: View,
    ) -> Result<Launch> {
        self.launch_var(gpu, label, (out, x, head), None, dout, dhead, rows)
    }

    /// The fused ELBO: rows (=), dout (=) and the KL part of dhead (=); the Gaussian likelihood uses the
    /// learned log-variance `var` when given (else σ).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_var(
        &self,
        gpu: &Gpu,
        label: &str,
        (out, x, head): (View, View, View),
        var: Option<LearnedVar>,
        dout: View,
        dhead: View,
        rows: View,
    ) -> Result<Launch> {
        const OP: &str = "elbo";
        self.check(OP)?;
        let mb = self.samples * self.batch;
        need_len(OP, "out", &out, mb * self.dim)?;
        need_len(OP, "x", &x, self.batch * self.dim)?;
        need_len(OP, "head", &head, self.batch * 2 * self.latent)?;
        need_len(OP, "dout", &dout, mb * self.dim)?;
        need_len(OP, "dhead", &dhead, self.batch * 2 * self.latent)?;
        need_len(OP, "rows", &rows, self.batch * 2)?;
        let gaussian = self.likelihood == Likelihood::Gaussian;
        let (lv, mode, lv_min) = var_binding(OP, var, self.dim, gaussian, x)?;
        // Whole vec4s per row and 16-byte aligned views: four pixels per invocation (elbo_v4).
        let v4 = vec4_rows(self.dim, &[&out, &x, &dout]);
        let (entry, [o, xb, d]) = if v4 { ("elbo_v4", [10, 11, 12]) } else { ("elbo", [1, 2, 4]) };
        // Reads the decoder's output, x and the head; writes the output's and the head's gradients
        // (and two sums an example).
        let (od, bz) = (mb * self.dim, self.batch * 2 * self.latent);
        let work = Work::words(od + self.batch * self.dim + bz, od + bz + 2 * self.batch);
        Ok(gpu
            .launch(
                format!("{label} {entry}[{}x{}x{}, z{}]", self.samples, self.batch, self.dim, self.latent),
                "elbo",
                entry,
                &[("LIK", lik_constant(gaussian, mode)), row_lanes(OP, gpu)?],
                Some(&self.params(mode, lv_min, false)),
                &[(o, out), (xb, x), (3, head), (d, dout), (5, dhead), (6, rows), (7, lv)],
                [self.batch as u32, 1, 1],
            )?
            .with_work(work))
    }

    /// d loss / d s (=) into `dlogvar` (the parameter's block of the gradient buffer, as long as
    /// `var.logvar`): Σ_r w_r·½(1 − (x_{b(r),d} − out_{r,d})²·e^{−s_d}) over the M·B rows (and over d
    /// for a global s), 0 outside the clamp; w_r = `wt`\[r\] when given (the weighted objectives), else
    /// 1/(B·M) (this kernel's ELBO).
    #[allow(clippy::too_many_arguments)]
    pub fn logvar_grad(
        &self,
        gpu: &Gpu,
        label: &str,
        out: View,
        x: View,
        var: LearnedVar,
        wt: Option<View>,
        dlogvar: View,
    ) -> Result<Launch> {
        const OP: &str = "logvar_grad";
        self.check(OP)?;
        let mb = self.samples * self.batch;
        need_len(OP, "out", &out, mb * self.dim)?;
        need_len(OP, "x", &x, self.batch * self.dim)?;
        if let Some(w) = &wt {
            need_len(OP, "wt", w, mb)?;
        }
        let gaussian = self.likelihood == Likelihood::Gaussian;
        let (lv, mode, lv_min) = var_binding(OP, Some(var), self.dim, gaussian, x)?;
        need_len(OP, "dlogvar", &dlogvar, lv.len)?;
        let groups = if mode == 1 { [1, 1, 1] } else { grid(self.dim) };
        let w = wt.unwrap_or(View::new(x.buffer, x.offset, 1));
        // 256 on GPUs, as before; the per-example reductions' width where it is narrower (CPU adapters:
        // 8). A 256-wide tree is 32 lavapipe batches taking turns at each of 9 barriers: at the MLP
        // VAE's shape the launch took 10.1 ms at 256, 1.8 at 32 and 1.1 at 8 (benches/RESULTS.md).
        let (_, rows) = row_lanes(OP, gpu)?;
        let lanes = if rows >= 64.0 { 256.0 } else { rows };
        gpu.launch(
            format!("{label} logvar_grad[{}x{}x{}, s{}]", self.samples, self.batch, self.dim, lv.len),
            "elbo",
            "logvar_grad",
            &[("LWG", lanes)],
            Some(&self.params(mode, lv_min, wt.is_some())),
            &[(1, out), (2, x), (7, lv), (8, w), (9, dlogvar)],
            groups,
        )
    }
}

/// A grid of `groups` workgroups, split over y when it exceeds one grid row.
fn grid(groups: usize) -> [u32; 3] {
    [groups.min(ROW_SPLIT) as u32, groups.div_ceil(ROW_SPLIT).max(1) as u32, 1]
}
