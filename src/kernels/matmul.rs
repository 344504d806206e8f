//! Launcher for shaders/matmul.wgsl: C = epilogue(op(A)·op(B)).

use super::{need, need_len, Act};
use crate::gpu::{pipeline::grid_1d, Gpu, Launch, MatmulKernel, Result, View, Work};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    slope: f32,
    /// matmul_tiled128 only: bit 0 A may be read through its vec4 view (binding 5), bit 1 B (binding 6).
    vec_ok: u32,
    /// matmul_tiled only: k per split of K (workgroup z); 0: no split.
    k_split: u32,
    /// matmul_sgtex only: the texels at which op(A) and op(B) start in their textures (0 where copied
    /// in, the view's place in its buffer's window where aliased).
    a_base: u32,
    b_base: u32,
    /// matmul_sgtex with IM2COL only: the conv geometry of the implicit im2col matrix ([`Im2col`]).
    im_sh: u32,
    im_sw: u32,
    im_bh: u32,
    im_bw: u32,
    im_ch: u32,
    im_k: u32,
    im_stride: u32,
    im_pad: u32,
    /// matmul_sgtex with IM2COL and PHASES only: the col2im-form layer ([`Phases`]).
    ph_s: u32,
    ph_k: u32,
    ph_pad: u32,
    ph_oh: u32,
    ph_ow: u32,
    ph_tap_rows: u32,
    ph_bias_row: u32,
    /// matmul_sgtex with ZTEX only: the texel at which Z starts in its buffer's aliased texture.
    z_base: u32,
}

/// Workgroups a product must fill with 128×128 tiles before the tiled kernel uses them instead of 64×64
/// ones: about one per SM of a large GPU (an H100 has 132). Below that the bigger tiles leave SMs idle,
/// and the 64×64 configuration's four times as many workgroups win.
pub const TILE128_MIN_GROUPS: usize = 132;

/// Multiply-adds (M·N·K) from which a product runs the subgroup kernel when that is the adapter's
/// choice; smaller ones run matmul_v4. A matmul_sg pipeline takes lavapipe longer to compile (0.29 to
/// 0.48 s at 16 to 64 rows on a cold cache on a 2-core VM, against about 0.25 s for matmul_v4), paid once
/// per machine (Mesa's shader cache, ~/.cache/mesa_shader_cache, keeps the result: 0.07 s the second
/// time), which a tiny product does not win back on a cold cache: with the subgroup kernel on every
/// product (and its older, slower-compiling epilogue), a 2-epoch run of a hidden-32 VAE on 256 images
/// took 7–9 s instead of 5. From 2^19 (0.5 M) on it pays: the default VAE's products of 1 to 2 M
/// (128 × 40 × 400 and 128 × 400 × 20, forward and backward) ran in 0.16–0.37 ms on matmul_sg against
/// 0.31–1.04 ms on matmul_v4 inside the step (benches/RESULTS.md, 2026-11-28), and a cold run of the
/// test suite took 136 s against 152 s with the old threshold of 2^22.
pub const SUBGROUP_MIN_MACS: usize = 1 << 19;

/// Workgroup memory of matmul_tiled128: 2 buffers × (A + B) × 8 k-rows × 128 floats.
const TILE128_SMEM: u32 = 2 * 2 * 8 * 128 * 4;

