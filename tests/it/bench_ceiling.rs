//! The ceiling kernels the benchmark measures every rate against (shaders/ceiling.wgsl) build and give
//! checked results on this adapter: `ceilings` verifies the copy bit for bit and the FMA chains against
//! their closed form before timing them, and returns an error otherwise; likewise the conv benchmark.
//! No speed is asserted here.

use std::time::Duration;

use vaegpu::bench::Timing;
use vaegpu::testing::test_gpu;

/// One replay a kernel, one warm-up submission: the results are checked the same way, only the
/// figures are rougher.
const QUICK: Timing = Timing { reps: 1, warmup: Duration::ZERO };

#[test]
fn ceilings_are_checked_and_positive() {
    let gpu = test_gpu();
    let c = vaegpu::bench::ceilings(&gpu, QUICK).unwrap_or_else(|e| panic!("ceiling benchmark failed: {e}"));
    assert!(c.copy_gbs.is_finite() && c.copy_gbs > 0.0, "{c:?}");
    assert!(c.fma_gflops.is_finite() && c.fma_gflops > 0.0, "{c:?}");
    assert!(c.copy_bytes >= 1 << 20 && c.fma_invocations >= 4096 * 64 && c.fma_iters >= 256, "{c:?}");
    // The copy ceiling is the fastest of the forms the adapter runs, each checked bit for bit first:
    // 64-bit components where it moves data so (lavapipe), image loads where its buffers are aliased.
    let forms: &[&str] = match (gpu.int64 && gpu.wide_loads, gpu.alias_operands) {
        (false, _) => &["vec4"],
        (true, false) => &["vec4", "64-bit"],
        (true, true) => &["vec4", "64-bit", "texture"],
    };
    assert!(forms.contains(&c.copy_form.as_str()), "{c:?}");
    // Likewise the read ceiling (the texture form where the buffers are aliased) and the write ceiling
    // (vec4 or 64-bit stores), each checked word for word before it is timed.
    assert!(c.read_gbs.is_finite() && c.read_gbs > 0.0 && forms.contains(&c.read_form.as_str()), "{c:?}");
    assert!(
        c.write_gbs.is_finite() && c.write_gbs > 0.0 && forms[..forms.len().min(2)].contains(&c.write_form.as_str()),
        "{c:?}"
    );
}

/// `vaegpu bench --model conv-vae` at a small batch: every layer's forward, input-gradient and
/// parameter-gradient kernels are checked against the reference (an error otherwise) and timed, with
/// the scalar kernel timed beside the one-output-channel kernel it replaced, and the whole step.
#[test]
fn conv_bench_checks_and_times_every_layer() {
    let gpu = vaegpu::testing::shared_gpu();
    let r = vaegpu::bench::run_conv(gpu, 4, QUICK).unwrap_or_else(|e| panic!("conv benchmark failed: {e}"));
    let names: Vec<&str> = r.rows.iter().map(|row| row.name.as_str()).collect();
    for layer in ["enc.conv1", "enc.conv2", "dec.deconv2", "dec.deconv1"] {
        for what in ["fwd", "dX", "dW"] {
            assert!(names.contains(&format!("{layer} {what}").as_str()), "{layer} {what} missing: {names:?}");
        }
    }
    // Each conv kernel the adapter did not choose, beside the one it did, on the launches where it
    // changes what runs (checked against the reference at batch 2 before it is timed): the tiled kernel
    // on every launch with 16+ output channels; the gather kernel where the chosen one is not it (on a
    // CPU adapter, whose choice is the matmul forms, every launch: each has an im2col or col2im form;
    // on a GPU the one-channel launches keep their own kernel whatever the choice); the matmul forms
    // on every launch.
    use vaegpu::gpu::ConvKernel;
    let wide_launches = [
        ("enc.conv1 fwd", true),
        ("enc.conv1 dX", false),
        ("enc.conv2 fwd", true),
        ("enc.conv2 dX", true),
        ("dec.deconv2 fwd", true),
        ("dec.deconv2 dX", true),
        ("dec.deconv1 fwd", false),
        ("dec.deconv1 dX", true),
    ];
    for k in [ConvKernel::Gather, ConvKernel::Tiled, ConvKernel::Matmul] {
        for (launch, wide) in wide_launches {
            let row = format!("{launch} [{k}]");
            let present = k != gpu.conv
                && match k {
                    ConvKernel::Tiled => wide,
                    ConvKernel::Gather => wide || gpu.is_cpu() && gpu.conv == ConvKernel::Matmul,
                    _ => true,
                };
            assert_eq!(names.contains(&row.as_str()), present, "{row}: {names:?}");
        }
    }
    // The one-output-channel layers: enc.conv1's input gradient, dec.deconv1's forward.
    for row in ["enc.conv1 dX [scalar]", "dec.deconv1 fwd [scalar]"] {
        assert!(names.contains(&row), "{row} missing: {names:?}");
    }
    assert!(r.rows.iter().all(|row| row.micros.is_finite() && row.micros > 0.0), "{:?}", r.rows);
    let step = r.step.expect("the step is timed");
    assert!(step.step_ms.is_finite() && step.step_ms > 0.0, "{step:?}");
}

