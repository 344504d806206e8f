//! Start-up choice of kernel variants per adapter: each candidate is timed on a model's products, the
//! fastest is kept, and the choice is cached per adapter (name, backend, driver, crate version,
//! candidate set) under `$VAEGPU_CACHE_DIR`, else `$XDG_CACHE_HOME/vaegpu`, else `~/.cache/vaegpu`:
//! the matmul kernel (timed on the default VAE's dense products) in `tuning.json`, the conv kernel (on
//! the conv VAE's 32/64-channel layers; GPUs only) in `tuning-conv.json`.
//! `VAEGPU_MATMUL=register|subgroup|tiled` and `VAEGPU_CONV=gather|tiled|matmul` force a kernel without timing
//! (the CLI's `--matmul` and `--conv` do the same). A cache that cannot be read or written is only
//! warned about.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::conv::{ConvGather, ConvGeom, ConvWgrad};
use super::matmul::Matmul;
use crate::gpu::{ConvKernel, Gpu, MatmulKernel, Program, Result};

/// One adapter's cached choice, with the timings it was made from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tuning {
    pub matmul: MatmulKernel,
    /// Microseconds of the timed products with each kernel.
    pub register_us: f64,
    pub tiled_us: f64,
    /// None where the device has no subgroups (see [`Gpu::subgroups`]).
    #[serde(default)]
    pub subgroup_us: Option<f64>,
}

/// One adapter's cached conv choice, with the timings it was made from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConvTuning {
    pub conv: ConvKernel,
    /// Microseconds of the timed layers with each kernel; None for a kernel not timed (the tiled one
    /// where the device's limits do not fit it).
    pub gather_us: f64,
    #[serde(default)]
    pub tiled_us: Option<f64>,
    #[serde(default)]
    pub matmul_us: Option<f64>,
}

/// The cache folder, where one can be named.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("VAEGPU_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vaegpu")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/vaegpu")))
}

/// The matmul cache file, where a folder for it can be named.
pub fn cache_path() -> Option<PathBuf> {
    Some(cache_dir()?.join("tuning.json"))
}

/// The conv cache file, where a folder for it can be named.
pub fn conv_cache_path() -> Option<PathBuf> {
    Some(cache_dir()?.join("tuning-conv.json"))
}

/// Version of the timing method in [`time_matmul`]: part of the cache key, so that choices timed by an
/// earlier method are timed again (2: warm-up, ~2 ms submissions, interleaved rounds).
const METHOD: u32 = 2;

/// The cache key of this adapter. It ends with the candidates [`time_matmul`] times here
/// ([`Gpu::matmul_kernels`]) and the timing method, so that a new kernel or method has adapters timed
/// before it timed again.
pub fn adapter_key(gpu: &Gpu) -> String {
    let candidates: Vec<String> = gpu.matmul_kernels().iter().map(|k| k.to_string()).collect();
    format!("{} | {} | timing {METHOD}", adapter_id(gpu), candidates.join(","))
}

/// The adapter, its driver and this crate's version: the start of every cache key.
fn adapter_id(gpu: &Gpu) -> String {
    let s = &gpu.summary;
    format!("{} | {} | {} {} | vaegpu {}", s.name, s.backend, s.driver, s.driver_info, env!("CARGO_PKG_VERSION"))
}

