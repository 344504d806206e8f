//! Benchmarks: every kernel at the default model's shapes, and a whole training step.
//! Each kernel's result is checked against the CPU reference before it is timed; timing submits the
//! launch `reps` times in one command buffer (after a warm-up, see [`Timing`]) and waits for the GPU
//! inside the timed region.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::pipeline::OperandTexture;
use crate::gpu::{ConvKernel, Gpu, Launch, MatmulKernel, Program, View, Work};
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
    /// Microseconds per launch (with `--rounds`, the median over the rounds).
    pub micros: f64,
    /// The fastest and slowest round (both `micros` for one round).
    pub min_micros: f64,
    pub max_micros: f64,
    /// GFLOP/s for arithmetic kernels, GB/s for memory-bound ones.
    pub rate: f64,
    pub unit: &'static str,
    /// GFLOP/s rows: `rate` over the adapter's measured FMA ceiling. GB/s rows: the roofline's time for
    /// the row's bytes, `read_bytes` at the read ceiling plus `write_bytes` at the write ceiling, over
    /// the measured time ([`fraction_of_ceiling`]). 0 for rows without a rate.
    pub fraction_of_ceiling: f64,
    /// GB/s rows: the least bytes the launch must read and write (`rate` counts both); 0 otherwise.
    pub read_bytes: f64,
    pub write_bytes: f64,
}

impl Row {
    /// A row timed once: `secs` per launch doing `flops` (unit "GFLOP/s"), or without a rate (unit "-",
    /// `flops` 0).
    fn new(name: String, shape: String, secs: f64, flops: f64, unit: &'static str) -> Row {
        let micros = secs * 1e6;
        let rate = if unit == "-" { 0.0 } else { flops / secs / 1e9 };
        Row {
            name,
            shape,
            micros,
            min_micros: micros,
            max_micros: micros,
            rate,
            unit,
            fraction_of_ceiling: 0.0,
            read_bytes: 0.0,
            write_bytes: 0.0,
        }
    }

    /// A launch of `work` timed once at `secs`: GFLOP/s, GB/s (with its bytes read and written) or no
    /// rate.
    fn of_work(name: String, secs: f64, work: Work) -> Row {
        match work {
            Work::Flops(f) => Row::new(name, String::new(), secs, f, "GFLOP/s"),
            Work::Bytes { read, write } => Row {
                read_bytes: read,
                write_bytes: write,
                ..Row::new(name, String::new(), secs, read + write, "GB/s")
            },
            Work::None => Row::new(name, String::new(), secs, 0.0, "-"),
        }
    }
}

/// `row`'s share of the ceiling `c`: a GFLOP/s row's rate over the FMA ceiling; a GB/s row's least
/// time on the roofline, its bytes read at the read ceiling plus its bytes written at the write ceiling,
/// over its measured time (a copy on an adapter whose copy runs at the read and write rates in turn
/// reads 100%; on one where reads are far cheaper than stores, such as lavapipe, a read-heavy kernel
/// no longer reads above 100% of a copy's rate); 0 for a row without a rate.
pub fn fraction_of_ceiling(row: &Row, c: &Ceilings) -> f64 {
    match row.unit {
        "GFLOP/s" => row.rate / c.fma_gflops,
        "GB/s" => (row.read_bytes / c.read_gbs + row.write_bytes / c.write_gbs) / 1e3 / row.micros,
        _ => 0.0,
    }
}

/// The adapter's ceilings, measured in the same run (shaders/ceiling.wgsl, ceiling64.wgsl).
#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Device-to-device copy: bytes read plus bytes written per second, in GB/s; the fastest of the
    /// copy forms the adapter runs ([`ceilings`]).
    pub copy_gbs: f64,
    pub copy_bytes: usize,
    /// The form that copy rate is from: "vec4" (vec4<f32> buffer loads and stores), "64-bit" (vec4<u64>
    /// ones) or "texture" (image loads through a texture aliasing the source, vec4<u64> stores).
    pub copy_form: String,
    /// A kernel that only reads: bytes read per second, GB/s, the fastest of the forms the adapter runs
    /// ("vec4", "64-bit", "texture", as for the copy; [`ceilings`]).
    pub read_gbs: f64,
    pub read_form: String,
    /// A kernel that only writes: bytes written per second, GB/s ("vec4" or "64-bit" stores).
    pub write_gbs: f64,
    pub write_form: String,
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
    /// Times the whole benchmark ran, in turns (see [`merge_rounds`]); 1 without `--rounds`.
    pub rounds: usize,
    pub rows: Vec<Row>,
    /// The model's whole training step (absent for the matmul sweep).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepFigures>,
}

/// One training step replayed in a single submission.
#[derive(Clone, Debug, Serialize)]
pub struct StepFigures {
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
            "adapter: {}\nceilings: copy {:.2} GB/s ({} MiB, {}), read {:.2} GB/s ({}), write {:.2} GB/s ({}), fma {:.2} GFLOP/s\n{:<34} {:<22} {:>11} {:>10} {:<7} {:>10}\n",
            self.adapter,
            c.copy_gbs,
            c.copy_bytes >> 20,
            c.copy_form,
            c.read_gbs,
            c.read_form,
            c.write_gbs,
            c.write_form,
            c.fma_gflops,
            "kernel",
            "shape",
            "time (µs)",
            "rate",
            "",
            "of ceiling"
        );
        let spread = self.rounds > 1;
        if spread {
            s.pop();
            s += &format!(" {:>21}\n", "min - max (µs)");
        }
        for r in &self.rows {
            let frac = if r.unit == "-" { String::new() } else { format!("{:.1}%", 100.0 * r.fraction_of_ceiling) };
            s += &format!(
                "{:<34} {:<22} {:>11.1} {:>10.2} {:<7} {:>10}",
                r.name, r.shape, r.micros, r.rate, r.unit, frac
            );
            if spread {
                s += &format!(" {:>10.1} - {:>8.1}", r.min_micros, r.max_micros);
            }
            s.push('\n');
        }
        if self.rows.iter().any(|r| r.unit == "GB/s") {
            s += "GB/s rows, of ceiling: the time their bytes take at the read and write ceilings (reads and \
                  writes in turn), over their time\n";
        }
        if spread {
            s += &format!(
                "{} rounds in turns: each figure is the median over them (rates and ceilings too)\n",
                self.rounds
            );
        }
        if let Some(st) = &self.step {
            s += &format!(
                "training step (batch {}): {:.2} ms, {:.1} steps/s, {:.2} GFLOP/s; Fashion-MNIST epoch ≈ {:.1} s\n",
                self.batch, st.step_ms, st.steps_per_second, st.step_gflops, st.epoch_seconds_estimate
            );
        }
        s
    }
}

/// How each kernel or step is timed: `reps` replays recorded into one submission, after submitting
/// them as a warm-up for at least `warmup`.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub reps: usize,
    /// The least warm-up per timed item. 0.2 s by default: a GPU that idled while the host checked the
    /// result needs that long to raise its clocks (on an H100 a 2048³ product timed in 6 ms submissions
    /// right after the check ran at a fifth of its speed). Zero still warms up with one submission.
    pub warmup: Duration,
}

