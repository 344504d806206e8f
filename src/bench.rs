//! Benchmarks: every kernel at the default model's shapes, and a whole training step.
//! Each kernel's result is checked against the CPU reference before it is timed; timing submits the
//! launch `reps` times in one command buffer and waits for the GPU inside the timed region.

use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Launch, Program};
use crate::kernels::conv::{ConvGather, ConvGeom, ConvWgrad};
use crate::kernels::matmul::Matmul;
use crate::models::vae::{GpuDataset, Vae, VaeConfig};
use crate::nn::Op;
use crate::reference::matmul::{matmul, transpose};
use crate::testing::{poisoned, to_f32, uniform, Tol};

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub shape: String,
    pub micros: f64,
    /// GFLOP/s for arithmetic kernels, GB/s for memory-bound ones.
    pub rate: f64,
    pub unit: &'static str,
    /// `rate` over the adapter's measured ceiling of the same unit (FMA peak for GFLOP/s, copy bandwidth
    /// for GB/s); 0 for rows without a rate.
    pub fraction_of_ceiling: f64,
}

/// The adapter's ceilings, measured in the same run (shaders/ceiling.wgsl).
#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Device-to-device copy: bytes read plus bytes written per second, in GB/s.
    pub copy_gbs: f64,
    pub copy_bytes: usize,
    /// Independent FMA chains: GFLOP/s (an FMA counts 2).
    pub fma_gflops: f64,
    pub fma_invocations: usize,
    pub fma_iters: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub adapter: String,
    pub ceilings: Ceilings,
    pub batch: usize,
    pub rows: Vec<Row>,
    pub step_ms: f64,
    pub steps_per_second: f64,
    pub step_gflops: f64,
    /// Estimated seconds for one Fashion-MNIST epoch (60000 / batch steps) at this rate.
    pub epoch_seconds_estimate: f64,
}

impl Report {
    pub fn table(&self) -> String {
        let c = &self.ceilings;
        let mut s = format!(
            "adapter: {}\nceilings: copy {:.2} GB/s ({} MiB), fma {:.2} GFLOP/s\n{:<34} {:<22} {:>11} {:>10} {:<7} {:>10}\n",
            self.adapter,
            c.copy_gbs,
            c.copy_bytes >> 20,
            c.fma_gflops,
            "kernel",
            "shape",
            "time (µs)",
            "rate",
            "",
            "of ceiling"
        );
        for r in &self.rows {
            let frac = if r.unit == "-" { String::new() } else { format!("{:.1}%", 100.0 * r.fraction_of_ceiling) };
            s += &format!(
                "{:<34} {:<22} {:>11.1} {:>10.2} {:<7} {:>10}\n",
                r.name, r.shape, r.micros, r.rate, r.unit, frac
            );
        }
        s += &format!(
            "training step (batch {}): {:.2} ms, {:.1} steps/s, {:.2} GFLOP/s; Fashion-MNIST epoch ≈ {:.1} s\n",
            self.batch, self.step_ms, self.steps_per_second, self.step_gflops, self.epoch_seconds_estimate
        );
        s
    }
}

