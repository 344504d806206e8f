//! Launchers for shaders/conv.wgsl (forward and input gradient) and shaders/conv_grad.wgsl (parameter
//! gradient). Geometry and layout are described in the shader headers and in reference/conv.rs.

use super::matmul::{Im2col, Matmul, Phases};
use super::{need, need_len, Act};
use crate::gpu::{ConvKernel, Gpu, Launch, Result, View};
pub use crate::reference::conv::ConvGeom;

/// Residual input of the gather epilogue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resid {
    #[default]
    None,
    /// Added before the activation (forward: y = act(conv(x) + b + r)).
    BeforeAct,
    /// Added after the act' factor (backward: dx = conv_in_grad ⊙ act'(z) + r).
    AfterDact,
}

impl Resid {
    fn code(self) -> u32 {
        match self {
            Resid::None => 0,
            Resid::BeforeAct => 1,
            Resid::AfterDact => 2,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    batch: u32,
    ih: u32,
    iw: u32,
    c: u32,
    oh: u32,
    ow: u32,
    n: u32,
    k: u32,
    stride: u32,
    pad: u32,
    phase_rows: u32,
    real_rows: u32,
    qh: u32,
    qw: u32,
    slope: f32,
    _pad0: u32,
}

/// shaders/phase_n1.wgsl's Params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PhaseN1Params {
    batch: u32,
    ih: u32,
    iw: u32,
    c: u32,
    oh: u32,
    ow: u32,
    k: u32,
    s: u32,
    pad: u32,
    x_base: u32,
    w_base: u32,
    slope: f32,
}

/// One launch of conv.wgsl: Y [B, OH, OW, N] from X [B, IH, IW, C] (see the shader header).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvGather {
    pub batch: usize,
    pub in_hw: (usize, usize),
    pub c: usize,
    pub out_hw: (usize, usize),
    pub n: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub geom_t: bool,
    pub w_t: bool,
    pub bias: bool,
    pub act: Act,
    pub dact: Act,
    pub resid: Resid,
    pub pre_relu: bool,
    /// Never use the vec4 kernel (tests, benchmarks).
    pub scalar: bool,
    /// Pixels per invocation (1, 2, 4 or 8); None: the adapter's choice (`pixels_per_invocation`).
    pub pix: Option<usize>,
    /// Gather or tiled kernel; None: the adapter's choice ([`Gpu::conv`]) where the shape suits it
    /// (see `uses_tiled`).
    pub kernel: Option<ConvKernel>,
    /// conv_tiled's (TM, NT): rows and columns per invocation in 16ths of the tile (TM 4 or 8, NT 1–4).
    /// Forces the tiled kernel; None: chosen by the shape (`tile_shape`).
    pub tile: Option<(usize, usize)>,
    /// Run as matmuls, in the im2col or the col2im form ([`ConvGather::launches`]); None: the adapter's
    /// choice (see `uses_im2col`).
    pub im2col: Option<bool>,
    /// On the im2col path, read the matrix in place from the image rather than gather it (see
    /// [`ConvWgrad::implicit`]): None where it can, Some(false) never, Some(true) or an error.
    pub implicit: Option<bool>,
}

/// Workgroup memory of conv_tiled: a 16 × 130-float tile of the im2col block and a 16 × 80-float one of
/// the weights (shaders/conv.wgsl).
pub const CONV_TILED_SMEM: u32 = (16 * 130 + 16 * 80) * 4;

/// Tiles the tiled kernel must fill with 128-row tiles before it uses them instead of 64-row ones:
/// the same rule as matmul_tiled128 (an H100 has 132 SMs).
pub const CONV_TILE128_MIN_GROUPS: usize = super::matmul::TILE128_MIN_GROUPS;

/// Invocations the parameter gradient's splits aim at on a GPU (256 on a CPU adapter): an H100 holds
/// 132 SMs × 2048 resident invocations. Measured on one (benches/RESULTS.md, `bench --model conv-vae`
/// sweeps 2^14, 2^16 and 2^18): 2^14, the earlier value, left the 128-image conv2 gradient at 252 µs
/// against 77 µs at 2^18, each invocation walking hundreds of pixels one dependent load after another.
pub const GPU_WGRAD_INVOCATIONS: usize = 1 << 18;

/// Most splits summed by one serial split_sum pass; more are folded by 16 first (conv_grad.wgsl).
pub const SUM_MAX_SPLITS: usize = 64;

/// Elements a buffer needs for `splits` partial blocks of `len` values and the folds that sum them
/// ([`sum_partials`]).
pub fn partials_len(splits: usize, len: usize) -> usize {
    (splits + ConvWgrad::fold_levels(splits).iter().sum::<usize>()) * len
}

/// The launches that add `splits` partial blocks of `len` values, stored one after another at the
/// start of `partials` (which has [`partials_len`] elements), into `out[out_offset..]`, in a fixed
/// order: split_fold by 16 while more than SUM_MAX_SPLITS remain, then split_sum.
pub fn sum_partials(
    gpu: &Gpu,
    label: &str,
    partials: View,
    out: View,
    out_offset: usize,
    splits: usize,
    len: usize,
) -> Result<Vec<Launch>> {
    const OP: &str = "sum_partials";
    need_len(OP, "partials", &partials, partials_len(splits, len))?;
    need_len(OP, "out", &out, out_offset + len)?;
    need(OP, !std::ptr::eq(partials.buffer, out.buffer), || "partials and out share a buffer".into())?;
    need(OP, len.div_ceil(256) <= 65535, || format!("{len} values exceed one sum launch"))?;
    let mut params = GradParams { len: len as u32, ..bytemuck::Zeroable::zeroed() };
    let mut launches = ConvWgrad::fold(gpu, label, &mut params, partials, splits)?;
    params.out_offset = out_offset as u32;
    let (entry, bindings, per) = if four_ok(&params) {
        ("split_sum4", [(4, partials), (6, out)], 1024)
    } else {
        ("split_sum", [(1, partials), (3, out)], 256)
    };
    launches.push(gpu.launch(
        format!("{label} {entry}"),
        "conv_grad",
        entry,
        &[],
        Some(&params),
        &bindings,
        [len.div_ceil(per) as u32, 1, 1],
    )?);
    Ok(launches)
}

/// Whether split_sum and untap can take their vec4 entries (split_sum4, untap4: 4 values an
/// invocation, a quarter of the loads and stores, which lavapipe runs lane by lane): the block length
/// and both offsets multiples of 4 (untap also needs N to be; retap4, which has no offsets, only that).
/// On lavapipe split_sum4 ran 1.45-1.9x faster than split_sum, untap4 1.8x, retap4 1.7-2.5x
/// (benches/RESULTS.md, 2026-11-29, the eighteenth session).
fn four_ok(params: &GradParams) -> bool {
    params.len % 4 == 0 && params.in_offset % 4 == 0 && params.out_offset % 4 == 0
}

impl ConvGather {
    /// The forward pass of a layer with geometry `g` on `batch` images of h×w: y = act(layer(x) + b).
    pub fn forward(g: &ConvGeom, batch: usize, h: usize, w: usize, act: Act) -> Result<ConvGather> {
        let out = g.out_hw(h, w).map_err(|m| crate::gpu::GpuError::Shape { op: "conv", message: m })?;
        Ok(ConvGather {
            batch,
            in_hw: (h, w),
            c: g.cin,
            out_hw: out,
            n: g.cout,
            k: g.k,
            stride: g.stride,
            pad: g.pad,
            geom_t: g.transposed,
            bias: true,
            act,
            ..Default::default()
        })
    }

    /// The input gradient of that layer: dx [B, h, w, Cin] from dy [B, OH, OW, Cout], ⊙ dact'(z).
    pub fn input_grad(g: &ConvGeom, batch: usize, h: usize, w: usize, dact: Act) -> Result<ConvGather> {
        let out = g.out_hw(h, w).map_err(|m| crate::gpu::GpuError::Shape { op: "conv", message: m })?;
        Ok(ConvGather {
            batch,
            in_hw: out,
            c: g.cout,
            out_hw: (h, w),
            n: g.cin,
            k: g.k,
            stride: g.stride,
            pad: g.pad,
            geom_t: !g.transposed,
            w_t: true,
            dact,
            ..Default::default()
        })
    }

    pub fn flops(&self) -> f64 {
        // Every (small pixel, tap) pair that lands in the image: count by the geometry exactly.
        let (small, big) = if self.geom_t { (self.in_hw, self.out_hw) } else { (self.out_hw, self.in_hw) };
        let mut pairs = 0usize;
        crate::reference::conv::for_each_pair(1, small, big, self.k, self.stride, self.pad, |_, _, _| pairs += 1);
        2.0 * (self.batch * pairs * self.c * self.n) as f64
    }

