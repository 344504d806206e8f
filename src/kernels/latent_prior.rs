//! Launchers for shaders/latent_prior.wgsl: the RealNVP coupling layers of a flow prior (input mask,
//! forward with the log-determinant, backward, masked add of the MLP's input gradient, inverse), the
//! standard-normal base density and its gradient, and the diagonal Gaussian mixture (log-density and
//! responsibilities, gradients with respect to z and to its parameter block, sampling).
//!
//! Shapes: n rows of Z latent values ([n, Z]); the coupling MLP output st [n, 2Z] (ŝ | t); the row
//! weights c \[n\]; the mixture block [K, 2Z + 1] (μ_c | logσ²_c | logit_c per row c). A coupling layer
//! with `parity` passes through (conditions on) the dimensions j with j % 2 == parity and transforms
//! the others. See the shader's header for the formulas.

use super::{need, need_len};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View};

/// Philox stream (third counter word) of the mixture's component draws: counter (r, state\[counter_word\],
/// 14, 0) with key (state\[3\], state\[4\]); kernels::sample uses 0..=2, kernels::vq 11 and kernels::prior
/// puts its stream 12 in the fourth word, so no counter is shared with them.
pub const STREAM_LATENT_PRIOR: u32 = 14;

/// Clamp of the mixture's log-variances where they are used (the same as the sampler's).
pub const LOGVAR_MIN: f32 = -30.0;
pub const LOGVAR_MAX: f32 = 20.0;

const OP: &str = "latent_prior";
const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    z: u32,
    k: u32,
    parity: u32,
    first: u32,
    counter_word: u32,
    _pad: [u32; 2],
}

fn params(n: usize, z: usize) -> Params {
    Params { n: n as u32, z: z as u32, ..Default::default() }
}

fn shape(n: usize, z: usize) -> Result<()> {
    need(OP, n > 0 && z > 0, || format!("empty shape [{n}, {z}]"))?;
    need(OP, n * 2 * z < u32::MAX as usize, || format!("[{n}, 2·{z}] exceeds 32-bit indexing"))
}

fn parity_ok(parity: usize) -> Result<()> {
    need(OP, parity < 2, || format!("parity must be 0 or 1, got {parity}"))
}

/// One invocation per item (elements or rows).
fn per_item(
    gpu: &Gpu,
    label: String,
    entry: &'static str,
    p: &Params,
    b: &[(u32, View)],
    items: usize,
) -> Result<Launch> {
    gpu.launch(label, "latent_prior", entry, &[], Some(p), b, grid_1d(items.div_ceil(WG) as u32))
}

/// h [n, Z] = m⊙x (the coupling MLP's input).
pub fn mask(gpu: &Gpu, label: &str, n: usize, z: usize, parity: usize, x: View, h: View) -> Result<Launch> {
    shape(n, z)?;
    parity_ok(parity)?;
    need_len(OP, "x", &x, n * z)?;
    need_len(OP, "h", &h, n * z)?;
    let p = Params { parity: parity as u32, ..params(n, z) };
    per_item(gpu, format!("{label} lp_mask[{n}x{z}]"), "lp_mask", &p, &[(1, x), (3, h)], n * z)
}

/// y [n, Z] = m⊙x + (1 − m)⊙(x⊙exp(tanh ŝ) + t) for st [n, 2Z] = (ŝ | t); logp \[n\] = (first) or +=
/// (otherwise) the log-determinant Σ_j (1 − m_j)·tanh(ŝ_j).
#[allow(clippy::too_many_arguments)]
pub fn coupling_forward(
    gpu: &Gpu,
    label: &str,
    n: usize,
    z: usize,
    parity: usize,
    first: bool,
    x: View,
    st: View,
    y: View,
    logp: View,
) -> Result<Launch> {
    shape(n, z)?;
    parity_ok(parity)?;
    need_len(OP, "x", &x, n * z)?;
    need_len(OP, "st", &st, n * 2 * z)?;
    need_len(OP, "y", &y, n * z)?;
    need_len(OP, "logp", &logp, n)?;
    let p = Params { parity: parity as u32, first: u32::from(first), ..params(n, z) };
    let b = [(1, x), (2, st), (3, y), (4, logp)];
    per_item(gpu, format!("{label} flow_coupling_forward[{n}x{z}]"), "flow_coupling_forward", &p, &b, n)
}

