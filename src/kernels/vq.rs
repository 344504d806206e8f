//! Launchers for shaders/vq.wgsl: nearest-codebook assignment, the straight-through backward with the
//! commitment gradient, per-code statistics, the EMA codebook update with dead-code restart, code usage,
//! and the reconstruction MSE.

use super::{need, need_len};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, Result, View, Work};

/// Philox stream (third counter word) of the dead-code restart draws.
pub const STREAM_RESTART: u32 = 11;
/// `batch_word` value meaning "every vector counts".
pub const ALL_VALID: u32 = u32::MAX;
/// Words of the VQ metrics buffer per level: train [Σ perplexity, Σ used, batches, Σ restarts],
/// eval [Σ perplexity, Σ used, batches, unused].
pub const VQM_LEVEL_WORDS: usize = 8;
pub const VQM_TRAIN: usize = 0;
pub const VQM_EVAL: usize = 4;

const OP: &str = "vq";

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    k: u32,
    slot: u32,
    decay: f32,
    eps: f32,
    scale: f32,
    threshold: f32,
    off_count: u32,
    off_sum: u32,
    off_code: u32,
    restart: u32,
    batch: u32,
    n_items: u32,
    batch_word: u32,
    per_row: u32,
    h: u32,
    w: u32,
    c: u32,
    top: u32,
    left: u32,
    vh: u32,
    vw: u32,
    per_row2: u32,
    n1: u32,
    _pad: [u32; 3],
}

/// Where the EMA state and the codebook sit inside one slice ("table") of the parameter buffer, in f32
/// elements from the start of that slice: count N \[K\], sum m [K, D], codebook e [K, D].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    pub count: usize,
    pub sum: usize,
    pub code: usize,
}

/// Which vectors of a batch count for the usage statistics: those of the rows inside the dataset.
#[derive(Clone, Copy, Debug)]
pub struct Valid {
    pub batch: usize,
    pub n_items: usize,
    pub batch_word: u32,
    pub per_row: usize,
}

/// One quantiser: N vectors of size D against K codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vq {
    pub n: usize,
    pub d: usize,
    pub k: usize,
}

impl Vq {
    fn params(&self) -> Params {
        Params { n: self.n as u32, d: self.d as u32, k: self.k as u32, batch_word: ALL_VALID, ..Default::default() }
    }