    pub fn vec4_ok(&self) -> bool {
        self.c % 4 == 0 && self.n % 4 == 0
    }

    /// The one-output-channel kernel applies (conv_gather_n1).
    pub fn n1_ok(&self) -> bool {
        self.c % 4 == 0 && self.n == 1
    }

    fn wg(gpu: &Gpu) -> usize {
        super::lane_width(gpu)
    }

    /// Whether the launch runs conv_tiled: forced by `tile` or `kernel`, else where the adapter's choice
    /// is tiled and the layer has at least 16 output channels (one tile column; with fewer most of the
    /// tile would be idle, and N = 1 has its own kernel).
    pub fn uses_tiled(&self, gpu: &Gpu) -> bool {
        if self.tile.is_some() {
            return true;
        }
        match self.kernel {
            Some(k) => k == ConvKernel::Tiled,
            None => !self.scalar && gpu.conv == ConvKernel::Tiled && self.n >= 16 && Self::tiled_fits(gpu),
        }
    }

    /// The device's limits allow conv_tiled: 256 invocations and CONV_TILED_SMEM bytes a workgroup.
    pub fn tiled_fits(gpu: &Gpu) -> bool {
        gpu.limits.max_compute_invocations_per_workgroup >= 256
            && gpu.limits.max_compute_workgroup_storage_size >= CONV_TILED_SMEM
    }

    /// conv_tiled's (TM, NT): NT covers N in columns of 16 (at most 4); TM = 8 (128-row tiles) where
    /// that still gives CONV_TILE128_MIN_GROUPS workgroups, else 4.
    pub fn tile_shape(&self, rows: usize) -> (usize, usize) {
        if let Some(t) = self.tile {
            return t;
        }
        let nt = self.n.div_ceil(16).clamp(1, 4);
        let groups128 = rows.div_ceil(128) * self.n.div_ceil(16 * nt);
        (if groups128 >= CONV_TILE128_MIN_GROUPS { 8 } else { 4 }, nt)
    }

    /// Output pixels per invocation: `pix` if set; 8 on a CPU adapter (the fewest weight loads, which
    /// set the speed there); 1 on a GPU (the most invocations and the shortest chains of loads: on an
    /// H100, 1 was the fastest of 1/2/4/8 on every layer of the conv VAE at batch 1024, up to 1.6× faster
    /// than 8 on the one-channel layers, and at most 21% slower than the fastest at batch 128;
    /// benches/RESULTS.md).
    pub fn pixels_per_invocation(&self, gpu: &Gpu) -> usize {
        match self.pix {
            Some(p) => p,
            None if gpu.is_cpu() => 8,
            None => 1,
        }
    }

    /// The im2col gather that turns this launch into one matmul, where there is one: a conv layer's
    /// forward gathers its input over the output pixels (Y = act(I · [W; b])), a transposed conv's input
    /// gradient gathers the output gradient over the input pixels (dX = I · Wtᵀ ⊙ act'). The other two
    /// (a transposed conv's forward, a conv's input gradient) would gather mostly zeros at stride 2: they
    /// have the col2im form instead (`col2im_ok`), except a conv's input gradient at stride 1 with fewer
    /// output than input channels (`flipped_form`). A residual sum is not a matmul epilogue: a forward
    /// with one has no im2col form; the flipped form adds its residual with one more launch.
    fn im2col_gather(&self) -> Option<ConvWgrad> {
        let base = ConvWgrad {
            batch: self.batch,
            small_hw: self.out_hw,
            big_hw: self.in_hw,
            c: self.c,
            n: self.n,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            gather_b: false,
            ones: true,
            pre_relu: self.pre_relu,
            scalar: false,
            splits: None,
            im2col: Some(true),
            gathered: false,
            flat: None,
            implicit: self.implicit,
        };
        if self.flipped_form() {
            // dX = conv(dY, flipped W) at stride 1 with padding K − 1 − pad: dY gathered over dX's
            // pixels, its channels the matrix's (`launches` reorders the weights with their taps flipped).
            return Some(ConvWgrad { stride: 1, pad: self.k - 1 - self.pad, ..base });
        }
        if self.geom_t || self.resid != Resid::None {
            return None;
        }
        if !self.w_t && self.bias && self.dact == Act::Identity {
            Some(base)
        } else if self.w_t && !self.bias && !self.pre_relu && self.act == Act::Identity {
            Some(ConvWgrad { c: self.n, n: self.c, gather_b: true, ones: false, ..base })
        } else {
            None
        }
    }

    /// Whether a conv's input gradient takes the im2col form at stride 1 (where the gather holds no
    /// zeros but the padding's): dX = conv(dY, W with its taps flipped), one matmul over dY's gathered
    /// matrix with act' in the epilogue and any residual added by one more launch. Only where dY has
    /// fewer channels than dX, so that the gathered matrix (pixels × K·K·C) is smaller than the col2im
    /// form's (pixel, tap) products (pixels × K·K·N), which col2im then reads again: a VQ-VAE residual
    /// block's 3×3 conv (128 → 32 channels) has K = 32 in the col2im form's product and K·K·32 = 288 in
    /// this one.
    fn flipped_form(&self) -> bool {
        self.geom_t
            && self.w_t
            && self.stride == 1
            && self.pad < self.k
            && self.c < self.n
            && !self.bias
            && !self.pre_relu
            && self.act == Act::Identity
            && self.resid != Resid::BeforeAct
    }

    /// Whether this launch, on its matmul path, gathers the same im2col matrix as the weight gradient
    /// `wgrad` on its own: both on the im2col path, same image, geometry and channels. A transposed
    /// conv's input gradient gathers its output gradient exactly as the weight gradient does.
    /// (A conv's input gradient in the flipped form gathers dY, which no weight gradient gathers so.)
    /// Never where the launch may read its matrix in place ([`ConvWgrad::implicit_possible`]): then no
    /// matrix is gathered to share.
    pub fn gathers_as(&self, gpu: &Gpu, wgrad: &ConvWgrad) -> bool {
        !self.flipped_form()
            && self.uses_im2col(gpu)
            && wgrad.uses_im2col(gpu)
            && self.im2col_gather().is_some_and(|g| {
                // Neither this launch (the matrix as A) nor, for a transposed conv, its weight
                // gradient (as B) may read it in place.
                g.same_im2col(wgrad)
                    && !g.implicit_possible(gpu, false)
                    && !(g.gather_b && g.implicit_possible(gpu, true))
            })
    }

    /// Whether the launch has the col2im form (conv_grad.wgsl `col2im`): a transposed conv's forward or
    /// a conv's input gradient (the big image written from the small one) as one matmul from the small
    /// image to every (pixel, tap) product, summed into place with the epilogue (a residual sum
    /// included). No relu on read.
    fn col2im_ok(&self) -> bool {
        let form =
            if self.w_t { !self.bias && self.act == Act::Identity } else { self.bias && self.dact == Act::Identity };
        self.geom_t && !self.pre_relu && form
    }

    /// The col2im form as one implicit GEMM per output phase ([`Matmul::phases`]: the (pixel, tap)
    /// products neither written nor summed by col2im) reading `x` in place, where it can: on lavapipe
    /// with the implicit im2col's conditions ([`Matmul::im2col_runs`]: `x` aliased, the subgroup
    /// kernel's texture form, a phase of [`super::matmul::SUBGROUP_MIN_MACS`] or more), channels in and
    /// out multiples of 8, the phases tiling the output ([`Phases::im2col`]) and no residual the
    /// epilogue cannot take (a forward's before the activation; an input gradient's after act', added
    /// by a launch of its own).
    fn phases_matmul(&self, gpu: &Gpu, x: &View) -> Option<Matmul> {
        let resid_ok = if self.w_t { self.resid != Resid::BeforeAct } else { self.resid != Resid::AfterDact };
        if !self.col2im_ok() || !resid_ok || self.implicit == Some(false) || self.c % 8 != 0 || self.n % 8 != 0 {
            return None;
        }
        let ph = Phases { stride: self.stride, k: self.k, pad: self.pad, out_hw: self.out_hw };
        let g = ph.im2col(self.batch, self.in_hw, self.c)?;
        let (m, k) = (g.rows(), g.cols());
        let mm = if self.w_t {
            Matmul { m, n: self.n, k, trans_b: true, dact: self.dact, ..Default::default() }
        } else {
            let resid = self.resid == Resid::BeforeAct;
            Matmul { m, n: self.n, k, bias: true, act: self.act, resid, ..Default::default() }
        };
        let mm = Matmul { im2col: Some(g), phases: Some(ph), ..mm };
        mm.im2col_runs(gpu, &g, x).then_some(mm)
    }

