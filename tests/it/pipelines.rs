//! Every kernel we ship builds into a pipeline on this adapter (stock Debian lavapipe in CI): every
//! entry point of every shader with default constants, and the matmul, conv and VQ specialisations
//! (every value of every override constant with every entry point).

use vaegpu::gpu::pipeline::{shader_source, SHADERS, SNIPPETS};
use vaegpu::testing::test_gpu;

#[test]
fn every_entry_point_and_variant_builds() {
    let gpu = test_gpu();
    // matmul_sg needs subgroups, which every CPU adapter we target has (lavapipe: 8 lanes); matmul_sg64
    // and matmul_sgtex also 64-bit integers, which lavapipe has, as do optim64 and conv_grad64.
    assert!(gpu.subgroups || !gpu.is_cpu(), "CPU adapter {} without subgroups of 8+ lanes", gpu.summary.name);
    assert!(gpu.int64 || !gpu.is_cpu(), "CPU adapter {} without 64-bit integers", gpu.summary.name);
    let can = |n: &str| match n {
        "matmul_sg" => gpu.subgroups,
        "matmul_sg64" | "matmul_sgtex" => gpu.subgroups && gpu.int64,
        "optim64" | "conv_grad64" | "ceiling64" => gpu.int64,
        _ => true,
    };
    let mut built = 0;
    for (name, _) in SHADERS.iter().filter(|(n, _)| !SNIPPETS.contains(n) && can(n)) {
        let module = naga::front::wgsl::parse_str(&shader_source(name)).unwrap();
        // conv_grad64 includes conv_grad whole: only its own entries (…64) here.
        for ep in module.entry_points.iter().filter(|ep| *name != "conv_grad64" || ep.name.ends_with("64")) {
            let entry: &'static str = Box::leak(ep.name.clone().into_boxed_str());
            gpu.pipeline(name, entry, &[]).unwrap_or_else(|e| panic!("{name}::{entry}: {e}"));
            built += 1;
        }
    }
    // Specialisations: a covering set, not the full product (the 480 matmul and 80 conv pipelines of
    // the product took over three minutes on lavapipe). With every entry point, each value of every
    // override constant is built at least once: each layout (TRANS_A, TRANS_B) with each of bias,
    // ones-row and neither, the activation cycling through all five, forward (ACT) and backward
    // (DACT) epilogues alternating, and every workgroup width the launchers pick (16/32/64 on CPU
    // adapters; the subgroup kernels also 8) and, for them, each count of 8-row groups (2, 4, 8).
    let mut entries = vec![("matmul", "matmul"), ("matmul", "matmul_v4"), ("matmul", "matmul_naive")];
    entries.extend([("matmul", "matmul_tiled"), ("matmul", "matmul_tiled128"), ("matmul", "split_finish")]);
    for sg in ["matmul_sg", "matmul_sg64", "matmul_sgtex"] {
        if can(sg) {
            entries.push((sg, sg));
        }
    }
    for (shader, entry) in entries {
        let mut i = 0;
        for ta in [0.0, 1.0] {
            for tb in [0.0, 1.0] {
                for (bias, ones) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
                    let act = (i % 5) as f64;
                    let (fwd, bwd) = if i % 2 == 0 { (act, 0.0) } else { (0.0, act) };
                    let c = [
                        ("TRANS_A", ta),
                        ("TRANS_B", tb),
                        ("BIAS", bias),
                        ("ONES_ROW", ones),
                        ("ACT", fwd),
                        ("DACT", bwd),
                        // The residual epilogue on some of the forward ones.
                        ("RESID", if bwd == 0.0 && bias == 1.0 { 1.0 } else { 0.0 }),
                        ("WG", [64.0, 32.0, 16.0, 8.0][i % if shader.starts_with("matmul_sg") { 4 } else { 3 }]),
                        ("RG", [2.0, 4.0, 8.0][(i / 3) % 3]),
                    ];
                    gpu.pipeline(shader, entry, &c).unwrap_or_else(|e| panic!("{shader} {entry} {c:?}: {e}"));
                    built += 1;
                    i += 1;
                }
            }
        }
    }
    // matmul_sgtex reading a conv's im2col matrix in place (IM2COL): the forward (bias and an
    // activation), the flipped input gradient (transposed B, act') and the weight gradient (transposed
    // A, ones row), with and without relu on read, at each count of 8-row groups.
    if can("matmul_sgtex") {
        let forms = [
            [("TRANS_A", 0.0), ("TRANS_B", 0.0), ("BIAS", 1.0), ("ONES_ROW", 0.0), ("ACT", 1.0), ("DACT", 0.0)],
            [("TRANS_A", 0.0), ("TRANS_B", 1.0), ("BIAS", 0.0), ("ONES_ROW", 0.0), ("ACT", 0.0), ("DACT", 1.0)],
            [("TRANS_A", 1.0), ("TRANS_B", 0.0), ("BIAS", 0.0), ("ONES_ROW", 1.0), ("ACT", 0.0), ("DACT", 0.0)],
        ];
        // And a transposed conv's weight gradient with the matrix as B (IM2COL_B).
        let b_form =
            [("TRANS_A", 1.0), ("TRANS_B", 0.0), ("BIAS", 0.0), ("ONES_ROW", 0.0), ("ACT", 0.0), ("DACT", 0.0)];
        // One pipeline a form (each is seconds of lavapipe compile time), covering every count of
        // 8-row groups, workgroup width and relu setting between them.
        for (i, form) in forms.iter().chain([&b_form]).enumerate() {
            let mut c = form.to_vec();
            c.extend([("RESID", 0.0), ("WG", [8.0, 16.0, 64.0][i % 3]), ("RG", [8.0, 4.0, 2.0, 8.0][i])]);
            let im2col = if i == forms.len() { "IM2COL_B" } else { "IM2COL" };
            c.extend([(im2col, 1.0), ("IM2COL_RELU", (i % 2) as f64)]);
            gpu.pipeline("matmul_sgtex", "matmul_sgtex", &c).unwrap_or_else(|e| panic!("matmul_sgtex {c:?}: {e}"));
            built += 1;
        }
        // The col2im-form layers as one GEMM per output phase (IM2COL with PHASES): a transposed conv's
        // forward (bias, an activation, a residual) and a conv's input gradient (transposed B, act').
        let phase_forms = [
            [("TRANS_B", 0.0), ("BIAS", 1.0), ("ACT", 2.0), ("DACT", 0.0), ("RESID", 1.0), ("RG", 4.0)],
            [("TRANS_B", 1.0), ("BIAS", 0.0), ("ACT", 0.0), ("DACT", 1.0), ("RESID", 0.0), ("RG", 2.0)],
        ];
        for form in phase_forms {
            let mut c = form.to_vec();
            c.extend([("TRANS_A", 0.0), ("ONES_ROW", 0.0), ("WG", 8.0), ("IM2COL", 1.0), ("PHASES", 1.0)]);
            gpu.pipeline("matmul_sgtex", "matmul_sgtex", &c).unwrap_or_else(|e| panic!("matmul_sgtex {c:?}: {e}"));
            built += 1;
        }
    }
    // phase_n1 at each T = K/S and with each activation (the default build above: T 2, identity).
    for (t, act) in [(1.0, 1.0), (3.0, 2.0), (4.0, 3.0), (2.0, 4.0)] {
        let c = [("WG", 8.0), ("ACT", act), ("T", t)];
        gpu.pipeline("phase_n1", "phase_n1", &c).unwrap_or_else(|e| panic!("phase_n1 {c:?}: {e}"));
        built += 1;
    }
    // phase_n1_x2 (stride 2, both x phases an invocation) at each T and an even and an odd padding.
    for (t, pad) in [(1.0, 0.0), (2.0, 1.0), (3.0, 2.0), (4.0, 3.0)] {
        let c = [("WG", 8.0), ("T", t), ("PAD", pad)];
        gpu.pipeline("phase_n1", "phase_n1_x2", &c).unwrap_or_else(|e| panic!("phase_n1_x2 {c:?}: {e}"));
        built += 1;
    }
    // Conv: every (geometry, layer form) pair of the forward (bias, activation, residual, relu-on-read)
    // and input-gradient (transposed weights, act', residual) kernels, the activation cycling, each
    // pixels-per-invocation value (8 on CPU adapters, fewer on GPUs) and each tile shape of conv_tiled.
    for entry in ["conv_gather", "conv_gather_v4", "conv_gather_n1", "conv_tiled"] {
        let mut i = 0;
        for geom_t in [0.0, 1.0] {
            for (w_t, bias, resid, pre_relu) in
                [(0.0, 1.0, 0.0, 0.0), (0.0, 1.0, 1.0, 1.0), (1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 2.0, 0.0)]
            {
                // (conv_tiled shares the gathers' epilogue: one activation per form covers it.)
                let acts = if entry == "conv_tiled" { vec![i % 5] } else { vec![i % 5, (i + 2) % 5] };
                for act in acts {
                    let act = act as f64;
                    let (a, d) = if w_t == 1.0 { (0.0, act) } else { (act, 0.0) };
                    let mut c = vec![
                        ("GEOM_T", geom_t),
                        ("W_T", w_t),
                        ("BIAS", bias),
                        ("ACT", a),
                        ("DACT", d),
                        ("RESID", resid),
                        ("PRE_RELU", pre_relu),
                    ];
                    // The overrides each entry reads (as the launcher passes them): conv_tiled's tile
                    // shape, TM 4 or 8 by NT 1 to 4; the gathers' workgroup width and pixel count.
                    if entry == "conv_tiled" {
                        c.extend([("TM", [4.0, 8.0][i % 2]), ("NT", [1.0, 2.0, 3.0, 4.0][i % 4])]);
                    } else {
                        c.extend([("WG", [16.0, 64.0][i % 2]), ("PIX", [8.0, 4.0, 2.0, 1.0][i % 4])]);
                    }
                    gpu.pipeline("conv", entry, &c).unwrap_or_else(|e| panic!("conv {entry} {c:?}: {e}"));
                    built += 1;
                }
                i += 1;
            }
        }
    }
    for entry in ["conv_wgrad", "conv_wgrad_v4"] {
        for gather_b in [0.0, 1.0] {
            for ones in [0.0, 1.0] {
                for pre_relu in [0.0, 1.0] {
                    // The bias alone (C = 0) with the ones row, where the launcher sets it.
                    let bias_only = ones * pre_relu;
                    let c = [
                        ("GATHER_B", gather_b),
                        ("ONES", ones),
                        ("PRE_RELU", pre_relu),
                        ("WG", 64.0),
                        ("BIAS_ONLY", bias_only),
                    ];
                    gpu.pipeline("conv_grad", entry, &c).unwrap_or_else(|e| panic!("conv_grad {entry} {c:?}: {e}"));
                    built += 1;
                }
            }
        }
    }
    // The VQ kernels with the WG the launchers in kernels::vq pick (16 on a CPU adapter, 64 otherwise),
    // both values whatever this adapter is; the one-workgroup entries and recon_mse take no override.
    let vq_wg = [
        "vq_enorm",
        "vq_argmin",
        "vq_argmin_v4",
        "vq_backward",
        "vq_counts",
        "vq_counts_v4",
        "vq_fill",
        "vq_fill_v4",
        "vq_stats_ema",
        "vq_stats_grad",
    ];
    let vq_fixed = ["vq_scan", "vq_ema_finish", "vq_usage", "recon_mse"];
    for wg in [16.0, 64.0] {
        for entry in vq_wg {
            let c = [("WG", wg)];
            gpu.pipeline("vq", entry, &c).unwrap_or_else(|e| panic!("vq {entry} {c:?}: {e}"));
            built += 1;
        }
    }
    for entry in vq_fixed {
        gpu.pipeline("vq", entry, &[]).unwrap_or_else(|e| panic!("vq {entry}: {e}"));
        built += 1;
    }
    // The likelihood kernels with each likelihood (LIK: Bernoulli, Gaussian with σ, with the learned s).
    for (shader, entry) in [
        ("elbo", "elbo"),
        ("elbo", "elbo_v4"),
        ("iwae", "logw_rows"),
        ("iwae", "logw_grad_out"),
        ("iwae", "logw_rows_v4"),
        ("iwae", "logw_grad_out_v4"),
    ] {
        for lik in [0.0, 1.0, 2.0] {
            let c = [("LIK", lik)];
            gpu.pipeline(shader, entry, &c).unwrap_or_else(|e| panic!("{shader} {entry} {c:?}: {e}"));
            built += 1;
        }
    }
    // The per-example reductions at the width CPU adapters give them (`Gpu::row_lanes`; the defaults
    // and the loops here build the GPUs' 64), with the constants their launchers pass.
    type Spec = (&'static str, &'static str, Vec<(&'static str, f64)>);
    let mut rows8: Vec<Spec> = Vec::new();
    for (shader, entry) in [("elbo", "elbo"), ("elbo", "elbo_v4"), ("iwae", "logw_rows"), ("iwae", "logw_rows_v4")] {
        rows8.extend([0.0, 1.0, 2.0].map(|lik| (shader, entry, vec![("LIK", lik)])));
    }
    for entry in ["ae_loss", "ae_loss_v4"] {
        rows8.extend([0.0, 1.0].map(|mode| ("ae", entry, vec![("MODE", mode)])));
    }
    rows8.extend((0..5).map(|act| ("ae", "ae_l1", vec![("ACT", act as f64), ("WITH_GRAD", 1.0)])));
    rows8.push(("ae", "ae_kl_total", vec![]));
    rows8.extend(["ce_forward", "ce_rows"].map(|entry| ("prior", entry, vec![])));
    rows8.push(("elbo", "logvar_grad", vec![("LWG", 8.0)]));
    rows8.push(("latent_prior", "mog_backward_params", vec![]));
    for (shader, entry, mut c) in rows8 {
        c.push(("RWG", 8.0));
        gpu.pipeline(shader, entry, &c).unwrap_or_else(|e| panic!("{shader} {entry} {c:?}: {e}"));
        built += 1;
    }
    // retap with its taps flipped (a stride-1 conv's input gradient in the im2col form), 1 and 4 weights
    // an invocation.
    for entry in ["retap", "retap4"] {
        gpu.pipeline("conv_grad", entry, &[("FLIP", 1.0)]).unwrap_or_else(|e| panic!("conv_grad {entry} FLIP: {e}"));
        built += 1;
    }
    // col2im at each stride the layers use (a constant: its divisions by S become shifts).
    for (i, stride) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        let c = [("STRIDE", stride), ("VEC4", (i % 2) as f64), ("ONES", 1.0), ("ACT", 1.0)];
        gpu.pipeline("conv_grad", "col2im", &c).unwrap_or_else(|e| panic!("conv_grad col2im {c:?}: {e}"));
        built += 1;
    }
    // col2im's 64-bit form (CPU adapters with 64-bit integers) at each stride with each epilogue.
    if gpu.int64 {
        for (i, stride) in [1.0, 2.0, 3.0].into_iter().enumerate() {
            let c = [("STRIDE", stride), ("ONES", (i % 2) as f64), ("ACT", 1.0), ("DACT", (i / 2) as f64)];
            gpu.pipeline("conv_grad64", "col2im64", &c).unwrap_or_else(|e| panic!("col2im64 {c:?}: {e}"));
            built += 1;
        }
        for resid in [1.0, 2.0] {
            let c = [("STRIDE", 2.0), ("RESID", resid)];
            gpu.pipeline("conv_grad64", "col2im64", &c).unwrap_or_else(|e| panic!("col2im64 {c:?}: {e}"));
            built += 1;
        }
    }
    // im2col, per row and flat: each layout with and without vec4 channels and relu-on-read.
    for entry in ["im2col", "im2col_flat"] {
        for gather_b in [0.0, 1.0] {
            for vec4 in [0.0, 1.0] {
                let c = [("GATHER_B", gather_b), ("VEC4", vec4), ("PRE_RELU", 1.0 - gather_b)];
                gpu.pipeline("conv_grad", entry, &c).unwrap_or_else(|e| panic!("conv_grad {entry} {c:?}: {e}"));
                built += 1;
            }
        }
    }
    // im2col1_tex, a one-channel image through its texture: a conv's input (relu-on-read or not) and
    // a transposed conv's output gradient.
    for (gather_b, relu) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0)] {
        let c = [("GATHER_B", gather_b), ("PRE_RELU", relu)];
        gpu.pipeline("conv_grad", "im2col1_tex", &c).unwrap_or_else(|e| panic!("conv_grad im2col1_tex {c:?}: {e}"));
        built += 1;
    }
    // bias_tex, a transposed conv's bias through its output gradient's texture.
    gpu.pipeline("conv_grad", "bias_tex", &[("ONES", 1.0), ("BIAS_ONLY", 1.0), ("GATHER_B", 1.0)])
        .unwrap_or_else(|e| panic!("conv_grad bias_tex: {e}"));
    built += 1;
    // The autoencoder kernels with each mode, activation and gradient setting.
    for (entry, name, values) in
        [("ae_corrupt", "MODE", &[1.0, 2.0][..]), ("ae_loss", "MODE", &[1.0][..]), ("ae_loss_v4", "MODE", &[1.0][..])]
    {
        for &v in values {
            gpu.pipeline("ae", entry, &[(name, v)]).unwrap_or_else(|e| panic!("ae {entry} {name} {v}: {e}"));
            built += 1;
        }
    }
    for entry in ["ae_l1", "ae_kl_columns"] {
        for act in 0..5 {
            let c = [("ACT", act as f64), ("WITH_GRAD", 1.0)];
            gpu.pipeline("ae", entry, &c).unwrap_or_else(|e| panic!("ae {entry} {c:?}: {e}"));
            built += 1;
        }
    }
    // The gathers with binarize (the default constants built them without).
    for entry in ["gather", "gather_v4"] {
        gpu.pipeline("data", entry, &[("BINARIZE", 1.0)]).unwrap_or_else(|e| panic!("data {entry}: {e}"));
        built += 1;
    }
    // A new vq entry point must be added to one of the lists above.
    let vq = naga::front::wgsl::parse_str(&shader_source("vq")).unwrap();
    let mut have: Vec<&str> = vq.entry_points.iter().map(|e| e.name.as_str()).collect();
    let mut listed: Vec<&str> = vq_wg.iter().chain(&vq_fixed).copied().collect();
    have.sort();
    listed.sort();
    assert_eq!(have, listed, "vq.wgsl entry points vs the specialisations built here");
    assert!(built > 100, "only {built} pipelines");
}