/// What to compute; see the header of shaders/matmul.wgsl.
#[derive(Clone, Copy, Debug, Default)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// B has one more row (row k) added to every output row.
    pub bias: bool,
    /// op(A)'s last row is all ones (A itself has m-1 rows of op(A)).
    pub ones_row: bool,
    pub act: Act,
    /// Multiply by act'(Z) where Z (m×n) holds activation outputs.
    pub dact: Act,
    /// Add Z (m×n) before the activation (a residual); not with `dact`.
    pub resid: bool,
    /// Use the naive one-output-per-invocation kernel.
    pub naive: bool,
    /// Never use the vec4 kernel even where the shape allows it (tests, benchmarks).
    pub scalar: bool,
    /// Use the workgroup-memory tiled kernel (discrete GPUs); any shape. `naive` wins if both are set.
    /// Its 128×128 configuration is used where the product fills them ([`Matmul::fills_tile128`]).
    pub tiled: bool,
    /// Use the tiled kernel's 128×128 configuration whatever the shape (implies `tiled`; tests).
    pub tile128: bool,
    /// Use the register-blocked kernel (vec4 where the shape allows) even where the adapter's choice
    /// ([`Gpu::matmul`]) is another. With none of `tiled`, `register` and `subgroup` (nor
    /// `naive`/`scalar`) set, the adapter's choice decides.
    pub register: bool,
    /// Use the subgroup kernel (shaders/matmul_sg.wgsl) where the device has subgroups and the shape
    /// passes [`Matmul::vec4_ok`], whatever its size; elsewhere the register-blocked kernel. (The
    /// adapter's choice of it applies from [`SUBGROUP_MIN_MACS`] on.)
    pub subgroup: bool,
    /// Rows of C per invocation of the subgroup kernel (16, 32 or 64) instead of the launcher's choice
    /// ([`sg_rows`], [`sgtex_rows`] for the texture form; tests, benchmarks).
    pub sg_rows: Option<usize>,
    /// Where the subgroup kernel runs: None, its 64-bit-access form (shaders/matmul_sg64.wgsl) where
    /// the device has it on ([`Gpu::wide_loads`]) and the shape allows ([`Matmul::sg64_ok`]), else
    /// matmul_sg; Some(false) matmul_sg; Some(true) matmul_sg64 or an error (tests, benchmarks).
    pub sg64: Option<bool>,
    /// Where matmul_sg64 runs: None, its texture form (shaders/matmul_sgtex.wgsl) where the device has
    /// it on ([`Gpu::tex_operands`]) and [`Matmul::tex_ok`] holds; Some(false) never; Some(true) the
    /// texture form or an error (tests, benchmarks).
    pub tex: Option<bool>,
    /// Split K this many ways (0 or 1: no split; see [`split_k`] for the count that runs): the tiled
    /// kernel writes [`split_k`]`.1` partial M×N products, block after block, into C, for the caller to
    /// sum; no bias, activation or residual epilogue.
    pub splits: usize,
    /// op(A) (or, with `trans_a`, its transpose) is this conv's im2col matrix, read in place from the
    /// image A holds (an implicit GEMM, matmul_sgtex's IM2COL; only where [`Matmul::im2col_runs`]).
    pub im2col: Option<Im2col>,
    /// With `im2col`, the matrix is op(B) (untransposed) instead, read from the image B holds
    /// (matmul_sgtex's IM2COL_B).
    pub im2col_b: bool,
    /// With `im2col` (as A, untransposed): the product of a col2im-form layer as one implicit GEMM per
    /// output phase (matmul_sgtex's PHASES, workgroup z; see [`Phases`]). `im2col` then describes one
    /// phase's matrix and M is one phase's rows.
    pub phases: Option<Phases>,
}

/// A col2im-form layer (a transposed conv's forward, or a conv's input gradient: each big-image pixel
/// sums the small image's pixels through the taps that reach it) as S² products, one per output phase
/// (py, px): output pixel (S·uy + py, S·ux + px) of an [OH, OW] image sums the small image's pixels
/// (uy + jy − pad_y, ux + jx − pad_x) for jy, jx < T = K/S through the layer's tap (ry + S·(T−1−jy),
/// rx + S·(T−1−jx)), r = (p + P) mod S, pad = T − 1 − (p + P) div S (shaders/matmul_sgtex.wgsl,
/// PHASES). So each phase's op(A) is the [`Im2col`] of the small image over the phase grid (OH/S ×
/// OW/S pixels) with kernel T, stride 1 (its pad unused: the phase's), and op(B)'s rows are the layer's
/// weight rows for those taps, read in place from its block: untransposed (a transposed conv's weights
/// [K·K·C + 1, N], bias row last) or with `trans_b` (a conv's block [K·K·N + 1, C] read as Wᵀ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// The layer's stride S, kernel K and padding P.
    pub stride: usize,
    pub k: usize,
    pub pad: usize,
    /// The output (big) image's height and width, multiples of S.
    pub out_hw: (usize, usize),
}

impl Phases {
    /// The geometry of one phase's matrix for a layer from `small_hw` images of `ch` channels, or None
    /// where the phases do not tile the output this way: K a multiple of S, OH and OW multiples of S,
    /// every phase's pad at least 0 (the largest (p + P) div S, ⌈P/S⌉, below T).
    pub fn im2col(&self, batch: usize, small_hw: (usize, usize), ch: usize) -> Option<Im2col> {
        let s = self.stride;
        let ok = s > 0
            && self.k % s == 0
            && self.out_hw.0 % s == 0
            && self.out_hw.1 % s == 0
            && self.out_hw.0 * self.out_hw.1 > 0
            && self.pad.div_ceil(s) < self.k / s;
        ok.then_some(Im2col {
            batch,
            small_hw: (self.out_hw.0 / s, self.out_hw.1 / s),
            big_hw: small_hw,
            ch,
            k: self.k / s,
            stride: 1,
            pad: 0,
            relu: false,
        })
    }
}

/// A conv's im2col matrix as its image and geometry (conv_grad.wgsl's im2col, small and big image as
/// there): row m = small pixel (b, sy, sx), column tap·CH + c = X[b, sy·S − P + tap / K, sx·S − P +
/// tap % K, c] of the big image X [B, BH, BW, CH], 0 outside it, max(·, 0) with `relu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Im2col {
    pub batch: usize,
    pub small_hw: (usize, usize),
    pub big_hw: (usize, usize),
    pub ch: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub relu: bool,
}

impl Im2col {
    /// Floats of the image.
    pub fn image_len(&self) -> usize {
        self.batch * self.big_hw.0 * self.big_hw.1 * self.ch
    }