impl Timing {
    pub const DEFAULT_WARMUP: Duration = Duration::from_millis(200);

    /// `reps` replays after the default warm-up.
    pub fn new(reps: usize) -> Self {
        Timing { reps, warmup: Self::DEFAULT_WARMUP }
    }

    /// The same warm-up with `reps` replays.
    fn with_reps(self, reps: usize) -> Self {
        Timing { reps, ..self }
    }
}

/// Seconds of one replay: `submit(reps)` repeated as a warm-up for at least `t.warmup` (once at
/// least), then the median of three timed `submit(reps)`, each timed up to the GPU's end.
fn time_reps(gpu: &Gpu, t: Timing, submit: impl Fn(usize)) -> Result<f64> {
    let reps = t.reps.max(1);
    let warm = Instant::now();
    for _ in 0..1000 {
        submit(reps);
        gpu.sync()?;
        if warm.elapsed() >= t.warmup {
            break;
        }
    }
    let mut t3 = [0.0f64; 3];
    for secs in &mut t3 {
        let t0 = Instant::now();
        submit(reps);
        gpu.sync()?;
        *secs = t0.elapsed().as_secs_f64() / reps as f64;
    }
    t3.sort_by(f64::total_cmp);
    Ok(t3[1])
}

/// Mean seconds of one replay of `prog`, replayed `reps` times in one submission after a warm-up.
pub fn time_program(gpu: &Gpu, prog: &Program, t: Timing) -> Result<f64> {
    time_reps(gpu, t, |n| gpu.submit(prog, n))
}

/// Mean seconds of one launch, recorded `reps` times into one submission after a warm-up.
pub fn time_launch(gpu: &Gpu, launch: &Launch, t: Timing) -> Result<f64> {
    time_reps(gpu, t, |n| gpu.submit_launch(launch, n))
}

/// Times a matmul after checking it against the reference (every output where the product is small;
/// at most 64 evenly spaced rows of op(A)·op(B) where it is large).
fn bench_matmul(gpu: &Gpu, name: &str, mm: Matmul, t: Timing) -> Result<Row> {
    bench_matmul_split(gpu, name, mm, 1, t)
}

/// [`bench_matmul`] with K split `splits` ways ([`Matmul::launch_split`]: the partial products and
/// their sum with the epilogue, timed together).
fn bench_matmul_split(gpu: &Gpu, name: &str, mm: Matmul, splits: usize, t: Timing) -> Result<Row> {
    let a_rows = if mm.ones_row { mm.m - 1 } else { mm.m };
    let b_rows = if mm.bias { mm.k + 1 } else { mm.k };
    let a = uniform(1, a_rows * mm.k, -1.0, 1.0);
    let b = uniform(2, b_rows * mm.n, -1.0, 1.0);
    let a_st = if mm.trans_a { transpose(&a, a_rows, mm.k) } else { a.clone() };
    let b_st = if mm.trans_b { transpose(&b, mm.k, mm.n) } else { b.clone() };
    let ab = gpu.upload("bench.a", &to_f32(&a_st));
    let bb = gpu.upload("bench.b", &to_f32(&b_st));
    let cb = poisoned(gpu, "bench.c", mm.m * mm.n);
    let pb = poisoned(gpu, "bench.partials", if splits > 1 { splits * mm.m * mm.n } else { 1 });
    let (a_v, b_v, c_v) = ((&ab).into(), (&bb).into(), (&cb).into());
    let prog = Program {
        label: name.into(),
        launches: mm.launch_split(gpu, name, a_v, b_v, c_v, None, (&pb).into(), splits)?,
    };
    gpu.submit(&prog, 1);
    gpu.sync()?;
    let mut a_op = a;
    if mm.ones_row {
        a_op.extend(std::iter::repeat_n(1.0, mm.k));
    }
    let rows: Vec<usize> = if mm.flops() <= 2e8 {
        (0..mm.m).collect()
    } else {
        let r = mm.m.min(64);
        (0..r).map(|i| i * (mm.m - 1) / (r - 1).max(1)).collect()
    };
    let a_sel: Vec<f64> = rows.iter().flat_map(|&r| a_op[r * mm.k..(r + 1) * mm.k].iter().copied()).collect();
    let want: Vec<f64> = matmul(&a_sel, &b, rows.len(), mm.n, mm.k, mm.bias)
        .into_iter()
        .map(|v| crate::reference::elementwise::act_forward(mm.act, v))
        .collect();
    let all = gpu.read_f32(&cb)?;
    let got: Vec<f32> = rows.iter().flat_map(|&r| all[r * mm.n..(r + 1) * mm.n].iter().copied()).collect();
    // f32 sums of K products of values in [-1, 1]: the error grows like sqrt(K).
    let tol = 1e-4 * (mm.k as f64 / 64.0).sqrt().max(1.0);
    Tol::new(1e-4, tol).check(name, &got, &want).map_err(|e| Error::Output(format!("benchmark result wrong: {e}")))?;
    let secs = time_program(gpu, &prog, t)?;
    Ok(Row::new(name.into(), format!("{}x{}x{}", mm.m, mm.n, mm.k), secs, mm.flops(), "GFLOP/s"))
}

/// The matmul kernels on square products of each size: C = A·B, Aᵀ·B (as in dW) and A·Bᵀ (as in dX),
/// with each kernel the device can run (register-blocked, subgroup, workgroup-memory tiled).
pub fn run_matmul(gpu: &Gpu, sizes: &[usize], t: Timing) -> Result<Report> {
    let mut rows = Vec::new();
    for &s in sizes {
        for (what, trans_a, trans_b) in [("A·B", false, false), ("Aᵀ·B", true, false), ("A·Bᵀ", false, true)] {
            for variant in gpu.matmul_kernels() {
                let mm = Matmul { m: s, n: s, k: s, trans_a, trans_b, ..Default::default() }.with_kernel(variant);
                // Large products on CPU adapters: few repetitions (each takes seconds).
                let r = if gpu.is_cpu() && mm.flops() > 1e10 { t.with_reps(1) } else { t };
                rows.push(bench_matmul(gpu, &format!("matmul {what} ({variant})"), mm, r)?);
            }
        }
    }
    report(gpu, None, 0, rows, t)
}

