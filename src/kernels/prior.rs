//! Launchers for shaders/prior.wgsl, the kernels of a gated PixelCNN prior over VQ code maps: the gated
//! activation and its backward, the code-embedding lookup, the fused softmax cross-entropy with its
//! gradient and per-image sums, categorical sampling of one position per image, and the weight mask.
//!
//! Rows are r = b·P + p for B images of P positions (n = B·P). The cross-entropy writes its per-row
//! results into one `stats` buffer [n, 2]: stats\[2r\] = nll, stats[2r + 1] = correct (1.0 when the
//! lowest-index argmax of the logits is the target); [`ce_rows`] sums them per image into the `rows`
//! layout [B, 2] that `kernels::reduce::metrics_accumulate` takes.

use super::{need, need_len};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View};

/// Philox stream of the categorical draws (shaders/prior.wgsl holds the same constant): the fourth counter
/// word, counter = (b, pos, state\[0\], 12) with key (state\[3\], state\[4\]). The other generators put their
/// stream in the third word (kernels::sample 0..=2, kernels::vq 11) and 0 in the fourth, so no counter
/// is shared with them.
pub const STREAM_PRIOR_SAMPLE: u32 = 12;

const OP: &str = "prior";
/// Invocations per workgroup of the elementwise entries.
const EW: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    k: u32,
    d: u32,
    per_row: u32,
    pos: u32,
    all: u32,
    batch: u32,
    scale: f32,
    inv_temp: f32,
    _pad: [u32; 2],
}

fn fits(what: &str, elements: usize) -> Result<()> {
    need(OP, elements < u32::MAX as usize, || format!("{what}: {elements} elements exceed 32-bit indexing"))
}

fn elementwise(
    gpu: &Gpu,
    label: String,
    entry: &'static str,
    p: &Params,
    b: &[(u32, View)],
    items: usize,
) -> Result<Launch> {
    gpu.launch(label, "prior", entry, &[], Some(p), b, grid_1d(items.div_ceil(EW) as u32))
}