/// `--rounds`: the same benchmark run three times merges into medians, with each row's fastest and
/// slowest run; rates, fractions of the ceilings (a GB/s row's on the read/write roofline) and the step
/// figures follow from the medians.
#[test]
fn rounds_merge_into_medians_with_their_extremes() {
    use vaegpu::bench::{merge_rounds, Ceilings, Report, Row, StepFigures};
    let run = |micros: [f64; 3], copy: f64, fma: f64, step_ms: f64| Report {
        adapter: "test".into(),
        ceilings: Ceilings {
            copy_gbs: copy,
            copy_bytes: 1 << 20,
            copy_form: "vec4".into(),
            read_gbs: 2.0 * copy,
            read_form: "texture".into(),
            write_gbs: copy,
            write_form: "64-bit".into(),
            fma_gflops: fma,
            fma_invocations: 1,
            fma_iters: 1,
        },
        batch: 8,
        rounds: 1,
        rows: [("mm", "GFLOP/s", 2e6), ("copy", "GB/s", 4e6), ("advance", "-", 0.0)]
            .iter()
            .zip(micros)
            .map(|(&(name, unit, work), us)| Row {
                name: name.into(),
                shape: "s".into(),
                micros: us,
                min_micros: us,
                max_micros: us,
                rate: if unit == "-" { 0.0 } else { work / (us * 1e-6) / 1e9 },
                unit,
                fraction_of_ceiling: 0.0,
                // The GB/s row reads 3 MB and writes 1 MB.
                read_bytes: if unit == "GB/s" { 0.75 * work } else { 0.0 },
                write_bytes: if unit == "GB/s" { 0.25 * work } else { 0.0 },
            })
            .collect(),
        step: Some(StepFigures {
            step_ms,
            steps_per_second: 1e3 / step_ms,
            step_gflops: 1e7 / (step_ms * 1e-3) / 1e9,
            epoch_seconds_estimate: step_ms * 1e-3 * 7500.0,
        }),
    };
    let r = merge_rounds(vec![
        run([10.0, 40.0, 5.0], 4.0, 50.0, 2.0),
        run([30.0, 20.0, 9.0], 6.0, 70.0, 4.0),
        run([20.0, 80.0, 1.0], 5.0, 60.0, 3.0),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.rounds, 3);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(r.ceilings.copy_gbs, 5.0) && close(r.ceilings.fma_gflops, 60.0), "{:?}", r.ceilings);
    assert!(close(r.ceilings.read_gbs, 10.0) && close(r.ceilings.write_gbs, 5.0), "{:?}", r.ceilings);
    let want = [(20.0, 10.0, 30.0), (40.0, 20.0, 80.0), (5.0, 1.0, 9.0)];
    for (row, (med, lo, hi)) in r.rows.iter().zip(want) {
        assert!(close(row.micros, med) && close(row.min_micros, lo) && close(row.max_micros, hi), "{row:?}");
    }
    // 2 MFLOP in 20 µs: 100 GFLOP/s, of a 60 GFLOP/s ceiling. 4 MB in 40 µs: 100 GB/s; at the read
    // ceiling of 10 GB/s and the write ceiling of 5, its 3 MB read and 1 MB written take 300 + 200 µs,
    // 12.5 times its 40.
    assert!(close(r.rows[0].rate, 100.0) && close(r.rows[0].fraction_of_ceiling, 100.0 / 60.0), "{:?}", r.rows[0]);
    assert!(close(r.rows[1].rate, 100.0) && close(r.rows[1].fraction_of_ceiling, 12.5), "{:?}", r.rows[1]);
    assert!(r.rows[2].rate == 0.0 && r.rows[2].fraction_of_ceiling == 0.0, "{:?}", r.rows[2]);
    let st = r.step.as_ref().expect("step");
    assert!(close(st.step_ms, 3.0) && close(st.steps_per_second, 1e3 / 3.0), "{st:?}");
    assert!(close(st.step_gflops, 1e7 / 3e-3 / 1e9) && close(st.epoch_seconds_estimate, 3e-3 * 7500.0), "{st:?}");
    let table = r.table();
    assert!(table.contains("min - max") && table.contains("3 rounds in turns"), "{table}");
    // Runs that listed other rows are refused, as is nothing to merge.
    let mut other = run([1.0, 1.0, 1.0], 1.0, 1.0, 1.0);
    other.rows[1].name = "copy2".into();
    assert!(merge_rounds(vec![run([1.0, 1.0, 1.0], 1.0, 1.0, 1.0), other]).is_err());
    assert!(merge_rounds(vec![]).is_err());
    // One run merges into itself.
    let one = merge_rounds(vec![run([10.0, 40.0, 5.0], 4.0, 50.0, 2.0)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.rounds, 1);
    assert!(!one.table().contains("min - max"));
}

/// `vaegpu bench` (the MLP VAE's table) at a small batch: every matmul row is checked against the
/// reference before it is timed (an error otherwise). With split K on, as on a GPU, the tiled
/// kernel's forwards and input gradients also run split (partials and split_finish), beside the
/// unsplit rows.
#[test]
fn vae_bench_checks_every_matmul_row_with_split_k() {
    let mut gpu = test_gpu();
    gpu.split_k = true;
    let r = vaegpu::bench::run(&gpu, 8, QUICK).unwrap_or_else(|e| panic!("vae benchmark failed: {e}"));
    let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
    for want in
        ["enc.fc1 fwd [tiled, split K /6]", "dec.out dX [tiled, split K /6]", "enc.head fwd [tiled, split K /3]"]
    {
        assert!(names.contains(&want), "{want}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("dW [tiled, split")), "{names:?}");
    for row in &r.rows {
        assert!(row.micros > 0.0 && row.micros.is_finite(), "{row:?}");
    }
    assert!(r.step.as_ref().is_some_and(|s| s.steps_per_second > 0.0));
}