    /// `phase_n1`'s geometry (one phase's implicit im2col) where it runs with input `x` (the weights
    /// aside), with `x`'s aliased texture and the texel it starts at; else None.
    fn phase_n1_geom(&self, gpu: &Gpu, x: &View) -> Option<(Im2col, crate::gpu::pipeline::OperandTexture, u32)> {
        let form = self.col2im_ok() && !self.w_t && self.n == 1 && self.c % 4 == 0 && self.resid == Resid::None;
        let ph = Phases { stride: self.stride, k: self.k, pad: self.pad, out_hw: self.out_hw };
        let geom = ph.im2col(self.batch, self.in_hw, self.c).filter(|g| g.k <= 4);
        let g = geom.filter(|_| {
            form && self.implicit != Some(false) && gpu.alias_operands && gpu.tex_operands && x.offset % 16 == 0
        })?;
        gpu.alias_texture(x, g.image_len() / 4).map(|(t, base)| (g, t, base))
    }

    /// A transposed conv's forward to one channel (an image decoder's last layer) in its col2im form as
    /// shaders/phase_n1.wgsl, where it can: on lavapipe (aliased buffers, texture operands), the input
    /// read in place (its buffer aliased), C a multiple of 4, the phases tiling the output
    /// ([`Phases::im2col`]) with T = K/S of 4 or less, no residual, and `implicit` not Some(false).
    /// The weight block is read in place too, or copied into an operand texture before the launch.
    fn phase_n1(&self, gpu: &Gpu, label: &str, x: View, w: View, y: View) -> Result<Option<Launch>> {
        let Some((g, xt, x_base)) = self.phase_n1_geom(gpu, &x).filter(|_| w.offset % 16 == 0) else {
            return Ok(None);
        };
        let Some((wt, w_base, fill)) = gpu.texture_operand(1, &w, self.k * self.k * self.c / 4) else {
            return Ok(None);
        };
        let s = self.stride;
        let (gh, gw) = g.small_hw;
        let items = self.batch * gh * gw.div_ceil(8);
        let wg = 8;
        let params = PhaseN1Params {
            batch: self.batch as u32,
            ih: self.in_hw.0 as u32,
            iw: self.in_hw.1 as u32,
            c: self.c as u32,
            oh: self.out_hw.0 as u32,
            ow: self.out_hw.1 as u32,
            k: self.k as u32,
            s: s as u32,
            pad: self.pad as u32,
            x_base,
            w_base,
            slope: Act::LEAKY_SLOPE,
        };
        let (ih, iw) = self.in_hw;
        let (oh, ow) = self.out_hw;
        // Stride 2 with rows of whole vec4s: both x phases an invocation (phase_n1_x2).
        let x2 = s == 2 && ow % 4 == 0 && y.offset % 16 == 0;
        let entry = if x2 { "phase_n1_x2" } else { "phase_n1" };
        let constants =
            [("WG", wg as f64), ("ACT", self.act.code() as f64), ("T", g.k as f64), ("PAD", self.pad as f64)];
        let label = format!(
            "{label} {entry}[{}x{ih}x{iw}x{} -> {oh}x{ow}x1 k{} s{s} p{}]",
            self.batch, self.c, self.k, self.pad
        );
        let groups = [items.div_ceil(wg) as u32, 1, if x2 { s } else { s * s } as u32];
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        need("conv", groups[0] <= max, || format!("grid {groups:?} exceeds {max} workgroups per dimension"))?;
        let textures = [(2, xt), (3, wt)];
        let launch = gpu.launch_tex(
            label,
            "phase_n1",
            entry,
            &constants,
            Some(&params),
            &[(if x2 { 5 } else { 1 }, y), (4, w)],
            &textures,
            fill.into_iter().collect(),
            groups,
        )?;
        Ok(Some(launch))
    }

    /// The scratch and product elements of the launch's matmul form, or None where it has none: the
    /// gathered matrix, and a transposed conv's input gradient's reordered weights (im2col form); a
    /// transposed conv forward's reordered weights, and the (pixel, tap) products (col2im form).
    fn im2col_sizes(&self) -> Option<(usize, usize)> {
        let taps = self.k * self.k;
        if let Some(wg) = self.im2col_gather() {
            return Some((wg.scratch_im2col(), if self.w_t { taps * self.c * self.n } else { 0 }));
        }
        let small = self.batch * self.in_hw.0 * self.in_hw.1;
        self.col2im_ok().then(|| (if self.w_t { 0 } else { taps * self.c * self.n }, small * taps * self.n))
    }

    /// Whether [`ConvGather::launches`] runs the launch as matmuls (im2col or col2im form): `im2col` if
    /// set (where the launch has a form); else where `kernel` forces the matmul forms; else where the
    /// adapter's choice is the matmul forms (`--conv matmul`; the choice on CPU adapters, where it is
    /// the matmul kernel that reaches the FMA units: benches/RESULTS.md), on a GPU only for launches
    /// with 16+ output channels (fewer have the gather and one-channel kernels, as for the tiled
    /// kernel), unless a gather kernel or its shape is forced. Never where a scratch matrix outgrows a
    /// storage binding, unless `im2col` forces it.
    pub fn uses_im2col(&self, gpu: &Gpu) -> bool {
        let Some((scratch, product)) = self.im2col_sizes() else {
            return false;
        };
        let fits = (scratch.max(product) * 4) as u64 <= gpu.limits.max_storage_buffer_binding_size;
        match (self.im2col, self.kernel) {
            (Some(i), _) => i,
            (None, Some(k)) => k == ConvKernel::Matmul && fits,
            (None, None) => {
                gpu.conv == ConvKernel::Matmul
                    && (gpu.is_cpu() || self.n >= 16)
                    && self.pix.is_none()
                    && self.tile.is_none()
                    && !self.scalar
                    && fits
            }
        }
    }

    /// Which of the three kinds of kernel [`ConvGather::launches`] runs.
    pub fn runs(&self, gpu: &Gpu) -> ConvKernel {
        if self.uses_im2col(gpu) {
            ConvKernel::Matmul
        } else if self.uses_tiled(gpu) {
            ConvKernel::Tiled
        } else {
            ConvKernel::Gather
        }
    }

    /// Elements of the scratch buffer [`ConvGather::launches`] needs on the matmul path (see
    /// `im2col_sizes`), else 0.
    pub fn scratch_len(&self, gpu: &Gpu) -> usize {
        match self.im2col_sizes() {
            Some((s, _)) if self.uses_im2col(gpu) => s,
            _ => 0,
        }
    }

    /// Elements of the second buffer [`ConvGather::launches`] needs on the matmul path, else 0.
    pub fn product_len(&self, gpu: &Gpu) -> usize {
        match self.im2col_sizes() {
            Some((_, p)) if self.uses_im2col(gpu) => p,
            _ => 0,
        }
    }

    /// The col2im form's launches: a transposed conv's weights reordered into `scratch` (retap); the
    /// (pixel, tap) products into `product` (X · Wt, or a conv's dY · Wᵀ); col2im into Y.
    #[allow(clippy::too_many_arguments)]
    fn launch_col2im(
        &self,
        gpu: &Gpu,
        label: &str,
        x: View,
        w: View,
        y: View,
        z: Option<View>,
        r: Option<View>,
        scratch: Option<View>,
        product: View,
    ) -> Result<Vec<Launch>> {
        const OP: &str = "conv";
        let (slen, plen) = self.im2col_sizes().expect("the col2im form");
        need_len(OP, "product", &product, plen)?;
        let taps = self.k * self.k;
        let small = self.batch * self.in_hw.0 * self.in_hw.1;
        // Small and big image as conv_grad.wgsl's Params name them (C the small image's channels);
        // col2im and retap read only the geometry.
        let params = ConvWgrad {
            batch: self.batch,
            small_hw: self.in_hw,
            big_hw: self.out_hw,
            c: self.c,
            n: self.n,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            ..Default::default()
        }
        .params(1);
        let mut out = Vec::new();
        let mm = Matmul { m: small, n: taps * self.n, k: self.c, ..Default::default() };
        if self.w_t {
            // dY · Wᵀ: the conv's block [K·K·N + 1, C] read as the transposed operand (its bias row unread).
            out.push(Matmul { trans_b: true, ..mm }.launch(gpu, label, x, w, product, None)?);
        } else {
            let scratch = scratch.ok_or_else(|| crate::gpu::GpuError::Shape {
                op: OP,
                message: format!("the col2im path needs a scratch buffer of {slen} floats"),
            })?;
            out.push(retap(gpu, label, &params, w, scratch, &product, false)?);
            out.push(mm.launch(gpu, label, x, scratch, product, None)?);
        }
        // 8 channels an invocation with 64-bit accesses (conv_grad64.wgsl) where the device has them on
        // and N is a multiple of 8; else 4.
        let wide = gpu.wide_loads && self.n % 8 == 0;
        let total = self.batch * self.out_hw.0 * self.out_hw.1 * self.n.div_ceil(if wide { 8 } else { 4 });
        let constants = [
            ("ONES", f64::from(u8::from(self.bias))),
            ("ACT", self.act.code() as f64),
            ("DACT", self.dact.code() as f64),
            ("SLOPE", f64::from(Act::LEAKY_SLOPE)),
            ("VEC4", f64::from(u8::from(self.n % 4 == 0))),
            ("RESID", self.resid.code() as f64),
            ("STRIDE", self.stride as f64),
        ];
        let second = if self.bias { w } else { z.unwrap_or(product) };
        let r = r.unwrap_or(product);
        let (shader, entry, bindings) = if wide {
            ("conv_grad64", "col2im64", vec![(9, product), (10, second), (11, y), (12, r)])
        } else {
            let b = vec![(1, product), (2, second), (3, y), (4, product), (5, second), (6, y), (7, r), (8, r)];
            ("conv_grad", "col2im", b)
        };
        out.push(gpu.launch(
            format!("{label} col2im[{small}x{taps}x{} -> {}x{}x{}]", self.n, self.batch, self.out_hw.0, self.out_hw.1),
            shader,
            entry,
            &constants,
            Some(&params),
            &bindings,
            [total.div_ceil(256).clamp(1, 65535) as u32, 1, 1],
        )?);
        Ok(out)
    }

