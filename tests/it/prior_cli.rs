//! `vaegpu train-prior` and `vaegpu sample` on VQ checkpoints, end to end on a small slice of the data:
//! the priors it saves, prior_metrics.jsonl (bits per code falling below the uniform guess), samples.png,
//! bit-for-bit repeats, VQ-VAE-2's top and conditioned bottom priors, and the errors it reports.

use std::path::{Path, PathBuf};
use std::process::Output;

fn tmp(name: &str) -> PathBuf {
    common::tmp("prior", name)
}

use crate::common::{self as common, bin};
use vaegpu::testing::assert_ok as ok;

/// A small VQ model (8x8 bottom grid of 8-dim vectors, 64 codes) trained for 2 epochs of 8 steps.
fn train_vq(out: &Path, model: &str) {
    let o = bin()
        .args(["train", "--model", model, "--channels", "8,16", "--blocks", "1", "--codes", "64", "--code-dim", "8"])
        .args(["--train-limit", "256", "--test-limit", "64", "--batch", "32", "--epochs", "2", "--restart", "--quiet"])
        .arg("--out")
        .arg(out)
        .output();
    ok(o.unwrap(), "train");
}

/// A tiny prior (8 channels, 2 layers) for 3 epochs of 8 steps.
fn train_prior(ck: &Path, out: &Path) -> Output {
    let o = bin()
        .args(["train-prior", "--epochs", "3", "--batch", "32", "--channels", "8", "--layers", "2", "--hidden", "16"])
        .args(["--samples", "8", "--lr", "3e-3", "--checkpoint"])
        .arg(ck)
        .arg("--out")
        .arg(out)
        .output();
    ok(o.unwrap(), "train-prior")
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("prior_metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn vq_vae_prior_trains_samples_and_repeats() {
    let run = tmp("one");
    train_vq(&run, "vq-vae");
    let ck = run.join("checkpoint");
    let (a, b) = (tmp("one-a"), tmp("one-b"));
    train_prior(&ck, &a);
    let recs = records(&a);
    assert_eq!(recs.len(), 3, "{recs:?}");
    for r in &recs {
        assert_eq!(r["prior"], "codes", "{r}");
        for key in ["train_bits_per_code", "test_bits_per_code", "test_accuracy"] {
            assert!(f(r, key).is_finite() && f(r, key) >= 0.0, "{key} in {r}");
        }
    }
    // It learns: the test NLL falls and ends below the uniform guess over 64 codes (6 bits); the
    // small VQ model uses few codes, so the prior soon gets well below that.
    let (first, last) = (f(&recs[0], "test_bits_per_code"), f(&recs[2], "test_bits_per_code"));
    assert!(last < first && last < 6.0, "test bits per code {first} -> {last}");
    for file in ["samples.png", "prior/codes/model.safetensors", "prior/codes/meta.json"] {
        assert!(a.join(file).is_file(), "missing {file}");
    }
    // The same command again gives the same prior, bit for bit.
    train_prior(&ck, &b);
    let (wa, wb) = (
        std::fs::read(a.join("prior/codes/model.safetensors")),
        std::fs::read(b.join("prior/codes/model.safetensors")),
    );
    assert!(wa.unwrap() == wb.unwrap(), "two runs of train-prior differ");
    // `sample` draws from the saved prior and decodes; the same seed gives the same picture.
    let png = |name: &str, seed: &str| {
        let p = a.join(name);
        let o = bin()
            .args(["sample", "--n", "8", "--seed", seed, "--checkpoint"])
            .arg(&ck)
            .arg("--prior")
            .arg(a.join("prior"))
            .arg("--out")
            .arg(&p)
            .output();
        ok(o.unwrap(), "sample");
        std::fs::read(p).unwrap()
    };
    let (s1, s2, s3) = (png("s1.png", "1"), png("s2.png", "1"), png("s3.png", "2"));
    assert!(s1 == s2, "the same seed gave different samples");
    assert!(s1 != s3, "different seeds gave the same samples");
    let o = bin()
        .args(["sample", "--n", "999", "--checkpoint"])
        .arg(&ck)
        .arg("--prior")
        .arg(a.join("prior"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("maps at once") && !err.contains("panicked"), "{err}");
    for d in [run, a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn vq_vae_2_gets_a_top_and_a_conditioned_bottom_prior() {
    let run = tmp("two");
    train_vq(&run, "vq-vae-2");
    let out = run.join("priors");
    train_prior(&run.join("checkpoint"), &out);
    let recs = records(&out);
    let names: Vec<&str> = recs.iter().map(|r| r["prior"].as_str().unwrap()).collect();
    assert_eq!(names, ["top", "top", "top", "bottom", "bottom", "bottom"], "{recs:?}");
    for file in ["samples.png", "prior/top/model.safetensors", "prior/bottom/model.safetensors"] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let bytes = std::fs::read(out.join("prior/bottom/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("cond.deconv.weight").unwrap().shape(), &[8, 16, 4, 4], "the bottom prior's conditioning");
    assert!(st.tensor("gated0.v.conv.weight").is_ok());
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn train_prior_and_sample_report_bad_input() {
    let fails = |args: &[&str], code: i32, needle: &str| vaegpu::testing::assert_fails(bin().args(args), code, needle);
    let missing = tmp("missing");
    let m = missing.to_str().unwrap();
    fails(&["train-prior", "--checkpoint", m], 5, "meta.json");
    // A VAE checkpoint has no codes.
    let vae = tmp("vae");
    let o = bin()
        .args([
            "train",
            "--epochs",
            "1",
            "--train-limit",
            "128",
            "--test-limit",
            "64",
            "--batch",
            "64",
            "--quiet",
            "--out",
        ])
        .arg(&vae)
        .output();
    ok(o.unwrap(), "train vae");
    let ck = vae.join("checkpoint");
    fails(&["train-prior", "--checkpoint", ck.to_str().unwrap()], 2, "needs vq-vae");
    // An even masked kernel is refused before anything is loaded.
    fails(&["train-prior", "--kernel", "4", "--checkpoint", ck.to_str().unwrap()], 2, "odd");
    let _ = std::fs::remove_dir_all(&vae);
}