/// Forward, input gradient and parameter gradient of one conv layer at `batch`: each checked against
/// the CPU reference at batch 2 (same spatial shape), then timed at `batch`.
fn bench_conv(
    gpu: &Gpu,
    name: &str,
    g: &ConvGeom,
    batch: usize,
    (h, w): (usize, usize),
    t: Timing,
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
    // Launch shapes: the adapter's own choice; each conv kernel it did not choose (gather, tiled,
    // matmul), on the launches where that changes what runs; the scalar gather kernel where a layer has
    // one output channel (what conv_gather_n1 replaced); on a GPU a sweep of the gather kernels' pixels
    // per invocation and of the invocations the parameter gradient's splits aim at (what the GPU's
    // pixel count and GPU_WGRAD_INVOCATIONS were set from); on a CPU adapter the parameter gradient's
    // split reduction ([split]) beside its im2col path, and where the adapter reads the im2col matrix
    // in place (lavapipe), the launches that do so with the matrix gathered instead ([gathered]).
    struct Shape {
        suffix: String,
        pix: Option<usize>,
        target: Option<usize>,
        scalar: bool,
        kernel: Option<ConvKernel>,
        /// `kernel` is a conv kernel the adapter did not choose: only the launches it runs on and
        /// changes (the tiled kernel: those with 16+ output channels; the matmul forms: those that
        /// have one).
        alt: bool,
        /// The parameter gradient's im2col path forced on or off.
        im2col: Option<bool>,
        /// Some(false): the matmul forms gathering the im2col matrix where the adapter reads it in place
        /// (only the launches that do).
        implicit: Option<bool>,
    }
    let plain = Shape {
        suffix: String::new(),
        pix: None,
        target: None,
        scalar: false,
        kernel: None,
        alt: false,
        im2col: None,
        implicit: None,
    };
    let mut shapes = vec![Shape { suffix: String::new(), ..plain }];
    for k in [ConvKernel::Gather, ConvKernel::Tiled, ConvKernel::Matmul] {
        if k != gpu.conv {
            shapes.push(Shape { suffix: format!(" [{k}]"), kernel: Some(k), alt: true, ..plain });
        }
    }
    let id = crate::kernels::Act::Identity;
    let n1 = |k: crate::gpu::Result<ConvGather>| k.is_ok_and(|k| k.n1_ok());
    if n1(ConvGather::forward(g, 1, h, w, id)) || n1(ConvGather::input_grad(g, 1, h, w, id)) {
        let gather = Some(ConvKernel::Gather);
        shapes.push(Shape { suffix: " [scalar]".into(), scalar: true, kernel: gather, ..plain });
    }
    if gpu.is_cpu() {
        // The split reduction the im2col path replaced on CPU adapters.
        shapes.push(Shape { suffix: " [split]".into(), im2col: Some(false), ..plain });
        if gpu.alias_operands {
            // The im2col matrix gathered, where the launches read it in place.
            shapes.push(Shape { suffix: " [gathered]".into(), implicit: Some(false), ..plain });
        }
    } else {
        let gather = Some(ConvKernel::Gather);
        shapes.extend([1, 2, 4, 8].map(|p| Shape {
            suffix: format!(" [{p} px]"),
            pix: Some(p),
            kernel: gather,
            ..plain
        }));
        shapes.extend([1 << 14, 1 << 16, 1 << 18].map(|t| Shape {
            suffix: format!(" [{t} inv]"),
            target: Some(t),
            ..plain
        }));
    }
    for b in [2, batch] {
        let x = uniform(1, b * h * w * g.cin, -1.0, 1.0);
        let blk = uniform(2, g.block_rows() * g.cout, -1.0, 1.0);
        let dy = uniform(3, b * oh * ow * g.cout, -1.0, 1.0);
        let xb = gpu.upload("bench.x", &to_f32(&x));
        let wb = gpu.upload("bench.w", &to_f32(&blk));
        let dyb = gpu.upload("bench.dy", &to_f32(&dy));
        for Shape { suffix, pix, target, scalar, kernel, alt, im2col, implicit } in &shapes {
            // A shape builds, checks and times only the kernels it changes: a pixel count, a kernel or
            // the scalar kernel the forward and input gradient, a split target or the split reduction
            // the parameter gradient.
            let mut timed = Vec::new();
            if target.is_none() && im2col.is_none() {
                let yb = poisoned(gpu, "bench.y", b * oh * ow * g.cout);
                let dxb = poisoned(gpu, "bench.dx", b * h * w * g.cin);
                let mut fwd = ConvGather::forward(g, b, h, w, id)?;
                let mut dx = ConvGather::input_grad(g, b, h, w, id)?;
                (fwd.pix, dx.pix) = (*pix, *pix);
                (fwd.scalar, dx.scalar) = (*scalar, *scalar);
                (fwd.kernel, dx.kernel) = (*kernel, *kernel);
                (fwd.implicit, dx.implicit) = (*implicit, *implicit);
                for (what, k, input, out) in [("fwd", fwd, &xb, &yb), ("dX", dx, &dyb, &dxb)] {
                    if *alt {
                        let runs = k.runs(gpu);
                        let chosen = ConvGather { kernel: None, ..k }.runs(gpu);
                        if Some(runs) != *kernel || runs == chosen || runs == ConvKernel::Tiled && k.n < 16 {
                            continue;
                        }
                    }
                    // The launches as training records them (on CPU adapters the matmul forms where the
                    // launch has one), through scratch buffers of their own.
                    let sb = poisoned(gpu, "bench.scratch", k.scratch_len(gpu).max(1));
                    let pb = poisoned(gpu, "bench.product", k.product_len(gpu).max(1));
                    let sv = (k.scratch_len(gpu) > 0).then(|| (&sb).into());
                    let pv = (k.product_len(gpu) > 0).then(|| (&pb).into());
                    let launches = k.launches(gpu, name, input.into(), (&wb).into(), out.into(), None, None, sv, pv)?;
                    if *implicit == Some(false) && b != 2 {
                        // Timed only where the adapter's own launches read the matrix in place (checked
                        // at batch 2 whatever they do).
                        let own = ConvGather { implicit: None, ..k };
                        let l = own.launches(gpu, name, input.into(), (&wb).into(), out.into(), None, None, sv, pv)?;
                        if !l.iter().any(|l| l.label.contains("[im2col")) {
                            continue;
                        }
                    }
                    let l = Program { label: format!("{name} {what}"), launches };
                    if b == 2 {
                        gpu.submit(&l, 1);
                        let want = if what == "fwd" {
                            conv_forward(g, &x, &blk, b, h, w, id, false, None)
                        } else {
                            conv_backward_input(g, &dy, &blk, b, h, w, id, None, None)
                        };
                        Tol::new(1e-4, 1e-4).check(name, &gpu.read_f32(out)?, &want).map_err(wrong)?;
                    } else {
                        timed.push((what, time_program(gpu, &l, t)?, k.flops()));
                    }
                }
            }
            // The parameter gradient: the adapter's; a split target's or the split reduction's; on a GPU
            // the matmul forms' (im2col and a split-K matmul) beside its own.
            let wmatmul = *kernel == Some(ConvKernel::Matmul) && !gpu.is_cpu();
            // ([gathered]: timed only where the adapter's own launches read the matrix in place; checked
            // at batch 2 whatever they do.)
            let wgrads = ConvWgrad::for_layer(g, b, h, w, false)?;
            let reads_in_place = implicit.is_some() && b != 2 && {
                let mut found = false;
                for (k, at) in &wgrads {
                    let (sb, pb) = (
                        gpu.storage_f32("s", k.scratch_len(gpu).max(1)),
                        gpu.storage_f32("p", k.product_len(gpu).max(1)),
                    );
                    let sv = (k.scratch_len(gpu) > 0).then(|| (&sb).into());
                    let pv = (k.product_len(gpu) > 0).then(|| (&pb).into());
                    let dwb = gpu.storage_f32("dw", g.block_rows() * g.cout);
                    let ls = k.launch(gpu, name, (&xb).into(), (&dyb).into(), (&dwb).into(), *at, sv, pv)?;
                    found |= ls.iter().any(|l| l.label.contains("[im2col"));
                }
                found
            };
            if pix.is_none()
                && !scalar
                && (kernel.is_none() || wmatmul)
                && (implicit.is_none() || b == 2 || reads_in_place)
            {
                let dwb = poisoned(gpu, "bench.dw", g.block_rows() * g.cout);
                let mut scratch = Vec::new();
                let mut lw = Program::new("dW");
                let mut wflops = 0.0;
                for (mut k, at) in wgrads {
                    k.splits = target.map(|t| k.splits_for(t));
                    k.im2col = if wmatmul { Some(true) } else { *im2col };
                    k.implicit = *implicit;
                    scratch.push(poisoned(gpu, "bench.scratch", k.scratch_len(gpu).max(1)));
                    scratch.push(poisoned(gpu, "bench.product", k.product_len(gpu).max(1)));
                    let [.., sb, pb] = &scratch[..] else { unreachable!() };
                    let sv = (k.scratch_len(gpu) > 0).then(|| sb.into());
                    let pv = (k.product_len(gpu) > 0).then(|| pb.into());
                    lw.extend(k.launch(gpu, name, (&xb).into(), (&dyb).into(), (&dwb).into(), at, sv, pv)?);
                    wflops += k.flops();
                }
                if b == 2 {
                    gpu.submit(&lw, 1);
                    let want = conv_backward_params(g, &x, &dy, b, h, w, false);
                    Tol::new(1e-4, 1e-3).check(name, &gpu.read_f32(&dwb)?, &want).map_err(wrong)?;
                } else {
                    timed.push(("dW", time_program(gpu, &lw, t)?, wflops));
                }
            }
            for (what, secs, flops) in timed {
                rows.push(Row::new(format!("{name} {what}{suffix}"), shape.clone(), secs, flops, "GFLOP/s"));
            }
        }
    }
    Ok(rows)
}

