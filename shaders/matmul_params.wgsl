// matmul_params.wgsl: the uniform Params and the override constants shared (by textual include) by
// matmul.wgsl and matmul_sg.wgsl; their meaning is in matmul.wgsl's header. Includes act.wgsl.

//!include act.wgsl

struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    slope: f32,
    // matmul_tiled128 only: bit 0 (1) A may be read through a4, bit 1 (2) B through b4.
    vec_ok: u32,
    // matmul_tiled only: k per split of K (workgroup z), a multiple of 16; 0: no split.
    k_split: u32,
    // matmul_sgtex only: the texels at which op(A) and op(B) start in their textures.
    a_base: u32,
    b_base: u32,
    // matmul_sgtex with IM2COL only: the conv geometry of the implicit im2col matrix (its header).
    im_sh: u32,
    im_sw: u32,
    im_bh: u32,
    im_bw: u32,
    im_ch: u32,
    im_k: u32,
    im_stride: u32,
    im_pad: u32,
    // matmul_sgtex with IM2COL and PHASES only: the col2im form's layer (matmul_sgtex.wgsl, PHASES):
    // its stride S, kernel K and padding P, its output image's height and width, op(B)'s stored rows
    // per tap, and the row of B that holds the bias.
    ph_s: u32,
    ph_k: u32,
    ph_pad: u32,
    ph_oh: u32,
    ph_ow: u32,
    ph_tap_rows: u32,
    ph_bias_row: u32,
    // matmul_sgtex with ZTEX only: the texel at which Z starts in its texture.
    z_base: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override BIAS: bool = false;
override ONES_ROW: bool = false;
override ACT: u32 = 0u;
override DACT: u32 = 0u;
override RESID: bool = false;
override WG: u32 = 64u;
// matmul_sg only: groups of 8 rows per invocation (2, 4 or 8).
override RG: u32 = 2u;
// matmul_sgtex with IM2COL only: one output phase of a col2im-form layer a workgroup z (its header).
override PHASES: bool = false;
