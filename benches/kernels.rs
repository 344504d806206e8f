//! `cargo bench`: the same table as `vaegpu bench` (kernels at the default model's shapes, checked
//! against the CPU reference before timing, and a whole training step).

fn main() {
    let gpu = vaegpu::testing::test_gpu();
    let batch = std::env::var("VAEGPU_BENCH_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(128);
    match vaegpu::bench::run(&gpu, batch, 20) {
        Ok(r) => print!("{}", r.table()),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