/// The conv VAE (default architecture, Fashion-MNIST shapes): every conv layer's three kernels, and a
/// whole training step.
pub fn run_conv(gpu: &Gpu, batch: usize, t: Timing) -> Result<Report> {
    let cfg = VaeConfig { conv: Some(Default::default()), ..VaeConfig::default() };
    let nets = cfg.nets().map_err(Error::Config)?;
    let mut rows = Vec::new();
    for (net, b) in [(&nets.encoder, batch), (&nets.decoder, batch * cfg.samples)] {
        for l in &net.layers {
            if let Op::Conv { geom, .. } = &l.op {
                rows.extend(bench_conv(gpu, &l.name, geom, b, (l.input.h, l.input.w), t)?);
            }
        }
    }
    let (step, _) = time_step(gpu, &cfg, batch, t)?;
    report(gpu, Some((step, cfg.step_flops(batch))), batch, rows, t)
}

/// The VQ-VAE's training step on synthetic 32×32 data, and each of its launches timed alone in the
/// step's buffers (the conv kernels are checked against the reference by `bench --model conv-vae` and
/// the tests; here the step is checked to give a finite loss).
pub fn run_vq(gpu: &Gpu, cfg: &crate::models::vq::VqConfig, batch: usize, t: Timing) -> Result<Report> {
    let m = crate::models::vq::VqVae::new(gpu, cfg, batch, 0)?;
    m.core.set_state(gpu, 0, 0);
    let dim: usize = cfg.image.iter().product();
    let n = (batch * 8).max(1024);
    let pixels: Vec<u8> = uniform(3, n * dim, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
    let data = GpuDataset::upload(gpu, "bench", &pixels, n, dim)?;
    let prog = m.train_program(gpu, &data, &crate::kernels::optim::Adam::default(), 0.0, 0.1)?;
    let step = time_program(gpu, &prog, t.with_reps(t.reps.clamp(2, 5)))?;
    let met = m.core.read_metrics(gpu)?;
    if !met.train.rec.is_finite() || met.train.rows == 0.0 {
        return Err(Error::Output("benchmark step produced no finite loss".into()));
    }
    let mut rows = Vec::new();
    for l in &prog.launches {
        let secs = time_launch(gpu, l, t.with_reps(t.reps.clamp(1, 5)))?;
        rows.push(Row::of_work(l.label.clone(), secs, l.work));
    }
    report(gpu, Some((step, cfg.step_flops(batch))), batch, rows, t)
}

/// The report of `rows`, with the adapter's ceilings measured now; `step` = (seconds, FLOPs) of one
/// training step at `batch`.
fn report(gpu: &Gpu, step: Option<(f64, f64)>, batch: usize, mut rows: Vec<Row>, t: Timing) -> Result<Report> {
    let ceilings = ceilings(gpu, t)?;
    for r in &mut rows {
        r.fraction_of_ceiling = fraction_of_ceiling(r, &ceilings);
    }
    Ok(Report {
        adapter: gpu.summary.to_string(),
        ceilings,
        batch,
        rounds: 1,
        rows,
        step: step.map(|(secs, flops)| StepFigures {
            step_ms: secs * 1e3,
            steps_per_second: 1.0 / secs,
            step_gflops: flops / secs / 1e9,
            epoch_seconds_estimate: secs * (60000 / batch.max(1)) as f64,
        }),
    })
}

/// One report from the same benchmark run `reports.len()` times in turns: each row's time, each
/// ceiling and the step time the median over the runs, with each row's fastest and slowest run; the
/// rates and fractions of the ceilings follow from the medians. The runs must list the same rows.
pub fn merge_rounds(mut reports: Vec<Report>) -> Result<Report> {
    let Some(first) = reports.first() else {
        return Err(Error::Output("no benchmark rounds to merge".into()));
    };
    let names = |r: &Report| r.rows.iter().map(|x| (x.name.clone(), x.shape.clone())).collect::<Vec<_>>();
    let want = names(first);
    if reports.iter().any(|r| names(r) != want || r.step.is_some() != first.step.is_some()) {
        return Err(Error::Output("benchmark rounds listed different rows".into()));
    }
    let median = |xs: Vec<f64>| spread(&xs).0;
    let ceil = |f: fn(&Ceilings) -> f64| median(reports.iter().map(|r| f(&r.ceilings)).collect());
    let (copy_gbs, read_gbs, write_gbs, fma_gflops) =
        (ceil(|c| c.copy_gbs), ceil(|c| c.read_gbs), ceil(|c| c.write_gbs), ceil(|c| c.fma_gflops));
    let step_ms = first
        .step
        .as_ref()
        .map(|_| median(reports.iter().filter_map(|r| r.step.as_ref()).map(|st| st.step_ms).collect()));
    let rounds = reports.len();
    let times: Vec<Vec<f64>> = (0..want.len()).map(|i| reports.iter().map(|r| r.rows[i].micros).collect()).collect();
    let mut out = reports.swap_remove(0);
    out.rounds = rounds;
    out.ceilings = Ceilings { copy_gbs, read_gbs, write_gbs, fma_gflops, ..out.ceilings };
    for (r, ts) in out.rows.iter_mut().zip(&times) {
        let (micros, lo, hi) = spread(ts);
        // The work a launch does is its rate times its time, the same in every run.
        r.rate *= r.micros / micros;
        (r.micros, r.min_micros, r.max_micros) = (micros, lo, hi);
        r.fraction_of_ceiling = fraction_of_ceiling(r, &out.ceilings);
    }
    if let (Some(st), Some(ms)) = (out.step.as_mut(), step_ms) {
        let scale = st.step_ms / ms;
        st.step_gflops *= scale;
        st.epoch_seconds_estimate /= scale;
        st.steps_per_second = 1e3 / ms;
        st.step_ms = ms;
    }
    Ok(out)
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

/// shaders/ceiling64.wgsl's Params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Ceiling64Params {
    n8: u32,
    /// copy_tex: the texel at which the source starts in its texture.
    base: u32,
    _pad: [u32; 2],
}

/// Measures the adapter's copy bandwidth and FMA throughput (shaders/ceiling.wgsl; the copy also in
/// shaders/ceiling64.wgsl's forms where the adapter moves data so, the fastest taken), each result checked
/// before it is timed: the copy bit for bit, the FMA chains against their closed form
/// a_t = 1 + (a_0 − 1)·m^t (m = 0.99995, c = 1 − m; t = 4 FMAs per round).
pub fn ceilings(gpu: &Gpu, t: Timing) -> Result<Ceilings> {
    let wrong = |e: String| Error::Output(format!("ceiling benchmark result wrong: {e}"));
    // copy: 64 MiB each way, or what one binding allows
    let max = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size) as usize;
    let n4 = (64usize << 20).min(max) / 16;
    // Distinct values in [-1, 1), cheap to make in an unoptimised build (16 M of them; a Philox draw each
    // took seconds at opt-level 0).
    let src: Vec<f32> =
        (0..4 * n4 as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 23) as f32 - 1.0).collect();
    let sb = gpu.upload("ceiling.src", &src);
    let db = poisoned(gpu, "ceiling.dst", 4 * n4);
    // ceiling.wgsl's memory `entry` over `n` invocations with `bindings`.
    let launch4 = |entry: &'static str, n: usize, bindings: &[(u32, View)]| {
        let p = CeilingParams { n4: n as u32, iters: 0, mul: 0.0, add: 0.0 };
        gpu.launch(format!("ceiling {entry}[{n}]"), "ceiling", entry, &[], Some(&p), bindings, grid(n.div_ceil(256)))
    };
    let l = launch4("copy", n4, &[(1, (&sb).into()), (2, (&db).into())])?;
    let bits: &[u32] = bytemuck::cast_slice(&src);
    // Poisons `out` with NaN, runs `l`, checks its output bit for bit against `want` (a memcmp, then the
    // word-wise search only to name the first wrong word), then times it: seconds per launch. The forms
    // share their output buffers, so without the poison a form that wrote nothing could pass on what
    // an earlier one left.
    let checked = |entry: &str, l: &Launch, out: &wgpu::Buffer, want: &[u32]| -> Result<f64> {
        gpu.write(out, 0, &vec![f32::NAN; want.len()]);
        gpu.run(l)?;
        let got = gpu.read_f32(out)?;
        let got: &[u32] = bytemuck::cast_slice(&got);
        if got != want {
            let i = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)).unwrap_or(0);
            let (g, w) = (got.get(i).copied().unwrap_or(0), want.get(i).copied().unwrap_or(0));
            return Err(wrong(format!("{entry} word {i} of {}: {g:#010x} instead of {w:#010x}", want.len())));
        }
        time_launch(gpu, l, t.with_reps(t.reps.clamp(1, 20)))
    };
    let copy_bytes = 2 * 16 * n4;
    let vec4_gbs = copy_bytes as f64 / checked("copy", &l, &db, &bits[..4 * n4])? / 1e9;
    let mut copy = (vec4_gbs, "vec4");

    // The read ceiling's kernels: invocation i of n XORs the words of elements i + k·n (k < 256 bytes
    // over the element size) into words[i]; `want` those XORs, for elements of `el` words.
    let n_read = n4 / 16;
    let xor_want = |el: usize| {
        let mut w = vec![0u32; n_read];
        for (e, words) in bits[..64 * n_read].chunks_exact(el).enumerate() {
            w[e % n_read] ^= words.iter().fold(0, |a, b| a ^ b);
        }
        w
    };
    let (want4, read_bytes, read_stores) = (xor_want(4), 256 * n_read, 4 * n_read);
    let words = poisoned(gpu, "ceiling.words", n_read);
    let fill_want: Vec<u32> = (0..4 * n4).map(|i| ((i / 4) as f32 + 0.25 * (i % 4) as f32).to_bits()).collect();
    let fill = launch4("fill_v4", n4, &[(2, (&db).into())])?;
    let mut write = (16.0 * n4 as f64 / checked("fill_v4", &fill, &db, &fill_want)? / 1e9, "vec4");
    let read = launch4("read_v4", n_read, &[(1, (&sb).into()), (3, (&words).into())])?;
    let mut reads = vec![("vec4", checked("read_v4", &read, &words, &want4)?)];

    // Where kernels move their data in wider forms (64-bit components; image loads through aliased
    // textures: lavapipe), the copy, the read and the write in those forms too (shaders/ceiling64.wgsl);
    // each ceiling is the fastest of its forms.
    if gpu.int64 && gpu.wide_loads {
        let n8 = n4 / 2;
        let sv = View::whole(&sb);
        let tex = gpu.alias_texture(&sv, n4);
        let db8 = poisoned(gpu, "ceiling.dst8", 8 * n8);
        // ceiling64.wgsl's `entry` over `n` invocations: reading src through `tex` (binding 3) where
        // given, else through its buffer (binding 1) unless it is fill_v8, which reads nothing; writing
        // `out` at binding `ob`.
        let launch64 = |entry: &'static str, n: usize, tex: Option<&(OperandTexture, u32)>, ob: u32, out| {
            let p = Ceiling64Params { n8: n as u32, base: tex.map_or(0, |t| t.1), _pad: [0; 2] };
            let textures: Vec<_> = tex.map(|t| (3, t.0.clone())).into_iter().collect();
            let mut buffers = vec![(ob, View::whole(out))];
            if textures.is_empty() && entry != "fill_v8" {
                buffers.push((1, sv));
            }
            let label = format!("ceiling {entry}[{n}]");
            gpu.launch_tex(
                label,
                "ceiling64",
                entry,
                &[],
                Some(&p),
                &buffers,
                &textures,
                Vec::new(),
                grid(n.div_ceil(256)),
            )
        };
        let mut copies =
            vec![("64-bit", checked("copy_v8", &launch64("copy_v8", n8, None, 2, &db8)?, &db8, &bits[..8 * n8])?)];
        // fill_v8 writes what fill_v4 does, 8 floats an invocation.
        let fill8 = checked("fill_v8", &launch64("fill_v8", n8, None, 2, &db8)?, &db8, &fill_want)?;
        let gbs8 = 32.0 * n8 as f64 / fill8 / 1e9;
        tracing::info!("write ceiling: {:.2} GB/s as vec4, {gbs8:.2} GB/s as 64-bit", write.0);
        if gbs8 > write.0 {
            write = (gbs8, "64-bit");
        }
        let read8 = launch64("read_v8", n_read, None, 4, &words)?;
        reads.push(("64-bit", checked("read_v8", &read8, &words, &xor_want(8))?));
        if let Some(tex) = &tex {
            copies.push((
                "texture",
                checked("copy_tex", &launch64("copy_tex", n8, Some(tex), 2, &db8)?, &db8, &bits[..8 * n8])?,
            ));
            let read_tex = launch64("read_tex", n_read, Some(tex), 4, &words)?;
            reads.push(("texture", checked("read_tex", &read_tex, &words, &want4)?));
        }
        for (form, secs) in copies {
            let gbs = copy_bytes as f64 / secs / 1e9;
            tracing::info!("copy ceiling: {vec4_gbs:.2} GB/s as vec4, {gbs:.2} GB/s as {form}");
            if gbs > copy.0 {
                copy = (gbs, form);
            }
        }
    }
    // A read's time less its one 32-bit store a 256 bytes read, at the write ceiling (at most half
    // the time taken off).
    let mut read = (0.0, "vec4");
    for (form, secs) in reads {
        let gbs = read_bytes as f64 / (secs - read_stores as f64 / (write.0 * 1e9)).max(secs / 2.0) / 1e9;
        tracing::info!("read ceiling: {gbs:.2} GB/s as {form}");
        if gbs > read.0 {
            read = (gbs, form);
        }
    }

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
        let secs = time_launch(gpu, &l, Timing { reps: 1, warmup: Duration::ZERO })?;
        if secs >= 0.02 || iters >= 1 << 16 {
            break l;
        }
        iters *= 2;
    };
    gpu.run(&l)?;
    let got = gpu.read_f32(&out)?;
    let decay = (m as f64).powi(4 * iters as i32);
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
    let secs = time_launch(gpu, &l, t.with_reps(t.reps.clamp(1, 10)))?;
    let flops = (inv * iters * 256) as f64;
    Ok(Ceilings {
        copy_gbs: copy.0,
        copy_bytes,
        copy_form: copy.1.into(),
        read_gbs: read.0,
        read_form: read.1.into(),
        write_gbs: write.0,
        write_form: write.1.into(),
        fma_gflops: flops / secs / 1e9,
        fma_invocations: inv,
        fma_iters: iters,
    })
}

