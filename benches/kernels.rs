//! `cargo bench`: the same table as `vaegpu bench` (kernels at the default model's shapes, checked
//! against the CPU reference before timing, and a whole training step).

fn main() {
    let gpu = vaegpu::testing::test_gpu();
    let batch = std::env::var("VAEGPU_BENCH_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(128);
    for (name, run) in [
        (
            "MLP VAE",
            vaegpu::bench::run
                as fn(&vaegpu::gpu::Gpu, usize, vaegpu::bench::Timing) -> vaegpu::Result<vaegpu::bench::Report>,
        ),
        ("conv VAE", vaegpu::bench::run_conv),
    ] {
        println!("== {name}");
        match run(&gpu, batch, vaegpu::bench::Timing::new(20)) {
            Ok(r) => print!("{}", r.table()),
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
