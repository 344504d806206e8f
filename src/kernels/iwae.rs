//! Launchers for shaders/iwae.wgsl: per-sample log-weights, the IWAE bound L_k or the Monte-Carlo ELBO
//! with their importance weights, the weighted output gradient, the latent backward, and the
//! score-function gradient.

use super::elbo::{check_loss, lik_constant, var_binding, LearnedVar, Likelihood};
use super::{need_len, row_lanes, vec4_rows};
use crate::gpu::{Gpu, Launch, Result, View};

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
    sigma: f32,
    grad_scale: f32,
    beta: f32,
    iwae: u32,
    ext_prior: u32,
    row_offset: u32,
    valid: u32,
    write_weights: u32,
    var_mode: u32,
    lv_min: f32,
    _pad: u32,
}

/// Shapes and settings of the weighted objective over M·B sample rows (row m·B + b).
#[derive(Clone, Copy, Debug)]
pub struct Weighted {
    pub batch: usize,
    pub dim: usize,
    pub latent: usize,
    pub samples: usize,
    pub likelihood: Likelihood,
    /// σ of the Gaussian likelihood (ignored for Bernoulli).
    pub sigma: f32,
    /// Weight of log p(z) − log q(z|x) in log w (1 for the bound itself).
    pub beta: f32,
    /// true: L_k = log-mean-exp of log w (IWAE); false: the mean of log w (the Monte-Carlo ELBO).
    pub iwae: bool,
    /// log p(z) comes from a learned prior (the `logpz` and `dzp` buffers) instead of N(0, I).
    pub ext_prior: bool,
}

/// A grid of `groups` workgroups, split over y when it exceeds one grid row.
fn grid(groups: usize) -> [u32; 3] {
    [groups.min(ROW_SPLIT) as u32, groups.div_ceil(ROW_SPLIT).max(1) as u32, 1]
}

