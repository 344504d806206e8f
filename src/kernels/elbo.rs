//! Launcher for shaders/elbo.wgsl: the fused negative ELBO (likelihood + β·KL) and its gradients.

use super::{need, need_len};
use crate::gpu::{Gpu, Launch, Result, View};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    dim: u32,
    latent: u32,
    samples: u32,
    gaussian: u32,
    beta: f32,
    sigma: f32,
    grad_scale: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    #[default]
    Bernoulli,
    Gaussian,
}

#[derive(Clone, Copy, Debug)]
pub struct Elbo {
    pub batch: usize,
    pub dim: usize,
    pub latent: usize,
    pub samples: usize,
    pub likelihood: Likelihood,
    pub beta: f32,
    /// σ of the Gaussian likelihood (ignored for Bernoulli).
    pub sigma: f32,
}

impl Elbo {
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
        const OP: &str = "elbo";
        need(OP, self.batch > 0 && self.dim > 0 && self.latent > 0 && self.samples > 0, || {
            format!("empty shape {self:?}")
        })?;
        need(OP, self.sigma > 0.0 || self.likelihood == Likelihood::Bernoulli, || "sigma must be > 0".into())?;
        let mb = self.samples * self.batch;
        need_len(OP, "out", &out, mb * self.dim)?;
        need_len(OP, "x", &x, self.batch * self.dim)?;
        need_len(OP, "head", &head, self.batch * 2 * self.latent)?;
        need_len(OP, "dout", &dout, mb * self.dim)?;
        need_len(OP, "dhead", &dhead, self.batch * 2 * self.latent)?;
        need_len(OP, "rows", &rows, self.batch * 2)?;
        let p = Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            latent: self.latent as u32,
            samples: self.samples as u32,
            gaussian: u32::from(self.likelihood == Likelihood::Gaussian),
            beta: self.beta,
            sigma: self.sigma,
            grad_scale: 1.0 / self.batch as f32,
        };
        gpu.launch(
            format!("{label} elbo[{}x{}x{}, z{}]", self.samples, self.batch, self.dim, self.latent),
            "elbo",
            "elbo",
            &[],
            Some(&p),
            &[(1, out), (2, x), (3, head), (4, dout), (5, dhead), (6, rows)],
            [self.batch as u32, 1, 1],
        )
    }
}