    /// Rows of the matrix (small pixels).
    pub fn rows(&self) -> usize {
        self.batch * self.small_hw.0 * self.small_hw.1
    }

    /// Columns of the matrix (K·K·CH).
    pub fn cols(&self) -> usize {
        self.k * self.k * self.ch
    }
}

/// Whether both views start at a whole texel (16 bytes), as matmul_sgtex's copies need.
fn whole_texels(a: &View, b: &View) -> bool {
    a.offset % 16 == 0 && b.offset % 16 == 0
}

/// Invocations a split K aims at on a GPU: an H100 holds 132 SMs × 2048 resident invocations
/// ([`crate::kernels::conv::GPU_WGRAD_INVOCATIONS`], from the conv weight gradient's measured sweep).
pub const K_SPLIT_INVOCATIONS: usize = super::conv::GPU_WGRAD_INVOCATIONS;

/// Splits of K asked for an M×N×K product with few output tiles (a weight gradient, K the batch's rows
/// or pixels) where the adapter splits K ([`Gpu::split_k`], else 1): enough for its 64×64 tiles (256
/// invocations each) to reach [`K_SPLIT_INVOCATIONS`], each split at least 256 long; 1 where the tiles
/// alone reach it or K is under 512.
pub fn k_splits(gpu: &Gpu, m: usize, n: usize, k: usize) -> usize {
    if gpu.split_k {
        gpu_k_splits(m, n, k)
    } else {
        1
    }
}

/// [`k_splits`] on an adapter that splits K.
pub fn gpu_k_splits(m: usize, n: usize, k: usize) -> usize {
    tile_splits(m, n, k, 256)
}

/// Splits asked for the 64×64 tiles of an M×N product to reach [`K_SPLIT_INVOCATIONS`], each at least
/// `min_k` of the K long (at least 1).
fn tile_splits(m: usize, n: usize, k: usize, min_k: usize) -> usize {
    let tiles = m.div_ceil(64) * n.div_ceil(64);
    (K_SPLIT_INVOCATIONS / 256).div_ceil(tiles).clamp(1, (k / min_k).max(1))
}

/// The least K a split takes in a product with an epilogue (a dense layer's forward or input
/// gradient): 8 of matmul_tiled's 16-deep steps.
pub const EPILOGUE_SPLIT_MIN_K: usize = 128;

/// Splits of K (the count that runs, see [`split_k`]) for an M×N×K product with an epilogue where the
/// adapter splits K ([`Gpu::split_k`]) and its matmul kernel is the tiled one, which a split runs on
/// (else 1): as [`k_splits`], each split at least [`EPILOGUE_SPLIT_MIN_K`] long. The MLP VAE's
/// enc.fc1 forward at batch 128, 128×400×784, is 14 tiles of 64×64 walking 49 steps of K each: on an
/// H100 it ran at 1.5 TFLOP/s (52 µs, benches/RESULTS.md); split 6 ways it is 84 tiles of 8 or 9
/// steps, plus [`Matmul::launch_split`]'s sum.
pub fn epilogue_k_splits(gpu: &Gpu, m: usize, n: usize, k: usize) -> usize {
    if gpu.split_k && gpu.matmul == MatmulKernel::Tiled {
        gpu_epilogue_k_splits(m, n, k)
    } else {
        1
    }
}

/// [`epilogue_k_splits`] on an adapter that splits them.
pub fn gpu_epilogue_k_splits(m: usize, n: usize, k: usize) -> usize {
    split_k(k, tile_splits(m, n, k, EPILOGUE_SPLIT_MIN_K)).1
}

/// (k per split, splits) of a K-long reduction asked to split `splits` ways: each split a multiple of
/// matmul_tiled's BK = 16, so that fewer splits may run than asked.
pub fn split_k(k: usize, splits: usize) -> (usize, usize) {
    let chunk = k.div_ceil(splits.max(1)).next_multiple_of(16);
    (chunk, k.div_ceil(chunk))
}

/// Rows of C per invocation of the subgroup kernel for an M-row product: the least time by
/// `ceil(M / rows) · rows / speed`, where the speeds (1, 1.2, 1.4 for 16, 32, 64 rows) were measured
/// on lavapipe at the default VAE's shapes (benches/RESULTS.md). More rows load less per FMA (each
/// lane's B values serve every row; the rows of A come through broadcasts) but pad M further.
pub fn sg_rows(m: usize) -> usize {
    least_padded_time(m, [(16, 100), (32, 120), (64, 140)])
}

/// [`sg_rows`] for the texture form (shaders/matmul_sgtex.wgsl) of an M×N×K product, whose speeds
/// differ: with its operands aliased on lavapipe, 32 rows ran 1.07-1.70x faster than 64 on the MLP
/// VAE's and the VQ-VAE's products with K of 64 or more, and 1.08-1.19x faster than 16 on the MLP
/// VAE's: speeds 1, 1.15, 0.95 for 16, 32, 64 rows. With K of 32 or less (a few k-steps an invocation)
/// 64 rows ran 1.06-1.28x faster than 32 on the VQ-VAE's three such shapes, so those take
/// [`sg_rows`]'s speeds (benches/RESULTS.md, 2026-11-29).
pub fn sgtex_rows(m: usize, k: usize) -> usize {
    if k <= 32 {
        return sg_rows(m);
    }
    least_padded_time(m, [(16, 100), (32, 115), (64, 95)])
}

