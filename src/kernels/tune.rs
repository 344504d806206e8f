//! Start-up choice of kernel variants per adapter: each candidate is timed on the default VAE's dense
//! products, the fastest is kept, and the choice is cached per adapter (name, backend, driver, crate
//! version, candidate set) in `tuning.json` under `$VAEGPU_CACHE_DIR`, else `$XDG_CACHE_HOME/vaegpu`,
//! else `~/.cache/vaegpu`. `VAEGPU_MATMUL=register|subgroup|tiled` forces a kernel without timing (the
//! CLI's `--matmul` does the same). A cache that cannot be read or written is only warned about.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::matmul::Matmul;
use crate::gpu::{Gpu, MatmulKernel, Result};

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

/// The cache file, where a folder for it can be named.
pub fn cache_path() -> Option<PathBuf> {
    let dir = std::env::var_os("VAEGPU_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vaegpu")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/vaegpu")))?;
    Some(dir.join("tuning.json"))
}

/// The cache key of this adapter. It ends with the candidates [`time_matmul`] times here
/// ([`Gpu::matmul_kernels`]), so that a new kernel has adapters timed before it timed again.
pub fn adapter_key(gpu: &Gpu) -> String {
    let s = &gpu.summary;
    let candidates: Vec<String> = gpu.matmul_kernels().iter().map(|k| k.to_string()).collect();
    format!(
        "{} | {} | {} {} | vaegpu {} | {}",
        s.name,
        s.backend,
        s.driver,
        s.driver_info,
        env!("CARGO_PKG_VERSION"),
        candidates.join(",")
    )
}

fn read_cache(path: &PathBuf) -> BTreeMap<String, Tuning> {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Writes the cache through a temporary file and a rename, so that concurrent processes never see a
/// half-written file.
fn write_cache(path: &PathBuf, cache: &BTreeMap<String, Tuning>) -> std::io::Result<()> {
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
    if let Some(t) = path.as_ref().and_then(|p| read_cache(p).remove(&key)) {
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
    if let Some(p) = &path {
        let mut cache = read_cache(p);
        cache.insert(key, t.clone());
        if let Err(e) = write_cache(p, &cache) {
            tracing::warn!("could not write the tuning cache {}: {e}", p.display());
        }
    }
    Ok(t.matmul)
}

/// Times the matmul kernels (the subgroup one where the device has subgroups) on the default VAE's three
/// dense products of its largest layer at batch
/// 128 (forward 128×400×784, dW 785×400×128, dX 128×784×400): one warm-up, then the best of three
/// submissions of each. The inputs are zeros: the time does not depend on the values, and the kernels'
/// results are checked against the reference by the tests and by `vaegpu bench`.
pub fn time_matmul(gpu: &Gpu) -> Result<Tuning> {
    let shapes = [
        Matmul { m: 128, n: 400, k: 784, bias: true, ..Default::default() },
        Matmul { m: 785, n: 400, k: 128, trans_a: true, ones_row: true, ..Default::default() },
        Matmul { m: 128, n: 784, k: 400, trans_b: true, ..Default::default() },
    ];
    let a = gpu.storage_f32("tune.a", 785 * 800);
    let b = gpu.storage_f32("tune.b", 785 * 800);
    let c = gpu.storage_f32("tune.c", 785 * 800);
    let mut us = Vec::new();
    for kernel in gpu.matmul_kernels() {
        let launches = shapes
            .iter()
            .map(|mm| mm.with_kernel(kernel).launch(gpu, "tune", (&a).into(), (&b).into(), (&c).into(), None))
            .collect::<Result<Vec<_>>>()?;
        let prog = crate::gpu::Program { label: "tune".into(), launches };
        gpu.submit(&prog, 1);
        gpu.sync()?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            gpu.submit(&prog, 1);
            gpu.sync()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        us.push((kernel, best * 1e6));
    }
    let matmul = us.iter().min_by(|x, y| x.1.total_cmp(&y.1)).unwrap().0;
    let time = |k: MatmulKernel| us.iter().find(|u| u.0 == k).map(|u| u.1);
    Ok(Tuning {
        matmul,
        register_us: time(MatmulKernel::Register).unwrap(),
        tiled_us: time(MatmulKernel::Tiled).unwrap(),
        subgroup_us: time(MatmulKernel::Subgroup),
    })
}