    /// The launch as [`ConvGather::launch`] does it, or on the matmul path (`uses_im2col`): in the
    /// im2col form an im2col gather into `scratch` (`scratch_len` elements), for a transposed conv's
    /// input gradient the weights reordered into `product` (`product_len`), and one matmul with the
    /// epilogue; in the col2im form (`col2im_ok`) a transposed conv's weights reordered into `scratch`,
    /// the (pixel, tap) products into `product` and their sum with the epilogue.
    #[allow(clippy::too_many_arguments)]
    pub fn launches(
        &self,
        gpu: &Gpu,
        label: &str,
        x: View,
        w: View,
        y: View,
        z: Option<View>,
        r: Option<View>,
        scratch: Option<View>,
        product: Option<View>,
    ) -> Result<Vec<Launch>> {
        const OP: &str = "conv";
        if !self.uses_im2col(gpu) {
            return Ok(vec![self.launch(gpu, label, x, w, y, z, r)?]);
        }
        self.check(&x, &w, &y, z.as_ref(), r.as_ref())?;
        let missing = |what: &str, n: usize| crate::gpu::GpuError::Shape {
            op: OP,
            message: format!("the matmul path needs a {what} buffer of {n} floats"),
        };
        let Some(wg) = self.im2col_gather() else {
            if let Some(mm) = self.phases_matmul(gpu, &x) {
                let zr = if mm.resid { r } else { z };
                let mut out = vec![mm.launch(gpu, label, x, w, y, zr)?];
                if self.resid == Resid::AfterDact {
                    let rows = self.batch * self.out_hw.0 * self.out_hw.1;
                    let r = r.ok_or_else(|| missing("residual", y.len))?;
                    out.push(super::elementwise::add_into(gpu, label, rows * self.n, y, r)?);
                }
                return Ok(out);
            }
            if let Some(l) = self.phase_n1(gpu, label, x, w, y)? {
                return Ok(vec![l]);
            }
            need(OP, self.implicit != Some(true), || {
                format!("no phase GEMMs for {self:?} on {} (ConvGather::phases_matmul)", gpu.summary.name)
            })?;
            let plen = self.product_len(gpu);
            let product = product.ok_or_else(|| missing("product", plen))?;
            return self.launch_col2im(gpu, label, x, w, y, z, r, scratch, product);
        };
        let rows = self.batch * self.out_hw.0 * self.out_hw.1;
        // The matrix read in place from x (no gather), or gathered into the scratch.
        let mm = self.im2col_matmul();
        let (mm, a, gather) = match wg.implicit(gpu, mm, &x, false)? {
            Some(mm) => (mm, x, None),
            None => {
                let scratch = scratch.ok_or_else(|| missing("scratch", wg.scratch_im2col()))?;
                (mm, scratch, Some(wg.im2col_launch(gpu, label, x, x, scratch)?))
            }
        };
        if !self.w_t {
            return Ok(gather.into_iter().chain([mm.launch(gpu, label, a, w, y, None)?]).collect());
        }
        let product = product.ok_or_else(|| missing("product", self.product_len(gpu)))?;
        // The weights as [N, K·K·C] (the block's C × N rows per tap, reordered; taps flipped in the
        // flipped form), read transposed.
        let flip = self.flipped_form();
        let params = ConvWgrad { c: self.n, n: self.c, ..wg }.params(1);
        let retap = retap(gpu, label, &params, w, product, &a, flip)?;
        let mut out: Vec<Launch> = gather.into_iter().collect();
        out.extend([retap, mm.launch(gpu, label, a, product, y, z)?]);
        if self.resid == Resid::AfterDact {
            // dx = (dY · Wtᵀ) ⊙ act'(z) + r: the matmul's epilogue has act' or a residual, not both.
            let r = r.ok_or_else(|| missing("residual", y.len))?;
            out.push(super::elementwise::add_into(gpu, label, rows * self.n, y, r)?);
        }
        Ok(out)
    }

    /// The im2col form's product over the gathered matrix: a conv's forward (bias, activation), a
    /// transposed conv's input gradient (the weights reordered and read transposed, act').
    fn im2col_matmul(&self) -> Matmul {
        let (m, k) = (self.batch * self.out_hw.0 * self.out_hw.1, self.k * self.k * self.c);
        if self.w_t {
            Matmul { m, n: self.n, k, trans_b: true, dact: self.dact, ..Default::default() }
        } else {
            Matmul { m, n: self.n, k, bias: true, act: self.act, ..Default::default() }
        }
    }

    /// The scratch and product elements [`ConvGather::launches`] uses with input `x`: `scratch_len` and
    /// `product_len`, less what its in-place forms leave unused (an implicit im2col's matrix, the col2im
    /// products of the phase forms). What a net sizes its shared buffers by.
    pub fn needs(&self, gpu: &Gpu, x: &View) -> (usize, usize) {
        let (s, p) = (self.scratch_len(gpu), self.product_len(gpu));
        if s + p == 0 {
            return (0, 0);
        }
        match self.im2col_gather() {
            None if self.phases_matmul(gpu, x).is_some() || self.phase_n1_geom(gpu, x).is_some() => (0, 0),
            None => (s, p),
            Some(wg) => match wg.implicit(gpu, self.im2col_matmul(), x, false) {
                Ok(Some(_)) => (0, p),
                _ => (s, p),
            },
        }
    }

    /// The shape and buffer checks every path makes.
    fn check(&self, x: &View, w: &View, y: &View, z: Option<&View>, r: Option<&View>) -> Result<()> {
        const OP: &str = "conv";
        let (ih, iw) = self.in_hw;
        let (oh, ow) = self.out_hw;
        need(OP, self.batch > 0 && ih * iw * oh * ow > 0 && self.c > 0 && self.n > 0 && self.k > 0, || {
            format!("empty shape {self:?}")
        })?;
        need(OP, self.stride > 0 && self.pad < self.k, || format!("need stride >= 1 and pad < k: {self:?}"))?;
        need(OP, !(self.bias && self.w_t), || "bias needs the untransposed weights".into())?;
        need_len(OP, "X", x, self.batch * ih * iw * self.c)?;
        need_len(OP, "W", w, self.k * self.k * self.c * self.n + if self.bias { self.n } else { 0 })?;
        let out_len = self.batch * oh * ow * self.n;
        need_len(OP, "Y", y, out_len)?;
        if self.dact != Act::Identity {
            need(OP, z.is_some(), || "dact needs Z".into())?;
            need_len(OP, "Z", z.unwrap(), out_len)?;
        }
        if self.resid != Resid::None {
            need(OP, r.is_some(), || "resid needs R".into())?;
            need_len(OP, "R", r.unwrap(), out_len)?;
        }
        Ok(())
    }

