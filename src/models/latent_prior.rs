//! Learnable priors p_λ(z) over a VAE's latent space, as GPU modules: the VAE draws z_r [N, Z]
//! (N = M·B rows), and its loss holds Σ_r c_r·(−log p_λ(z_r)) with per-row weights c \[N\] on the GPU.
//! [`LatentPrior`] gives log p_λ(z_r) per row ([`LatentPrior::forward`]), the gradient with respect
//! to z and the gradient with respect to λ written into the VAE's flat gradient buffer at the prior's
//! blocks ([`LatentPrior::backward`]), and draws z ~ p_λ from standard normals ([`LatentPrior::sample`]).
//!
//! Kinds ([`PriorKind`]):
//! - `standard`: N(0, I), no parameters (the same calls, so a VAE can treat every kind alike).
//! - `flow`: RealNVP (Dinh et al. 2017). L affine coupling layers f_l; layer l conditions on the
//!   dimensions j with j % 2 == l % 2 (mask m, alternating per layer) and transforms the others:
//!   (ŝ, t) = MLP_l(m⊙x) with MLP_l: Z → H (act) → H (act) → 2Z (blocks `prior.flow{l}.fc1`,
//!   `.fc2`, `.out`), s = tanh(ŝ) (so each layer scales by a factor in (1/e, e)),
//!   y = m⊙x + (1 − m)⊙(x⊙exp(s) + t), log|det ∂y/∂x| = Σ_j (1 − m_j)·s_j.
//!   f = f_{L−1} ∘ … ∘ f_0 maps z to u (the normalising direction):
//!   log p(z) = log N(f(z); 0, I) + Σ_l log|det_l|. Sampling runs the inverse layer by layer in
//!   reverse: x = m⊙y + (1 − m)⊙((y − t)⊙exp(−s)). The out layers start at zero: f starts as the
//!   identity and p as N(0, I).
//! - `mog`: p(z) = Σ_c π_c N(z; μ_c, diag σ²_c), π = softmax(logits), one block `prior.mog`
//!   [K, 2Z + 1] with row c = (μ_c \[Z\], logσ²_c \[Z\], logit_c) (logσ² clamped to [−30, 20] where used,
//!   as the encoder's). It starts with μ_c ~ N(0, I) (a fixed seeded draw), logσ² = 0, logits = 0.
//!
//! Buffers of a [`LatentPrior`] for N rows: `logp` \[N\] (forward, =), `dz` [N, Z] (backward, =); a flow
//! keeps per layer its masked input, output and output gradient [N, Z] and its MLP's activations; a
//! mixture keeps the responsibilities γ [N, K]. Order of launches in a training step:
//! `forward(z)` (then the loss may read `logp()`) … `backward(z, c)` (needs the forward's buffers:
//! same z and params; then read `dz()` and the prior's blocks of grads) … the optimizer. `sample`
//! reuses the flow's intermediate buffers, so it must not sit between a forward and its backward.

use serde::{Deserialize, Serialize};

use super::vae::NamedTensor;
use crate::gpu::{Gpu, GpuError, Launch, Result, View};
use crate::kernels::latent_prior::{self as k, Mog};
use crate::kernels::Act;
use crate::nn::gpu::GpuNet;
use crate::nn::{Net, NetBuilder, ParamLayout, Shape};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorKind {
    #[default]
    Standard,
    Flow,
    Mog,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LatentPriorConfig {
    pub kind: PriorKind,
    /// Coupling layers L of the flow.
    pub flow_layers: usize,
    /// Hidden width H of each coupling layer's MLP (two hidden layers).
    pub flow_hidden: usize,
    /// Activation of the MLPs' hidden layers.
    pub flow_act: Act,
    /// Components K of the mixture.
    pub mog_components: usize,
}

impl Default for LatentPriorConfig {
    fn default() -> Self {
        LatentPriorConfig {
            kind: PriorKind::Standard,
            flow_layers: 4,
            flow_hidden: 64,
            flow_act: Act::Tanh,
            mog_components: 10,
        }
    }
}

impl LatentPriorConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self.kind {
            PriorKind::Standard => Ok(()),
            PriorKind::Flow => {
                if !(1..=64).contains(&self.flow_layers) {
                    return Err(format!("prior flow_layers must be in 1..=64, got {}", self.flow_layers));
                }
                if !(1..=4096).contains(&self.flow_hidden) {
                    return Err(format!("prior flow_hidden must be in 1..=4096, got {}", self.flow_hidden));
                }
                Ok(())
            }
            PriorKind::Mog => {
                if !(1..=4096).contains(&self.mog_components) {
                    return Err(format!("prior mog_components must be in 1..=4096, got {}", self.mog_components));
                }
                Ok(())
            }
        }
    }
}