fn read_cache<T: DeserializeOwned>(path: &PathBuf) -> BTreeMap<String, T> {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Writes the cache through a temporary file and a rename, so that concurrent processes never see a
/// half-written file.
fn write_cache<T: Serialize>(path: &PathBuf, cache: &BTreeMap<String, T>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// The matmul kernel for `gpu`: forced by `VAEGPU_MATMUL`, else cached for this adapter, else timed
/// now (see [`time_matmul`]) and cached.
pub fn choose_matmul(gpu: &Gpu) -> Result<MatmulKernel> {
    if let Some(k) = std::env::var("VAEGPU_MATMUL").ok().and_then(|v| v.parse::<MatmulKernel>().ok()) {
        if k != MatmulKernel::Auto {
            return Ok(k);
        }
    }
    let key = adapter_key(gpu);
    let path = cache_path();
    if let Some(t) = path.as_ref().and_then(|p| read_cache::<Tuning>(p).remove(&key)) {
        return Ok(t.matmul);
    }
    let t = time_matmul(gpu)?;
    tracing::info!(
        "matmul kernel timed on {}: register {:.0} µs, subgroup {}, tiled {:.0} µs → {}",
        gpu.summary.name,
        t.register_us,
        t.subgroup_us.map_or("-".into(), |u| format!("{u:.0} µs")),
        t.tiled_us,
        t.matmul
    );
    store(path, key, t.clone());
    Ok(t.matmul)
}

/// Adds one adapter's entry to a cache file (read again first: another process may have added its own).
fn store<T: Serialize + DeserializeOwned>(path: Option<PathBuf>, key: String, t: T) {
    if let Some(p) = &path {
        let mut cache = read_cache::<T>(p);
        cache.insert(key, t);
        if let Err(e) = write_cache(p, &cache) {
            tracing::warn!("could not write the tuning cache {}: {e}", p.display());
        }
    }
}

/// Runs each program alone, timed as in [`time_matmul`]: a warm-up of at least 50 ms, then 5 rounds in
/// turn, each submission repeating its program to last about 2 ms, each program kept at its best round.
/// Seconds per run of each program.
fn time_programs(gpu: &Gpu, progs: &[&Program]) -> Result<Vec<f64>> {
    let timed = |prog: &Program, reps: usize| -> Result<f64> {
        let t = Instant::now();
        gpu.submit(prog, reps);
        gpu.sync()?;
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    let start = Instant::now();
    let mut once = f64::INFINITY;
    while start.elapsed().as_secs_f64() < 0.05 || once.is_infinite() {
        for prog in progs {
            once = once.min(timed(prog, 1)?);
        }
    }
    let reps = ((0.002 / once).ceil() as usize).clamp(1, 64);
    let mut best = vec![f64::INFINITY; progs.len()];
    for _ in 0..5 {
        for (i, prog) in progs.iter().enumerate() {
            best[i] = best[i].min(timed(prog, reps)?);
        }
    }
    Ok(best)
}

/// Version of [`time_conv`]'s method and shapes: part of the conv cache key.
const CONV_METHOD: u32 = 2;

/// The conv kernel for `gpu`: forced by `VAEGPU_CONV`; the matmul forms on CPU adapters (on lavapipe
/// conv_tiled took 3.3–6× as long as the gather kernel on the conv VAE's 32/64-channel layers, and the
/// matmul forms beat the gather kernel: benches/RESULTS.md); on GPUs cached for this adapter, else timed
/// now (see [`time_conv`]) and cached, else, where the timing fails, the gather kernel.
pub fn choose_conv(gpu: &Gpu) -> Result<ConvKernel> {
    if let Some(k) = std::env::var("VAEGPU_CONV").ok().and_then(|v| v.parse::<ConvKernel>().ok()) {
        if k != ConvKernel::Auto {
            return Ok(k);
        }
    }
    if gpu.is_cpu() {
        return Ok(ConvKernel::Matmul);
    }
    let names = conv_candidates(gpu).iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",");
    let split = if gpu.split_k { "" } else { " | no split-k" };
    let key = format!("{} | {names} | conv timing {CONV_METHOD}{split}", adapter_id(gpu));
    let path = conv_cache_path();
    if let Some(t) = path.as_ref().and_then(|p| read_cache::<ConvTuning>(p).remove(&key)) {
        return Ok(t.conv);
    }
    // A failed timing costs the faster kernels, never the run.
    let t = match time_conv(gpu) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("conv kernel timing failed on {}: {e}; using the gather kernel", gpu.summary.name);
            return Ok(ConvKernel::Gather);
        }
    };
    let us = |u: Option<f64>| u.map_or("-".to_string(), |u| format!("{u:.0}"));
    tracing::info!(
        "conv kernel timed on {}: gather {:.0} µs, tiled {} µs, matmul {} µs → {}",
        gpu.summary.name,
        t.gather_us,
        us(t.tiled_us),
        us(t.matmul_us),
        t.conv
    );
    store(path, key, t.clone());
    Ok(t.conv)
}

