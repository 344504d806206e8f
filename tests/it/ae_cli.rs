//! `vaegpu train --model ae` end to end on a small slice of the data: a sparse (KL on a sigmoid hidden
//! layer) denoising (masking) autoencoder's metrics, pictures and checkpoint tensors, eval repeating
//! the last test loss, sample refusing it, bit-exact resume; a short conv AE run; and the AE options it
//! refuses.

use std::path::{Path, PathBuf};

use crate::common::{self as common, bin};
use vaegpu::testing::assert_ok as ok;

fn tmp(name: &str) -> PathBuf {
    common::tmp("aecli", name)
}

/// 784-32(sigmoid, KL-penalised)-8-32-784 with masking noise; 8 steps per epoch, and a test set of 100
/// images so the last eval batch is partial (4 of 32 rows).
const SPARSE_DENOISING: &[&str] = &[
    "--model",
    "ae",
    "--hidden",
    "32",
    "--latent",
    "8",
    "--act",
    "sigmoid",
    "--sparsity",
    "kl",
    "--sparse-layer",
    "0",
    "--sparse-weight",
    "0.1",
    "--sparse-target",
    "0.05",
    "--noise",
    "mask",
    "--noise-level",
    "0.3",
    "--batch",
    "32",
    "--train-limit",
    "256",
    "--test-limit",
    "100",
    "--quiet",
];

fn train(out: &Path, extra: &[&str]) {
    ok(bin().arg("train").args(SPARSE_DENOISING).args(extra).arg("--out").arg(out).output().unwrap(), "train");
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {v}"))
}

fn tensor_shapes(file: &Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<usize>)> = st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    v.sort();
    v
}

#[test]
fn sparse_denoising_ae_trains_evaluates_and_resumes_bit_for_bit() {
    let a = tmp("a");
    train(&a, &["--epochs", "2"]);
    let lines = metrics(&a);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let (loss, rec, pen) = (f(l, "test_loss"), f(l, "test_rec"), f(l, "test_kl"));
        assert!(rec > 0.0 && pen >= 0.0, "{l}");
        assert!((loss - (rec + pen)).abs() <= 1e-4 * loss, "test_loss {loss} != rec {rec} + penalty {pen}");
        assert_eq!(f(l, "test_penalty"), pen, "{l}");
        assert_eq!(f(l, "train_penalty"), f(l, "train_kl"), "{l}");
        let act = f(l, "test_mean_activation");
        assert!(act > 0.0 && act < 1.0, "mean activation of a sigmoid layer {act}");
    }
    let (l1, l2) = (f(&lines[0], "train_loss"), f(&lines[1], "train_loss"));
    assert!(l2 < l1, "training loss did not fall: {l1} -> {l2}");
    // The KL penalty pulls the hidden layer's mean activation down towards ρ = 0.05 (from ≈ 0.5 at the
    // start; the run gives ≈ 0.18 then ≈ 0.09).
    let (a1, a2) = (f(&lines[0], "test_mean_activation"), f(&lines[1], "test_mean_activation"));
    assert!(a2 < a1 && a2 < 0.3, "mean activation {a1} -> {a2}");

    for file in ["recon.png", "denoise.png", "config.toml", "checkpoint/model.safetensors", "checkpoint/meta.json"] {
        assert!(vaegpu::testing::run_file(&a, file).is_file(), "missing {file}");
    }
    assert!(!a.join("samples.png").exists(), "an autoencoder has no prior to draw samples.png from");
    // denoise.png: groups of three rows (clean, corrupted, reconstructed) of 8 images of 28x28.
    let img = image::open(a.join("denoise.png")).unwrap();
    assert_eq!((img.width(), img.height()), (8 * 30 + 2, 12 * 30 + 2));
    let want: Vec<(String, Vec<usize>)> = [
        ("dec.fc1.bias", vec![32]),
        ("dec.fc1.weight", vec![32, 8]),
        ("dec.out.bias", vec![784]),
        ("dec.out.weight", vec![784, 32]),
        ("enc.code.bias", vec![8]),
        ("enc.code.weight", vec![8, 32]),
        ("enc.fc1.bias", vec![32]),
        ("enc.fc1.weight", vec![32, 784]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(tensor_shapes(&vaegpu::testing::run_file(&a, "checkpoint/model.safetensors")), want);

    // eval reads the clean inputs with the saved weights: the last epoch's test numbers again.
    let ck = a.join("checkpoint");
    let o = ok(bin().args(["eval", "--json", "--checkpoint"]).arg(&ck).output().unwrap(), "eval");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (key, last) in [("test_loss", "test_loss"), ("test_rec", "test_rec"), ("test_kl", "test_penalty")] {
        let (got, want) = (f(&v, key), f(&lines[1], last));
        assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "eval {key} {got} vs training's {last} {want}");
    }
    assert_eq!(v["test_images"].as_u64(), Some(100), "{v}");
    assert_eq!(v["model"], "ae");
    let o = ok(bin().args(["eval", "--checkpoint"]).arg(&ck).output().unwrap(), "eval");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("+ penalty") && !text.contains("kl"), "the AE's text names its penalty: {text}");

    // sample refuses: no prior.
    let png = a.join("s.png");
    let mut cmd = bin();
    cmd.args(["sample", "--checkpoint"]).arg(&ck).arg("--out").arg(&png);
    vaegpu::testing::assert_fails(&mut cmd, 2, "has no prior");
    assert!(!png.exists(), "sample wrote {}", png.display());

    // One epoch, then --resume for the second: the same weights and Adam moments bit for bit (the
    // masking noise is drawn per step from the seed), and the same metrics apart from the timings.
    let b = tmp("b");
    train(&b, &["--epochs", "1"]);
    let o = bin().arg("train").arg("--resume").arg(b.join("checkpoint")).args(["--epochs", "2", "--quiet"]).output();
    ok(o.unwrap(), "resume");
    vaegpu::testing::assert_same_checkpoint(&a, &b);
    assert_eq!(vaegpu::testing::metrics_without_timings(&a), vaegpu::testing::metrics_without_timings(&b));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn conv_ae_trains_with_mse_and_l1() {
    let out = tmp("conv");
    let args = [
        "train",
        "--model",
        "conv-ae",
        "--channels",
        "4,8",
        "--latent",
        "8",
        "--loss",
        "mse",
        "--sparsity",
        "l1",
        "--sparse-weight",
        "0.01",
        "--noise",
        "gaussian",
        "--noise-level",
        "0.2",
        "--epochs",
        "1",
        "--batch",
        "32",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--quiet",
        "--out",
    ];
    ok(bin().args(args).arg(&out).output().unwrap(), "train conv-ae");
    let l = &metrics(&out)[0];
    let (loss, rec, pen) = (f(l, "test_loss"), f(l, "test_rec"), f(l, "test_penalty"));
    assert!(rec > 0.0 && pen > 0.0 && (loss - (rec + pen)).abs() <= 1e-4 * loss, "{l}");
    let shapes = tensor_shapes(&vaegpu::testing::run_file(&out, "checkpoint/model.safetensors"));
    for (name, shape) in [
        ("enc.conv1.weight", vec![4, 1, 4, 4]),
        ("enc.code.weight", vec![8, 7 * 7 * 8]),
        ("dec.deconv1.weight", vec![4, 1, 4, 4]),
    ] {
        assert!(shapes.contains(&(name.to_string(), shape.clone())), "no {name} {shape:?} in {shapes:?}");
    }
    assert!(out.join("denoise.png").is_file() && !out.join("samples.png").exists());
    let _ = std::fs::remove_dir_all(&out);
}