    /// One launch of the gather (or tiled) kernel, whatever `uses_im2col` says.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        gpu: &Gpu,
        label: &str,
        x: View,
        w: View,
        y: View,
        z: Option<View>,
        r: Option<View>,
    ) -> Result<Launch> {
        const OP: &str = "conv";
        self.check(&x, &w, &y, z.as_ref(), r.as_ref())?;
        let (ih, iw) = self.in_hw;
        let (oh, ow) = self.out_hw;
        let out_len = self.batch * oh * ow * self.n;
        let wg = Self::wg(gpu);
        let pix = self.pixels_per_invocation(gpu);
        need(OP, matches!(pix, 1 | 2 | 4 | 8), || format!("{pix} pixels per invocation (1, 2, 4 or 8)"))?;
        let s = self.stride;
        let (qh, qw) = if self.geom_t { (oh.div_ceil(s), ow.div_ceil(s)) } else { (oh, ow) };
        let real_rows = self.batch * qh * qw;
        // Padded to 8·WG rows whatever PIX (which divides 8), so a GEOM_T phase is whole workgroups.
        let phase_rows = real_rows.next_multiple_of(8 * wg);
        let phases = if self.geom_t { s * s } else { 1 };
        let tiled = self.uses_tiled(gpu);
        let (tm, nt) = self.tile_shape(real_rows * phases);
        need(OP, !tiled || (matches!(tm, 4 | 8) && (1..=4).contains(&nt)), || {
            format!("conv_tiled needs TM 4 or 8 and NT 1 to 4, not ({tm}, {nt})")
        })?;
        need(OP, !tiled || Self::tiled_fits(gpu), || {
            let l = &gpu.limits;
            format!(
                "conv_tiled needs 256 invocations and {CONV_TILED_SMEM} bytes of workgroup memory (limits: {}, {})",
                l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size
            )
        })?;
        // 8·WG is a multiple of 128 (lane_width is 16 or 64), so a GEOM_T phase is whole tiles too.
        let groups = if tiled {
            [(phases * phase_rows / (16 * tm)) as u32, self.n.div_ceil(16 * nt) as u32, 1]
        } else {
            [(phases * phase_rows / (pix * wg)) as u32, self.n.div_ceil(4) as u32, 1]
        };
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        need(OP, groups[0] <= max && groups[1] <= max, || {
            format!("grid {groups:?} exceeds {max} workgroups per dimension (batch too large for this image size)")
        })?;
        need(OP, phases * phase_rows < u32::MAX as usize && out_len < u32::MAX as usize, || {
            "tensor too large for 32-bit indexing".into()
        })?;
        let params = GatherParams {
            batch: self.batch as u32,
            ih: ih as u32,
            iw: iw as u32,
            c: self.c as u32,
            oh: oh as u32,
            ow: ow as u32,
            n: self.n as u32,
            k: self.k as u32,
            stride: s as u32,
            pad: self.pad as u32,
            phase_rows: phase_rows as u32,
            real_rows: real_rows as u32,
            qh: qh as u32,
            qw: qw as u32,
            slope: Act::LEAKY_SLOPE,
            _pad0: 0,
        };
        let mut constants = vec![
            ("GEOM_T", f64::from(u8::from(self.geom_t))),
            ("W_T", f64::from(u8::from(self.w_t))),
            ("BIAS", f64::from(u8::from(self.bias))),
            ("ACT", self.act.code() as f64),
            ("DACT", self.dact.code() as f64),
            ("RESID", self.resid.code() as f64),
            ("PRE_RELU", f64::from(u8::from(self.pre_relu))),
        ];
        // Only the overrides the entry point reads, so that one pipeline serves every value of the others.
        if tiled {
            constants.extend([("TM", tm as f64), ("NT", nt as f64)]);
        } else {
            constants.extend([("WG", wg as f64), ("PIX", pix as f64)]);
        }
        let vec4 = !tiled && !self.scalar && self.vec4_ok();
        let n1 = !tiled && !self.scalar && self.n1_ok();
        let entry = if tiled {
            "conv_tiled"
        } else if vec4 {
            "conv_gather_v4"
        } else if n1 {
            "conv_gather_n1"
        } else {
            "conv_gather"
        };
        let per = if tiled { format!("{}x{}", 16 * tm, 16 * nt) } else { format!("{pix}px") };
        let label = format!(
            "{label} {entry}[{}x{ih}x{iw}x{} -> {oh}x{ow}x{} k{} s{} p{}{}{} /{per}]",
            self.batch,
            self.c,
            self.n,
            self.k,
            s,
            self.pad,
            if self.geom_t { " T" } else { "" },
            if self.w_t { " Wt" } else { "" }
        );
        // Z and R are always bound (the layout is fixed); X stands in when the epilogue does not read them.
        let z = z.unwrap_or(x);
        let r = r.unwrap_or(x);
        let bindings: &[(u32, View)] = if vec4 {
            &[(6, x), (7, w), (8, y), (9, z), (10, r)]
        } else if n1 {
            &[(6, x), (7, w), (2, w), (3, y), (4, z), (5, r)]
        } else {
            &[(1, x), (2, w), (3, y), (4, z), (5, r)]
        };
        gpu.launch(label, "conv", entry, &constants, Some(&params), bindings, groups)
    }
}

/// conv_grad.wgsl `retap`: the K·K·C × N weight rows of the block `w` (the geometry of `params`) into
/// `dst` as the [C, K·K·N] matrix; `dst` must not share a buffer with `other`, which the same
/// launches use.
fn retap(gpu: &Gpu, label: &str, params: &GradParams, w: View, dst: View, other: &View, flip: bool) -> Result<Launch> {
    const OP: &str = "conv";
    let len = (params.k * params.k * params.c * params.n) as usize;
    need_len(OP, "reordered weights", &dst, len)?;
    need(OP, !std::ptr::eq(dst.buffer, other.buffer), || "scratch and product share a buffer".into())?;
    need(OP, len.div_ceil(256) <= 65535, || format!("{len} weights exceed one reorder launch"))?;
    let (name, constants): (&str, &[(&str, f64)]) =
        if flip { ("retap flipped", &[("FLIP", 1.0)]) } else { ("retap", &[]) };
    // 4 weights an invocation (retap4) where N is a multiple of 4.
    let (entry, bindings, per) =
        if params.n % 4 == 0 { ("retap4", [(4, w), (6, dst)], 1024) } else { ("retap", [(1, w), (3, dst)], 256) };
    let grid = [len.div_ceil(per) as u32, 1, 1];
    gpu.launch(format!("{label} {name}"), "conv_grad", entry, constants, Some(params), &bindings, grid)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GradParams {
    batch: u32,
    sh: u32,
    sw: u32,
    c: u32,
    bh: u32,
    bw: u32,
    n: u32,
    k: u32,
    stride: u32,
    pad: u32,
    splits: u32,
    rows_per_split: u32,
    tiles: u32,
    out_offset: u32,
    len: u32,
    in_offset: u32,
}

/// One parameter-gradient reduction of conv_grad.wgsl (see its header).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvWgrad {
    pub batch: usize,
    pub small_hw: (usize, usize),
    pub big_hw: (usize, usize),
    /// Channels of A (rows of the weight block per tap) and of G (columns).
    pub c: usize,
    pub n: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub gather_b: bool,
    pub ones: bool,
    pub pre_relu: bool,
    pub scalar: bool,
    /// Splits of the pixel reduction; None: the adapter's choice (see `splits`).
    pub splits: Option<usize>,
    /// Gather the input (im2col) and run the product as a matmul; None: the adapter's choice (see
    /// `uses_im2col`).
    pub im2col: Option<bool>,
    /// On the im2col path, the scratch given to `launch` already holds the gathered matrix (the layer
    /// forward's gather of the same matrix): no gather launch.
    pub gathered: bool,
    /// The im2col launch's shape: one invocation per value or vec4 of the matrix (`im2col_flat`, for
    /// GPUs: a warp's loads and stores coalesce) or one per row (`im2col`, for CPU adapters: no
    /// division per value); None: by the adapter (flat on GPUs).
    pub flat: Option<bool>,
    /// On the im2col path, read the matrix in place from the image instead of gathering it (see
    /// [`ConvWgrad::implicit`]): None where it can, Some(false) never, Some(true) or an error.
    pub implicit: Option<bool>,
}

impl ConvWgrad {
    /// The launches that give a layer's whole [(K·K·Cin + 1), Cout] gradient block: one for a conv
    /// (weights and bias together), two for a transposed conv (its bias sums dY over the big image).
    pub fn for_layer(
        g: &ConvGeom,
        batch: usize,
        h: usize,
        w: usize,
        pre_relu: bool,
    ) -> Result<Vec<(ConvWgrad, usize)>> {
        let out = g.out_hw(h, w).map_err(|m| crate::gpu::GpuError::Shape { op: "conv", message: m })?;
        let (small, big) = if g.transposed { ((h, w), out) } else { (out, (h, w)) };
        let base = ConvWgrad {
            batch,
            small_hw: small,
            big_hw: big,
            c: g.cin,
            n: g.cout,
            k: g.k,
            stride: g.stride,
            pad: g.pad,
            gather_b: g.transposed,
            ones: !g.transposed,
            pre_relu,
            scalar: false,
            splits: None,
            im2col: None,
            gathered: false,
            flat: None,
            implicit: None,
        };
        if !g.transposed {
            return Ok(vec![(base, 0)]);
        }
        let bias = ConvWgrad { small_hw: big, c: 0, k: 1, stride: 1, pad: 0, ones: true, pre_relu: false, ..base };
        // The bias first: its split partials use the scratch, which the weights' im2col matrix then
        // holds when the layer's input gradient runs (it gathers the same matrix: see
        // `ConvGather::gathers_as`).
        Ok(vec![(bias, g.k * g.k * g.cin * g.cout), (base, 0)])
    }