/// The prior's place in a model's layout: its MLPs (flow) or its mixture block.
#[derive(Clone, Debug, PartialEq)]
pub struct LatentPriorNets {
    pub kind: PriorKind,
    /// Z.
    pub latent: usize,
    /// Flow: one MLP per coupling layer, Z → H → H → 2Z (output ŝ | t); layer l has parity l % 2.
    pub flows: Vec<Net>,
    /// Mixture: the block index of `prior.mog` [K, 2Z + 1] in the layout.
    pub mog_block: Option<usize>,
    /// K (mixture), else 0.
    pub components: usize,
}

impl LatentPriorNets {
    /// The block indices of the prior in the layout, in order.
    pub fn blocks(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self
            .flows
            .iter()
            .flat_map(|n| n.layers.iter())
            .map(|l| match l.op {
                crate::nn::Op::Linear { block } => block,
                _ => unreachable!("the flow MLPs are dense"),
            })
            .collect();
        b.extend(self.mog_block);
        b
    }

    /// The mixture kernel's shape on `rows` rows.
    pub fn mog(&self, rows: usize) -> Mog {
        Mog { rows, latent: self.latent, components: self.components }
    }

    /// Sets the prior's blocks in `params` (the whole layout, already filled by `layout.init(seed)`):
    /// flow: the hidden layers keep PyTorch's default initialisation, the out layers are zeroed (f starts
    /// as the identity); mixture: μ ~ N(0, I) from a Philox draw seeded by `seed`, logσ² = 0, logits = 0.
    pub fn init(&self, layout: &ParamLayout, params: &mut [f32], seed: u64) {
        for net in &self.flows {
            let last = net.layers.last().expect("a flow MLP has layers");
            if let crate::nn::Op::Linear { block } = last.op {
                let l = &layout.layers[block];
                params[l.offset..l.offset + l.len()].fill(0.0);
            }
        }
        if let Some(b) = self.mog_block {
            let l = &layout.layers[b];
            let z = self.latent;
            let key = crate::reference::sample::seed_key(seed);
            for c in 0..self.components {
                let row = l.offset + c * (2 * z + 1);
                for j in 0..z {
                    let i = (c * z + j) as u32;
                    params[row + j] = crate::reference::sample::normal(i, 0, k::STREAM_LATENT_PRIOR, key) as f32;
                    params[row + z + j] = 0.0;
                }
                params[row + 2 * z] = 0.0;
            }
        }
    }

    /// Checkpoint tensors: the flow MLPs as dense layers (`prior.flow{l}.fc1.weight` [out, in], ...);
    /// the mixture as `prior.mog.mu` [K, Z], `prior.mog.logvar` [K, Z] and `prior.mog.logits` \[K\].
    pub fn named_tensors(&self, layout: &ParamLayout) -> Vec<NamedTensor> {
        let nets: Vec<&Net> = self.flows.iter().collect();
        let mut out = if nets.is_empty() { Vec::new() } else { super::vae::net_tensors(layout, &nets, None) };
        if let Some(b) = self.mog_block {
            let l = &layout.layers[b];
            let (z, kc) = (self.latent, self.components);
            let at = move |c: usize, q: usize| l.offset + c * (2 * z + 1) + q;
            out.push(NamedTensor {
                name: "prior.mog.mu".into(),
                shape: vec![kc, z],
                index: (0..kc).flat_map(|c| (0..z).map(move |j| at(c, j))).collect(),
            });
            out.push(NamedTensor {
                name: "prior.mog.logvar".into(),
                shape: vec![kc, z],
                index: (0..kc).flat_map(|c| (0..z).map(move |j| at(c, z + j))).collect(),
            });
            out.push(NamedTensor {
                name: "prior.mog.logits".into(),
                shape: vec![kc],
                index: (0..kc).map(|c| at(c, 2 * z)).collect(),
            });
        }
        out
    }