impl Weighted {
    fn params(&self, row_offset: usize, valid: usize, write_weights: bool) -> Params {
        Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            latent: self.latent as u32,
            samples: self.samples as u32,
            _lik: 0,
            sigma: self.sigma,
            grad_scale: 1.0 / self.batch as f32,
            beta: self.beta,
            iwae: u32::from(self.iwae),
            ext_prior: u32::from(self.ext_prior),
            row_offset: row_offset as u32,
            valid: valid as u32,
            write_weights: u32::from(write_weights),
            var_mode: 0,
            lv_min: 0.0,
            _pad: 0,
        }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        let dims = [self.batch, self.dim, self.latent, self.samples];
        check_loss(op, dims, self.likelihood, self.sigma, || format!("{self:?}"))
    }

    fn gaussian(&self) -> bool {
        self.likelihood == Likelihood::Gaussian
    }

    fn rows(&self) -> usize {
        self.samples * self.batch
    }

    /// terms[row_offset + r] = (log p(x|z_r), log p(z_r) − log q(z_r|x)) for the rows of samples
    /// m < `valid` (`logpz` is read only with `ext_prior`), with the fixed σ.
    #[allow(clippy::too_many_arguments)]
    pub fn rows_launch(
        &self,
        gpu: &Gpu,
        label: &str,
        inputs: (View, View, View, View, View, View),
        terms: View,
        row_offset: usize,
        valid: usize,
    ) -> Result<Launch> {
        self.rows_launch_var(gpu, label, inputs, None, terms, row_offset, valid)
    }

    /// As [`Weighted::rows_launch`], the Gaussian log p(x|z) with the learned log-variance `var` when
    /// given.
    #[allow(clippy::too_many_arguments)]
    pub fn rows_launch_var(
        &self,
        gpu: &Gpu,
        label: &str,
        (out, x, head, eps, z, logpz): (View, View, View, View, View, View),
        var: Option<LearnedVar>,
        terms: View,
        row_offset: usize,
        valid: usize,
    ) -> Result<Launch> {
        const OP: &str = "logw_rows";
        self.check(OP)?;
        let (n, bz) = (self.rows(), self.batch * self.latent);
        need_len(OP, "out", &out, n * self.dim)?;
        need_len(OP, "x", &x, self.batch * self.dim)?;
        need_len(OP, "head", &head, 2 * bz)?;
        need_len(OP, "eps", &eps, n * self.latent)?;
        need_len(OP, "z", &z, n * self.latent)?;
        need_len(OP, "logpz", &logpz, if self.ext_prior { n } else { 1 })?;
        need_len(OP, "terms", &terms, 2 * (row_offset + n))?;
        let (lv, var_mode, lv_min) = var_binding(OP, var, self.dim, self.gaussian(), x)?;
        // Whole vec4s per row and 16-byte aligned views: four pixels per invocation.
        let v4 = vec4_rows(self.dim, &[&out, &x]);
        let (entry, o, xb) = if v4 { ("logw_rows_v4", 16, 17) } else { ("logw_rows", 1, 2) };
        gpu.launch(
            format!("{label} {entry}[{}x{}x{}, z{}]", self.samples, self.batch, self.dim, self.latent),
            "iwae",
            entry,
            &[("LIK", lik_constant(self.gaussian(), var_mode)), row_lanes(OP, gpu)?],
            Some(&Params { var_mode, lv_min, ..self.params(row_offset, valid, false) }),
            &[(o, out), (xb, x), (3, head), (4, eps), (5, z), (6, logpz), (7, terms), (15, lv)],
            grid(n),
        )
    }

    /// rows\[b\] = (−mean lpx, −mean lat, −L_b); with `write_weights` also the gradient weights wt_r
    /// (including 1/B) into `wt` and β·wt_r into `wtp`.
    pub fn combine(
        &self,
        gpu: &Gpu,
        label: &str,
        terms: View,
        rows: View,
        (wt, wtp): (View, View),
        write_weights: bool,
    ) -> Result<Launch> {
        const OP: &str = "logw_combine";
        self.check(OP)?;
        let n = self.rows();
        need_len(OP, "terms", &terms, 2 * n)?;
        need_len(OP, "rows", &rows, 3 * self.batch)?;
        need_len(OP, "wt", &wt, n)?;
        need_len(OP, "wtp", &wtp, n)?;
        gpu.launch(
            format!("{label} logw_combine[{}x{}]", self.samples, self.batch),
            "iwae",
            "logw_combine",
            &[],
            Some(&self.params(0, self.samples, write_weights)),
            &[(7, terms), (8, rows), (9, wt), (10, wtp)],
            [self.batch.div_ceil(64) as u32, 1, 1],
        )
    }

    /// dout[r, d] = wt_r · d nll / d out[r, d] with the fixed σ.
    pub fn grad_out(&self, gpu: &Gpu, label: &str, out: View, x: View, wt: View, dout: View) -> Result<Launch> {
        self.grad_out_var(gpu, label, (out, x, wt), None, dout)
    }

    /// As [`Weighted::grad_out`], with the learned log-variance `var` when given.
    pub fn grad_out_var(
        &self,
        gpu: &Gpu,
        label: &str,
        (out, x, wt): (View, View, View),
        var: Option<LearnedVar>,
        dout: View,
    ) -> Result<Launch> {
        const OP: &str = "logw_grad_out";
        self.check(OP)?;
        let n = self.rows() * self.dim;
        need_len(OP, "out", &out, n)?;
        need_len(OP, "x", &x, self.batch * self.dim)?;
        need_len(OP, "wt", &wt, self.rows())?;
        need_len(OP, "dout", &dout, n)?;
        let (lv, var_mode, lv_min) = var_binding(OP, var, self.dim, self.gaussian(), x)?;
        let v4 = vec4_rows(self.dim, &[&out, &x, &dout]);
        let (entry, [o, xb, d], per) =
            if v4 { ("logw_grad_out_v4", [16, 17, 18], 4) } else { ("logw_grad_out", [1, 2, 11], 1) };
        gpu.launch(
            format!("{label} {entry}[{}x{}x{}]", self.samples, self.batch, self.dim),
            "iwae",
            entry,
            &[("LIK", lik_constant(self.gaussian(), var_mode))],
            Some(&Params { var_mode, lv_min, ..self.params(0, self.samples, false) }),
            &[(o, out), (xb, x), (9, wt), (d, dout), (15, lv)],
            grid((n / per).div_ceil(256)),
        )
    }

    /// dhead (=) from the decoder's dz, the prior term (N(0, I), or `dzp` with `ext_prior`) and log q.
    #[allow(clippy::too_many_arguments)]
    pub fn latent_backward(
        &self,
        gpu: &Gpu,
        label: &str,
        (head, eps, z, wt): (View, View, View, View),
        dz: View,
        dzp: View,
        dhead: View,
    ) -> Result<Launch> {
        const OP: &str = "latent_backward";
        self.check(OP)?;
        let (n, bz) = (self.rows() * self.latent, self.batch * self.latent);
        need_len(OP, "head", &head, 2 * bz)?;
        need_len(OP, "eps", &eps, n)?;
        need_len(OP, "z", &z, n)?;
        need_len(OP, "wt", &wt, self.rows())?;
        need_len(OP, "dz", &dz, n)?;
        need_len(OP, "dzp", &dzp, if self.ext_prior { n } else { 1 })?;
        need_len(OP, "dhead", &dhead, 2 * bz)?;
        gpu.launch(
            format!("{label} latent_backward[{}x{}x{}]", self.samples, self.batch, self.latent),
            "iwae",
            "latent_backward",
            &[],
            Some(&self.params(0, self.samples, false)),
            &[(3, head), (4, eps), (5, z), (9, wt), (12, dz), (13, dzp), (14, dhead)],
            [bz.div_ceil(64) as u32, 1, 1],
        )
    }

    /// dhead += the score-function gradient of the reconstruction term (leave-one-out baseline when
    /// M > 1), from the lpx column of `terms`.
    pub fn score_backward(
        &self,
        gpu: &Gpu,
        label: &str,
        head: View,
        eps: View,
        terms: View,
        dhead: View,
    ) -> Result<Launch> {
        const OP: &str = "score_backward";
        self.check(OP)?;
        let bz = self.batch * self.latent;
        need_len(OP, "head", &head, 2 * bz)?;
        need_len(OP, "eps", &eps, self.rows() * self.latent)?;
        need_len(OP, "terms", &terms, 2 * self.rows())?;
        need_len(OP, "dhead", &dhead, 2 * bz)?;
        gpu.launch(
            format!("{label} score_backward[{}x{}x{}]", self.samples, self.batch, self.latent),
            "iwae",
            "score_backward",
            &[],
            Some(&self.params(0, self.samples, false)),
            &[(3, head), (4, eps), (7, terms), (14, dhead)],
            [bz.div_ceil(64) as u32, 1, 1],
        )
    }
}
