//! Launchers for shaders/data.wgsl: batch gather from the GPU-resident dataset (u8 pixels, or u32 words
//! for code maps), and the step counters.

use super::{need, need_len, vec4_rows};
use crate::gpu::{Gpu, Launch, Result, View, Work};

/// State words (u32) shared by every kernel that needs a per-step value.
pub const W_STEP: u32 = 0;
pub const W_TRAIN_BATCH: u32 = 1;
pub const W_EVAL_BATCH: u32 = 2;
pub const W_SEED_LO: usize = 3;
pub const W_SEED_HI: usize = 4;
pub const W_NONFINITE: usize = 5;
/// Consecutive non-finite steps up to the last one (reset by a finite step; see `advance`).
pub const W_NONFINITE_RUN: usize = 6;
pub const STATE_WORDS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    dim: u32,
    n_items: u32,
    batch_word: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct Gather {
    pub batch: usize,
    pub dim: usize,
    pub n_items: usize,
    pub batch_word: u32,
    pub binarize: bool,
}

impl Gather {
    pub fn launch(&self, gpu: &Gpu, label: &str, state: View, data: View, perm: View, x: View) -> Result<Launch> {
        const OP: &str = "gather";
        need(OP, self.batch > 0 && self.dim > 0 && self.n_items > 0, || format!("empty shape {self:?}"))?;
        need_len(OP, "data", &data, (self.n_items * self.dim).div_ceil(4))?;
        need_len(OP, "perm", &perm, self.n_items)?;
        need_len(OP, "x", &x, self.batch * self.dim)?;
        let p = Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            n_items: self.n_items as u32,
            batch_word: self.batch_word,
        };
        // Whole words per row and a 16-byte aligned x: four pixels per invocation (gather_v4).
        let v4 = vec4_rows(self.dim, &[&x]) && self.batch <= 65535;
        let (entry, out, groups) = if v4 {
            ("gather_v4", 7, [self.dim.div_ceil(256) as u32, self.batch as u32, 1])
        } else {
            ("gather", 4, [(self.batch * self.dim).div_ceil(256) as u32, 1, 1])
        };
        // Reads a byte a pixel and an index a row; writes a float a pixel.
        let work =
            Work::Bytes { read: (self.batch * (self.dim + 4)) as f64, write: (4 * self.batch * self.dim) as f64 };
        Ok(gpu
            .launch(
                format!("{label} {entry}[{}x{}]", self.batch, self.dim),
                "data",
                entry,
                &[("BINARIZE", f64::from(u8::from(self.binarize)))],
                Some(&p),
                &[(1, state), (2, data), (3, perm), (out, x)],
                groups,
            )?
            .with_work(work))
    }
}

/// The u32 twin of [`Gather`] for datasets of code maps: out[r, d] = data[perm[min(state\[batch_word\]·B + r,
/// n_items − 1)]·dim + d], data [n_items, dim] u32 words, out [B, dim] u32.
#[derive(Clone, Copy, Debug)]
pub struct GatherWords {
    pub batch: usize,
    pub dim: usize,
    pub n_items: usize,
    pub batch_word: u32,
}

impl GatherWords {
    pub fn launch(&self, gpu: &Gpu, label: &str, state: View, data: View, perm: View, out: View) -> Result<Launch> {
        const OP: &str = "gather_words";
        need(OP, self.batch > 0 && self.dim > 0 && self.n_items > 0, || format!("empty shape {self:?}"))?;
        let groups = (self.batch * self.dim).div_ceil(256);
        need(OP, groups <= 65535, || format!("{self:?}: {groups} workgroups, at most 65535"))?;
        need_len(OP, "data", &data, self.n_items * self.dim)?;
        need_len(OP, "perm", &perm, self.n_items)?;
        need_len(OP, "out", &out, self.batch * self.dim)?;
        let p = Params {
            batch: self.batch as u32,
            dim: self.dim as u32,
            n_items: self.n_items as u32,
            batch_word: self.batch_word,
        };
        gpu.launch(
            format!("{label} gather_words[{}x{}]", self.batch, self.dim),
            "data",
            "gather_words",
            &[],
            Some(&p),
            &[(1, state), (2, data), (3, perm), (6, out)],
            [groups as u32, 1, 1],
        )
    }
}

/// state\[step\] += 1 and state[non-finite run] = 0 after a finite step, state[non-finite run] += 1 after
/// a non-finite one; state[train batch] += 1.
pub fn advance(gpu: &Gpu, state: View) -> Result<Launch> {
    gpu.launch::<u32>("advance".into(), "data", "advance", &[], None, &[(5, state)], [1, 1, 1])
}

/// state[eval batch] += 1.
pub fn advance_eval(gpu: &Gpu, state: View) -> Result<Launch> {
    gpu.launch::<u32>("advance_eval".into(), "data", "advance_eval", &[], None, &[(5, state)], [1, 1, 1])
}
