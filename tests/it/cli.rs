//! The `vaegpu` binary end to end on a small slice of the bundled data: train → files → eval → sample,
//! and bad input ending in a clear message and a documented exit code.

use crate::common::{self as common, bin};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    common::tmp("cli", name)
}

const SMALL: &[&str] = &[
    "--epochs",
    "2",
    "--batch",
    "32",
    "--hidden",
    "32",
    "--latent",
    "4",
    "--train-limit",
    "256",
    "--test-limit",
    "100",
    "--quiet",
];

#[test]
fn two_dimensional_latent_space_pictures() {
    let out = tmp("latent2");
    let mut args: Vec<&str> = SMALL.to_vec();
    args[7] = "2";
    args[1] = "1";
    let o = bin().arg("train").args(&args).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    let o = bin()
        .args(["eval", "--json", "--k", "10", "--pictures"])
        .arg(out.join("pics"))
        .arg("--checkpoint")
        .arg(out.join("checkpoint"))
        .output()
        .unwrap();
    assert!(o.status.success(), "eval failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pictures"].as_array().unwrap().len(), 3);
    // 20×20 decoded grid of 28×28 images with 2-pixel gaps
    let m = image::open(out.join("pics/manifold.png")).unwrap();
    assert_eq!((m.width(), m.height()), (20 * 30 + 2, 20 * 30 + 2));
    assert!(image::open(out.join("pics/latent_scatter.png")).unwrap().width() >= 800);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn train_eval_sample_round_trip() {
    let out = tmp("train");
    let o = bin().arg("train").args(SMALL).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for key in ["epoch", "train_loss", "test_loss", "test_rec", "test_kl", "epoch_seconds"] {
        assert!(lines[1].get(key).is_some(), "metrics.jsonl lacks {key}");
    }
    let (l1, l2) = (lines[0]["train_loss"].as_f64().unwrap(), lines[1]["train_loss"].as_f64().unwrap());
    assert!(l2 < l1, "training loss did not fall: {l1} -> {l2}");
    let test_loss = lines[1]["test_loss"].as_f64().unwrap();
    let (rec, kl) = (lines[1]["test_rec"].as_f64().unwrap(), lines[1]["test_kl"].as_f64().unwrap());
    assert!((test_loss - (rec + kl)).abs() < 1e-3 * test_loss, "test_loss {test_loss} != rec {rec} + kl {kl}");
    for f in [
        "samples.png",
        "recon.png",
        "checkpoint/model.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint/meta.json",
    ] {
        assert!(vaegpu::testing::run_file(&out, f).is_file(), "missing {f}");
    }
    let img = image::open(out.join("samples.png")).unwrap();
    assert!(img.width() > 28 * 4 && img.height() > 28 * 4);

    // eval --json gives back the last epoch's test loss (same ε stream, same weights). The default
    // L_5000 over 100 images takes a minute on lavapipe: L_500 over 20 here.
    let o = bin()
        .args(["eval", "--json", "--k", "500", "--ll-images", "20", "--checkpoint"])
        .arg(out.join("checkpoint"))
        .output()
        .unwrap();
    assert!(o.status.success(), "eval failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ev = v["test_loss"].as_f64().unwrap();
    assert!((ev - test_loss).abs() < 1e-3 * test_loss, "eval {ev} vs training's last test_loss {test_loss}");
    // eval adds the ELBO, L_k over the test images and the latent analyses.
    assert!((v["test_elbo"].as_f64().unwrap() + test_loss).abs() < 1e-3 * test_loss);
    let ll = &v["loglik"];
    assert_eq!((ll["k"].as_u64(), ll["images"].as_u64()), (Some(500), Some(20)));
    let (lk, elbo) = (ll["log_likelihood"].as_f64().unwrap(), ll["elbo"].as_f64().unwrap());
    assert!(lk > elbo && lk < 0.0, "L_500 {lk} must lie above the ELBO {elbo} and below 0");
    let lat = &v["latent"];
    let (avg, mi, mkl) =
        (lat["avg_kl"].as_f64().unwrap(), lat["mutual_info"].as_f64().unwrap(), lat["marginal_kl"].as_f64().unwrap());
    assert!((avg - mi - mkl).abs() < 1e-9 && mi <= lat["log_n"].as_f64().unwrap() + 0.1, "{lat}");
    assert!(lat["active_units"].as_u64().unwrap() <= 4);
    // A smaller estimate, pictures, text output.
    let pics = out.join("pics");
    let o = bin()
        .args(["eval", "--k", "20", "--ll-images", "7", "--pictures"])
        .arg(&pics)
        .arg("--checkpoint")
        .arg(out.join("checkpoint"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("L_20") && text.contains("over 7 test images"), "{text}");
    assert!(pics.join("interpolations.png").is_file() && !pics.join("manifold.png").exists());
    // Gradient variance of the two encoder estimators on one batch: the score function's is larger.
    let o = bin().args(["gradvar", "--draws", "20", "--checkpoint"]).arg(out.join("checkpoint")).output().unwrap();
    assert!(o.status.success(), "gradvar failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let var = |i: usize| v[i]["total_variance"].as_f64().unwrap();
    assert_eq!((v[0]["estimator"].as_str(), v[1]["estimator"].as_str()), (Some("pathwise"), Some("score")));
    assert!(var(0) > 0.0 && var(1) > 10.0 * var(0), "pathwise {} vs score {}", var(0), var(1));
    // --samples overrides M; a bad M is a message, not a panic
    let o = bin()
        .args(["gradvar", "--draws", "4", "--samples", "3", "--checkpoint"])
        .arg(out.join("checkpoint"))
        .output()
        .unwrap();
    assert!(o.status.success(), "gradvar failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v[0]["samples"].as_u64(), v[1]["samples"].as_u64()), (Some(3), Some(3)));
    let ck = out.join("checkpoint");
    fails_with(&["gradvar", "--samples", "0", "--checkpoint", ck.to_str().unwrap()], 2, "samples must be in 1..=4096");

    let png = out.join("s.png");
    let o = bin()
        .args(["sample", "--n", "16", "--checkpoint"])
        .arg(out.join("checkpoint"))
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(o.status.success(), "sample failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(png.is_file());
    let _ = std::fs::remove_dir_all(&out);
}

fn fails_with(args: &[&str], code: i32, needle: &str) {
    vaegpu::testing::assert_fails(bin().args(args), code, needle);
}

#[test]
fn bad_input_is_a_message_and_an_exit_code() {
    let out = tmp("bad");
    let o = out.to_str().unwrap();
    fails_with(&["train", "--batch", "0", "--out", o], 2, "batch must be in 1..=65535");
    fails_with(&["train", "--model", "gan", "--out", o], 2, "unknown model 'gan'");
    fails_with(&["train", "--act", "swish", "--out", o], 2, "unknown activation 'swish'");
    fails_with(&["train", "--data", "/nonexistent/mnist", "--out", o], 3, "/nonexistent/mnist");
    fails_with(&["train", "--batch", "4096", "--train-limit", "100", "--out", o], 2, "larger than the training set");
    fails_with(&["eval", "--checkpoint", "/nonexistent/ck"], 5, "meta.json");
    // A config file with an unknown key.
    std::fs::create_dir_all(&out).unwrap();
    let cfg = out.join("c.toml");
    std::fs::write(&cfg, "epochs = 1\nlearning_rate = 3\n").unwrap();
    fails_with(&["train", "--config", cfg.to_str().unwrap(), "--out", o], 2, "learning_rate");
    // A truncated checkpoint.
    let ck = out.join("ck");
    let st = bin()
        .arg("train")
        .args([
            "--epochs",
            "1",
            "--batch",
            "32",
            "--hidden",
            "16",
            "--latent",
            "2",
            "--train-limit",
            "64",
            "--test-limit",
            "32",
            "--quiet",
            "--out",
        ])
        .arg(&ck)
        .status()
        .unwrap();
    assert!(st.success());
    let model = vaegpu::testing::run_file(&ck, "checkpoint/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&["eval", "--checkpoint", ck.join("checkpoint").to_str().unwrap()], 5, "model.safetensors");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn resume_continues_bit_for_bit() {
    // Two epochs in one go, and one epoch then --resume for the second: the same weights, bit for bit,
    // and the same metrics apart from the timings.
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    let run = |extra: &[&str], out: &PathBuf| {
        let o = bin().arg("train").args(&SMALL[2..]).args(extra).arg("--out").arg(out).output().unwrap();
        assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["--epochs", "2"], &a);
    run(&["--epochs", "1"], &b);
    let o = bin()
        .arg("train")
        .arg("--resume")
        .arg(b.join("checkpoint"))
        .args(["--epochs", "2", "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "resume failed: {}", String::from_utf8_lossy(&o.stderr));
    vaegpu::testing::assert_same_checkpoint(&a, &b);
    assert_eq!(vaegpu::testing::metrics_without_timings(&a), vaegpu::testing::metrics_without_timings(&b));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// `--prior flow|mog` trains a learned prior (recorded in the run's config), and eval's analyses take
/// their KL terms against it; prior flags in the wrong place are refused by name.
#[test]
fn learned_prior_flags_train_and_evaluate() {
    let out = tmp("prior");
    let mut args: Vec<&str> = SMALL.to_vec();
    args[1] = "1";
    let o = bin()
        .arg("train")
        .args(&args)
        .args(["--prior", "mog", "--mog-components", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("kind = \"mog\"") && cfg.contains("mog_components = 3"), "{cfg}");
    let o = bin()
        .args(["eval", "--json", "--k", "8", "--ll-images", "8", "--checkpoint"])
        .arg(out.join("checkpoint"))
        .output()
        .unwrap();
    assert!(o.status.success(), "eval failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lat = &v["latent"];
    assert_eq!(lat["prior"], "learned");
    let (avg, marg, mi) =
        (lat["avg_kl"].as_f64().unwrap(), lat["marginal_kl"].as_f64().unwrap(), lat["mutual_info"].as_f64().unwrap());
    assert!(avg.is_finite() && marg.is_finite() && (avg - marg - mi).abs() < 1e-9, "{lat}");
    assert!(lat["avg_kl_stderr"].as_f64().unwrap() > 0.0);
    // a Gaussian decoder with a learned global σ, starting at 0.5
    let gauss = out.join("gauss");
    let o = bin()
        .arg("train")
        .args(&args)
        .args(["--likelihood", "gaussian", "--variance", "global", "--sigma", "0.5", "--out"])
        .arg(&gauss)
        .output()
        .unwrap();
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    let cfg = std::fs::read_to_string(gauss.join("config.toml")).unwrap();
    assert!(cfg.contains("variance = \"global\"") && cfg.contains("sigma = 0.5"), "{cfg}");
    let st = std::fs::read(vaegpu::testing::run_file(&gauss, "checkpoint/model.safetensors")).unwrap();
    assert!(st.windows(10).any(|w| w == b"dec.logvar"), "dec.logvar is saved");
    let o = out.to_str().unwrap();
    fails_with(&["train", "--prior", "gan", "--out", o], 2, "unknown prior 'gan'");
    fails_with(&["train", "--flow-layers", "2", "--out", o], 2, "--flow-layers and --flow-hidden need --prior flow");
    fails_with(&["train", "--prior", "mog", "--flow-hidden", "8", "--out", o], 2, "need --prior flow");
    fails_with(&["train", "--model", "ae", "--prior", "flow", "--out", o], 2, "--prior is a VAE option");
    fails_with(&["train", "--model", "vq-vae", "--samples", "3", "--out", o], 2, "--samples is a VAE option");
    fails_with(&["train", "--prior", "flow", "--gradient", "score", "--out", o], 2, "score-function");
    fails_with(&["train", "--variance", "pixel", "--out", o], 2, "gaussian");
    fails_with(&["train", "--likelihood", "gaussian", "--variance", "pp", "--out", o], 2, "unknown variance 'pp'");
    fails_with(&["train", "--model", "ae", "--variance", "pixel", "--out", o], 2, "--variance is a VAE option");
    let _ = std::fs::remove_dir_all(&out);
}