    /// Forward FLOPs of the flow MLPs on `rows` rows (the mixture's and the couplings' are negligible).
    pub fn flops_forward(&self, rows: usize) -> f64 {
        self.flows.iter().map(|n| n.flops_forward(rows)).sum()
    }
}

fn shape_err(message: String) -> GpuError {
    GpuError::Shape { op: "latent_prior", message }
}

/// A learnable prior over the latent space on the GPU, for a fixed number of rows.
pub struct LatentPrior {
    pub nets: LatentPriorNets,
    pub rows: usize,
    logp: wgpu::Buffer,
    dz: wgpu::Buffer,
    /// Flow, per coupling layer l: the MLP, its input m⊙x_l, its output x_{l+1} and ∂L/∂x_{l+1}.
    mlps: Vec<GpuNet>,
    hs: Vec<wgpu::Buffer>,
    xs: Vec<wgpu::Buffer>,
    dxs: Vec<wgpu::Buffer>,
    /// Flow: the current layer's MLP input gradient.
    dh: Option<wgpu::Buffer>,
    /// Mixture: the responsibilities [N, K].
    gamma: Option<wgpu::Buffer>,
}

fn block<'a>(buf: &'a wgpu::Buffer, layout: &ParamLayout, b: usize) -> View<'a> {
    let l = &layout.layers[b];
    View::new(buf, (l.offset * 4) as u64, l.len())
}

impl LatentPrior {
    /// Adds the prior's parameter blocks (names `prior.…`) to `layout`, the VAE's layout, so that the
    /// VAE's Core and Adam update them with everything else. The standard prior adds none.
    pub fn build(
        cfg: &LatentPriorConfig,
        layout: &mut ParamLayout,
        latent: usize,
    ) -> std::result::Result<LatentPriorNets, String> {
        cfg.validate()?;
        if latent == 0 {
            return Err("the prior needs a latent size > 0".into());
        }
        let mut nets = LatentPriorNets { kind: cfg.kind, latent, flows: Vec::new(), mog_block: None, components: 0 };
        match cfg.kind {
            PriorKind::Standard => {}
            PriorKind::Flow => {
                for l in 0..cfg.flow_layers {
                    let net = NetBuilder::new(layout, &format!("prior.flow{l}"), Shape::flat(latent))
                        .linear("fc1", cfg.flow_hidden, cfg.flow_act)?
                        .linear("fc2", cfg.flow_hidden, cfg.flow_act)?
                        .linear("out", 2 * latent, Act::Identity)?
                        .finish();
                    nets.flows.push(net);
                }
            }
            PriorKind::Mog => {
                let kc = cfg.mog_components;
                // A [(din + 1), dout] = [K, 2Z + 1] block; fan-in 1 keeps layout.init finite (init sets it).
                nets.mog_block = Some(layout.push_with_fan_in("prior.mog", kc - 1, 2 * latent + 1, Act::Identity, 1));
                nets.components = kc;
            }
        }
        Ok(nets)
    }

    /// Largest buffer (bytes) the prior needs for `rows` rows, for the adapter-limit check.
    pub fn largest_buffer(nets: &LatentPriorNets, rows: usize) -> u64 {
        let flows = nets.flows.iter().map(|n| GpuNet::largest_buffer(n, rows)).max().unwrap_or(0);
        let own = (rows * nets.latent.max(nets.components) * 4) as u64;
        flows.max(own)
    }