/// The conv kernels [`time_conv`] times on `gpu`: the gather kernel and the matmul forms, and the tiled
/// kernel where the device's limits fit it.
fn conv_candidates(gpu: &Gpu) -> Vec<ConvKernel> {
    let mut k = vec![ConvKernel::Gather];
    if ConvGather::tiled_fits(gpu) {
        k.push(ConvKernel::Tiled);
    }
    k.push(ConvKernel::Matmul);
    k
}

/// Times the conv kernels (see `conv_candidates`) on the conv VAE's layers with 32 and 64 channels at
/// batch 256 (enc.conv2 32→64, 14×14 → 7×7, k4 s2 p1; dec.deconv2 64→32, 7×7 → 14×14): each one's
/// forward, input gradient and parameter gradient, as `time_programs` does. The matmul forms run with
/// their im2col or col2im launches on the adapter's matmul kernel, and the parameter gradients through
/// im2col and a split-K matmul; the other two kinds with the split reduction, as in training. Zeros in,
/// as in [`time_matmul`].
pub fn time_conv(gpu: &Gpu) -> Result<ConvTuning> {
    time_conv_at(gpu, 256)
}

/// [`time_conv`] at another batch size (tests: lavapipe takes seconds per launch at 256).
pub fn time_conv_at(gpu: &Gpu, batch: usize) -> Result<ConvTuning> {
    let conv = ConvGeom { k: 4, stride: 2, pad: 1, cin: 32, cout: 64, transposed: false };
    let deconv = ConvGeom { cin: 64, cout: 32, transposed: true, ..conv };
    let layers = [
        ConvGather::forward(&conv, batch, 14, 14, crate::kernels::Act::Relu)?,
        ConvGather::input_grad(&conv, batch, 14, 14, crate::kernels::Act::Identity)?,
        ConvGather::forward(&deconv, batch, 7, 7, crate::kernels::Act::Relu)?,
        ConvGather::input_grad(&deconv, batch, 7, 7, crate::kernels::Act::Identity)?,
    ];
    let mut wgrads = ConvWgrad::for_layer(&conv, batch, 14, 14, false)?;
    wgrads.extend(ConvWgrad::for_layer(&deconv, batch, 7, 7, false)?);
    let kernels = conv_candidates(gpu);
    let forced = |l: &ConvGather, k: ConvKernel| ConvGather { kernel: Some(k), ..*l };
    let forced_w = |w: &ConvWgrad, k: ConvKernel| ConvWgrad { im2col: Some(k == ConvKernel::Matmul), ..*w };
    let most = |f: &dyn Fn(&ConvGather) -> usize, fw: &dyn Fn(&ConvWgrad) -> usize| {
        let launches = kernels.iter().flat_map(|&k| layers.iter().map(move |l| f(&forced(l, k))));
        let grads = kernels.iter().flat_map(|&k| wgrads.iter().map(move |(w, _)| fw(&forced_w(w, k))));
        launches.chain(grads).max().unwrap_or(0).max(1)
    };
    let len = batch * 14 * 14 * 32;
    let x = gpu.storage_f32("tune.x", len);
    let w = gpu.storage_f32("tune.w", 16 * 32 * 64 + 64);
    let y = gpu.storage_f32("tune.y", len);
    let dw = gpu.storage_f32("tune.dw", 17 * 32 * 64 + 64);
    let scratch = gpu.storage_f32("tune.scratch", most(&|l| l.scratch_len(gpu), &|w| w.scratch_len(gpu)));
    let product = gpu.storage_f32("tune.product", most(&|l| l.product_len(gpu), &|w| w.product_len(gpu)));
    let bufs = |s: usize, p: usize| ((s > 0).then(|| (&scratch).into()), (p > 0).then(|| (&product).into()));
    let mut progs = Vec::new();
    for &kernel in &kernels {
        let mut launches = Vec::new();
        for l in &layers {
            let l = forced(l, kernel);
            let (s, p) = bufs(l.scratch_len(gpu), l.product_len(gpu));
            launches.extend(l.launches(gpu, "tune", (&x).into(), (&w).into(), (&y).into(), None, None, s, p)?);
        }
        for (wg, at) in &wgrads {
            let wg = forced_w(wg, kernel);
            let (s, p) = bufs(wg.scratch_len(gpu), wg.product_len(gpu));
            launches.extend(wg.launch(gpu, "tune", (&x).into(), (&y).into(), (&dw).into(), *at, s, p)?);
        }
        progs.push(Program { label: "tune".into(), launches });
    }
    let best = time_programs(gpu, &progs.iter().collect::<Vec<_>>())?;
    let us = |k: ConvKernel| kernels.iter().position(|&c| c == k).map(|i| best[i] * 1e6);
    let fastest = (0..kernels.len()).min_by(|&i, &j| best[i].total_cmp(&best[j])).unwrap();
    Ok(ConvTuning {
        conv: kernels[fastest],
        gather_us: us(ConvKernel::Gather).unwrap(),
        tiled_us: us(ConvKernel::Tiled),
        matmul_us: us(ConvKernel::Matmul),
    })
}

