//! Exact resume: a run stopped (SIGINT, a stop request, SIGKILL) and resumed ends with the same weights,
//! optimizer state, training state and metrics as the same run done in one go, bit for bit: the MLP VAE
//! through the CLI, a VQ-VAE with EMA codebook and dead-code restart through the library, stopped
//! mid-epoch more than once.
#![cfg(unix)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::common::{self as common, bin};
use vaegpu::testing::{assert_ok, metrics_without_timings};
use vaegpu::train::{checkpoint, TrainConfig, TrainOptions};
use vaegpu::Error;

fn tmp(name: &str) -> PathBuf {
    common::tmp("resume", name)
}

/// A tiny MLP VAE: 512 images of batch 32, 16 steps per epoch, one step per submission, 3 epochs.
const VAE: &[&str] = &[
    "--epochs",
    "3",
    "--batch",
    "32",
    "--hidden",
    "32",
    "--latent",
    "4",
    "--train-limit",
    "512",
    "--test-limit",
    "64",
    "--steps-per-submit",
    "1",
    "--quiet",
];

/// Every tensor of every file of the newest checkpoints of two runs is equal, bit for bit (weights,
/// Adam moments, the GPU's running sums), and so are their step, epoch, batch and state words.
fn assert_same_latest(a: &Path, b: &Path) {
    let (da, db) = (vaegpu::testing::latest_checkpoint(a), vaegpu::testing::latest_checkpoint(b));
    assert_eq!(da.file_name(), db.file_name());
    for f in [checkpoint::MODEL, checkpoint::OPTIMIZER, checkpoint::STATE] {
        let (fa, fb) = (std::fs::read(da.join(f)).unwrap(), std::fs::read(db.join(f)).unwrap());
        let (ta, tb) =
            (safetensors::SafeTensors::deserialize(&fa).unwrap(), safetensors::SafeTensors::deserialize(&fb).unwrap());
        let (mut na, mut nb) = (ta.names(), tb.names());
        na.sort();
        nb.sort();
        assert_eq!(na, nb, "{f}: tensor names");
        for n in na {
            assert!(ta.tensor(n).unwrap().data() == tb.tensor(n).unwrap().data(), "{f}: {n} differs");
        }
    }
    let (ma, mb) = (checkpoint::load_meta(&da).unwrap(), checkpoint::load_meta(&db).unwrap());
    assert_eq!((ma.step, ma.epoch, ma.batch, &ma.gpu_state), (mb.step, mb.epoch, mb.batch, &mb.gpu_state));
}

/// Spawns `vaegpu train` and returns once it has opened its adapter (its signal handlers are in place).
fn spawn_train(args: &[&str], out: &Path) -> std::process::Child {
    let mut child = bin()
        .arg("train")
        .args(args)
        .arg("--out")
        .arg(out)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("adapter:") {
        line.clear();
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let st = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
    assert!(st.success());
}

/// The run done in one go, shared by the VAE tests (the last one to finish removes it).
fn straight() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let a = tmp("straight");
        assert_ok(bin().arg("train").args(VAE).arg("--out").arg(&a).output().unwrap(), "train");
        a
    })
}

static READERS: AtomicUsize = AtomicUsize::new(2);

fn done_with_straight() {
    if READERS.fetch_sub(1, Ordering::SeqCst) == 1 {
        let _ = std::fs::remove_dir_all(straight());
    }
}

/// Resumes the stopped run in `b` to its end and checks it against the straight run, bit for bit.
fn resume_and_compare(b: &Path) {
    let o = bin().arg("train").arg("--resume").arg(b.join("checkpoint")).arg("--quiet").output().unwrap();
    assert_ok(o, "resume");
    let a = straight();
    assert_same_latest(a, b);
    assert_eq!(metrics_without_timings(a), metrics_without_timings(b));
    let _ = std::fs::remove_dir_all(b);
    done_with_straight();
}

#[test]
fn vae_stopped_by_sigint_resumes_bit_for_bit() {
    let b = tmp("sigint");
    // SIGINT while the run is still setting up: it trains the submission after it, then stops there
    // with a checkpoint (exit code 130).
    let mut child = spawn_train(VAE, &b);
    signal(&child, "INT");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130), "{st:?}");
    let (_, meta) = checkpoint::open_meta(&b.join("checkpoint")).unwrap();
    eprintln!("stopped at epoch {} batch {} step {}", meta.epoch, meta.batch, meta.step);
    assert_eq!(meta.step as usize, meta.epoch * 16 + meta.batch, "the checkpoint's step is where it stopped");
    resume_and_compare(&b);
}