    /// The gathered matrix as an implicit im2col: the image (the layer input, or with `gather_b` the
    /// output gradient) and the geometry.
    pub fn im2col_geom(&self) -> Im2col {
        Im2col {
            batch: self.batch,
            small_hw: self.small_hw,
            big_hw: self.big_hw,
            ch: if self.gather_b { self.n } else { self.c },
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            relu: self.pre_relu,
        }
    }

    /// Whether the matrix this gather builds may instead be read in place from its image by a
    /// product that uses it (an implicit GEMM, [`Matmul::im2col_runs`]): as op(A) (`as_b` false:
    /// matmul_sgtex's IM2COL; a conv's forward and weight gradient, the flipped input gradient, a
    /// transposed conv's input gradient) or as op(B) (IM2COL_B: a transposed conv's weight
    /// gradient). On lavapipe with aliased buffers and the texture form on, where the matrix's
    /// channels are a multiple of 8 (as A) or 4 (as B), the small pixels (the weight gradients' K) and
    /// the product's other side multiples of 8, the product of [`super::matmul::SUBGROUP_MIN_MACS`]
    /// or more (smaller ones run the register-blocked kernel), unless `implicit` is Some(false). The
    /// launch then also needs the image's buffer aliased. A gather read in place leaves no matrix for
    /// another launch to share ([`ConvGather::gathers_as`]).
    pub fn implicit_possible(&self, gpu: &Gpu, as_b: bool) -> bool {
        let g = self.im2col_geom();
        // The product's side that is not the matrix: a transposed conv's weight gradient has the
        // input's channels (C) as rows; the products over the matrix as A have N columns (a transposed
        // conv's input gradient: its C).
        let (ch_ok, other) =
            if as_b { (g.ch % 4 == 0, self.c) } else { (g.ch % 8 == 0, if self.gather_b { self.c } else { self.n }) };
        self.implicit != Some(false)
            && ch_ok
            && g.rows() % 8 == 0
            && other % 8 == 0
            && g.rows() * g.cols() * other >= super::matmul::SUBGROUP_MIN_MACS
            && gpu.alias_operands
            && gpu.tex_operands
            && gpu.wide_loads
            && gpu.subgroups
            && gpu.int64
    }

    /// `mm` (the product over this gather's matrix as op(A), or with `as_b` as op(B)) reading the matrix
    /// in place from `image`, where it can ([`ConvWgrad::implicit_possible`] and
    /// [`Matmul::im2col_runs`]); None where the matrix must be gathered; an error where `implicit`
    /// forces it and it cannot.
    pub fn implicit(&self, gpu: &Gpu, mm: Matmul, image: &View, as_b: bool) -> Result<Option<Matmul>> {
        let g = self.im2col_geom();
        let imp = Matmul { im2col: Some(g), im2col_b: as_b, ..mm };
        let runs = self.implicit_possible(gpu, as_b) && imp.im2col_runs(gpu, &g, image);
        need("conv", runs || self.implicit != Some(true), || {
            format!("no implicit im2col for {self:?} on {} (Matmul::im2col_runs)", gpu.summary.name)
        })?;
        Ok(runs.then_some(imp))
    }

    /// Whether `other` gathers the same im2col matrix (the same image, geometry and channels).
    pub fn same_im2col(&self, other: &ConvWgrad) -> bool {
        let ch = |w: &ConvWgrad| if w.gather_b { w.n } else { w.c };
        (self.batch, self.small_hw, self.big_hw, self.k, self.stride, self.pad, self.gather_b, self.pre_relu)
            == (
                other.batch,
                other.small_hw,
                other.big_hw,
                other.k,
                other.stride,
                other.pad,
                other.gather_b,
                other.pre_relu,
            )
            && ch(self) == ch(other)
    }

    fn rows_out(&self) -> usize {
        self.k * self.k * self.c + usize::from(self.ones)
    }

    fn tiles(&self) -> usize {
        let nb = self.n.div_ceil(4);
        self.k * self.k * self.c.div_ceil(4) * nb + if self.ones { nb } else { 0 }
    }

    /// Splits of the pixel reduction: `splits` if set (at most one a pixel); else enough invocations to
    /// fill the adapter (256 on a CPU adapter, GPU_WGRAD_INVOCATIONS on a GPU), at least 16 pixels each.
    pub fn splits(&self, gpu: &Gpu) -> usize {
        let pixels = self.batch * self.small_hw.0 * self.small_hw.1;
        if let Some(s) = self.splits {
            return s.clamp(1, pixels.clamp(1, 65535));
        }
        self.splits_for(if gpu.is_cpu() { 256 } else { GPU_WGRAD_INVOCATIONS })
    }

    /// The split count that reaches `invocations` invocations, at least 16 pixels a split (and at most
    /// 65535, the grid's limit per dimension).
    pub fn splits_for(&self, invocations: usize) -> usize {
        let pixels = self.batch * self.small_hw.0 * self.small_hw.1;
        invocations.div_ceil(self.tiles()).clamp(1, pixels.div_ceil(16).clamp(1, 65535))
    }

    /// Whether the gradient runs as im2col, a matmul and a copy: `im2col` if set (where the launch is
    /// one `im2col_ok` allows); else on CPU adapters, and on GPUs whose conv kernel is the matmul forms
    /// (where the matmul splits K: `im2col_splits`), wherever it is allowed, unless the gathered matrix
    /// outgrows a storage binding or `splits` forces the split reduction. On lavapipe it was 2.0–6.1×
    /// faster than the split reduction on each of the conv VAE's four layers at batch 128 (best of
    /// interleaved runs; enc.conv2 37 against 226 ms: benches/RESULTS.md).
    pub fn uses_im2col(&self, gpu: &Gpu) -> bool {
        if let Some(i) = self.im2col {
            return i && self.im2col_ok();
        }
        (gpu.is_cpu() || gpu.conv == ConvKernel::Matmul)
            && self.im2col_ok()
            && self.splits.is_none()
            && (self.scratch_im2col() * 4) as u64 <= gpu.limits.max_storage_buffer_binding_size
    }

    /// The im2col path's matmul: (M, N, splits of K asked). M × N = (K·K·C + 1) × N for a conv layer
    /// (the ones row gives the bias), C × K·K·N for a transposed conv; K = the pixels. The splits:
    /// `splits` if set (only with `im2col` forced: tests); else [`super::matmul::k_splits`] (1 on CPU
    /// adapters; on a GPU's few tiles and K in the tens of thousands, many).
    fn im2col_matmul(&self, gpu: &Gpu) -> (usize, usize, usize) {
        let (m, n) =
            if self.gather_b { (self.c, self.k * self.k * self.n) } else { (self.k * self.k * self.c + 1, self.n) };
        let splits = self.splits.unwrap_or_else(|| super::matmul::k_splits(gpu, m, n, self.im2col_rows()));
        (m, n, splits)
    }

    /// The im2col path's product (`im2col_matmul`): the matrix's transpose times the other operand.
    fn im2col_product(&self, gpu: &Gpu) -> Matmul {
        let (m, n, splits) = self.im2col_matmul(gpu);
        let k = self.im2col_rows();
        Matmul { m, n, k, trans_a: true, ones_row: !self.gather_b, splits, ..Default::default() }
    }

    /// Scratch elements [`ConvWgrad::launch`] uses where the matrix's image (the layer input, or with
    /// `gather_b` the output gradient) is `image`: `scratch_len`, or none where the matrix is read in
    /// place from it ([`ConvWgrad::implicit`]). What a net sizes its shared scratch by.
    pub fn scratch_needed(&self, gpu: &Gpu, image: &View) -> usize {
        let len = self.scratch_len(gpu);
        let in_place = || {
            self.uses_im2col(gpu)
                && matches!(self.implicit(gpu, self.im2col_product(gpu), image, self.gather_b), Ok(Some(_)))
        };
        if len > 0 && in_place() {
            0
        } else {
            len
        }
    }

    /// Splits of K the im2col path's matmul runs (see `im2col_matmul`; 1: none).
    pub fn im2col_splits(&self, gpu: &Gpu) -> usize {
        let (_, _, s) = self.im2col_matmul(gpu);
        if s > 1 {
            super::matmul::split_k(self.im2col_rows(), s).1
        } else {
            1
        }
    }