/// A whole training step of `cfg` on synthetic data of its input shape: seconds per step, and the
/// program (checked to give a finite loss).
fn time_step(gpu: &Gpu, cfg: &VaeConfig, batch: usize, t: Timing) -> Result<(f64, Program)> {
    let vae = Vae::new(gpu, cfg, batch)?;
    gpu.write(&vae.core.params, 0, &vae.core.layout.init(0));
    vae.core.set_state(gpu, 0, 0);
    let n = (batch * 8).max(1024);
    let pixels: Vec<u8> = uniform(3, n * cfg.input_dim, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
    let data = GpuDataset::upload(gpu, "bench", &pixels, n, cfg.input_dim)?;
    let prog = vae.train_program(gpu, &data, &crate::kernels::optim::Adam::default(), 0.0, false)?;
    let step = time_program(gpu, &prog, t.with_reps(t.reps.max(5)))?;
    let m = vae.core.read_metrics(gpu)?;
    if !m.train.mean_loss().is_finite() || m.train.rows == 0.0 {
        return Err(Error::Output("benchmark step produced no finite loss".into()));
    }
    Ok((step, prog))
}

pub fn run(gpu: &Gpu, batch: usize, t: Timing) -> Result<Report> {
    let cfg = VaeConfig::default();
    let layout = cfg.layout();
    let mut rows = Vec::new();
    // The default model's matmuls: forward, dW (with db), dX of each layer, with each kernel variant
    // (the one this adapter uses in training is marked *); where the device has subgroups, also the
    // subgroup kernel at 16 rows per invocation (its tile before `sg_rows`) on the products where
    // `sg_rows` picks more and, where it runs with 64-bit loads (matmul_sg64), with 32-bit ones
    // (matmul_sg) on the products that take them.
    let mut variants: Vec<(String, Matmul)> = gpu
        .matmul_kernels()
        .into_iter()
        .map(|k| (format!("{k}{}", if gpu.matmul == k { "*" } else { "" }), Matmul::default().with_kernel(k)))
        .collect();
    if gpu.subgroups {
        let v = Matmul { sg_rows: Some(16), ..Matmul::default().with_kernel(MatmulKernel::Subgroup) };
        variants.push(("subgroup, 16 rows".into(), v));
        if gpu.wide_loads {
            if gpu.tex_operands {
                let v = Matmul { tex: Some(false), ..Matmul::default().with_kernel(MatmulKernel::Subgroup) };
                variants.push(("subgroup, buffer loads".into(), v));
            }
            let v = Matmul { sg64: Some(false), ..Matmul::default().with_kernel(MatmulKernel::Subgroup) };
            variants.push(("subgroup, 32-bit loads".into(), v));
        }
    }
    for (variant, v) in &variants {
        for l in &layout.layers {
            let fwd = Matmul { m: batch, n: l.dout, k: l.din, bias: true, act: l.act, ..*v };
            let dw = Matmul { m: l.din + 1, n: l.dout, k: batch, trans_a: true, ones_row: true, ..*v };
            let dx = Matmul { m: batch, n: l.din, k: l.dout, trans_b: true, ..*v };
            let mut launches = vec![("fwd", fwd), ("dW", dw)];
            if l.name != "enc.fc1" {
                launches.push(("dX", dx));
            }
            for (what, mm) in launches {
                if v.sg_rows.is_some_and(|r| r == crate::kernels::matmul::sg_rows(mm.m)) {
                    continue;
                }
                // matmul_sg's 32-bit loads only where the subgroup rows ran its 64-bit form.
                if v.sg64 == Some(false) && !mm.sg64_ok() {
                    continue;
                }
                // matmul_sg64 reading buffers only where the subgroup rows read textures.
                if v.tex == Some(false) && !mm.tex_shape_ok(gpu.alias_operands) {
                    continue;
                }
                rows.push(bench_matmul(gpu, &format!("{} {what} [{variant}]", l.name), mm, t)?);
                // On an adapter that splits K, the forward and input gradient split as in training
                // with the tiled kernel (`epilogue_k_splits`), beside the unsplit row.
                let s = crate::kernels::matmul::gpu_epilogue_k_splits(mm.m, mm.n, mm.k);
                if gpu.split_k && v.tiled && what != "dW" && s > 1 {
                    let name = format!("{} {what} [tiled, split K /{s}]", l.name);
                    rows.push(bench_matmul_split(gpu, &name, mm, s, t)?);
                }
            }
        }
    }
    // The naive kernel at the largest layer, for comparison.
    let big = &layout.layers[0];
    rows.push(bench_matmul(
        gpu,
        "enc.fc1 fwd (naive kernel)",
        Matmul { m: batch, n: big.dout, k: big.din, bias: true, naive: true, ..Default::default() },
        t.with_reps(t.reps.min(5)),
    )?);

    // Whole training step on synthetic data of Fashion-MNIST's shape.
    let (step, prog) = time_step(gpu, &cfg, batch, t)?;
    // The step's other kernels, each timed alone inside the (checked) step's buffers, at the work
    // their launchers state (the least bytes each must read and write).
    for l in prog.launches.iter().filter(|l| !l.label.contains("matmul")) {
        let name = l.label.split('[').next().unwrap_or(&l.label).trim().to_string();
        rows.push(Row::of_work(name, time_launch(gpu, l, t)?, l.work));
    }
    report(gpu, Some((step, cfg.step_flops(batch))), batch, rows, t)
}

/// One launch of a training step, timed alone.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchRow {
    /// Its place in the step.
    pub index: usize,
    /// The launcher's label: layer, kernel entry point and shape.
    pub label: String,
    /// The kernel (the shader's entry point).
    pub entry: &'static str,
    /// The median over the rounds.
    pub micros: f64,
    /// The fastest and slowest round.
    pub min_micros: f64,
    pub max_micros: f64,
    /// `micros` over the sum of every launch's `micros`.
    pub share: f64,
    /// At the work its launcher states: GFLOP/s or GB/s (`unit`), and its share of the adapter's
    /// ceiling as in [`fraction_of_ceiling`]; 0 and "-" where it states none.
    pub rate: f64,
    pub unit: &'static str,
    pub fraction_of_ceiling: f64,
}