fn least_padded_time(m: usize, speeds: [(usize, usize); 3]) -> usize {
    speeds.into_iter().min_by_key(|&(rows, speed)| m.div_ceil(rows) * rows * 1000 / speed).unwrap().0
}

impl Matmul {
    /// This product with `kernel` forced (`Auto`: the adapter's choice).
    pub fn with_kernel(self, kernel: MatmulKernel) -> Matmul {
        Matmul {
            tiled: kernel == MatmulKernel::Tiled,
            register: kernel == MatmulKernel::Register,
            subgroup: kernel == MatmulKernel::Subgroup,
            ..self
        }
    }

    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Rows of A as stored / leading dimensions.
    fn dims(&self) -> (usize, usize, usize, usize) {
        if let (Some(ph), Some(g)) = (&self.phases, &self.im2col) {
            // A is the image (`im2col`); B the layer's weight block, read in place.
            let taps = ph.k * ph.k;
            let (ldb, b_len) = if self.trans_b {
                (g.ch, taps * self.n * g.ch)
            } else {
                (self.n, (taps * g.ch + usize::from(self.bias)) * self.n)
            };
            return (self.k, self.m * self.k, ldb, b_len);
        }
        let a_rows_op = if self.ones_row { self.m - 1 } else { self.m };
        let (lda, a_len) = if self.trans_a { (a_rows_op, self.k * a_rows_op) } else { (self.k, a_rows_op * self.k) };
        let b_rows = if self.bias { self.k + 1 } else { self.k };
        let (ldb, b_len) = if self.trans_b { (self.k, self.n * self.k) } else { (self.n, b_rows * self.n) };
        (lda, a_len, ldb, b_len)
    }

    /// Whether the 128×128 tiles suit this product: at least [`TILE128_MIN_GROUPS`] of them, padding M×N
    /// at most 1.25× as much as 64×64 tiles do. On an H100 the 128 tiles ran about 1.4× the 64 ones'
    /// rate on full tiles (27.5 against 19.6 TFLOP/s, benches/RESULTS.md), which a product 64 wide (a
    /// conv's im2col forward at 64 output channels: half of every 128 tile idle) loses.
    pub fn fills_tile128(&self) -> bool {
        let pad = |t: usize| self.m.next_multiple_of(t) * self.n.next_multiple_of(t);
        self.m.div_ceil(128) * self.n.div_ceil(128) >= TILE128_MIN_GROUPS && pad(128) * 4 <= pad(64) * 5
    }

    /// Whether the vec4 kernel can run this shape: every leading dimension, K and N multiples of 4.
    pub fn vec4_ok(&self) -> bool {
        let (lda, _, ldb, _) = self.dims();
        let a_rows_op = if self.ones_row { self.m - 1 } else { self.m };
        lda % 4 == 0 && ldb % 4 == 0 && self.k % 4 == 0 && self.n % 4 == 0 && (!self.trans_a || a_rows_op >= 4)
    }

    /// Whether matmul_sg64 can run this shape: [`Matmul::vec4_ok`], and K, N and the leading
    /// dimensions multiples of 8 (its loads take 8 floats of a row), op(A) at least 8 rows with TRANS_A.
    pub fn sg64_ok(&self) -> bool {
        let (lda, _, ldb, _) = self.dims();
        let a_rows_op = if self.ones_row { self.m - 1 } else { self.m };
        self.vec4_ok()
            && lda % 8 == 0
            && ldb % 8 == 0
            && self.k % 8 == 0
            && self.n % 8 == 0
            && (!self.trans_a || a_rows_op >= 8)
    }

    /// Whether matmul_sgtex suits this product on these views on `gpu`: sg64_ok, both views start at a
    /// multiple of 16 bytes (a texel), and the operands it must copy into textures move at most a 40th
    /// of the product's flops in bytes. An operand whose buffer an operand texture aliases
    /// ([`Gpu::alias_texture`], lavapipe) is read in place and copies nothing.
    ///
    /// Copies ran at about 3 GB/s of one thread's time on lavapipe, and the texture loads saved about a
    /// fifth of a product's CPU time (benches/RESULTS.md, 2026-11-29): with both operands copied, the
    /// MLP VAE's products (a 55th) and the VQ-VAE's 128-channel ones (a 63rd) take it, its 32-channel
    /// residual convs (a 16th) do not. With both aliased every product sg64 runs takes it: on the
    /// VQ-VAE's products it ran at 0.55-1.01x matmul_sg64's time, and at 1.08x on one (the VQ distances).
    pub fn tex_ok(&self, gpu: &Gpu, a: &View, b: &View) -> bool {
        let (_, a_len, _, b_len) = self.dims();
        let copied = |v: &View, len: usize| if gpu.alias_texture(v, len / 4).is_some() { 0 } else { len };
        whole_texels(a, b) && self.tex_copies_ok(copied(a, a_len) + copied(b, b_len))
    }