/// Times the matmul kernels (the subgroup one where the device has subgroups) on the default VAE's three
/// dense products of its largest layer at batch 128 (forward 128×400×784, dW 785×400×128, dX
/// 128×784×400). The three products of each kernel are one program. After a warm-up of at least 50 ms
/// (GPU clocks ramp up from idle), each timed submission repeats the program enough times to last about
/// 2 ms, and the kernels take turns through 5 rounds, each kept at its best round. (On an H100 one
/// submission of the three products is ~0.15 ms of GPU work against 0.3–1.5 ms of submission and wait:
/// timed singly, first kernel first, they chose the register kernel over one twice as fast.) The inputs
/// are zeros: the time does not depend on the values, and the kernels' results are checked against the
/// reference by the tests and by `vaegpu bench`.
pub fn time_matmul(gpu: &Gpu) -> Result<Tuning> {
    let shapes = [
        Matmul { m: 128, n: 400, k: 784, bias: true, ..Default::default() },
        Matmul { m: 785, n: 400, k: 128, trans_a: true, ones_row: true, ..Default::default() },
        Matmul { m: 128, n: 784, k: 400, trans_b: true, ..Default::default() },
    ];
    let a = gpu.storage_f32("tune.a", 785 * 800);
    let b = gpu.storage_f32("tune.b", 785 * 800);
    let c = gpu.storage_f32("tune.c", 785 * 800);
    let mut progs = Vec::new();
    for kernel in gpu.matmul_kernels() {
        let launches = shapes
            .iter()
            .map(|mm| mm.with_kernel(kernel).launch(gpu, "tune", (&a).into(), (&b).into(), (&c).into(), None))
            .collect::<Result<Vec<_>>>()?;
        progs.push((kernel, Program { label: "tune".into(), launches }));
    }
    let best = time_programs(gpu, &progs.iter().map(|(_, p)| p).collect::<Vec<_>>())?;
    let us: Vec<(MatmulKernel, f64)> = progs.iter().zip(&best).map(|((k, _), t)| (*k, t * 1e6)).collect();
    let matmul = us.iter().min_by(|x, y| x.1.total_cmp(&y.1)).unwrap().0;
    let time = |k: MatmulKernel| us.iter().find(|u| u.0 == k).map(|u| u.1);
    Ok(Tuning {
        matmul,
        register_us: time(MatmulKernel::Register).unwrap(),
        tiled_us: time(MatmulKernel::Tiled).unwrap(),
        subgroup_us: time(MatmulKernel::Subgroup),
    })
}