/// Mean seconds of one replay: `submit(1)` as a warm-up, then `submit(reps)` timed up to the GPU's end.
fn time_reps(gpu: &Gpu, reps: usize, submit: impl Fn(usize)) -> Result<f64> {
    submit(1);
    gpu.sync()?;
    let t = Instant::now();
    submit(reps);
    gpu.sync()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

/// Mean seconds of one replay of `prog`, replayed `reps` times in one submission after a warm-up.
pub fn time_program(gpu: &Gpu, prog: &Program, reps: usize) -> Result<f64> {
    time_reps(gpu, reps, |n| gpu.submit(prog, n))
}

/// Mean seconds of one launch, recorded `reps` times into one submission after a warm-up.
pub fn time_launch(gpu: &Gpu, launch: &Launch, reps: usize) -> Result<f64> {
    time_reps(gpu, reps, |n| gpu.submit_launch(launch, n))
}

fn one(l: Launch) -> Program {
    Program { label: l.label.clone(), launches: vec![l] }
}

/// Times a matmul after checking it against the reference.
fn bench_matmul(gpu: &Gpu, name: &str, mm: Matmul, reps: usize) -> Result<Row> {
    let a_rows = if mm.ones_row { mm.m - 1 } else { mm.m };
    let b_rows = if mm.bias { mm.k + 1 } else { mm.k };
    let a = uniform(1, a_rows * mm.k, -1.0, 1.0);
    let b = uniform(2, b_rows * mm.n, -1.0, 1.0);
    let a_st = if mm.trans_a { transpose(&a, a_rows, mm.k) } else { a.clone() };
    let b_st = if mm.trans_b { transpose(&b, mm.k, mm.n) } else { b.clone() };
    let ab = gpu.upload("bench.a", &to_f32(&a_st));
    let bb = gpu.upload("bench.b", &to_f32(&b_st));
    let cb = poisoned(gpu, "bench.c", mm.m * mm.n);
    let l = mm.launch(gpu, name, (&ab).into(), (&bb).into(), (&cb).into(), None)?;
    gpu.run(&l)?;
    let mut a_op = a;
    if mm.ones_row {
        a_op.extend(std::iter::repeat_n(1.0, mm.k));
    }
    let want: Vec<f64> = matmul(&a_op, &b, mm.m, mm.n, mm.k, mm.bias)
        .into_iter()
        .map(|v| crate::reference::elementwise::act_forward(mm.act, v))
        .collect();
    let got = gpu.read_f32(&cb)?;
    Tol::new(1e-4, 1e-4)
        .check(name, &got[..mm.m * mm.n], &want)
        .map_err(|e| Error::Output(format!("benchmark result wrong: {e}")))?;
    let secs = time_program(gpu, &one(l), reps)?;
    Ok(Row {
        name: name.into(),
        shape: format!("{}x{}x{}", mm.m, mm.n, mm.k),
        micros: secs * 1e6,
        rate: mm.flops() / secs / 1e9,
        unit: "GFLOP/s",
        fraction_of_ceiling: 0.0,
    })
}

/// Forward, input gradient and parameter gradient of one conv layer at `batch`: each checked against
/// the CPU reference at batch 2 (same spatial shape), then timed at `batch`.
fn bench_conv(
    gpu: &Gpu,
    name: &str,
    g: &ConvGeom,
    batch: usize,
    (h, w): (usize, usize),
    reps: usize,
) -> Result<Vec<Row>> {
    use crate::reference::conv::{conv_backward_input, conv_backward_params, conv_forward};
    let (oh, ow) = g.out_hw(h, w).map_err(Error::Config)?;
    let mut rows = Vec::new();
    let shape = format!(
        "{batch}x{h}x{w}x{}->{oh}x{ow}x{} k{}s{}{}",
        g.cin,
        g.cout,
        g.k,
        g.stride,
        if g.transposed { "T" } else { "" }
    );
    let wrong = |e: String| Error::Output(format!("benchmark result wrong: {e}"));
    for b in [2, batch] {
        let x = uniform(1, b * h * w * g.cin, -1.0, 1.0);
        let blk = uniform(2, g.block_rows() * g.cout, -1.0, 1.0);
        let dy = uniform(3, b * oh * ow * g.cout, -1.0, 1.0);
        let xb = gpu.upload("bench.x", &to_f32(&x));
        let wb = gpu.upload("bench.w", &to_f32(&blk));
        let dyb = gpu.upload("bench.dy", &to_f32(&dy));
        let yb = poisoned(gpu, "bench.y", b * oh * ow * g.cout);
        let dxb = poisoned(gpu, "bench.dx", b * h * w * g.cin);
        let dwb = poisoned(gpu, "bench.dw", g.block_rows() * g.cout);
        let fwd = ConvGather::forward(g, b, h, w, crate::kernels::Act::Identity)?;
        let dx = ConvGather::input_grad(g, b, h, w, crate::kernels::Act::Identity)?;
        let lf = fwd.launch(gpu, name, (&xb).into(), (&wb).into(), (&yb).into(), None, None)?;
        let lx = dx.launch(gpu, name, (&dyb).into(), (&wb).into(), (&dxb).into(), None, None)?;
        let mut scratch = Vec::new();
        let mut lw = Program::new("dW");
        let mut wflops = 0.0;
        for (k, at) in ConvWgrad::for_layer(g, b, h, w, false)? {
            scratch.push(poisoned(gpu, "bench.scratch", k.scratch_len(gpu).max(1)));
            let sv = (k.scratch_len(gpu) > 0).then(|| scratch.last().unwrap().into());
            lw.extend(k.launch(gpu, name, (&xb).into(), (&dyb).into(), (&dwb).into(), at, sv)?);
            wflops += k.flops();
        }
        if b == 2 {
            gpu.run(&lf)?;
            gpu.submit(&lw, 1);
            gpu.run(&lx)?;
            let tol = Tol::new(1e-4, 1e-4);
            let want = conv_forward(g, &x, &blk, b, h, w, crate::kernels::Act::Identity, false, None);
            tol.check(name, &gpu.read_f32(&yb)?, &want).map_err(wrong)?;
            let want = conv_backward_input(g, &dy, &blk, b, h, w, crate::kernels::Act::Identity, None, None);
            tol.check(name, &gpu.read_f32(&dxb)?, &want).map_err(wrong)?;
            let want = conv_backward_params(g, &x, &dy, b, h, w, false);
            Tol::new(1e-4, 1e-3).check(name, &gpu.read_f32(&dwb)?, &want).map_err(wrong)?;
            continue;
        }
        for (what, secs, flops) in [
            ("fwd", time_launch(gpu, &lf, reps)?, fwd.flops()),
            ("dX", time_launch(gpu, &lx, reps)?, dx.flops()),
            ("dW", time_program(gpu, &lw, reps)?, wflops),
        ] {
            rows.push(Row {
                name: format!("{name} {what}"),
                shape: shape.clone(),
                micros: secs * 1e6,
                rate: flops / secs / 1e9,
                unit: "GFLOP/s",
                fraction_of_ceiling: 0.0,
            });
        }
    }
    Ok(rows)
}

/// The conv VAE (default architecture, Fashion-MNIST shapes): every conv layer's three kernels, and a
/// whole training step.
pub fn run_conv(gpu: &Gpu, batch: usize, reps: usize) -> Result<Report> {
    let cfg = VaeConfig { conv: Some(Default::default()), ..VaeConfig::default() };
    let nets = cfg.nets().map_err(Error::Config)?;
    let mut rows = Vec::new();
    for (net, b) in [(&nets.encoder, batch), (&nets.decoder, batch * cfg.samples)] {
        for l in &net.layers {
            if let Op::Conv { geom, .. } = &l.op {
                rows.extend(bench_conv(gpu, &l.name, geom, b, (l.input.h, l.input.w), reps)?);
            }
        }
    }
    let (step, _) = time_step(gpu, &cfg, batch, reps)?;
    report(gpu, cfg.step_flops(batch), batch, rows, step, reps)
}

/// The VQ-VAE's training step on synthetic 32×32 data, and each of its launches timed alone in the
/// step's buffers (the conv kernels are checked against the reference by `bench --model conv-vae` and
/// the tests; here the step is checked to give a finite loss).
pub fn run_vq(gpu: &Gpu, cfg: &crate::models::vq::VqConfig, batch: usize, reps: usize) -> Result<Report> {
    let m = crate::models::vq::VqVae::new(gpu, cfg, batch, 0)?;
    m.core.set_state(gpu, 0, 0);
    let dim: usize = cfg.image.iter().product();
    let n = (batch * 8).max(1024);
    let pixels: Vec<u8> = uniform(3, n * dim, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
    let data = GpuDataset::upload(gpu, "bench", &pixels, n, dim)?;
    let prog = m.train_program(gpu, &data, &crate::kernels::optim::Adam::default(), 0.0, 0.1)?;
    let step = time_program(gpu, &prog, reps.clamp(2, 5))?;
    let met = m.core.read_metrics(gpu)?;
    if !met.train.rec.is_finite() || met.train.rows == 0.0 {
        return Err(Error::Output("benchmark step produced no finite loss".into()));
    }
    let mut rows = Vec::new();
    for l in &prog.launches {
        let secs = time_launch(gpu, l, reps.clamp(1, 5))?;
        rows.push(Row {
            name: l.label.clone(),
            shape: String::new(),
            micros: secs * 1e6,
            rate: 0.0,
            unit: "-",
            fraction_of_ceiling: 0.0,
        });
    }
    report(gpu, cfg.step_flops(batch), batch, rows, step, reps)
}

fn report(gpu: &Gpu, flops: f64, batch: usize, mut rows: Vec<Row>, step: f64, reps: usize) -> Result<Report> {
    let ceilings = ceilings(gpu, reps)?;
    for r in &mut rows {
        r.fraction_of_ceiling = match r.unit {
            "GFLOP/s" => r.rate / ceilings.fma_gflops,
            "GB/s" => r.rate / ceilings.copy_gbs,
            _ => 0.0,
        };
    }
    Ok(Report {
        adapter: gpu.summary.to_string(),
        ceilings,
        batch,
        rows,
        step_ms: step * 1e3,
        steps_per_second: 1.0 / step,
        step_gflops: flops / step / 1e9,
        epoch_seconds_estimate: step * (60000 / batch) as f64,
    })
}

/// A grid of at least `groups` workgroups within the 65535-per-dimension limit.
fn grid(groups: usize) -> [u32; 3] {
    let x = groups.clamp(1, 65535);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CeilingParams {
    n4: u32,
    iters: u32,
    mul: f32,
    add: f32,
}

/// Measures the adapter's copy bandwidth and FMA throughput (shaders/ceiling.wgsl), each result checked
/// before it is timed: the copy bit for bit, the FMA chains against their closed form
/// a_t = 1 + (a_0 − 1)·m^t (m = 0.99995, c = 1 − m).
pub fn ceilings(gpu: &Gpu, reps: usize) -> Result<Ceilings> {
    let wrong = |e: String| Error::Output(format!("ceiling benchmark result wrong: {e}"));
    // copy: 64 MiB each way, or what one binding allows
    let max = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size) as usize;
    let n4 = (64usize << 20).min(max) / 16;
    let src: Vec<f32> = uniform(7, 4 * n4, -1.0, 1.0).into_iter().map(|v| v as f32).collect();
    let sb = gpu.upload("ceiling.src", &src);
    let db = poisoned(gpu, "ceiling.dst", 4 * n4);
    let p = CeilingParams { n4: n4 as u32, iters: 0, mul: 0.0, add: 0.0 };
    let l = gpu.launch(
        format!("ceiling copy[{n4}x4]"),
        "ceiling",
        "copy",
        &[],
        Some(&p),
        &[(1, (&sb).into()), (2, (&db).into())],
        grid(n4.div_ceil(256)),
    )?;
    gpu.run(&l)?;
    let got = gpu.read_f32(&db)?;
    if let Some(i) = (0..src.len()).find(|&i| got[i].to_bits() != src[i].to_bits()) {
        return Err(wrong(format!("copy element {i}: {} instead of {}", got[i], src[i])));
    }
    let copy_secs = time_launch(gpu, &l, reps.clamp(1, 20))?;
    let copy_bytes = 2 * 16 * n4;

    // fma: 4096 workgroups of 64; rounds doubled until one launch takes 20 ms
    let groups = 4096;
    let g = grid(groups);
    let inv = (g[0] * g[1]) as usize * 64;
    let (m, c) = (0.99995f32, 1.0 - 0.99995f32);
    let out = poisoned(gpu, "ceiling.fma", 4 * inv);
    let mut iters = 256usize;
    let l = loop {
        let p = CeilingParams { n4: inv as u32, iters: iters as u32, mul: m, add: c };
        let l = gpu.launch(
            format!("ceiling fma[{inv}x{iters}]"),
            "ceiling",
            "fma_peak",
            &[],
            Some(&p),
            &[(2, (&out).into())],
            g,
        )?;
        let secs = time_launch(gpu, &l, 1)?;
        if secs >= 0.02 || iters >= 1 << 16 {
            break l;
        }
        iters *= 2;
    };
    gpu.run(&l)?;
    let got = gpu.read_f32(&out)?;
    let decay = (m as f64).powi(iters as i32);
    for i in (0..inv).step_by(97) {
        let s = (i & 1023) as f32 * 0.001;
        for comp in 0..4 {
            let want: f64 = (0..8)
                .map(|ch| {
                    let a0 = (s + [0.0f32, 0.01, 0.02, 0.03][comp] + 0.1 * ch as f32) as f64;
                    1.0 + (a0 - 1.0) * decay
                })
                .sum();
            let v = got[4 * i + comp] as f64;
            let close = (v - want).abs() <= 0.05 + 1e-3 * want.abs();
            if !close {
                return Err(wrong(format!("fma invocation {i}, component {comp}: {v} instead of {want}")));
            }
        }
    }
    // the reported time is taken after the check (the calibration's only chose the round count)
    let secs = time_launch(gpu, &l, reps.clamp(1, 10))?;
    let flops = (inv * iters * 64) as f64;
    Ok(Ceilings {
        copy_gbs: copy_bytes as f64 / copy_secs / 1e9,
        copy_bytes,
        fma_gflops: flops / secs / 1e9,
        fma_invocations: inv,
        fma_iters: iters,
    })
}

/// A whole training step of `cfg` on synthetic data of its input shape: seconds per step, and the
/// program (checked to give a finite loss).
fn time_step(gpu: &Gpu, cfg: &VaeConfig, batch: usize, reps: usize) -> Result<(f64, Program)> {
    let vae = Vae::new(gpu, cfg, batch)?;
    gpu.write(&vae.core.params, 0, &vae.core.layout.init(0));
    vae.core.set_state(gpu, 0, 0);
    let n = (batch * 8).max(1024);
    let pixels: Vec<u8> = uniform(3, n * cfg.input_dim, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
    let data = GpuDataset::upload(gpu, "bench", &pixels, n, cfg.input_dim)?;
    let prog = vae.train_program(gpu, &data, &crate::kernels::optim::Adam::default(), 0.0, false)?;
    let step = time_program(gpu, &prog, reps.max(5))?;
    let m = vae.core.read_metrics(gpu)?;
    if !m.train.mean_loss().is_finite() || m.train.rows == 0.0 {
        return Err(Error::Output("benchmark step produced no finite loss".into()));
    }
    Ok((step, prog))
}

pub fn run(gpu: &Gpu, batch: usize, reps: usize) -> Result<Report> {
    let cfg = VaeConfig::default();
    let layout = cfg.layout();
    let mut rows = Vec::new();
    // The default model's matmuls: forward, dW (with db), dX of each layer.
    for l in &layout.layers {
        let fwd = Matmul { m: batch, n: l.dout, k: l.din, bias: true, act: l.act, ..Default::default() };
        rows.push(bench_matmul(gpu, &format!("{} fwd", l.name), fwd, reps)?);
        let dw = Matmul { m: l.din + 1, n: l.dout, k: batch, trans_a: true, ones_row: true, ..Default::default() };
        rows.push(bench_matmul(gpu, &format!("{} dW", l.name), dw, reps)?);
        if l.name != "enc.fc1" {
            let dx = Matmul { m: batch, n: l.din, k: l.dout, trans_b: true, ..Default::default() };
            rows.push(bench_matmul(gpu, &format!("{} dX", l.name), dx, reps)?);
        }
    }
    // The naive kernel at the largest layer, for comparison.
    let big = &layout.layers[0];
    rows.push(bench_matmul(
        gpu,
        "enc.fc1 fwd (naive kernel)",
        Matmul { m: batch, n: big.dout, k: big.din, bias: true, naive: true, ..Default::default() },
        reps.min(5),
    )?);

    // Whole training step on synthetic data of Fashion-MNIST's shape.
    let (step, prog) = time_step(gpu, &cfg, batch, reps)?;
    // The step's other kernels, each timed alone inside the (checked) step's buffers; bytes are the
    // minimum each must read and write.
    let (b, d, z, mm, np) =
        (batch as f64, cfg.input_dim as f64, cfg.latent as f64, cfg.samples as f64, layout.total as f64);
    for l in prog.launches.iter().filter(|l| !l.label.contains("matmul")) {
        let name = l.label.split('[').next().unwrap_or(&l.label).trim().to_string();
        let bytes = match name.as_str() {
            "train gather" => b * d * 5.0,
            "z sample" => 4.0 * (2.0 * b * z + 2.0 * mm * b * z),
            "loss elbo" => 4.0 * (3.0 * mm * b * d + b * d + 4.0 * b * z),
            "z sample_backward" => 4.0 * (4.0 * b * z + 2.0 * mm * b * z + 2.0 * b * z),
            "adam" => 4.0 * 7.0 * np,
            "sumsq_partial" => 4.0 * np,
            _ => 0.0,
        };
        let secs = time_launch(gpu, l, reps)?;
        let (rate, unit) = if bytes > 0.0 { (bytes / secs / 1e9, "GB/s") } else { (0.0, "-") };
        rows.push(Row { name, shape: String::new(), micros: secs * 1e6, rate, unit, fraction_of_ceiling: 0.0 });
    }
    report(gpu, cfg.step_flops(batch), batch, rows, step, reps)
}
