//! The non-finite guard: a step whose gradient is not finite changes neither the weights nor Adam's
//! moments nor its step (only the batch cursor moves on, and the GPU counts the streak); a run stops with
//! exit code 7 after `--max-nonfinite` such steps in a row, naming the step and the last good checkpoint.

use std::path::PathBuf;

use crate::common::{self as common, bin};
use vaegpu::kernels::data::{W_NONFINITE, W_NONFINITE_RUN, W_STEP, W_TRAIN_BATCH};
use vaegpu::train::{Session, TrainConfig};

fn tmp(name: &str) -> PathBuf {
    common::tmp("nonfinite", name)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_skipped_step_changes_nothing_but_the_cursor() {
    let gpu = vaegpu::testing::shared_gpu();
    let data = vaegpu::data::load(None).unwrap();
    let mut cfg = TrainConfig { batch: 32, train_limit: 256, test_limit: 32, ..Default::default() };
    cfg.vae.hidden = vec![16];
    cfg.vae.latent = 2;
    let session = || {
        let s = Session::new(gpu, &cfg, &data, true).unwrap();
        let d = s.train_data.as_ref().unwrap();
        d.set_order(gpu, &(0..d.n as u32).collect::<Vec<_>>());
        s.core().reset_metrics(gpu);
        s
    };
    let s = session();
    let (c, prog) = (s.core(), s.train_step.as_ref().unwrap());
    let n = c.layout.total;
    let p0: Vec<f32> = gpu.read(&c.params, 0, n).unwrap();
    // A NaN bias of the decoder's output makes a logit of every image NaN, so its gradient: three steps in
    // a row are skipped.
    let out = c.layout.layers.iter().find(|l| l.name == "dec.out").expect("dec.out");
    let mut bad = p0.clone();
    bad[out.offset + out.din * out.dout + 5] = f32::NAN;
    gpu.write(&c.params, 0, &bad);
    for k in 1..=3u32 {
        gpu.submit(prog, 1);
        let st = c.read_state(gpu).unwrap();
        assert_eq!(st[W_STEP as usize], 0, "step {k}: the optimizer step moved");
        assert_eq!((st[W_NONFINITE], st[W_NONFINITE_RUN], st[W_TRAIN_BATCH as usize]), (1, k, k));
    }
    assert_eq!(bits(&gpu.read::<f32>(&c.params, 0, n).unwrap()), bits(&bad), "weights changed");
    for (name, buf) in [("m", &c.adam_m), ("v", &c.adam_v)] {
        assert!(gpu.read::<f32>(buf, 0, n).unwrap().iter().all(|&x| x == 0.0), "Adam's {name} changed");
    }
    let m = c.read_metrics(gpu).unwrap();
    assert_eq!((m.nonfinite_steps, m.grad_norm_mean), (3, 0.0));
    // The weight mended, the next step is the first: exactly the step a fresh run takes on batch 3.
    gpu.write(&c.params, 0, &p0);
    gpu.submit(prog, 1);
    let st = c.read_state(gpu).unwrap();
    assert_eq!((st[W_STEP as usize], st[W_NONFINITE], st[W_NONFINITE_RUN], st[W_TRAIN_BATCH as usize]), (1, 0, 0, 4));
    let fresh = session();
    fresh.core().set_cursor(gpu, W_TRAIN_BATCH, 3);
    gpu.submit(fresh.train_step.as_ref().unwrap(), 1);
    let f = fresh.core();
    for (name, x, y) in [("params", &c.params, &f.params), ("m", &c.adam_m, &f.adam_m), ("v", &c.adam_v, &f.adam_v)] {
        let (x, y): (Vec<f32>, Vec<f32>) = (gpu.read(x, 0, n).unwrap(), gpu.read(y, 0, n).unwrap());
        assert_eq!(bits(&x), bits(&y), "{name} after the mended step differs from a fresh run's first step");
    }
}

#[test]
fn consecutive_nonfinite_steps_stop_the_run_with_exit_7() {
    let out = tmp("stop");
    let args = [
        "--epochs",
        "1",
        "--batch",
        "32",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--train-limit",
        "256",
        "--test-limit",
        "32",
        "--quiet",
    ];
    vaegpu::testing::assert_ok(bin().arg("train").args(args).arg("--out").arg(&out).output().unwrap(), "train");
    let root = out.join("checkpoint");
    let good = vaegpu::testing::latest_checkpoint(&out);
    // Epoch 2 with a learning rate of 1e30: its first step (step 9) is finite and throws the weights to
    // ±1e30; from then on every gradient overflows and every step is skipped.
    let mut cmd = bin();
    cmd.args(["train", "--epochs", "3", "--lr", "1e30", "--max-nonfinite", "3", "--steps-per-submit", "1", "--resume"])
        .arg(&root);
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "{err}");
    for needle in [
        "training diverged: ",
        "consecutive steps had a non-finite gradient and were skipped (max_nonfinite 3)",
        "from epoch 2 batch 2",
        "the optimizer held at step 9",
        &format!("last good checkpoint: {}", good.display()),
    ] {
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }
    // No checkpoint of the diverged state, no metrics line for the epoch.
    assert_eq!(vaegpu::testing::latest_checkpoint(&out), good);
    assert_eq!(vaegpu::testing::metrics_without_timings(&out).len(), 1);
    let _ = std::fs::remove_dir_all(&out);
}
