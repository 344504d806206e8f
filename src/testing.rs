//! Helpers shared by tests and benchmarks: the tolerance type, seeded random data, NaN poisoning.

use crate::gpu::{Gpu, GpuOptions};

/// |gpu − reference| ≤ abs + rel·|reference|, element by element.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rel: f64,
    pub abs: f64,
}

impl Tol {
    pub const fn new(rel: f64, abs: f64) -> Tol {
        Tol { rel, abs }
    }

    /// Checks every element of a float32 result; the error names the first failure and the worst one.
    pub fn check(&self, what: &str, got: &[f32], want: &[f64]) -> Result<(), String> {
        self.check64(what, &to_f64(got), want)
    }

    /// As `check`, for f64 results (the CPU reference against an independent oracle).
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must fail the check
    pub fn check64(&self, what: &str, got: &[f64], want: &[f64]) -> Result<(), String> {
        if got.len() != want.len() {
            return Err(format!("{what}: length {} vs {}", got.len(), want.len()));
        }
        let mut worst = (0usize, 0.0f64);
        let mut bad = 0usize;
        let mut first = None;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g - w).abs();
            let lim = self.abs + self.rel * w.abs();
            let excess = if err.is_nan() { f64::INFINITY } else { err / lim.max(f64::MIN_POSITIVE) };
            if !(err <= lim) {
                bad += 1;
                first.get_or_insert(i);
            }
            if excess > worst.1 {
                worst = (i, excess);
            }
        }
        if bad == 0 {
            Ok(())
        } else {
            let i = first.unwrap();
            let j = worst.0;
            Err(format!(
                "{what}: {bad}/{} elements outside {self:?}; first [{i}] got {} want {}; worst [{j}] got {} want {}",
                got.len(),
                got[i],
                want[i],
                got[j],
                want[j]
            ))
        }
    }
}

/// Seeded uniform values in [lo, hi) from Philox (deterministic across platforms).
pub fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let key = crate::reference::sample::seed_key(seed);
    (0..n)
        .map(|i| {
            let r = crate::reference::sample::philox([i as u32, 0, 7, 0], key);
            lo + (hi - lo) * crate::reference::sample::u32_to_unit(r[0])
        })
        .collect()
}

/// Seeded standard normals.
pub fn normals(seed: u64, n: usize) -> Vec<f64> {
    let key = crate::reference::sample::seed_key(seed);
    (0..n).map(|i| crate::reference::sample::normal(i as u32, 0, 8, key)).collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A buffer of `n` NaNs, so an element a kernel forgets to write shows.
pub fn poisoned(gpu: &Gpu, label: &str, n: usize) -> wgpu::Buffer {
    gpu.upload(label, &vec![f32::NAN; n])
}

/// The GPU for tests: the adapter chosen as the CLI would (honouring WGPU_BACKEND / WGPU_ADAPTER_NAME).
/// Tests FAIL, never skip, when there is none.
pub fn test_gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// The newest checkpoint folder of a run folder (the one `<run>/checkpoint/latest` names).
pub fn latest_checkpoint(run: &std::path::Path) -> std::path::PathBuf {
    crate::train::checkpoint::resolve(&run.join("checkpoint")).unwrap_or_else(|e| panic!("{e}"))
}

/// A file of a run folder; `checkpoint/X` is X in the newest checkpoint folder.
pub fn run_file(run: &std::path::Path, file: &str) -> std::path::PathBuf {
    match file.strip_prefix("checkpoint/") {
        Some(f) => latest_checkpoint(run).join(f),
        None => run.join(file),
    }
}

/// Asserts that two run folders hold the same checkpoint: the model and optimizer files of their newest
/// checkpoints, tensor by tensor (to name the first that differs), then byte for byte (their headers
/// are written with sorted keys).
pub fn assert_same_checkpoint(a: &std::path::Path, b: &std::path::Path) {
    for f in ["checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"] {
        let (fa, fb) = (std::fs::read(run_file(a, f)).unwrap(), std::fs::read(run_file(b, f)).unwrap());
        let (ta, tb) =
            (safetensors::SafeTensors::deserialize(&fa).unwrap(), safetensors::SafeTensors::deserialize(&fb).unwrap());
        let mut names = ta.names();
        names.sort();
        let mut names_b = tb.names();
        names_b.sort();
        assert_eq!(names, names_b, "{f}: tensor names differ");
        for n in names {
            let (x, y) = (ta.tensor(n).unwrap(), tb.tensor(n).unwrap());
            assert_eq!(x.shape(), y.shape(), "{f}: {n}");
            assert!(x.data() == y.data(), "{f}: {n} differs");
        }
        assert!(fa == fb, "{f}: the same tensors, but the files' bytes differ");
    }
}

/// The lines of a run's metrics.jsonl without the timing and memory fields (`*seconds`, `*bytes`).
pub fn metrics_without_timings(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !k.ends_with("seconds") && !k.ends_with("bytes"));
            v
        })
        .collect()
}