    fn check(&self) -> Result<()> {
        need(OP, self.n > 0 && self.d > 0 && self.k > 0, || format!("empty shape {self:?}"))?;
        need(OP, self.n * self.d < u32::MAX as usize && self.k * self.d < u32::MAX as usize, || {
            format!("shape {self:?} exceeds 32-bit indexing")
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn go(
        &self,
        gpu: &Gpu,
        label: String,
        entry: &'static str,
        p: &Params,
        bindings: &[(u32, View)],
        items: usize,
    ) -> Result<Launch> {
        let wg = super::lane_width(gpu);
        let groups = grid_1d(items.div_ceil(wg) as u32);
        gpu.launch(label, "vq", entry, &[("WG", wg as f64)], Some(p), bindings, groups)
    }

    fn one_group(
        &self,
        gpu: &Gpu,
        label: String,
        entry: &'static str,
        p: &Params,
        b: &[(u32, View)],
    ) -> Result<Launch> {
        gpu.launch(label, "vq", entry, &[], Some(p), b, [1, 1, 1])
    }

    /// f32 elements of the assignment's scratch: ‖e_k‖² \[K\] (padded to 64), then z·eᵀ [N, K].
    pub fn scratch_len(&self) -> usize {
        self.k.next_multiple_of(64) + self.n * self.k
    }

    /// u32 elements of the sorted membership: starts \[K\] (padded to 64), then order \[N\].
    pub fn members_len(&self) -> usize {
        self.k.next_multiple_of(64) + self.n
    }

    fn split<'a>(&self, v: View<'a>, first: usize) -> (View<'a>, View<'a>) {
        let k64 = self.k.next_multiple_of(64);
        (View::new(v.buffer, v.offset, first), View::new(v.buffer, v.offset + (k64 * 4) as u64, v.len - k64))
    }

    /// idx\[n\], zq[n, :] = code[idx\[n\], :] and dist\[n\] = ‖z_n − e_idx‖² for the nearest code of each
    /// z[n, :] (ties to the lowest index): ‖e‖², the matmul z·eᵀ into `scratch`, then argmin and gather.
    #[allow(clippy::too_many_arguments)]
    pub fn assign(
        &self,
        gpu: &Gpu,
        label: &str,
        z: View,
        code: View,
        idx: View,
        zq: View,
        dist: View,
        scratch: View,
    ) -> Result<Vec<Launch>> {
        self.check()?;
        need_len(OP, "z", &z, self.n * self.d)?;
        need_len(OP, "code", &code, self.k * self.d)?;
        need_len(OP, "idx", &idx, self.n)?;
        need_len(OP, "zq", &zq, self.n * self.d)?;
        need_len(OP, "dist", &dist, self.n)?;
        need_len(OP, "scratch", &scratch, self.scratch_len())?;
        let (enorm, dots) = self.split(scratch, self.k);
        let p = self.params();
        let a = self
            .go(
                gpu,
                format!("{label} vq_enorm[k{}x{}]", self.k, self.d),
                "vq_enorm",
                &p,
                &[(2, code), (27, enorm)],
                self.k,
            )?
            .with_work(Work::words(self.k * self.d, self.k));
        let mm = super::matmul::Matmul { m: self.n, n: self.k, k: self.d, trans_b: true, ..Default::default() };
        let b = mm.launch(gpu, &format!("{label} vq_dots"), z, code, dots, None)?;
        let label = format!("{label} vq_argmin[{}x{} k{}]", self.n, self.d, self.k);
        // vec4 loads where the codes and the vectors come in fours.
        let c = if self.k % 4 == 0 && self.d % 4 == 0 {
            let bind = [(30, z), (31, code), (3, idx), (32, zq), (5, dist), (33, enorm), (34, dots)];
            self.go(gpu, label, "vq_argmin_v4", &p, &bind, self.n)?
        } else {
            let bind = [(1, z), (2, code), (3, idx), (4, zq), (5, dist), (28, enorm), (29, dots)];
            self.go(gpu, label, "vq_argmin", &p, &bind, self.n)?
        };
        // Reads the dots, the norms, z and the chosen codes; writes zq, idx and dist.
        let (n, d, k) = (self.n, self.d, self.k);
        Ok(vec![a, b, c.with_work(Work::words(n * k + k + 2 * n * d, n * d + 2 * n))])
    }

    /// The stable counting sort of the vectors by code, from `counts` (of all N vectors): starts and order
    /// in `members` (see [`Vq::members_len`]).
    pub fn sort(&self, gpu: &Gpu, label: &str, counts: View, idx: View, members: View) -> Result<Vec<Launch>> {
        self.check()?;
        need_len(OP, "counts", &counts, self.k)?;
        need_len(OP, "idx", &idx, self.n)?;
        need_len(OP, "members", &members, self.members_len())?;
        let (starts, order) = self.split(members, self.k);
        let p = self.params();
        let a =
            self.one_group(gpu, format!("{label} vq_scan[k{}]", self.k), "vq_scan", &p, &[(10, counts), (23, starts)])?;
        let (starts, _) = self.split(members, self.k);
        // With 4 or more indices, also as vec4 (4 a load: `vq_fill_v4`).
        let v4 = self.n >= 4;
        let b = self
            .go(
                gpu,
                format!("{label} vq_fill[{} k{}]", self.n, self.k),
                if v4 { "vq_fill_v4" } else { "vq_fill" },
                &p,
                &[(6, idx), (23, starts), (25, order), (35, idx)][..if v4 { 4 } else { 3 }],
                self.k,
            )?
            .with_work(Work::words(self.n + self.k, self.n));
        Ok(vec![a, b])
    }

    /// dz = dzq + scale·(z − code\[idx\]): the straight-through gradient plus the commitment gradient
    /// (scale = 2β / (N·D) for the loss β·mean((z − sg\[e\])²)).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        gpu: &Gpu,
        label: &str,
        scale: f32,
        z: View,
        code: View,
        idx: View,
        dzq: View,
        dz: View,
    ) -> Result<Launch> {
        self.check()?;
        for (what, v) in [("z", &z), ("dzq", &dzq), ("dz", &dz)] {
            need_len(OP, what, v, self.n * self.d)?;
        }
        need_len(OP, "code", &code, self.k * self.d)?;
        need_len(OP, "idx", &idx, self.n)?;
        let p = Params { scale, ..self.params() };
        let label = format!("{label} vq_backward[{}x{}]", self.n, self.d);
        let (n, d) = (self.n, self.d);
        let l = self.go(gpu, label, "vq_backward", &p, &[(1, z), (2, code), (6, idx), (7, dzq), (8, dz)], n * d)?;
        // Reads z, dzq, the chosen codes and idx; writes dz.
        Ok(l.with_work(Work::words(3 * n * d + n, n * d)))
    }

    /// counts\[k\] = number of vectors assigned to code k (only those of valid rows when `valid` is given).
    pub fn counts(
        &self,
        gpu: &Gpu,
        label: &str,
        valid: Option<Valid>,
        state: View,
        idx: View,
        counts: View,
    ) -> Result<Launch> {
        self.check()?;
        need_len(OP, "idx", &idx, self.n)?;
        need_len(OP, "counts", &counts, self.k)?;
        let mut p = self.params();
        if let Some(v) = valid {
            need(OP, v.batch * v.per_row == self.n, || format!("{v:?} does not cover {} vectors", self.n))?;
            p.batch = v.batch as u32;
            p.n_items = v.n_items as u32;
            p.batch_word = v.batch_word;
            p.per_row = v.per_row as u32;
        }
        let label = format!("{label} vq_counts[{} k{}]", self.n, self.k);
        let v4 = self.n >= 4;
        let entry = if v4 { "vq_counts_v4" } else { "vq_counts" };
        self.go(
            gpu,
            label,
            entry,
            &p,
            &[(6, idx), (9, counts), (13, state), (35, idx)][..if v4 { 4 } else { 3 }],
            self.k,
        )
        .map(|l| l.with_work(Work::words(self.n, self.k)))
    }

    /// After [`Vq::sort`], the EMA statistics: m ← decay·m + (1 − decay)·Σz and N ← decay·N + (1 − decay)·counts, in `table`.
    #[allow(clippy::too_many_arguments)]
    pub fn stats_ema(
        &self,
        gpu: &Gpu,
        label: &str,
        decay: f32,
        at: TableLayout,
        z: View,
        members: View,
        counts: View,
        table: View,
    ) -> Result<Launch> {
        self.check()?;
        self.check_table(&at, &table)?;
        need_len(OP, "z", &z, self.n * self.d)?;
        need_len(OP, "members", &members, self.members_len())?;
        need_len(OP, "counts", &counts, self.k)?;
        let p = Params { decay, ..self.table_params(at) };
        let label = format!("{label} vq_stats_ema[{}x{} k{}]", self.n, self.d, self.k);
        let (starts, order) = self.split(members, self.k);
        let b = [(1, z), (10, counts), (11, table), (24, starts), (26, order)];
        // Reads z, the counts, starts, order and the EMA state (m, N); writes m and N.
        let (n, d, k) = (self.n, self.d, self.k);
        let work = Work::words(n * d + n + 3 * k + k * d, k * d + k);
        self.go(gpu, label, "vq_stats_ema", &p, &b, k * d).map(|l| l.with_work(work))
    }

    /// After [`Vq::sort`]: gcode = scale·(counts·code − Σz): the codebook-loss gradient (scale = 2 / (N·D) for mean((sg\[z\] − e)²)).
    #[allow(clippy::too_many_arguments)]
    pub fn stats_grad(
        &self,
        gpu: &Gpu,
        label: &str,
        scale: f32,
        z: View,
        code: View,
        members: View,
        counts: View,
        gcode: View,
    ) -> Result<Launch> {
        self.check()?;
        need_len(OP, "z", &z, self.n * self.d)?;
        need_len(OP, "code", &code, self.k * self.d)?;
        need_len(OP, "members", &members, self.members_len())?;
        need_len(OP, "counts", &counts, self.k)?;
        need_len(OP, "gcode", &gcode, self.k * self.d)?;
        let p = Params { scale, ..self.params() };
        let label = format!("{label} vq_stats_grad[{}x{} k{}]", self.n, self.d, self.k);
        let (starts, order) = self.split(members, self.k);
        let b = [(1, z), (2, code), (10, counts), (12, gcode), (24, starts), (26, order)];
        // Reads z, the codes, the counts, starts and order; writes the codes' gradient.
        let (n, d, k) = (self.n, self.d, self.k);
        let work = Work::words(n * d + k * d + 2 * k + n, k * d);
        self.go(gpu, label, "vq_stats_grad", &p, &b, k * d).map(|l| l.with_work(work))
    }

    /// The codebook from the EMA state (Laplace smoothing `eps`), and with `restart = Some(threshold)` the
    /// reset of codes whose EMA count is below the threshold; resets are added to vqm[slot + 3].
    #[allow(clippy::too_many_arguments)]
    pub fn ema_finish(
        &self,
        gpu: &Gpu,
        label: &str,
        eps: f32,
        restart: Option<f32>,
        slot: usize,
        at: TableLayout,
        z: View,
        table: View,
        state: View,
        vqm: View,
    ) -> Result<Launch> {
        self.check()?;
        self.check_table(&at, &table)?;
        need_len(OP, "z", &z, self.n * self.d)?;
        need_len(OP, "vqm", &vqm, slot + 4)?;
        need(OP, eps > 0.0, || format!("eps must be > 0, got {eps}"))?;
        let p = Params {
            eps,
            restart: u32::from(restart.is_some()),
            threshold: restart.unwrap_or(0.0),
            slot: slot as u32,
            ..self.table_params(at)
        };
        let label = format!("{label} vq_ema_finish[k{}x{}]", self.k, self.d);
        // Reads the EMA state (N, m); writes the codes.
        let work = Work::words(self.k + self.k * self.d, self.k * self.d);
        self.one_group(gpu, label, "vq_ema_finish", &p, &[(1, z), (11, table), (13, state), (14, vqm)])
            .map(|l| l.with_work(work))
    }

    /// vqm[slot..slot + 3] += (perplexity, used codes, 1) of `counts`; usage += counts.
    pub fn usage(&self, gpu: &Gpu, label: &str, slot: usize, counts: View, vqm: View, usage: View) -> Result<Launch> {
        self.check()?;
        need_len(OP, "counts", &counts, self.k)?;
        need_len(OP, "usage", &usage, self.k)?;
        need_len(OP, "vqm", &vqm, slot + 3)?;
        let p = Params { slot: slot as u32, ..self.params() };
        let label = format!("{label} vq_usage[k{}]", self.k);
        self.one_group(gpu, label, "vq_usage", &p, &[(10, counts), (14, vqm), (15, usage)])
    }

    fn table_params(&self, at: TableLayout) -> Params {
        Params { off_count: at.count as u32, off_sum: at.sum as u32, off_code: at.code as u32, ..self.params() }
    }

    fn check_table(&self, at: &TableLayout, table: &View) -> Result<()> {
        let (k, kd) = (self.k, self.k * self.d);
        let spans = [(at.count, k), (at.sum, kd), (at.code, kd)];
        for (i, &(a, la)) in spans.iter().enumerate() {
            need_len(OP, "table", table, a + la)?;
            for &(b, lb) in &spans[i + 1..] {
                need(OP, a + la <= b || b + lb <= a, || format!("table parts overlap: {at:?}"))?;
            }
        }
        Ok(())
    }
}

/// The reconstruction loss of a batch of [B, H, W, C] images: squared error inside a window (padding
/// outside it is ignored), its gradient scaled by `scale`, and per image (Σ e², Σ VQ distances).
#[derive(Clone, Copy, Debug)]
pub struct ReconMse {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// (top, left, height, width) of the window that counts.
    pub window: (usize, usize, usize, usize),
    /// dxhat = scale·(xhat − x) inside the window.
    pub scale: f32,
    /// VQ vectors per image of the first level, and (offset in `dist`, vectors per image) of a second.
    pub per_row: usize,
    pub second: Option<(usize, usize)>,
}

impl ReconMse {
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        gpu: &Gpu,
        label: &str,
        xhat: View,
        x: View,
        dxhat: View,
        rows: View,
        dist: View,
    ) -> Result<Launch> {
        let (top, left, vh, vw) = self.window;
        need(OP, self.batch > 0 && self.h * self.w * self.c > 0, || format!("empty shape {self:?}"))?;
        need(OP, top + vh <= self.h && left + vw <= self.w, || format!("window outside the image: {self:?}"))?;
        let n = self.batch * self.h * self.w * self.c;
        for (what, v) in [("xhat", &xhat), ("x", &x), ("dxhat", &dxhat)] {
            need_len(OP, what, v, n)?;
        }
        need_len(OP, "rows", &rows, 2 * self.batch)?;
        let (n1, per2) = self.second.unwrap_or((0, 0));
        need_len(OP, "dist", &dist, (self.batch * self.per_row).max(n1 + self.batch * per2).max(1))?;
        let p = Params {
            batch: self.batch as u32,
            h: self.h as u32,
            w: self.w as u32,
            c: self.c as u32,
            top: top as u32,
            left: left as u32,
            vh: vh as u32,
            vw: vw as u32,
            scale: self.scale,
            per_row: self.per_row as u32,
            per_row2: per2 as u32,
            n1: n1 as u32,
            batch_word: ALL_VALID,
            ..Default::default()
        };
        // Reads the reconstruction, x and the distances; writes its gradient and two sums an image.
        let pixels = self.batch * self.h * self.w * self.c;
        let work = Work::words(2 * pixels + self.batch * self.per_row + self.batch * per2, pixels + 2 * self.batch);
        gpu.launch(
            format!("{label} recon_mse[{}x{}x{}x{}]", self.batch, self.h, self.w, self.c),
            "vq",
            "recon_mse",
            &[],
            Some(&p),
            &[(16, xhat), (17, x), (18, dxhat), (19, rows), (20, dist)],
            [self.batch as u32, 1, 1],
        )
        .map(|l| l.with_work(work))
    }
}
