//! Launchers for shaders/reduce.wgsl: loss metrics and the global gradient norm.

use super::data::{W_EVAL_BATCH, W_TRAIN_BATCH};
use super::{need, need_len};
use crate::gpu::{Gpu, Launch, Result, View, Work};

/// Workgroups of the gradient norm's first pass (256 invocations each).
const GROUPS: usize = 64;
/// Number of partial sums of the gradient-norm reduction: one per invocation of its first pass.
pub const PARTIALS: usize = GROUPS * 256;
/// f32 words of the metrics buffer.
pub const METRICS_WORDS: usize = 16;
pub const SLOT_TRAIN: u32 = 0;
pub const SLOT_EVAL: u32 = 1;
pub const M_GRAD_NORM: usize = 8;
pub const M_NONFINITE: usize = 9;
pub const M_GRAD_NORM_SUM: usize = 10;
pub const M_GRAD_NORM_COUNT: usize = 11;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
struct Params {
    batch: u32,
    n_items: u32,
    batch_word: u32,
    slot: u32,
    beta: f32,
    n: u32,
    max_norm: f32,
    cols: u32,
    /// sumsq_tex only: the texel at which the grads start in their aliased texture.
    base: u32,
    _pad: [u32; 3],
}

/// Where one batch's metrics go: `batch` rows of a dataset of `n_items` (rows past it do not count),
/// the cursor word `batch_word` (the batch's index: `W_TRAIN_BATCH` or `W_EVAL_BATCH`) and the metrics
/// slot. `advance`: the batch's cursor then moves on in the same launch (data.wgsl's advance after a
/// training step: the step counter and non-finite run too; advance_eval after an eval batch), one
/// launch fewer a step than the two separate.
#[derive(Clone, Copy, Debug)]
pub struct MetricsAt {
    pub batch: usize,
    pub n_items: usize,
    pub batch_word: u32,
    pub slot: u32,
    pub advance: bool,
}

/// metrics\[slot\] += Σ over the valid rows of this batch of (rec, kl, rec + β·kl, 1); rows [B, 2].
pub fn metrics_accumulate(
    gpu: &Gpu,
    label: &str,
    at: MetricsAt,
    beta: f32,
    state: View,
    rows: View,
    metrics: View,
) -> Result<Launch> {
    metrics_launch(gpu, label, at, beta, 2, state, rows, metrics)
}

/// metrics\[slot\] += Σ over the valid rows of (rec, kl, loss, 1) from rows [B, 3] = (rec, kl, loss).
pub fn metrics_accumulate3(
    gpu: &Gpu,
    label: &str,
    at: MetricsAt,
    state: View,
    rows: View,
    metrics: View,
) -> Result<Launch> {
    metrics_launch(gpu, label, at, 1.0, 3, state, rows, metrics)
}

#[allow(clippy::too_many_arguments)]
fn metrics_launch(
    gpu: &Gpu,
    label: &str,
    at: MetricsAt,
    beta: f32,
    cols: u32,
    state: View,
    rows: View,
    metrics: View,
) -> Result<Launch> {
    let MetricsAt { batch, n_items, batch_word, slot, advance } = at;
    need_len("metrics", "rows", &rows, cols as usize * batch)?;
    need_len("metrics", "metrics", &metrics, METRICS_WORDS)?;
    need("metrics", batch > 0 && n_items > 0, || "empty".into())?;
    need("metrics", !advance || [W_TRAIN_BATCH, W_EVAL_BATCH].contains(&batch_word), || {
        format!("only the train or eval cursor advances, not state word {batch_word}")
    })?;
    let p = Params { batch: batch as u32, n_items: n_items as u32, batch_word, slot, beta, cols, ..Default::default() };
    if advance {
        let train = batch_word == W_TRAIN_BATCH;
        return gpu.launch(
            format!("{label} metrics+{}[{batch}]", if train { "advance" } else { "advance_eval" }),
            "reduce",
            "metrics_advance",
            &[("ADVANCE_TRAIN", f64::from(u8::from(train)))],
            Some(&p),
            &[(6, state), (2, rows), (3, metrics)],
            [1, 1, 1],
        );
    }
    gpu.launch(
        format!("{label} metrics[{batch}]"),
        "reduce",
        "metrics_accumulate",
        &[],
        Some(&p),
        &[(1, state), (2, rows), (3, metrics)],
        [1, 1, 1],
    )
}

/// The two launches of the gradient norm: partial sums of squares, then norm, clip scale, finite flag.
#[allow(clippy::too_many_arguments)]
pub fn grad_norm(
    gpu: &Gpu,
    n: usize,
    max_norm: f32,
    grads: View,
    partials: View,
    state: View,
    metrics: View,
    clip: View,
) -> Result<[Launch; 2]> {
    grad_norm_as(gpu, n, max_norm, grads, partials, state, metrics, clip, true)
}

/// [`grad_norm`], with `textures` false keeping the buffer reads where the grads could be read
/// through a texture aliasing their buffer (sumsq_tex, lavapipe; tests compare the two).
#[allow(clippy::too_many_arguments)]
pub fn grad_norm_as(
    gpu: &Gpu,
    n: usize,
    max_norm: f32,
    grads: View,
    partials: View,
    state: View,
    metrics: View,
    clip: View,
    textures: bool,
) -> Result<[Launch; 2]> {
    need_len("grad_norm", "grads", &grads, n)?;
    need_len("grad_norm", "partials", &partials, PARTIALS)?;
    let p = Params { n: n as u32, max_norm, ..Default::default() };
    // vec4 loads when n allows (a model's flat buffers always do).
    let (entry, binding) = if n % 4 == 0 { ("sumsq_partial_v4", 8) } else { ("sumsq_partial", 4) };
    // On lavapipe, through a texture aliasing the grads' buffer where it has one (image loads are
    // branch-free gathers there; buffer loads a loop over the lanes per component).
    let tex = if n % 4 == 0 && textures { gpu.alias_texture(&grads, n / 4) } else { None };
    let a = if let Some((t, base)) = tex {
        let p = Params { base, ..p };
        let label = format!("sumsq_partial[{n}]");
        gpu.launch_tex(
            label,
            "reduce",
            "sumsq_tex",
            &[],
            Some(&p),
            &[(5, partials)],
            &[(9, t)],
            Vec::new(),
            [GROUPS as u32, 1, 1],
        )?
        .with_work(Work::words(n, PARTIALS))
    } else {
        gpu.launch(
            format!("sumsq_partial[{n}]"),
            "reduce",
            entry,
            &[],
            Some(&p),
            &[(binding, grads), (5, partials)],
            [GROUPS as u32, 1, 1],
        )?
        .with_work(Work::words(n, PARTIALS))
    };
    let b = gpu.launch(
        "norm_finalize".into(),
        "reduce",
        "norm_finalize",
        &[],
        Some(&p),
        &[(5, partials), (6, state), (3, metrics), (7, clip)],
        [1, 1, 1],
    )?;
    Ok([a, b])
}