/// The launches of one kernel (entry point) in a step, together.
#[derive(Clone, Debug, Serialize)]
pub struct KernelShare {
    pub entry: &'static str,
    pub launches: usize,
    /// The sum of their median times.
    pub micros: f64,
    /// `micros` over the sum of every launch's.
    pub share: f64,
}

/// Every launch of one training step of a model family, then the whole step.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchReport {
    pub adapter: String,
    /// Measured in the same run, after the launches.
    pub ceilings: Ceilings,
    pub model: String,
    pub batch: usize,
    /// Times each launch and the step were timed, in turns (the figures are medians over them).
    pub rounds: usize,
    pub launches: Vec<LaunchRow>,
    /// The launches by kernel, the most time first.
    pub kernels: Vec<KernelShare>,
    /// The whole step, replayed as the launches are (median over the rounds; then the extremes).
    pub step_micros: f64,
    pub step_min_micros: f64,
    pub step_max_micros: f64,
    /// The sum of the launches' times: what the step would take if each ran as fast as alone.
    pub launches_micros: f64,
}

impl LaunchReport {
    pub fn table(&self) -> String {
        let spread = self.rounds > 1;
        let c = &self.ceilings;
        let mut out = format!(
            "adapter: {}\nceilings: read {:.2} GB/s ({}), write {:.2} GB/s ({}), fma {:.2} GFLOP/s\n{} at batch {}",
            self.adapter, c.read_gbs, c.read_form, c.write_gbs, c.write_form, c.fma_gflops, self.model, self.batch
        );
        if spread {
            out += &format!(", {} rounds (medians; the fastest and slowest round beside them)", self.rounds);
        }
        out += &format!("\n{:>4}  {:<72} {:>12}", "#", "launch", "time (µs)");
        if spread {
            out += &format!(" {:>21}", "min - max (µs)");
        }
        out += &format!(" {:>7} {:>18} {:>10}\n", "share", "rate", "of ceiling");
        for r in &self.launches {
            out += &format!("{:>4}  {:<72} {:>12.1}", r.index, r.label, r.micros);
            if spread {
                out += &format!(" {:>10.1} - {:>8.1}", r.min_micros, r.max_micros);
            }
            out += &format!(" {:>6.1}%", 100.0 * r.share);
            if r.unit != "-" {
                out += &format!(" {:>10.2} {:<7} {:>9.1}%", r.rate, r.unit, 100.0 * r.fraction_of_ceiling);
            }
            out.push('\n');
        }
        out += "by kernel:\n";
        for k in &self.kernels {
            out += &format!(
                "      {:<32} {:>3} launch{} {:>12.1} µs {:>6.1}%\n",
                k.entry,
                k.launches,
                if k.launches == 1 { " " } else { "es" },
                k.micros,
                100.0 * k.share
            );
        }
        out += &format!(
            "step: {:.1} µs ({:.1} steps/s); its launches alone add up to {:.1} µs\n",
            self.step_micros,
            1e6 / self.step_micros,
            self.launches_micros
        );
        if spread {
            out += &format!("step rounds: {:.1} - {:.1} µs\n", self.step_min_micros, self.step_max_micros);
        }
        out
    }
}

