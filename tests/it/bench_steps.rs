//! The step sweep (`vaegpu bench --steps`) and the start-up choice of the matmul and conv kernels: both
//! run on this adapter, the sweep through the trainer's loop with finite metrics, the choice timed once
//! and then read from its cache. No speed is asserted here (speed belongs in benchmarks).

use std::process::Command;

use vaegpu::gpu::{ConvKernel, MatmulKernel};
use vaegpu::testing::test_gpu;

#[test]
fn step_sweep_times_every_point_through_the_trainer_loop() {
    let gpu = test_gpu();
    let rows = vaegpu::bench::step_sweep(&gpu, "vae", &[16], &[1, 3], 0.01).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 2);
    for (r, k) in rows.iter().zip([1, 3]) {
        assert_eq!((r.model.as_str(), r.batch, r.steps_per_submit), ("vae", 16, k));
        assert!(r.steps >= k && r.steps % k == 0, "{r:?}");
        assert!(r.seconds > 0.0 && r.steps_per_second.is_finite() && r.steps_per_second > 0.0, "{r:?}");
        assert!((r.images_per_second - 16.0 * r.steps_per_second).abs() < 1e-6 * r.images_per_second, "{r:?}");
        assert!(r.gflops > 0.0, "{r:?}");
    }
    // The VQ families resolve their own settings (vq-vae-2's two levels) as the trainer does.
    let rows = vaegpu::bench::step_sweep(&gpu, "vq-vae-2", &[2], &[1], 0.001).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    assert!(rows[0].steps_per_second > 0.0);
    let err = vaegpu::bench::step_sweep(&gpu, "gan", &[2], &[1], 0.001).expect_err("unknown model refused");
    assert!(err.to_string().contains("unknown model 'gan'"), "{err}");
}

/// The step sweep puts the model back before each point: `Core::put_back` returns the parameters, Adam's
/// moments and the state words to a `Core::snapshot` taken before further steps changed them all.
#[test]
fn put_back_returns_the_model_to_its_snapshot() {
    use vaegpu::train::{Session, TrainConfig};
    let gpu = test_gpu();
    let cfg = TrainConfig { model: "vae".into(), batch: 16, ..TrainConfig::default() };
    let data = vaegpu::bench::synthetic_dataset(64, 16).unwrap();
    let s = Session::new(&gpu, &cfg, &data, true).unwrap();
    let (prog, core) = (s.train_step.as_ref().unwrap(), s.core());
    let read = || {
        let n = core.layout.total;
        let f = |b: &wgpu::Buffer| gpu.read::<f32>(b, 0, n).unwrap();
        (f(&core.params), f(&core.adam_m), f(&core.adam_v), core.read_state(&gpu).unwrap())
    };
    gpu.submit(prog, 2);
    gpu.sync().unwrap();
    let snap = core.snapshot(&gpu).unwrap();
    let before = read();
    gpu.submit(prog, 3);
    gpu.sync().unwrap();
    let trained = read();
    assert!(trained.0 != before.0 && trained.1 != before.1 && trained.2 != before.2, "the steps changed the model");
    assert_ne!(trained.3, before.3, "the steps moved the state words");
    core.put_back(&gpu, &snap);
    gpu.sync().unwrap();
    assert!(read() == before, "put_back restores parameters, moments and state words");
}