/// From g = ∂L/∂y [n, Z] with L = Σ_r c_r·(−log p(z_r)): dx [n, Z] (=) the direct path (g on the
/// conditioning dimensions, g·exp(s) on the transformed ones) and dst [n, 2Z] (=) the gradient with
/// respect to the MLP output (ŝ | t), the log-determinant's −c_r included; zero on the conditioning
/// dimensions.
#[allow(clippy::too_many_arguments)]
pub fn coupling_backward(
    gpu: &Gpu,
    label: &str,
    n: usize,
    z: usize,
    parity: usize,
    x: View,
    st: View,
    c: View,
    g: View,
    dx: View,
    dst: View,
) -> Result<Launch> {
    shape(n, z)?;
    parity_ok(parity)?;
    need_len(OP, "x", &x, n * z)?;
    need_len(OP, "st", &st, n * 2 * z)?;
    need_len(OP, "c", &c, n)?;
    need_len(OP, "g", &g, n * z)?;
    need_len(OP, "dx", &dx, n * z)?;
    need_len(OP, "dst", &dst, n * 2 * z)?;
    let p = Params { parity: parity as u32, ..params(n, z) };
    let b = [(1, x), (2, st), (5, c), (6, g), (7, dst), (8, dx)];
    per_item(gpu, format!("{label} flow_coupling_backward[{n}x{z}]"), "flow_coupling_backward", &p, &b, n * z)
}

/// dx [n, Z] += m⊙dh (the coupling MLP's input gradient, on the conditioning dimensions).
pub fn add_masked(gpu: &Gpu, label: &str, n: usize, z: usize, parity: usize, dh: View, dx: View) -> Result<Launch> {
    shape(n, z)?;
    parity_ok(parity)?;
    need_len(OP, "dh", &dh, n * z)?;
    need_len(OP, "dx", &dx, n * z)?;
    let p = Params { parity: parity as u32, ..params(n, z) };
    per_item(gpu, format!("{label} flow_add_masked[{n}x{z}]"), "flow_add_masked", &p, &[(6, dh), (8, dx)], n * z)
}

/// The inverse coupling: x [n, Z] = m⊙y + (1 − m)⊙((y − t)⊙exp(−tanh ŝ)), st [n, 2Z] being the MLP's
/// output for m⊙y.
#[allow(clippy::too_many_arguments)]
pub fn coupling_inverse(
    gpu: &Gpu,
    label: &str,
    n: usize,
    z: usize,
    parity: usize,
    y: View,
    st: View,
    x: View,
) -> Result<Launch> {
    shape(n, z)?;
    parity_ok(parity)?;
    need_len(OP, "y", &y, n * z)?;
    need_len(OP, "st", &st, n * 2 * z)?;
    need_len(OP, "x", &x, n * z)?;
    let p = Params { parity: parity as u32, ..params(n, z) };
    let b = [(1, y), (2, st), (3, x)];
    per_item(gpu, format!("{label} flow_coupling_inverse[{n}x{z}]"), "flow_coupling_inverse", &p, &b, n * z)
}

/// logp \[n\] = (first) or += (otherwise) log N(u_r; 0, I) for u [n, Z].
pub fn base_forward(gpu: &Gpu, label: &str, n: usize, z: usize, first: bool, u: View, logp: View) -> Result<Launch> {
    shape(n, z)?;
    need_len(OP, "u", &u, n * z)?;
    need_len(OP, "logp", &logp, n)?;
    let p = Params { first: u32::from(first), ..params(n, z) };
    per_item(gpu, format!("{label} lp_base_forward[{n}x{z}]"), "lp_base_forward", &p, &[(1, u), (4, logp)], n)
}

/// du [n, Z] (=) = c_r·u[r, :], the gradient of Σ_r c_r·(−log N(u_r; 0, I)).
pub fn base_backward(gpu: &Gpu, label: &str, n: usize, z: usize, u: View, c: View, du: View) -> Result<Launch> {
    shape(n, z)?;
    need_len(OP, "u", &u, n * z)?;
    need_len(OP, "c", &c, n)?;
    need_len(OP, "du", &du, n * z)?;
    let b = [(1, u), (5, c), (8, du)];
    per_item(gpu, format!("{label} lp_base_backward[{n}x{z}]"), "lp_base_backward", &params(n, z), &b, n * z)
}

/// dst [n, Z] = src [n, Z].
pub fn copy(gpu: &Gpu, label: &str, n: usize, z: usize, src: View, dst: View) -> Result<Launch> {
    shape(n, z)?;
    need_len(OP, "src", &src, n * z)?;
    need_len(OP, "dst", &dst, n * z)?;
    per_item(gpu, format!("{label} lp_copy[{n}x{z}]"), "lp_copy", &params(n, z), &[(1, src), (3, dst)], n * z)
}