/// One workgroup per row or image; `constants`: the cross-entropy entries pass their width
/// (`Gpu::row_lanes`), the sampling entries none (a fixed 64, so that their chunks, and so their draws,
/// do not depend on the adapter class).
fn per_group(
    gpu: &Gpu,
    label: String,
    entry: &'static str,
    constants: &[(&'static str, f64)],
    p: &Params,
    b: &[(u32, View)],
    groups: usize,
) -> Result<Launch> {
    gpu.launch(label, "prior", entry, constants, Some(p), b, grid_1d(groups as u32))
}

/// y [n, C] = tanh(a)·σ(g) of pre [n, 2C] (each row: C values a, then C values g).
pub fn gate_forward(gpu: &Gpu, label: &str, n: usize, c: usize, pre: View, y: View) -> Result<Launch> {
    need(OP, n > 0 && c > 0, || format!("empty gate [{n}, {c}]"))?;
    fits("pre", n * 2 * c)?;
    need_len(OP, "pre", &pre, n * 2 * c)?;
    need_len(OP, "y", &y, n * c)?;
    let p = Params { n: n as u32, c: c as u32, ..Default::default() };
    elementwise(gpu, format!("{label} gate_forward[{n}x{c}]"), "gate_forward", &p, &[(1, pre), (2, y)], n * c)
}

/// dpre [n, 2C] from pre [n, 2C] and dy [n, C]: da = dy·σ(g)·(1 − tanh²a), dg = dy·tanh(a)·σ(g)(1 − σ(g)).
pub fn gate_backward(gpu: &Gpu, label: &str, n: usize, c: usize, pre: View, dy: View, dpre: View) -> Result<Launch> {
    need(OP, n > 0 && c > 0, || format!("empty gate [{n}, {c}]"))?;
    fits("pre", n * 2 * c)?;
    need_len(OP, "pre", &pre, n * 2 * c)?;
    need_len(OP, "dy", &dy, n * c)?;
    need_len(OP, "dpre", &dpre, n * 2 * c)?;
    let p = Params { n: n as u32, c: c as u32, ..Default::default() };
    let b = [(1, pre), (3, dy), (4, dpre)];
    elementwise(gpu, format!("{label} gate_backward[{n}x{c}]"), "gate_backward", &p, &b, n * c)
}

/// Which rows [`code_lookup`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every row r < n.
    All,
    /// Only the rows r = b·per_row + pos (n must be a multiple of per_row); the others are left as they are.
    Position { per_row: usize, pos: usize },
}

/// out[r, :] = table[idx\[r\], :] for idx \[n\] (u32) and table [K, D]; a row whose index is >= K is
/// filled with NaN.
#[allow(clippy::too_many_arguments)]
pub fn code_lookup(
    gpu: &Gpu,
    label: &str,
    n: usize,
    k: usize,
    d: usize,
    rows: Rows,
    idx: View,
    table: View,
    out: View,
) -> Result<Launch> {
    need(OP, n > 0 && k > 0 && d > 0, || format!("empty lookup: n {n}, K {k}, D {d}"))?;
    fits("out", n * d)?;
    fits("table", k * d)?;
    need_len(OP, "idx", &idx, n)?;
    need_len(OP, "table", &table, k * d)?;
    need_len(OP, "out", &out, n * d)?;
    let mut p = Params { n: n as u32, k: k as u32, d: d as u32, per_row: 1, all: 1, ..Default::default() };
    let written = match rows {
        Rows::All => n,
        Rows::Position { per_row, pos } => {
            need(OP, per_row > 0 && n % per_row == 0 && pos < per_row, || {
                format!("position {pos} of {per_row} per image does not fit {n} rows")
            })?;
            p.per_row = per_row as u32;
            p.pos = pos as u32;
            p.all = 0;
            n / per_row
        }
    };
    let label = format!("{label} code_lookup[{n}x{d} k{k} {rows:?}]");
    elementwise(gpu, label, "code_lookup", &p, &[(5, idx), (6, table), (7, out)], written * d)
}

/// The fused softmax cross-entropy of logits [n, K] against target \[n\] (u32): dlogits [n, K] =
/// scale·(softmax − onehot(target)); stats [n, 2] = (nll, correct) per row (see the module docs). A
/// target >= K gives nll = NaN.
#[allow(clippy::too_many_arguments)]
pub fn ce_forward(
    gpu: &Gpu,
    label: &str,
    n: usize,
    k: usize,
    scale: f32,
    logits: View,
    target: View,
    dlogits: View,
    stats: View,
) -> Result<Launch> {
    need(OP, n > 0 && k > 0, || format!("empty cross-entropy [{n}, {k}]"))?;
    fits("logits", n * k)?;
    need(OP, n < 65535 * 65535, || format!("{n} rows exceed the dispatch grid"))?;
    need_len(OP, "logits", &logits, n * k)?;
    need_len(OP, "target", &target, n)?;
    need_len(OP, "dlogits", &dlogits, n * k)?;
    need_len(OP, "stats", &stats, 2 * n)?;
    let p = Params { n: n as u32, k: k as u32, scale, ..Default::default() };
    let b = [(5, target), (8, logits), (9, dlogits), (10, stats)];
    per_group(gpu, format!("{label} ce_forward[{n}x{k}]"), "ce_forward", &[super::row_lanes(OP, gpu)?], &p, &b, n)
}

/// rows [B, 2] = per image b, (Σ_p nll, Σ_p correct) over the P = per_row rows b·P + p of stats [B·P, 2].
pub fn ce_rows(gpu: &Gpu, label: &str, batch: usize, per_row: usize, stats: View, rows: View) -> Result<Launch> {
    need(OP, batch > 0 && per_row > 0, || format!("empty ce_rows [{batch}, {per_row}]"))?;
    fits("stats", 2 * batch * per_row)?;
    need_len(OP, "stats", &stats, 2 * batch * per_row)?;
    need_len(OP, "rows", &rows, 2 * batch)?;
    let p = Params { batch: batch as u32, per_row: per_row as u32, ..Default::default() };
    let rwg = [super::row_lanes(OP, gpu)?];
    per_group(
        gpu,
        format!("{label} ce_rows[{batch}x{per_row}]"),
        "ce_rows",
        &rwg,
        &p,
        &[(11, stats), (12, rows)],
        batch,
    )
}

/// One categorical draw per image at one position.
#[derive(Clone, Copy, Debug)]
pub struct Categorical {
    pub batch: usize,
    /// P: positions per image; logits are [B, P, K].
    pub per_row: usize,
    /// K: classes (codes).
    pub k: usize,
    /// τ > 0: the draw is from softmax(logits / τ).
    pub temperature: f32,
}

impl Categorical {
    /// For each image b: k ~ softmax(logits[b, pos, :] / τ) by inverse CDF in index order, with
    /// u = u32_to_unit(philox((b, pos, state\[0\], STREAM_PRIOR_SAMPLE), (state\[3\], state\[4\])).x);
    /// idx[b·P + pos] = k (other entries untouched). With `lookup = Some((d, table, out))` also
    /// out[(b·P + pos)·D ..]\[..D\] = table[k, :] (table [K, D], out [B·P, D]), fused in the same launch.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        gpu: &Gpu,
        label: &str,
        pos: usize,
        state: View,
        logits: View,
        idx: View,
        lookup: Option<(usize, View, View)>,
    ) -> Result<Launch> {
        let (b, pr, k) = (self.batch, self.per_row, self.k);
        need(OP, b > 0 && pr > 0 && k > 0, || format!("empty shape {self:?}"))?;
        need(OP, self.temperature > 0.0 && self.temperature.is_finite(), || {
            format!("temperature must be finite and > 0, got {}", self.temperature)
        })?;
        need(OP, pos < pr, || format!("position {pos} outside {pr} per image"))?;
        fits("logits", b * pr * k)?;
        need_len(OP, "logits", &logits, b * pr * k)?;
        need_len(OP, "idx", &idx, b * pr)?;
        need_len(OP, "state", &state, 5)?;
        let mut p = Params {
            batch: b as u32,
            per_row: pr as u32,
            k: k as u32,
            pos: pos as u32,
            inv_temp: 1.0 / self.temperature,
            ..Default::default()
        };
        let label = format!("{label} categorical_sample[{b}x{pr}x{k} @{pos}]");
        match lookup {
            None => per_group(gpu, label, "categorical_sample", &[], &p, &[(8, logits), (13, state), (14, idx)], b),
            Some((d, table, out)) => {
                need(OP, d > 0, || "empty code size".into())?;
                fits("out", b * pr * d)?;
                need_len(OP, "table", &table, k * d)?;
                need_len(OP, "out", &out, b * pr * d)?;
                p.d = d as u32;
                let bind = [(6, table), (7, out), (8, logits), (13, state), (14, idx)];
                per_group(gpu, label, "categorical_sample_lookup", &[], &p, &bind, b)
            }
        }
    }
}

/// x\[i\] *= mask\[i\] for i < n (keeps masked-conv weights and their gradients at zero).
pub fn mask_mul(gpu: &Gpu, label: &str, n: usize, mask: View, x: View) -> Result<Launch> {
    need(OP, n > 0, || "empty mask".into())?;
    fits("x", n)?;
    need_len(OP, "mask", &mask, n)?;
    need_len(OP, "x", &x, n)?;
    let p = Params { n: n as u32, ..Default::default() };
    elementwise(gpu, format!("{label} mask_mul[{n}]"), "mask_mul", &p, &[(15, x), (16, mask)], n)
}