    /// The launches the im2col path computes: a conv layer's weights and bias together (the layer input
    /// gathered), or a transposed conv's weights (the output gradient gathered; its bias is another
    /// launch, and no transposed conv reads relu(x)).
    pub fn im2col_ok(&self) -> bool {
        self.c > 0 && if self.gather_b { !self.ones && !self.pre_relu } else { self.ones }
    }

    fn im2col_rows(&self) -> usize {
        self.batch * self.small_hw.0 * self.small_hw.1
    }

    /// Elements of the gathered matrix: P × K·K·C (conv) or P × K·K·N (transposed conv).
    fn scratch_im2col(&self) -> usize {
        self.im2col_rows() * self.k * self.k * if self.gather_b { self.n } else { self.c }
    }

    /// Elements of the second scratch buffer: the im2col path's product before it is copied into place,
    /// with a split K its partial products and each split_fold level's sums (0 on the split path).
    pub fn product_len(&self, gpu: &Gpu) -> usize {
        if !self.uses_im2col(gpu) {
            return 0;
        }
        partials_len(self.im2col_splits(gpu), self.rows_out() * self.n)
    }

    /// Scratch elements the launches need (0 when one split writes the result directly): on the im2col
    /// path the gathered matrix; else the splits' partials, then each split_fold level's (see
    /// `fold_levels`).
    pub fn scratch_len(&self, gpu: &Gpu) -> usize {
        if self.uses_im2col(gpu) {
            return self.scratch_im2col();
        }
        let s = self.splits(gpu);
        if s == 1 {
            0
        } else {
            partials_len(s, self.rows_out() * self.n)
        }
    }

    /// Split counts after each split_fold pass: folding by 16 while more than SUM_MAX_SPLITS remain.
    fn fold_levels(splits: usize) -> Vec<usize> {
        let mut levels = Vec::new();
        let mut n = splits;
        while n > SUM_MAX_SPLITS {
            n = n.div_ceil(16);
            levels.push(n);
        }
        levels
    }

    pub fn vec4_ok(&self) -> bool {
        self.c % 4 == 0 && self.n % 4 == 0
    }

    pub fn flops(&self) -> f64 {
        let mut pairs = 0usize;
        crate::reference::conv::for_each_pair(
            1,
            self.small_hw,
            self.big_hw,
            self.k,
            self.stride,
            self.pad,
            |_, _, _| pairs += 1,
        );
        2.0 * (self.batch * (pairs * self.c + if self.ones { self.small_hw.0 * self.small_hw.1 } else { 0 }) * self.n)
            as f64
    }