#[test]
fn launch_profile_times_every_launch_of_a_step_in_order() {
    let gpu = test_gpu();
    let t = vaegpu::bench::Timing { reps: 1, warmup: std::time::Duration::ZERO };
    let r = vaegpu::bench::run_launches(&gpu, "ae", 16, t, 3).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.model.as_str(), r.batch, r.rounds), ("ae", 16, 3));
    // Gather, forward, loss, backward, norm, Adam, metrics, cursor: each launch once, in step order.
    assert!(r.launches.len() >= 10, "{}", r.table());
    for (i, l) in r.launches.iter().enumerate() {
        assert_eq!(l.index, i);
        assert!(l.micros > 0.0 && l.micros.is_finite(), "{l:?}");
        // The median of three rounds lies between the extremes; the share is of the medians' sum.
        assert!(l.min_micros <= l.micros && l.micros <= l.max_micros, "{l:?}");
        assert!((l.share - l.micros / r.launches_micros).abs() <= 1e-12, "{l:?}");
        // The kernel is the launch's entry point (the matmul labels name it).
        assert!(!l.entry.is_empty(), "{l:?}");
        for mm in ["matmul_sg", "matmul_v4", "matmul_tiled"] {
            if l.label.contains(&format!("{mm}[")) {
                assert!(l.entry.starts_with(mm), "{l:?}");
            }
        }
    }
    // Each launch's rate is the work its launcher states over its median time: a product's 2·M·N·K
    // FLOPs (its shape from the label), Adam's 16 bytes read and 12 written a parameter, the gather's
    // byte read and float written a pixel (and an index a row); the fraction as the bench tables'.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    let ceiling = |l: &vaegpu::bench::LaunchRow, read: f64, write: f64| {
        (read / r.ceilings.read_gbs + write / r.ceilings.write_gbs) / 1e3 / l.micros
    };
    let (mut products, mut adams, mut gathers) = (0, 0, 0);
    for l in &r.launches {
        if l.label.contains("matmul") && !l.label.contains("split_finish") {
            let shape = l.label.split('[').nth(1).and_then(|s| s.split([']', ' ']).next()).unwrap_or("");
            let mnk: Vec<f64> = shape.split('x').filter_map(|v| v.parse().ok()).collect();
            assert_eq!(mnk.len(), 3, "{l:?}");
            let flops = 2.0 * mnk[0] * mnk[1] * mnk[2];
            assert!(l.unit == "GFLOP/s" && close(l.rate, flops / l.micros / 1e3), "{l:?}");
            assert!(close(l.fraction_of_ceiling, l.rate / r.ceilings.fma_gflops), "{l:?}");
            products += 1;
        } else if let Some(n) = l.label.strip_prefix("adam[").and_then(|s| s.strip_suffix(']')) {
            let n: f64 = n.parse().unwrap_or_else(|e| panic!("{l:?}: {e}"));
            assert!(l.unit == "GB/s" && close(l.rate, 28.0 * n / l.micros / 1e3), "{l:?}");
            assert!(close(l.fraction_of_ceiling, ceiling(l, 16.0 * n, 12.0 * n)), "{l:?}");
            adams += 1;
        } else if l.label.contains("gather") {
            let (b, d) = (16.0, 784.0);
            assert!(l.unit == "GB/s" && close(l.rate, (b * (d + 4.0) + 4.0 * b * d) / l.micros / 1e3), "{l:?}");
            gathers += 1;
        } else if l.label.contains("advance") || l.label.contains("norm_finalize") {
            assert!(l.unit == "-" && l.rate == 0.0 && l.fraction_of_ceiling == 0.0, "{l:?}");
        }
    }
    assert!(products >= 6 && adams == 1 && gathers == 1, "{}", r.table());
    assert!(r.ceilings.read_gbs > 0.0 && r.ceilings.write_gbs > 0.0 && r.ceilings.fma_gflops > 0.0);
    let first = &r.launches[0].label;
    assert!(first.contains("gather"), "{first}");
    assert!(r.launches.iter().any(|l| l.label.starts_with("adam[") && l.entry.starts_with("adam")), "{}", r.table());
    assert!(r.step_micros > 0.0 && r.step_micros.is_finite());
    assert!(r.step_min_micros <= r.step_micros && r.step_micros <= r.step_max_micros);
    let sum: f64 = r.launches.iter().map(|l| l.micros).sum();
    assert!((r.launches_micros - sum).abs() <= 1e-9 * sum);
    // By kernel: every launch counted once under its entry point, the most time first.
    assert_eq!(r.kernels.iter().map(|k| k.launches).sum::<usize>(), r.launches.len());
    for k in &r.kernels {
        let mine: Vec<_> = r.launches.iter().filter(|l| l.entry == k.entry).collect();
        assert_eq!(mine.len(), k.launches, "{k:?}");
        let micros: f64 = mine.iter().map(|l| l.micros).sum();
        assert!((k.micros - micros).abs() <= 1e-9 * micros, "{k:?}");
    }
    assert!(r.kernels.windows(2).all(|w| w[0].micros >= w[1].micros), "{}", r.table());
    assert!((r.kernels.iter().map(|k| k.share).sum::<f64>() - 1.0).abs() < 1e-9);
    let table = r.table();
    for text in
        ["its launches alone add up to", "3 rounds", "by kernel:", "step rounds:", "ceilings: read", "GFLOP/s", "GB/s"]
    {
        assert!(table.contains(text), "{text}: {table}");
    }
    let err = vaegpu::bench::run_launches(&gpu, "gan", 2, t, 1).expect_err("unknown model refused");
    assert!(err.to_string().contains("unknown model 'gan'"), "{err}");
}