/// The median, least and greatest of `x` (not empty).
fn spread(x: &[f64]) -> (f64, f64, f64) {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
    (median, v[0], v[n - 1])
}

/// Every launch of one training step of `model` (a family the trainer takes: vae, conv-vae, ae,
/// conv-ae, vq-vae, vq-vae-2) at `batch`, in step order, each timed alone (replayed `t.reps` times in
/// one submission after the warm-up, the median of three), then the whole step the same way; all of
/// that `rounds` times over (at least once), the launches in turns, so that a host or clock that
/// changes speed during the run spreads over every launch alike. The step is run once first and
/// checked to leave a finite loss.
pub fn run_launches(gpu: &Gpu, model: &str, batch: usize, t: Timing, rounds: usize) -> Result<LaunchReport> {
    use crate::kernels::data::W_TRAIN_BATCH;
    use crate::train::{Session, TrainConfig};
    let rounds = rounds.max(1);
    let cfg = TrainConfig { model: model.into(), batch, ..TrainConfig::default() };
    let data = synthetic_dataset(batch * 8, batch)?;
    let s = Session::new(gpu, &cfg, &data, true)?;
    let prog = s.train_step.as_ref().ok_or_else(|| Error::Config("no training program".into()))?;
    let core = s.core();
    core.set_cursor(gpu, W_TRAIN_BATCH, 0);
    core.reset_metrics(gpu);
    gpu.submit(prog, 1);
    let m = core.read_metrics(gpu)?;
    if !m.train.mean_loss().is_finite() || m.train.rows == 0.0 {
        return Err(Error::Output(format!("{model} at batch {batch}: the step produced no finite loss")));
    }
    let mut times = vec![Vec::with_capacity(rounds); prog.launches.len()];
    let mut step_times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        for (l, ts) in prog.launches.iter().zip(&mut times) {
            ts.push(time_launch(gpu, l, t)? * 1e6);
        }
        step_times.push(time_program(gpu, prog, t)? * 1e6);
    }
    let ceilings = ceilings(gpu, t)?;
    let mut launches: Vec<LaunchRow> = prog
        .launches
        .iter()
        .zip(&times)
        .enumerate()
        .map(|(index, (l, ts))| {
            let (micros, min_micros, max_micros) = spread(ts);
            let row = Row::of_work(l.label.clone(), micros * 1e-6, l.work);
            LaunchRow {
                index,
                label: row.name.clone(),
                entry: l.entry,
                micros,
                min_micros,
                max_micros,
                share: 0.0,
                rate: row.rate,
                unit: row.unit,
                fraction_of_ceiling: fraction_of_ceiling(&row, &ceilings),
            }
        })
        .collect();
    let launches_micros: f64 = launches.iter().map(|r| r.micros).sum();
    let mut kernels: Vec<KernelShare> = Vec::new();
    for r in &mut launches {
        r.share = r.micros / launches_micros;
        match kernels.iter_mut().find(|k| k.entry == r.entry) {
            Some(k) => {
                k.launches += 1;
                k.micros += r.micros;
            }
            None => kernels.push(KernelShare { entry: r.entry, launches: 1, micros: r.micros, share: 0.0 }),
        }
    }
    for k in &mut kernels {
        k.share = k.micros / launches_micros;
    }
    kernels.sort_by(|a, b| b.micros.total_cmp(&a.micros));
    let (step_micros, step_min_micros, step_max_micros) = spread(&step_times);
    Ok(LaunchReport {
        adapter: gpu.summary.to_string(),
        ceilings,
        model: model.into(),
        batch,
        rounds,
        launches,
        kernels,
        step_micros,
        step_min_micros,
        step_max_micros,
        launches_micros,
    })
}