    /// Buffers for `rows` rows.
    pub fn new(gpu: &Gpu, nets: &LatentPriorNets, rows: usize) -> Result<LatentPrior> {
        if rows == 0 || nets.latent == 0 {
            return Err(shape_err(format!("empty prior: {rows} rows of {}", nets.latent)));
        }
        gpu.check_buffers([Self::largest_buffer(nets, rows)])?;
        let z = nets.latent;
        let f = |label: String, len: usize| gpu.storage_f32(&label, len.max(1));
        let mut mlps = Vec::new();
        let (mut hs, mut xs, mut dxs) = (Vec::new(), Vec::new(), Vec::new());
        for (l, net) in nets.flows.iter().enumerate() {
            mlps.push(GpuNet::new(gpu, net, rows)?);
            hs.push(f(format!("prior.flow{l}.h[{rows}x{z}]"), rows * z));
            xs.push(f(format!("prior.flow{l}.y[{rows}x{z}]"), rows * z));
            dxs.push(f(format!("prior.flow{l}.dy[{rows}x{z}]"), rows * z));
        }
        let prior = LatentPrior {
            rows,
            logp: f(format!("prior.logp[{rows}]"), rows),
            dz: f(format!("prior.dz[{rows}x{z}]"), rows * z),
            dh: (!mlps.is_empty()).then(|| f(format!("prior.flow.dh[{rows}x{z}]"), rows * z)),
            gamma: nets
                .mog_block
                .map(|_| f(format!("prior.mog.gamma[{rows}x{}]", nets.components), rows * nets.components)),
            mlps,
            hs,
            xs,
            dxs,
            nets: nets.clone(),
        };
        gpu.check()?;
        Ok(prior)
    }

    /// log p(z_r) \[N\], written by [`LatentPrior::forward`].
    pub fn logp(&self) -> &wgpu::Buffer {
        &self.logp
    }

    /// c_r·∂(−log p(z_r))/∂z_r [N, Z], written by [`LatentPrior::backward`].
    pub fn dz(&self) -> &wgpu::Buffer {
        &self.dz
    }

    /// Flow: u = f(z) [N, Z] of the last forward (the base-space point); None for the other kinds.
    pub fn flow_output(&self) -> Option<&wgpu::Buffer> {
        self.xs.last()
    }

    /// Mixture: the responsibilities γ [N, K] of the last forward.
    pub fn responsibilities(&self) -> Option<&wgpu::Buffer> {
        self.gamma.as_ref()
    }

    fn check_z(&self, what: &str, b: &wgpu::Buffer) -> Result<()> {
        let need = (self.rows * self.nets.latent * 4) as u64;
        if b.size() < need {
            return Err(shape_err(format!("{what} holds {} bytes, needs {need}", b.size())));
        }
        Ok(())
    }