    /// [`Matmul::tex_ok`]'s conditions on the shape alone, with both operands aliased or both copied.
    pub fn tex_shape_ok(&self, aliased: bool) -> bool {
        let (_, a_len, _, b_len) = self.dims();
        self.tex_copies_ok(if aliased { 0 } else { a_len + b_len })
    }

    /// sg64_ok, and copying `floats` floats moves at most a 40th of the product's flops in bytes.
    fn tex_copies_ok(&self, floats: usize) -> bool {
        let flops = 2 * (self.m * self.n * self.k) as u64;
        self.sg64_ok() && 4 * floats as u64 * 40 <= flops
    }

    /// Whether this product, with [`Matmul::im2col`] set to `g` and the image in `a`, runs as an implicit
    /// GEMM on `gpu`: the texture form of the subgroup kernel (the device has subgroups, 64-bit
    /// integers, wide loads and texture operands on, and `subgroup` forces the subgroup kernel or it is
    /// the adapter's choice for this product, [`SUBGROUP_MIN_MACS`] on; no other kernel forced, no
    /// split), the shape as [`Matmul::sg64_ok`] wants
    /// and the matrix's (8 channels a column group: CH a multiple of 8; as B, with `im2col_b`, 4
    /// channels a lane's columns: CH a multiple of 4, no bias row), and the image's buffer (`a`: A's,
    /// or B's with `im2col_b`) aliased by a texture ([`Gpu::alias_texture`], lavapipe).
    pub fn im2col_runs(&self, gpu: &Gpu, g: &Im2col, a: &View) -> bool {
        let phases_ok = match &self.phases {
            None => true,
            Some(ph) => {
                !self.im2col_b
                    && !self.trans_a
                    && ph.im2col(g.batch, g.big_hw, g.ch).is_some_and(|want| Im2col { pad: g.pad, ..want } == *g)
            }
        };
        let shape = phases_ok
            && if self.im2col_b {
                !self.trans_b && !self.bias && self.n == g.cols() && self.k == g.rows() && g.ch % 4 == 0
            } else if self.trans_a {
                self.ones_row && self.m == g.cols() + 1 && self.k == g.rows() && g.ch % 8 == 0
            } else {
                !self.ones_row && self.m == g.rows() && self.k == g.cols() && g.ch % 8 == 0
            };
        let kernel = !self.naive && !self.scalar && !self.tiled && !self.tile128 && !self.register;
        shape
            && kernel
            && g.stride > 0
            && g.big_hw.0 * g.big_hw.1 > 0
            && self.splits <= 1
            && self.sg64 != Some(false)
            && self.tex != Some(false)
            && (self.subgroup || gpu.matmul == MatmulKernel::Subgroup && self.m * self.n * self.k >= SUBGROUP_MIN_MACS)
            && gpu.subgroups
            && gpu.int64
            && gpu.wide_loads
            && gpu.tex_operands
            && Matmul { im2col: None, ..*self }.sg64_ok()
            && a.offset % 16 == 0
            && a.len >= g.image_len()
            && gpu.alias_texture(a, g.image_len() / 4).is_some()
    }

    /// Z, M×N (with `phases`, S² phases of it: C's size), where the epilogue reads it (act' or a residual).
    fn need_z(&self, z: Option<&View>) -> Result<()> {
        if self.dact != Act::Identity || self.resid {
            let phases = self.phases.map_or(1, |ph| ph.stride * ph.stride);
            need("matmul", z.is_some(), || "dact and resid need Z".into())?;
            need_len("matmul", "Z", z.unwrap(), phases * self.m * self.n)?;
        }
        Ok(())
    }

    /// The launch of this product, C = epilogue(op(A)·op(B)), labelled `label` plus the kernel and
    /// shape; its work is the product's FLOPs (each phase's, with `phases`).
    pub fn launch(&self, gpu: &Gpu, label: &str, a: View, b: View, c: View, z: Option<View>) -> Result<Launch> {
        let phases = self.phases.map_or(1, |ph| ph.stride * ph.stride);
        let flops = phases as f64 * self.flops();
        Ok(self.launch_product(gpu, label, a, b, c, z)?.with_work(Work::Flops(flops)))
    }