/// One point of the step sweep: a model family's whole training step replayed as the trainer does.
#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    pub model: String,
    pub batch: usize,
    pub steps_per_submit: usize,
    /// Steps timed (a multiple of `steps_per_submit`).
    pub steps: usize,
    pub seconds: f64,
    pub steps_per_second: f64,
    pub images_per_second: f64,
    /// Step FLOPs (forward and backward of the networks' dense and conv layers) per second.
    pub gflops: f64,
}

/// Random bytes in the shape of Fashion-MNIST (28×28×1): `train` training images, `test` test images.
pub fn synthetic_dataset(train: usize, test: usize) -> Result<crate::data::Dataset> {
    use crate::data::{Dataset, Images, Split};
    let split = |name: &'static str, n: usize, seed: u64| {
        let pixels: Vec<u8> = uniform(seed, n * 784, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
        let images = Images { n, rows: 28, cols: 28, channels: 1, pixels };
        Split::new(name, images, vec![0; n])
    };
    let data = Dataset::new(
        "synthetic".into(),
        split("train", train, 3)?,
        split("test", test, 4)?,
        "synthetic".into(),
        false,
    )?;
    Ok(data)
}

/// Steps per second of `model`'s default configuration (a model name the trainer takes: vae,
/// conv-vae, ae, conv-ae, vq-vae, vq-vae-2) at each batch size and number of steps per submission,
/// through the trainer's own loop: `k` steps recorded into one command buffer per submission, the state
/// and running metrics copied back after each one without waiting for the GPU (a `RunWatch`, at most a
/// few submissions behind, from which the trainer's progress bar takes its figures), and the GPU waited
/// for at the end, inside the timed region. Each point runs at least
/// `min_seconds` (after one warm-up submission), starts from the same model state (the one after the
/// warm-up) and is checked to leave finite metrics.
pub fn step_sweep(
    gpu: &Gpu,
    model: &str,
    batches: &[usize],
    submits: &[usize],
    min_seconds: f64,
) -> Result<Vec<StepRow>> {
    use crate::kernels::data::W_TRAIN_BATCH;
    use crate::train::{Session, TrainConfig};
    let largest = submits.iter().copied().max().unwrap_or(1).max(8);
    let mut rows = Vec::new();
    for &batch in batches {
        let cfg = TrainConfig { model: model.into(), batch, ..TrainConfig::default() };
        // One pass over the synthetic set holds the largest submission, so the cursor is only reset
        // between submissions, as at an epoch's start.
        let data = synthetic_dataset(batch * largest, batch)?;
        let s = Session::new(gpu, &cfg, &data, true)?;
        let prog = s.train_step.as_ref().ok_or_else(|| Error::Config("no training program".into()))?;
        let core = s.core();
        let per_pass = s.steps_per_epoch();
        let flops = s.model.step_flops(batch);
        // Warm-up, then an estimate of one step's time from a short submission.
        gpu.submit(prog, 1);
        gpu.sync()?;
        let t = Instant::now();
        gpu.submit(prog, 2);
        gpu.sync()?;
        let estimate = t.elapsed().as_secs_f64() / 2.0;
        // Every point starts from this state, so that no point times a model that earlier points have
        // trained further (one whose speed had changed with its values: before Adam flushed
        // subnormal moments, lavapipe's steps slowed 1.4-1.9x after about 700 steps).
        let start = core.snapshot(gpu)?;
        for &k in submits {
            let k = k.max(1);
            let steps = ((min_seconds / estimate).ceil() as usize).max(k).next_multiple_of(k);
            core.put_back(gpu, &start);
            core.set_cursor(gpu, W_TRAIN_BATCH, 0);
            core.reset_metrics(gpu);
            gpu.sync()?;
            let t = Instant::now();
            let (mut done, mut in_pass) = (0, 0);
            // The trainer's read-backs: state and metrics copied after every submission and looked at
            // as the GPU gets there.
            let mut watch = crate::train::RunWatch::new(gpu);
            while done < steps {
                if in_pass + k > per_pass {
                    core.set_cursor(gpu, W_TRAIN_BATCH, 0);
                    in_pass = 0;
                }
                gpu.submit(prog, k);
                done += k;
                in_pass += k;
                watch.after_submit(gpu, core, done)?;
            }
            watch.ready(gpu, true)?;
            gpu.sync()?;
            let secs = t.elapsed().as_secs_f64();
            let m = core.read_metrics(gpu)?;
            if !m.train.mean_loss().is_finite() || m.train.rows == 0.0 {
                return Err(Error::Output(format!("{model} at batch {batch}: the step produced no finite loss")));
            }
            rows.push(StepRow {
                model: model.into(),
                batch,
                steps_per_submit: k,
                steps,
                seconds: secs,
                steps_per_second: steps as f64 / secs,
                images_per_second: (steps * batch) as f64 / secs,
                gflops: flops * steps as f64 / secs / 1e9,
            });
        }
    }
    Ok(rows)
}

/// The step sweep as a table.
pub fn step_table(rows: &[StepRow]) -> String {
    let mut s = format!(
        "{:<10} {:>6} {:>12} {:>7} {:>10} {:>12} {:>9}\n",
        "model", "batch", "steps/submit", "steps", "steps/s", "images/s", "GFLOP/s"
    );
    for r in rows {
        s += &format!(
            "{:<10} {:>6} {:>12} {:>7} {:>10.1} {:>12.0} {:>9.1}\n",
            r.model, r.batch, r.steps_per_submit, r.steps, r.steps_per_second, r.images_per_second, r.gflops
        );
    }
    s
}