fn fails_with(args: &[&str], needle: &str) {
    vaegpu::testing::assert_fails(bin().args(args), 2, needle);
}

#[test]
fn ae_options_are_checked() {
    let out = tmp("bad");
    let o = out.to_str().unwrap();
    fails_with(&["train", "--model", "vae", "--noise", "mask", "--out", o], "need --model ae or conv-ae");
    fails_with(&["train", "--sparsity", "l1", "--out", o], "need --model ae or conv-ae");
    fails_with(&["train", "--model", "ae", "--noise", "salt", "--out", o], "unknown noise 'salt'");
    fails_with(&["train", "--model", "ae", "--loss", "l2", "--out", o], "unknown loss 'l2'");
    // KL sparsity needs mean activations in (0, 1): the identity code layer and a ReLU layer are refused.
    fails_with(&["train", "--model", "ae", "--sparsity", "kl", "--out", o], "needs a sigmoid layer");
    fails_with(&["train", "--model", "ae", "--sparsity", "kl", "--sparse-layer", "0", "--out", o], "enc.fc1 uses Relu");
    fails_with(&["train", "--model", "ae", "--sparsity", "l1", "--sparse-layer", "5", "--out", o], "sparse_layer 5");
    fails_with(&["train", "--model", "ae", "--noise", "mask", "--noise-level", "1.5", "--out", o], "noise_level");
    fails_with(&["train", "--model", "ae", "--beta", "4", "--out", o], "--beta is a VAE option; model ae");
    fails_with(&["train", "--model", "conv-ae", "--samples", "2", "--out", o], "--samples is a VAE option");
    fails_with(&["train", "--model", "ae", "--codes", "8", "--out", o], "--codes");
    fails_with(&["train", "--model", "ae", "--channels", "8", "--out", o], "need --model conv-vae or conv-ae");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = out.join("c.toml");
    std::fs::write(&cfg, "model = \"ae\"\n[ae.conv]\nchannels = [8]\nstrides = [2]\n").unwrap();
    fails_with(&["train", "--config", cfg.to_str().unwrap(), "--out", o], "use model = \"conv-ae\"");
    std::fs::write(&cfg, "model = \"ae\"\n[ae]\nsparsity = \"dense\"\n").unwrap();
    fails_with(&["train", "--config", cfg.to_str().unwrap(), "--out", o], "dense");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("c.toml")], "a refused run wrote into {o}");
    let _ = std::fs::remove_dir_all(&out);
}