    fn launch_product(&self, gpu: &Gpu, label: &str, a: View, b: View, c: View, z: Option<View>) -> Result<Launch> {
        const OP: &str = "matmul";
        need(OP, self.m > 0 && self.n > 0 && self.k > 0, || format!("empty shape {self:?}"))?;
        need(OP, !(self.bias && self.trans_b), || "bias needs an untransposed B".into())?;
        need(OP, !self.ones_row || self.m >= 2, || "ones_row needs m >= 2".into())?;
        let (lda, a_len, ldb, b_len) = self.dims();
        if let Some(g) = &self.im2col {
            need(OP, self.im2col_runs(gpu, g, if self.im2col_b { &b } else { &a }), || {
                format!("no implicit im2col for {self:?} on {} (see Matmul::im2col_runs)", gpu.summary.name)
            })?;
        }
        // A (or B) holds the image, not the matrix, where the matrix is implicit.
        let (a_what, a_len, b_what, b_len) = match &self.im2col {
            Some(g) if self.im2col_b => ("A", a_len, "the image", g.image_len()),
            Some(g) => ("the image", g.image_len(), "B", b_len),
            None => ("A", a_len, "B", b_len),
        };
        need_len(OP, a_what, &a, a_len)?;
        need_len(OP, b_what, &b, b_len)?;
        let (k_chunk, splits) = if self.splits > 1 { split_k(self.k, self.splits) } else { (0, 1) };
        let phases = self.phases.map_or(1, |ph| ph.stride * ph.stride);
        need(OP, self.phases.is_none() || self.im2col.is_some(), || "phases need im2col".into())?;
        need_len(OP, "C", &c, splits * phases * self.m * self.n)?;
        need(OP, !(self.resid && self.dact != Act::Identity), || "resid and dact together".into())?;
        let epilogue = self.bias || self.resid || self.act != Act::Identity || self.dact != Act::Identity;
        need(OP, splits == 1 || !epilogue && !self.naive, || {
            "a split K has no epilogue and needs the tiled kernel".into()
        })?;
        self.need_z(z.as_ref())?;
        let mut params = Params {
            m: self.m as u32,
            n: self.n as u32,
            k: self.k as u32,
            lda: lda as u32,
            ldb: ldb as u32,
            slope: Act::LEAKY_SLOPE,
            vec_ok: 0,
            k_split: k_chunk as u32,
            a_base: 0,
            b_base: 0,
            ..bytemuck::Zeroable::zeroed()
        };
        let tiled = !self.naive
            && (self.tiled
                || self.tile128
                || splits > 1
                || (!self.register && !self.subgroup && !self.scalar && gpu.matmul == MatmulKernel::Tiled));
        // 256 invocations and two double-buffered 8×128-float tiles (shaders/matmul.wgsl).
        let (inv, smem) =
            (gpu.limits.max_compute_invocations_per_workgroup, gpu.limits.max_compute_workgroup_storage_size);
        let fits128 = inv >= 256 && smem >= TILE128_SMEM;
        let tile128 = tiled && splits == 1 && (self.tile128 || fits128 && self.fills_tile128());
        let vec4 = !self.naive && !tiled && !self.scalar && self.vec4_ok();
        let big = self.m * self.n * self.k >= SUBGROUP_MIN_MACS;
        let sg = vec4
            && gpu.subgroups
            && (self.subgroup
                || self.im2col.is_some()
                || (!self.register && gpu.matmul == MatmulKernel::Subgroup && big));
        // Workgroup width: on CPU adapters (SIMD across invocations) the least padding of the column
        // count among 16/32/64 lanes (8/16/32/64 for the subgroup kernel); on GPUs 64.
        let cols = if vec4 { self.n / 4 } else { self.n };
        let sg64 = sg && self.sg64.unwrap_or(gpu.wide_loads && self.sg64_ok());
        if sg64 {
            need(OP, gpu.int64, || format!("matmul_sg64 needs 64-bit integers, which {} lacks", gpu.summary.name))?;
            need(OP, self.sg64_ok(), || format!("matmul_sg64 cannot run {self:?} (K, N, lda, ldb: multiples of 8)"))?;
        }
        need(OP, self.sg64 != Some(true) || sg, || "sg64 needs the subgroup kernel".into())?;
        // The texture form where its textures fit the device (else matmul_sg64).
        let tex_wanted = self.im2col.is_some() || self.tex.unwrap_or(gpu.tex_operands && self.tex_ok(gpu, &a, &b));
        let textures = if sg64 && tex_wanted {
            // sg64 implies sg64_ok (checked above); the views must start at whole texels.
            need(OP, whole_texels(&a, &b), || {
                format!(
                    "matmul_sgtex cannot run {self:?}: views at {} and {} bytes, not multiples of 16",
                    a.offset, b.offset
                )
            })?;
            // a_len: the image's floats where the matrix is implicit (aliased: im2col_runs holds).
            let (ta, tb) = (a_len / 4, b_len / 4);
            // Each operand through its buffer's aliased texture where it has one (no copy), else copied
            // into a pooled texture before the launch.
            match (gpu.texture_operand(0, &a, ta), gpu.texture_operand(1, &b, tb)) {
                (Some(at), Some(bt)) => Some([at, bt]),
                _ => {
                    need(OP, self.tex != Some(true), || "matmul_sgtex: the operands pass the texture limit".into())?;
                    None
                }
            }
        } else {
            need(OP, self.tex != Some(true), || "tex needs matmul_sg64".into())?;
            None
        };
        let pick = |m| if textures.is_some() { sgtex_rows(m, self.k) } else { sg_rows(m) };
        let rows = if sg { self.sg_rows.unwrap_or_else(|| pick(self.m)) } else { 16 };
        need(OP, [16, 32, 64].contains(&rows), || format!("sg_rows {rows}: 16, 32 or 64"))?;
        let widths: &[usize] = if sg { &[64, 32, 16, 8] } else { &[64, 32, 16] };
        let wg = if gpu.is_cpu() {
            widths.iter().copied().min_by_key(|w| (cols.next_multiple_of(*w), usize::MAX - w)).unwrap()
        } else {
            64
        };
        let constants = [
            ("TRANS_A", f64::from(u8::from(self.trans_a))),
            ("TRANS_B", f64::from(u8::from(self.trans_b))),
            ("BIAS", f64::from(u8::from(self.bias))),
            ("ONES_ROW", f64::from(u8::from(self.ones_row))),
            ("ACT", self.act.code() as f64),
            ("DACT", self.dact.code() as f64),
            ("RESID", f64::from(u8::from(self.resid))),
            ("WG", wg as f64),
            ("RG", (rows / 8) as f64),
        ];
        let (entry, mut groups) = if self.naive {
            ("matmul_naive", [self.n.div_ceil(8) as u32, self.m.div_ceil(8) as u32, 1])
        } else if tile128 {
            ("matmul_tiled128", [self.n.div_ceil(128) as u32, self.m.div_ceil(128) as u32, 1])
        } else if tiled {
            ("matmul_tiled", [self.n.div_ceil(64) as u32, self.m.div_ceil(64) as u32, splits as u32])
        } else if sg {
            let entry = if textures.is_some() {
                "matmul_sgtex"
            } else if sg64 {
                "matmul_sg64"
            } else {
                "matmul_sg"
            };
            (entry, [cols.div_ceil(wg) as u32, self.m.div_ceil(rows) as u32, 1])
        } else if vec4 {
            ("matmul_v4", [cols.div_ceil(wg) as u32, self.m.div_ceil(8) as u32, 1])
        } else {
            ("matmul", [cols.div_ceil(wg) as u32, self.m.div_ceil(8) as u32, 1])
        };
        if tile128 {
            need(OP, fits128, || {
                format!(
                    "matmul_tiled128 needs 256 invocations and {TILE128_SMEM} bytes of workgroup memory (limits: \
                     {inv}, {smem})"
                )
            })?;
        } else if tiled {
            // 16×16 invocations and two 16×68-float workgroup tiles (shaders/matmul.wgsl).
            need(OP, inv >= 256 && smem >= 2 * 16 * 68 * 4, || {
                format!("matmul_tiled needs 256 invocations and 8704 bytes of workgroup memory (limits: {inv}, {smem})")
            })?;
        }
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        need(OP, groups.iter().all(|&g| g <= max), || {
            format!("grid {groups:?} exceeds {max} workgroups per dimension")
        })?;
        let label = format!(
            "{label} {entry}[{}x{}x{}{}{}{}{}]",
            self.m,
            self.n,
            self.k,
            if self.trans_a { " At" } else { "" },
            if self.trans_b { " Bt" } else { "" },
            if self.resid { " +Z" } else { "" },
            if splits > 1 { format!(" /{splits}") } else { String::new() }
        );
        // Z is always bound (the layout is fixed); A stands in when the epilogue does not read it.
        let z = z.unwrap_or(a);
        if tile128 {
            // The vec4 views of A and B (bindings 5, 6) for the kernel's aligned loads: usable where the
            // leading dimension and the view's start are multiples of 4 floats; a view needs 16 bytes,
            // a smaller operand gets a placeholder (and its flag stays clear).
            let ok = |v: &View, ld: usize| ld % 4 == 0 && v.offset % 16 == 0 && v.len >= 4;
            let (a_ok, b_ok) = (ok(&a, lda), ok(&b, ldb));
            params.vec_ok = u32::from(a_ok) | (u32::from(b_ok) << 1);
            let placeholder = (!a_ok || !b_ok).then(|| gpu.storage_f32("matmul.placeholder", 4));
            let a4 = if a_ok { a } else { View::whole(placeholder.as_ref().unwrap()) };
            let b4 = if b_ok { b } else { View::whole(placeholder.as_ref().unwrap()) };
            let bindings = [(1, a), (2, b), (3, c), (4, z), (5, a4), (6, b4)];
            return gpu.launch(label, "matmul", entry, &constants, Some(&params), &bindings, groups);
        }
        if let Some([(at, a_base, a_fill), (bt, b_base, b_fill)]) = textures {
            (params.a_base, params.b_base) = (a_base, b_base);
            let bindings = [(6, b), (7, c), (8, z)];
            let fills = a_fill.into_iter().chain(b_fill).collect();
            // An epilogue that reads Z reads it through its buffer's aliased texture where it has one
            // (ZTEX); A's texture stands in for binding 14 otherwise.
            let z_reads = self.resid || self.dact != Act::Identity;
            let z_tex = if z_reads { gpu.alias_texture(&z, phases * self.m * self.n / 4) } else { None };
            let mut constants = constants.to_vec();
            constants.push(("ZTEX", f64::from(u8::from(z_tex.is_some()))));
            let zt = match &z_tex {
                Some((t, base)) => {
                    params.z_base = *base;
                    t.clone()
                }
                None => at.clone(),
            };
            let textures = [(12, at), (13, bt), (14, zt)];
            let mut label = label;
            // "+Z tex]" (a residual) or "Z tex]" (act'): Z read through its texture.
            if z_tex.is_some() && label.ends_with(']') {
                label.insert_str(label.len() - 1, if self.resid { " tex" } else { " Z tex" });
            }
            if let Some(g) = &self.im2col {
                params.im_sh = g.small_hw.0 as u32;
                params.im_sw = g.small_hw.1 as u32;
                params.im_bh = g.big_hw.0 as u32;
                params.im_bw = g.big_hw.1 as u32;
                params.im_ch = g.ch as u32;
                params.im_k = g.k as u32;
                params.im_stride = g.stride as u32;
                params.im_pad = g.pad as u32;
                let form = if self.im2col_b { "IM2COL_B" } else { "IM2COL" };
                constants.extend([(form, 1.0), ("IM2COL_RELU", f64::from(u8::from(g.relu)))]);
                let mut mark = if self.im2col_b { "im2col B " } else { "im2col " };
                if let Some(ph) = &self.phases {
                    params.ph_s = ph.stride as u32;
                    params.ph_k = ph.k as u32;
                    params.ph_pad = ph.pad as u32;
                    params.ph_oh = ph.out_hw.0 as u32;
                    params.ph_ow = ph.out_hw.1 as u32;
                    params.ph_tap_rows = if self.trans_b { self.n } else { g.ch } as u32;
                    params.ph_bias_row = (ph.k * ph.k * g.ch) as u32;
                    constants.push(("PHASES", 1.0));
                    groups[2] = phases as u32;
                    mark = "im2col phases ";
                }
                label = label.replacen(&format!("{entry}["), &format!("{entry}[{mark}"), 1);
            }
            return gpu.launch_tex(label, entry, entry, &constants, Some(&params), &bindings, &textures, fills, groups);
        }
        need(OP, self.im2col.is_none(), || "an implicit im2col needs matmul_sgtex".into())?;
        let bindings = if vec4 { [(5, a), (6, b), (7, c), (8, z)] } else { [(1, a), (2, b), (3, c), (4, z)] };
        let shader = if sg { entry } else { "matmul" };
        gpu.launch(label, shader, entry, &constants, Some(&params), &bindings, groups)
    }