/// Asserts a finished command succeeded (naming `what` and quoting its stderr otherwise); returns it.
pub fn assert_ok(o: std::process::Output, what: &str) -> std::process::Output {
    assert!(o.status.success(), "{what} failed ({:?}): {}", o.status, String::from_utf8_lossy(&o.stderr));
    o
}

/// Runs `cmd` and asserts it fails with exit code `code` and `needle` in its stderr, without a panic.
pub fn assert_fails(cmd: &mut std::process::Command, code: i32, needle: &str) {
    let o = cmd.output().expect("the command runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{cmd:?}: {err}");
    assert!(err.contains(needle), "{cmd:?}: expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{cmd:?} panicked: {err}");
}

/// One adapter per test binary, opened on first use (tests of a file share it).
pub fn shared_gpu() -> &'static Gpu {
    static G: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    G.get_or_init(test_gpu)
}

/// A second shared device, with the other width of the per-example loss reductions
/// ([`Gpu::row_lanes`]: 64, the GPUs', where the adapter's own is 8, as on lavapipe; else 8), so that
/// the kernel tests check both on any adapter.
pub fn shared_gpu_other_rows() -> &'static Gpu {
    static G: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let mut g = test_gpu();
        g.row_lanes = if g.row_lanes == 8 { 64 } else { 8 };
        g
    })
}

/// Two fresh devices on the test adapter, one with [`Gpu::wide_loads`] forced on and one with it off,
/// for tests that compare the 64-bit forms of kernels with their 32-bit ones; None (after a note on
/// stderr) where the device has no 64-bit integers, which a CPU adapter must have (lavapipe does).
pub fn wide_and_narrow_gpus() -> Option<(Gpu, Gpu)> {
    let mut wide = test_gpu();
    if !wide.int64 {
        assert!(!wide.is_cpu(), "CPU adapter {} without 64-bit integers", wide.summary.name);
        eprintln!("skipped: {} has no 64-bit integers", wide.summary.name);
        return None;
    }
    wide.wide_loads = true;
    let mut narrow = test_gpu();
    narrow.wide_loads = false;
    Some((wide, narrow))
}

/// Host values as the GPU sees them (rounded to f32), back in f64 for the reference.
pub fn f32_round(v: &[f64]) -> Vec<f64> {
    to_f64(&to_f32(v))
}

/// State words with the step counter and the Philox seed set, the rest zero (see kernels::data).
pub fn state_words(step: u32, seed: u64) -> [u32; crate::kernels::data::STATE_WORDS] {
    use crate::kernels::data::{STATE_WORDS, W_SEED_HI, W_SEED_LO, W_STEP};
    let mut s = [0u32; STATE_WORDS];
    s[W_STEP as usize] = step;
    s[W_SEED_LO] = seed as u32;
    s[W_SEED_HI] = (seed >> 32) as u32;
    s
}