    fn mog_view<'a>(&self, layout: &ParamLayout, buf: &'a wgpu::Buffer) -> View<'a> {
        block(buf, layout, self.nets.mog_block.unwrap())
    }

    /// log p(z_r) for z [N, Z] into `logp()` (=).
    pub fn forward(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        z: &wgpu::Buffer,
    ) -> Result<Vec<Launch>> {
        self.check_z("z", z)?;
        let (n, zd) = (self.rows, self.nets.latent);
        let mut out = Vec::new();
        match self.nets.kind {
            PriorKind::Standard => out.push(k::base_forward(gpu, "prior", n, zd, true, z.into(), (&self.logp).into())?),
            PriorKind::Flow => {
                for (l, mlp) in self.mlps.iter().enumerate() {
                    let x = if l == 0 { z } else { &self.xs[l - 1] };
                    let label = format!("prior.flow{l}");
                    out.push(k::mask(gpu, &label, n, zd, l % 2, x.into(), (&self.hs[l]).into())?);
                    out.extend(mlp.forward(gpu, layout, params, &self.hs[l])?);
                    out.push(k::coupling_forward(
                        gpu,
                        &label,
                        n,
                        zd,
                        l % 2,
                        l == 0,
                        x.into(),
                        mlp.output().into(),
                        (&self.xs[l]).into(),
                        (&self.logp).into(),
                    )?);
                }
                let u = self.xs.last().unwrap();
                out.push(k::base_forward(gpu, "prior.base", n, zd, false, u.into(), (&self.logp).into())?);
            }
            PriorKind::Mog => {
                let g = self.gamma.as_ref().unwrap();
                let m = self.nets.mog(n);
                out.push(m.forward(
                    gpu,
                    "prior",
                    z.into(),
                    self.mog_view(layout, params),
                    (&self.logp).into(),
                    g.into(),
                )?);
            }
        }
        Ok(out)
    }

    /// The backward of Σ_r c_r·(−log p(z_r)) for the weights c \[N\]: `dz()` (=) = c_r·∂(−log p(z_r))/∂z_r,
    /// and the gradient with respect to the prior's parameters into its blocks of `grads` (=). Needs
    /// the buffers of a [`LatentPrior::forward`] on the same z and params.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        z: &wgpu::Buffer,
        c: &wgpu::Buffer,
    ) -> Result<Vec<Launch>> {
        self.check_z("z", z)?;
        let (n, zd) = (self.rows, self.nets.latent);
        let mut out = Vec::new();
        match self.nets.kind {
            PriorKind::Standard => {
                out.push(k::base_backward(gpu, "prior", n, zd, z.into(), c.into(), (&self.dz).into())?)
            }
            PriorKind::Flow => {
                let last = self.mlps.len() - 1;
                let u = &self.xs[last];
                out.push(k::base_backward(gpu, "prior.base", n, zd, u.into(), c.into(), (&self.dxs[last]).into())?);
                let dh = self.dh.as_ref().unwrap();
                for (l, mlp) in self.mlps.iter().enumerate().rev() {
                    let (x, dx) = if l == 0 { (z, &self.dz) } else { (&self.xs[l - 1], &self.dxs[l - 1]) };
                    let label = format!("prior.flow{l}");
                    out.push(k::coupling_backward(
                        gpu,
                        &label,
                        n,
                        zd,
                        l % 2,
                        x.into(),
                        mlp.output().into(),
                        c.into(),
                        (&self.dxs[l]).into(),
                        dx.into(),
                        mlp.d_output().into(),
                    )?);
                    out.extend(mlp.backward(gpu, layout, params, grads, &self.hs[l], Some((dh, Act::Identity)))?);
                    out.push(k::add_masked(gpu, &label, n, zd, l % 2, dh.into(), dx.into())?);
                }
            }
            PriorKind::Mog => {
                let g = self.gamma.as_ref().unwrap();
                let m = self.nets.mog(n);
                let p = self.mog_view(layout, params);
                out.push(m.backward_z(gpu, "prior", z.into(), p, g.into(), c.into(), (&self.dz).into())?);
                let d = self.mog_view(layout, grads);
                out.push(m.backward_params(gpu, "prior", z.into(), p, g.into(), c.into(), d)?);
            }
        }
        Ok(out)
    }

    /// Draws z ~ p_λ into `out` [N, Z] from standard normals `u` [N, Z]: standard: z = u; flow: the
    /// inverse map z = f⁻¹(u); mixture: z = μ_c + σ_c⊙u with the component c of row r drawn by Philox
    /// (stream [`k::STREAM_LATENT_PRIOR`], counter (r, state\[counter_word\], 14, 0), key state[3..5]).
    /// `u` and `out` must be distinct buffers of the caller's; the flow reuses its intermediate buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
        state: &wgpu::Buffer,
        counter_word: u32,
        u: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Vec<Launch>> {
        self.check_z("u", u)?;
        self.check_z("out", out)?;
        let (n, zd) = (self.rows, self.nets.latent);
        let mut launches = Vec::new();
        match self.nets.kind {
            PriorKind::Standard => launches.push(k::copy(gpu, "prior.sample", n, zd, u.into(), out.into())?),
            PriorKind::Flow => {
                let last = self.mlps.len() - 1;
                for (l, mlp) in self.mlps.iter().enumerate().rev() {
                    // y = x_{l+1} (u for the last layer), x = x_l (out for the first).
                    let y = if l == last { u } else { &self.xs[l] };
                    let x = if l == 0 { out } else { &self.xs[l - 1] };
                    let label = format!("prior.flow{l}.inverse");
                    launches.push(k::mask(gpu, &label, n, zd, l % 2, y.into(), (&self.hs[l]).into())?);
                    launches.extend(mlp.forward(gpu, layout, params, &self.hs[l])?);
                    launches.push(k::coupling_inverse(
                        gpu,
                        &label,
                        n,
                        zd,
                        l % 2,
                        y.into(),
                        mlp.output().into(),
                        x.into(),
                    )?);
                }
            }
            PriorKind::Mog => {
                let m = self.nets.mog(n);
                let p = self.mog_view(layout, params);
                launches.push(m.sample(gpu, "prior", counter_word, state.into(), u.into(), p, out.into())?);
            }
        }
        Ok(launches)
    }
}