/// A diagonal Gaussian mixture of K components over Z dimensions, on n rows.
#[derive(Clone, Copy, Debug)]
pub struct Mog {
    pub rows: usize,
    pub latent: usize,
    pub components: usize,
}

impl Mog {
    /// Length of the parameter block [K, 2Z + 1].
    pub fn block_len(&self) -> usize {
        self.components * (2 * self.latent + 1)
    }

    fn check(&self, z: &View, block: &View) -> Result<Params> {
        let (n, zd, k) = (self.rows, self.latent, self.components);
        shape(n, zd)?;
        need(OP, k > 0, || "a mixture needs at least one component".into())?;
        need(OP, n * k < u32::MAX as usize && self.block_len() < 65535 * 65535, || {
            format!("{self:?} exceeds 32-bit indexing or the dispatch grid")
        })?;
        need_len(OP, "z", z, n * zd)?;
        need_len(OP, "mixture block", block, self.block_len())?;
        Ok(Params { k: k as u32, ..params(n, zd) })
    }

    fn label(&self, label: &str, entry: &str) -> String {
        format!("{label} {entry}[{}x{} k{}]", self.rows, self.latent, self.components)
    }

    /// logp \[n\] (=) = log p(z_r); gamma [n, K] (=) the responsibilities γ_rc.
    pub fn forward(&self, gpu: &Gpu, label: &str, z: View, block: View, logp: View, gamma: View) -> Result<Launch> {
        let p = self.check(&z, &block)?;
        need_len(OP, "logp", &logp, self.rows)?;
        need_len(OP, "gamma", &gamma, self.rows * self.components)?;
        let b = [(1, z), (9, block), (4, logp), (10, gamma)];
        per_item(gpu, self.label(label, "mog_forward"), "mog_forward", &p, &b, self.rows)
    }

    /// dz [n, Z] (=) = c_r·∂(−log p(z_r))/∂z_r, from the responsibilities of [`Mog::forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn backward_z(
        &self,
        gpu: &Gpu,
        label: &str,
        z: View,
        block: View,
        gamma: View,
        c: View,
        dz: View,
    ) -> Result<Launch> {
        let p = self.check(&z, &block)?;
        need_len(OP, "gamma", &gamma, self.rows * self.components)?;
        need_len(OP, "c", &c, self.rows)?;
        need_len(OP, "dz", &dz, self.rows * self.latent)?;
        let b = [(1, z), (9, block), (11, gamma), (5, c), (8, dz)];
        per_item(gpu, self.label(label, "mog_backward_z"), "mog_backward_z", &p, &b, self.rows * self.latent)
    }

    /// dblock [K, 2Z + 1] (=) the gradient of Σ_r c_r·(−log p(z_r)), each entry a fixed-order sum over rows.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_params(
        &self,
        gpu: &Gpu,
        label: &str,
        z: View,
        block: View,
        gamma: View,
        c: View,
        dblock: View,
    ) -> Result<Launch> {
        let p = self.check(&z, &block)?;
        need_len(OP, "gamma", &gamma, self.rows * self.components)?;
        need_len(OP, "c", &c, self.rows)?;
        need_len(OP, "dblock", &dblock, self.block_len())?;
        let b = [(1, z), (9, block), (11, gamma), (5, c), (12, dblock)];
        let label = self.label(label, "mog_backward_params");
        let rwg = [super::row_lanes("mog_backward_params", gpu)?];
        gpu.launch(label, "latent_prior", "mog_backward_params", &rwg, Some(&p), &b, grid_1d(self.block_len() as u32))
    }

    /// z [n, Z] (=) = μ_c + exp(½ logσ²_c)⊙e_r for standard normals e [n, Z] and a component c per row
    /// drawn from π by the Philox word of stream [`STREAM_LATENT_PRIOR`] (see the shader's header).
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        gpu: &Gpu,
        label: &str,
        counter_word: u32,
        state: View,
        e: View,
        block: View,
        z: View,
    ) -> Result<Launch> {
        let mut p = self.check(&e, &block)?;
        need_len(OP, "z", &z, self.rows * self.latent)?;
        need(OP, counter_word < 8 && !(3..=4).contains(&counter_word), || {
            format!("counter word {counter_word} is not a counter of the state")
        })?;
        need_len(OP, "state", &state, 5.max(counter_word as usize + 1))?;
        p.counter_word = counter_word;
        let b = [(1, e), (9, block), (13, state), (3, z)];
        per_item(gpu, self.label(label, "mog_sample"), "mog_sample", &p, &b, self.rows)
    }
}