    /// This product (any epilogue) with K split `splits` ways ([`split_k`]): the tiled kernel's
    /// partial blocks into `partials` (splits · M · N elements), then `split_finish`, which adds them
    /// in order and applies the bias, residual, activation or act' into C. One launch, the plain
    /// product, where `splits` is 1 (or rounds to 1).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_split(
        &self,
        gpu: &Gpu,
        label: &str,
        a: View,
        b: View,
        c: View,
        z: Option<View>,
        partials: View,
        splits: usize,
    ) -> Result<Vec<Launch>> {
        const OP: &str = "matmul";
        let (_, s) = split_k(self.k, splits);
        if s <= 1 {
            return Ok(vec![self.launch(gpu, label, a, b, c, z)?]);
        }
        let (_, _, ldb, b_len) = self.dims();
        need_len(OP, "B", &b, b_len)?;
        need_len(OP, "C", &c, self.m * self.n)?;
        self.need_z(z.as_ref())?;
        let bare = Matmul {
            bias: false,
            act: Act::Identity,
            dact: Act::Identity,
            resid: false,
            naive: false,
            splits: s,
            ..*self
        };
        let product = bare.launch(gpu, label, a, b, partials, None)?;
        let params = Params {
            m: self.m as u32,
            n: self.n as u32,
            k: self.k as u32,
            lda: 0,
            ldb: ldb as u32,
            slope: Act::LEAKY_SLOPE,
            vec_ok: 0,
            k_split: s as u32,
            a_base: 0,
            b_base: 0,
            ..bytemuck::Zeroable::zeroed()
        };
        let constants = [
            ("BIAS", f64::from(u8::from(self.bias))),
            ("ACT", self.act.code() as f64),
            ("DACT", self.dact.code() as f64),
            ("RESID", f64::from(u8::from(self.resid))),
        ];
        let bindings = [(1, partials), (2, b), (3, c), (4, z.unwrap_or(partials))];
        let finish = gpu
            .launch(
                format!("{label} split_finish[{}x{} /{s}]", self.m, self.n),
                "matmul",
                "split_finish",
                &constants,
                Some(&params),
                &bindings,
                grid_1d((self.m * self.n).div_ceil(256) as u32),
            )?
            .with_work(Work::words(
                (s + usize::from(z.is_some())) * self.m * self.n + usize::from(self.bias) * self.n,
                self.m * self.n,
            ));
        Ok(vec![product, finish])
    }
}