#[test]
fn matmul_choice_is_timed_once_then_cached_and_can_be_forced() {
    let dir = std::env::temp_dir().join(format!("vaegpu-tune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_vaegpu");
    let run = |forced: Option<&str>| {
        let mut c = Command::new(bin);
        c.args(["bench", "--steps", "--batches", "0"]).env("VAEGPU_CACHE_DIR", &dir);
        c.env_remove("VAEGPU_MATMUL").env_remove("VAEGPU_CONV").env_remove("VAEGPU_SPLIT_K");
        c.env_remove("VAEGPU_ROW_LANES");
        if let Some(f) = forced {
            c.args(f.split(' '));
        }
        c.output().expect("vaegpu runs")
    };
    // The adapter is opened (and the kernel chosen) before the bad --batches value is refused.
    let out = run(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--batches and --submits need at least one value"), "{stderr}");
    let cache = std::fs::read_to_string(dir.join("tuning.json")).expect("the choice is cached");
    let map: serde_json::Value = serde_json::from_str(&cache).expect("cache is JSON");
    let entry = map.as_object().unwrap().values().next().expect("one adapter").clone();
    let chosen = entry["matmul"].as_str().unwrap().to_string();
    assert!(["register", "subgroup", "tiled"].contains(&chosen.as_str()), "{cache}");
    assert!(entry["register_us"].as_f64().unwrap() > 0.0 && entry["tiled_us"].as_f64().unwrap() > 0.0);
    assert!(stderr.contains(&format!("matmul kernel: {chosen}")), "{stderr}");
    // A second start reads the cache: an edited choice is what it uses.
    let other = if chosen == "tiled" { "register" } else { "tiled" };
    std::fs::write(dir.join("tuning.json"), cache.replace(&format!("\"{chosen}\""), &format!("\"{other}\""))).unwrap();
    let stderr = String::from_utf8_lossy(&run(None).stderr).to_string();
    assert!(stderr.contains(&format!("matmul kernel: {other}")), "{stderr}");
    // --matmul forces one; a wrong name is refused by the parser.
    let stderr = String::from_utf8_lossy(&run(Some(&format!("--matmul {chosen}"))).stderr).to_string();
    assert!(stderr.contains(&format!("matmul kernel: {chosen}")), "{stderr}");
    let out = run(Some("--matmul fastest"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown matmul kernel 'fastest'"));
    // The conv kernel: a CPU adapter takes the matmul forms untimed (nothing cached); a GPU times each
    // kind once.
    let conv_cache = dir.join("tuning-conv.json");
    if gpu_is_cpu() {
        assert!(stderr.contains("conv kernel: matmul"), "{stderr}");
        assert!(!conv_cache.exists(), "a CPU adapter's conv kernel was timed");
    } else {
        let cache = std::fs::read_to_string(&conv_cache).expect("the conv choice is cached");
        assert!(stderr.contains("conv kernel: "), "{stderr}");
        assert!(cache.contains("gather_us") && cache.contains("matmul_us"), "{cache}");
    }
    // --conv forces one; a wrong name is refused.
    let stderr = String::from_utf8_lossy(&run(Some("--conv tiled")).stderr).to_string();
    assert!(stderr.contains("conv kernel: tiled"), "{stderr}");
    let out = run(Some("--conv fastest"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown conv kernel 'fastest'"));
    // The split K of weight gradients: on GPUs by default, off on CPU adapters; --split-k forces it.
    let default = if gpu_is_cpu() { "split K: off" } else { "split K: on" };
    assert!(stderr.contains(default), "{stderr}");
    let stderr = String::from_utf8_lossy(&run(Some("--split-k true")).stderr).to_string();
    assert!(stderr.contains("split K: on"), "{stderr}");
    let out = run(Some("--split-k sometimes"));
    assert!(!out.status.success());
    // The loss reductions' width: 8 lanes on CPU adapters, 64 on GPUs; --row-lanes forces a power of two
    // up to 64.
    let default = if gpu_is_cpu() { "loss lanes: 8," } else { "loss lanes: 64," };
    assert!(stderr.contains(default), "{stderr}");
    let stderr = String::from_utf8_lossy(&run(Some("--row-lanes 32")).stderr).to_string();
    assert!(stderr.contains("loss lanes: 32,"), "{stderr}");
    for bad in ["48", "128", "1", "eight"] {
        let out = run(Some(&format!("--row-lanes {bad}")));
        assert_eq!(out.status.code(), Some(2), "--row-lanes {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("'{bad}' is not one of 2, 4, 8, 16, 32, 64")), "{err}");
    }
    // The subgroup matmul's 64-bit accesses and texture operands: on where the device has 64-bit
    // integers (lavapipe does), the textures aliasing the buffers on lavapipe; --wide-loads false turns
    // both off, --tex-operands false the textures, --alias-operands false the aliasing.
    if gpu_is_cpu() {
        assert!(stderr.contains("wide loads: on, texture operands: on, aliased)"), "{stderr}");
        let stderr = String::from_utf8_lossy(&run(Some("--alias-operands false")).stderr).to_string();
        assert!(stderr.contains("wide loads: on, texture operands: on, copied)"), "{stderr}");
    }
    let stderr = String::from_utf8_lossy(&run(Some("--wide-loads false")).stderr).to_string();
    assert!(stderr.contains("wide loads: off, texture operands: off)"), "{stderr}");
    let stderr = String::from_utf8_lossy(&run(Some("--tex-operands false")).stderr).to_string();
    assert!(stderr.contains("texture operands: off)"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn gpu_is_cpu() -> bool {
    vaegpu::testing::shared_gpu().is_cpu()
}

/// The conv start-up timing (which runs on GPUs only) runs here too, at batch 2: every kernel the
/// device fits (lavapipe: all three), the fastest chosen.
#[test]
fn every_conv_kernel_times_on_this_adapter() {
    let gpu = vaegpu::testing::shared_gpu();
    let t = vaegpu::kernels::tune::time_conv_at(gpu, 2).unwrap_or_else(|e| panic!("{e}"));
    let tiled = vaegpu::kernels::conv::ConvGather::tiled_fits(gpu);
    assert_eq!(t.tiled_us.is_some(), tiled, "{t:?}");
    let mut times = vec![(ConvKernel::Gather, t.gather_us), (ConvKernel::Matmul, t.matmul_us.expect("matmul timed"))];
    times.extend(t.tiled_us.map(|u| (ConvKernel::Tiled, u)));
    assert!(times.iter().all(|(_, u)| *u > 0.0), "{t:?}");
    let fastest = times.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    assert_eq!(t.conv, fastest, "{t:?}");
}

#[test]
fn every_matmul_kernel_times_on_this_adapter() {
    let gpu = test_gpu();
    let t = vaegpu::kernels::tune::time_matmul(&gpu).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.register_us > 0.0 && t.tiled_us > 0.0, "{t:?}");
    assert_eq!(t.subgroup_us.is_some(), gpu.subgroups, "{t:?}");
    let mut times = vec![(MatmulKernel::Register, t.register_us), (MatmulKernel::Tiled, t.tiled_us)];
    times.extend(t.subgroup_us.map(|u| (MatmulKernel::Subgroup, u)));
    let fastest = times.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    assert_eq!(t.matmul, fastest, "{t:?}");
}