    /// Writes rows_out × N gradient values at `out[out_offset..]`, through `scratch` (`scratch_len`
    /// elements) when split or on the im2col path, and `product` (`product_len`, another buffer) on the
    /// im2col path.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        gpu: &Gpu,
        label: &str,
        a: View,
        g: View,
        out: View,
        out_offset: usize,
        scratch: Option<View>,
        product: Option<View>,
    ) -> Result<Vec<Launch>> {
        const OP: &str = "conv_wgrad";
        let pixels = self.batch * self.small_hw.0 * self.small_hw.1;
        let big = self.batch * self.big_hw.0 * self.big_hw.1;
        need(OP, pixels > 0 && big > 0 && self.n > 0 && self.k > 0 && self.stride > 0, || {
            format!("empty shape {self:?}")
        })?;
        need(OP, self.c > 0 || self.ones, || "nothing to compute".into())?;
        let (a_pix, g_pix) = if self.gather_b { (pixels, big) } else { (big, pixels) };
        need_len(OP, "A", &a, a_pix * self.c)?;
        need_len(OP, "G", &g, g_pix * self.n)?;
        let len = self.rows_out() * self.n;
        need_len(OP, "OUT", &out, out_offset + len)?;
        if self.uses_im2col(gpu) {
            return self.launch_im2col(gpu, label, a, g, out, out_offset, scratch, product);
        }
        need(OP, !self.gathered, || format!("a gathered matrix but not on the im2col path: {self:?}"))?;
        let splits = self.splits(gpu);
        let wg = 64usize;
        let tiles = self.tiles();
        let mut params = GradParams { out_offset: out_offset as u32, ..self.params(splits) };
        let constants = [
            ("GATHER_B", f64::from(u8::from(self.gather_b))),
            ("ONES", f64::from(u8::from(self.ones))),
            ("PRE_RELU", f64::from(u8::from(self.pre_relu))),
            ("WG", wg as f64),
            ("BIAS_ONLY", f64::from(u8::from(self.c == 0))),
        ];
        let vec4 = !self.scalar && self.vec4_ok();
        let entry = if vec4 { "conv_wgrad_v4" } else { "conv_wgrad" };
        let label = format!(
            "{label} {entry}[{}x{}x{}x{} * {}x{}x{} k{} s{} p{}{} /{splits}]",
            self.batch,
            self.big_hw.0,
            self.big_hw.1,
            if self.gather_b { self.n } else { self.c },
            self.small_hw.0,
            self.small_hw.1,
            if self.gather_b { self.c } else { self.n },
            self.k,
            self.stride,
            self.pad,
            if self.gather_b { " T" } else { "" }
        );
        let groups = [tiles.div_ceil(wg) as u32, splits as u32, 1];
        let (ai, gi) = if vec4 { (4, 5) } else { (1, 2) };
        // The bias alone through G's aliased texture where it has one (lavapipe), else the buffers.
        let bias_tex = self.bias_texture(gpu, &g, params.rows_per_split);
        if let Some((_, base)) = &bias_tex {
            params.in_offset = *base;
        }
        let first = |label: String, params: &GradParams, target| match &bias_tex {
            Some((tex, _)) => {
                let label = label.replacen(&format!(" {entry}["), " bias_tex[", 1);
                let bindings = [(3, target)];
                let textures = [(9, tex.clone())];
                let groups = [(tiles * splits).div_ceil(wg) as u32, 1, 1];
                let max = gpu.limits.max_compute_workgroups_per_dimension;
                need(OP, groups[0] <= max, || format!("grid {groups:?} exceeds {max} workgroups per dimension"))?;
                gpu.launch_tex(
                    label,
                    "conv_grad",
                    "bias_tex",
                    &constants,
                    Some(params),
                    &bindings,
                    &textures,
                    vec![],
                    groups,
                )
            }
            None => gpu.launch(
                label,
                "conv_grad",
                entry,
                &constants,
                Some(params),
                &[(ai, a), (gi, g), (3, target)],
                groups,
            ),
        };
        if splits == 1 {
            return Ok(vec![first(label, &params, out)?]);
        }
        let scratch = scratch.ok_or_else(|| crate::gpu::GpuError::Shape {
            op: OP,
            message: format!("{splits} splits need a scratch buffer of {} floats", splits * len),
        })?;
        need_len(OP, "scratch", &scratch, self.scratch_len(gpu))?;
        params.out_offset = 0;
        let mut launches = vec![first(label.clone(), &params, scratch)?];
        launches.extend(sum_partials(gpu, &label, scratch, out, out_offset, splits, len)?);
        Ok(launches)
    }

    /// For the bias alone (C = 0) where G's buffer has an aliased texture (lavapipe) and conv_grad.wgsl's
    /// `bias_tex` takes the shape (one channel and `rows_per_split` and the pixels multiples of 4, or
    /// channels in fours): the texture and the texel G starts at; else None.
    fn bias_texture(
        &self,
        gpu: &Gpu,
        g: &View,
        rows_per_split: u32,
    ) -> Option<(crate::gpu::pipeline::OperandTexture, u32)> {
        let pixels = self.batch * self.small_hw.0 * self.small_hw.1;
        let shape = if self.n == 1 { rows_per_split % 4 == 0 && pixels % 4 == 0 } else { self.n % 4 == 0 };
        if self.c != 0 || !shape || self.scalar || g.offset % 16 != 0 || !gpu.tex_operands {
            return None;
        }
        gpu.alias_texture(g, pixels * self.n / 4)
    }

    /// The split_fold launches over `splits` partials of `params.len` values at the start of `buf`:
    /// folding by 16 while there are too many splits for one serial sum (see `fold_levels`). Leaves
    /// `params.splits` and `params.in_offset` at the partials that remain, for split_sum or untap.
    fn fold(gpu: &Gpu, label: &str, params: &mut GradParams, buf: View, splits: usize) -> Result<Vec<Launch>> {
        let len = params.len as usize;
        let mut launches = Vec::new();
        let (mut src, mut n) = (0usize, splits);
        for groups in Self::fold_levels(splits) {
            let dst = src + n * len;
            params.splits = n as u32;
            params.in_offset = src as u32;
            params.out_offset = dst as u32;
            let grid = [(groups * len).div_ceil(256).min(65535) as u32, 1, 1];
            let name = format!("{label} split_fold/{n}");
            launches.push(gpu.launch(name, "conv_grad", "split_fold", &[], Some(params), &[(3, buf)], grid)?);
            (src, n) = (dst, groups);
        }
        params.splits = n as u32;
        params.in_offset = src as u32;
        Ok(launches)
    }

    fn params(&self, splits: usize) -> GradParams {
        let pixels = self.batch * self.small_hw.0 * self.small_hw.1;
        GradParams {
            batch: self.batch as u32,
            sh: self.small_hw.0 as u32,
            sw: self.small_hw.1 as u32,
            c: self.c as u32,
            bh: self.big_hw.0 as u32,
            bw: self.big_hw.1 as u32,
            n: self.n as u32,
            k: self.k as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            splits: splits as u32,
            rows_per_split: pixels.div_ceil(splits) as u32,
            tiles: self.tiles() as u32,
            out_offset: 0,
            len: (self.rows_out() * self.n) as u32,
            in_offset: 0,
        }
    }

    /// The im2col launch alone: the layer input (conv) or the output gradient (transposed conv, GATHER_B)
    /// gathered into the P × K·K·C (or P × K·K·N) matrix at `scratch` (`scratch_im2col` elements), by
    /// the per-row or the flat kernel (see `flat`).
    fn im2col_launch(&self, gpu: &Gpu, label: &str, a: View, g: View, scratch: View) -> Result<Launch> {
        let rows = self.im2col_rows();
        let taps = self.k * self.k;
        need_len("im2col", "scratch", &scratch, self.scratch_im2col())?;
        let ch = if self.gather_b { self.n } else { self.c };
        let vec4 = ch % 4 == 0;
        let constants = [
            ("GATHER_B", f64::from(u8::from(self.gather_b))),
            ("PRE_RELU", f64::from(u8::from(self.pre_relu))),
            ("VEC4", f64::from(u8::from(vec4))),
        ];
        let flat = self.flat.unwrap_or(!gpu.is_cpu());
        if let Some(l) = self.im2col1_tex(gpu, label, if self.gather_b { &g } else { &a }, scratch, flat)? {
            return Ok(l);
        }
        let entry = if flat { "im2col_flat" } else { "im2col" };
        let shape = format!(
            "{}x{}x{}x{ch} -> {rows}x{}, k{} s{} p{}{}{}",
            self.batch,
            self.big_hw.0,
            self.big_hw.1,
            taps * ch,
            self.k,
            self.stride,
            self.pad,
            if self.gather_b { " T" } else { "" },
            if flat { ", flat" } else { "" }
        );
        // Flat: one invocation per vec4 (or value) of the matrix; per row: one per row. A grid-stride
        // loop beyond 65535 workgroups.
        let units = if flat { rows * taps * if vec4 { ch / 4 } else { ch } } else { rows };
        need("im2col", units <= u32::MAX as usize, || format!("{units} im2col invocations overflow u32"))?;
        let grid = [units.div_ceil(256).min(65535) as u32, 1, 1];
        // The vec4 views are bound whatever the channel count (the shader reads them only with VEC4).
        let bindings = [(1, a), (2, g), (3, scratch), (4, a), (5, g), (6, scratch)];
        gpu.launch(
            format!("{label} im2col[{shape}]"),
            "conv_grad",
            entry,
            &constants,
            Some(&self.params(1)),
            &bindings,
            grid,
        )
    }

    /// The im2col launch as conv_grad.wgsl's `im2col1_tex`, where it runs: a one-channel image whose
    /// buffer a texture aliases (lavapipe), K a multiple of 4, the per-row form (not `flat`); else None.
    fn im2col1_tex(&self, gpu: &Gpu, label: &str, image: &View, scratch: View, flat: bool) -> Result<Option<Launch>> {
        let ch = if self.gather_b { self.n } else { self.c };
        let big = self.batch * self.big_hw.0 * self.big_hw.1;
        if flat || ch != 1 || self.k % 4 != 0 || image.offset % 16 != 0 || !gpu.tex_operands {
            return Ok(None);
        }
        // One texel past the image: the last row's last pixels may straddle into it (those values are
        // zeroed, never stored).
        let Some((tex, base)) = gpu.alias_texture(image, big.div_ceil(4) + 1) else {
            return Ok(None);
        };
        let rows = self.im2col_rows();
        let (bh, bw) = self.big_hw;
        let constants =
            [("GATHER_B", f64::from(u8::from(self.gather_b))), ("PRE_RELU", f64::from(u8::from(self.pre_relu)))];
        let params = GradParams { in_offset: base, ..self.params(1) };
        let k = self.k;
        let shape = format!(
            "{}x{bh}x{bw}x1 -> {rows}x{}, k{k} s{} p{}{}",
            self.batch,
            k * k,
            self.stride,
            self.pad,
            if self.gather_b { " T" } else { "" }
        );
        let grid = [rows.div_ceil(256).min(65535) as u32, 1, 1];
        let launch = gpu.launch_tex(
            format!("{label} im2col[{shape}, tex]"),
            "conv_grad",
            "im2col1_tex",
            &constants,
            Some(&params),
            &[(6, scratch)],
            &[(9, tex)],
            Vec::new(),
            grid,
        )?;
        Ok(Some(launch))
    }

    /// The im2col path: the gathered matrix I into `scratch`; then for a conv layer [dW; db] = Iᵀ · G (+ the
    /// ones row) into `product`, copied to `out[out_offset..]` by split_sum; for a transposed conv Aᵀ · I
    /// ([C, K·K·N]) into `product`, reordered into place by untap. With a split K (`im2col_splits`) the
    /// matmul writes one partial product per split, folded by split_fold and summed by that last launch.
    #[allow(clippy::too_many_arguments)]
    fn launch_im2col(
        &self,
        gpu: &Gpu,
        label: &str,
        a: View,
        g: View,
        out: View,
        out_offset: usize,
        scratch: Option<View>,
        product: Option<View>,
    ) -> Result<Vec<Launch>> {
        const OP: &str = "conv_wgrad";
        need(OP, self.im2col_ok(), || format!("no im2col path for {self:?}"))?;
        let (ilen, plen) = (self.scratch_im2col(), self.product_len(gpu));
        let missing = |what: &str, n: usize| crate::gpu::GpuError::Shape {
            op: OP,
            message: format!("the im2col path needs a {what} buffer of {n} floats"),
        };
        let product = product.ok_or_else(|| missing("product", plen))?;
        need_len(OP, "product", &product, plen)?;
        let len = self.rows_out() * self.n;
        need(OP, len.div_ceil(256) <= 65535, || format!("{len} gradient values exceed one copy launch"))?;
        let mut params = self.params(1);
        let mm = self.im2col_product(gpu);
        // The matrix read in place from its image (no gather): a conv's input (as A), a transposed
        // conv's output gradient (as B); or in the scratch, gathered there (unless another launch
        // already did: `gathered`).
        let implicit = self.implicit(gpu, mm, if self.gather_b { &g } else { &a }, self.gather_b)?;
        let (mm, ma, mb, gather) = match implicit {
            Some(mm) => (mm, a, g, None),
            None => {
                let scratch = scratch.ok_or_else(|| missing("scratch", ilen))?;
                need_len(OP, "scratch", &scratch, ilen)?;
                need(OP, !std::ptr::eq(scratch.buffer, product.buffer), || {
                    "scratch and product share a buffer".into()
                })?;
                let gather = if self.gathered { None } else { Some(self.im2col_launch(gpu, label, a, g, scratch)?) };
                if self.gather_b {
                    (mm, a, scratch, gather)
                } else {
                    (mm, scratch, g, gather)
                }
            }
        };
        let mut launches: Vec<Launch> = gather.into_iter().collect();
        launches.push(mm.launch(gpu, label, ma, mb, product, None)?);
        let splits = self.im2col_splits(gpu);
        if !self.gather_b {
            launches.extend(sum_partials(gpu, label, product, out, out_offset, splits, len)?);
            return Ok(launches);
        }
        launches.extend(Self::fold(gpu, label, &mut params, product, splits)?);
        params.out_offset = out_offset as u32;
        let (entry, bindings, per) = if four_ok(&params) && params.n % 4 == 0 {
            ("untap4", [(4, product), (6, out)], 1024)
        } else {
            ("untap", [(1, product), (3, out)], 256)
        };
        launches.push(gpu.launch(
            format!("{label} {entry}"),
            "conv_grad",
            entry,
            &[],
            Some(&params),
            &bindings,
            [len.div_ceil(per) as u32, 1, 1],
        )?);
        Ok(launches)
    }
}