#[test]
fn vae_killed_resumes_from_its_last_checkpoint_bit_for_bit() {
    let b = tmp("kill");
    // SIGKILL as soon as the first checkpoint is there: the metrics line of a later epoch may be written
    // already; resuming drops it and trains that epoch again.
    let mut child = spawn_train(VAE, &b);
    let latest = b.join("checkpoint").join(checkpoint::LATEST);
    let t0 = std::time::Instant::now();
    while !latest.exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    resume_and_compare(&b);
}

/// A small VQ-VAE with EMA codebook and dead-code restart (8 steps per epoch, 3 per submission).
fn vq_config(out: &Path) -> TrainConfig {
    let mut c = TrainConfig {
        model: "vq-vae".into(),
        epochs: 2,
        batch: 32,
        train_limit: 256,
        test_limit: 64,
        steps_per_submit: 3,
        out: out.into(),
        ..Default::default()
    };
    c.vq.channels = vec![8, 16];
    c.vq.blocks = 1;
    c.vq.codes = 64;
    c.vq.dim = 8;
    c.vq.restart = true;
    c
}

#[test]
fn vq_vae_stopped_mid_epoch_resumes_bit_for_bit() {
    let gpu = vaegpu::testing::shared_gpu();
    let data = vaegpu::data::load(None).unwrap();
    let (a, b) = (tmp("vq-a"), tmp("vq-b"));
    let none = TrainOptions { progress: false, resume: None, stop: None };
    vaegpu::train::run(gpu, &vq_config(&a), &data, &none).unwrap();
    // A stop asked for before the run starts lands after its first submission; each resume with the
    // stop still asked for goes one submission further. The third lands on the epoch's last batch: that
    // epoch is finished (evaluated, checkpointed) before the run stops.
    let stop = Arc::new(AtomicUsize::new(2));
    let root = b.join("checkpoint");
    let mut cfg = vq_config(&b);
    let mut resume = None;
    for want in ["epoch-0001-batch-000003", "epoch-0001-batch-000006", "epoch-0001"] {
        let opts = TrainOptions { progress: false, resume: resume.clone(), stop: Some(stop.clone()) };
        match vaegpu::train::run(gpu, &cfg, &data, &opts) {
            Err(Error::Interrupted { signal: 2, checkpoint, root: r }) => {
                assert_eq!(checkpoint.file_name().unwrap(), want);
                assert_eq!(r, root);
            }
            other => panic!("expected a stop at {want}: {:?}", other.map(|r| r.len())),
        }
        assert_eq!(vaegpu::testing::latest_checkpoint(&b).file_name().unwrap(), want);
        cfg = checkpoint::load_meta(&root).unwrap().config;
        resume = Some(root.clone());
    }
    // The metrics line of epoch 1 was written once, with the sums carried across both stops.
    assert_eq!(metrics_without_timings(&b).len(), 1);
    stop.store(0, Ordering::SeqCst);
    let opts = TrainOptions { progress: false, resume, stop: Some(stop) };
    vaegpu::train::run(gpu, &cfg, &data, &opts).unwrap();
    assert_same_latest(&a, &b);
    let (ma, mb) = (metrics_without_timings(&a), metrics_without_timings(&b));
    assert_eq!(ma.len(), 2);
    assert_eq!(ma, mb);
    let restarts: f64 = ma.iter().map(|l| l["levels"][0]["restarts"].as_f64().unwrap()).sum();
    assert!(restarts > 0.0, "no dead-code restarts happened, so their RNG stream went untested: {ma:?}");
    // The EMA state is in the weights file.
    let st = std::fs::read(vaegpu::testing::run_file(&b, "checkpoint/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    for n in ["vq.embed", "vq.cluster_size", "vq.embed_avg"] {
        assert!(st.tensor(n).is_ok(), "{n} missing");
    }
    // Keep-3 (the default): the oldest mid-epoch folder went when epoch 2's came.
    let mut kept: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    kept.sort();
    assert_eq!(kept, ["epoch-0001", "epoch-0001-batch-000006", "epoch-0002", "latest"]);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}
