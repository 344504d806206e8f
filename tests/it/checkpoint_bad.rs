//! Bad checkpoints through the CLI: every file truncated, zero-filled or with a flipped bit, the `latest`
//! pointer garbled, another model's shapes: `vaegpu eval --checkpoint` and `vaegpu train --resume` stop
//! with exit code 5 and a message naming the file, never a panic; a format-1 checkpoint (no manifest)
//! still loads.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self as common, bin};
use vaegpu::testing::{assert_ok, latest_checkpoint};
use vaegpu::train::checkpoint;

fn tmp(name: &str) -> PathBuf {
    common::tmp("ckbad", name)
}

fn train(out: &Path, hidden: &str) {
    let args = [
        "--epochs",
        "1",
        "--batch",
        "32",
        "--hidden",
        hidden,
        "--latent",
        "2",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--quiet",
    ];
    assert_ok(bin().arg("train").args(args).arg("--out").arg(out).output().unwrap(), "train");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().map(|e| e.unwrap()) {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn edit(path: &Path, f: impl Fn(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// `cmd` fails with exit code `code` and every needle in its stderr, without a panic.
fn fails_with(cmd: &mut Command, code: i32, needles: &[&str]) {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{cmd:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{cmd:?}: expected '{n}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{cmd:?} panicked: {err}");
}

/// `eval --checkpoint ck` and `train --resume ck` both fail with exit code 5 and every needle.
fn both_fail(ck: &Path, needles: &[&str]) {
    let ck = ck.to_str().unwrap();
    fails_with(bin().args(["eval", "--k", "0", "--checkpoint", ck]), 5, needles);
    fails_with(bin().args(["train", "--quiet", "--resume", ck]), 5, needles);
}

#[test]
fn corrupted_files_are_named_and_exit_5() {
    let clean = tmp("clean");
    train(&clean, "16");
    type Corrupt = fn(&mut Vec<u8>);
    let truncate: Corrupt = |b| b.truncate(b.len() / 2);
    let zero: Corrupt = |b| b.iter_mut().for_each(|x| *x = 0);
    let flip: Corrupt = |b| {
        let i = b.len() * 2 / 3;
        b[i] ^= 0x10;
    };
    let cases: &[(&str, Corrupt, &str)] = &[
        ("model.safetensors", truncate, "the file is truncated"),
        ("model.safetensors", zero, "all zero bytes"),
        ("model.safetensors", flip, "does not match manifest.json"),
        ("optimizer.safetensors", flip, "does not match manifest.json"),
        ("state.safetensors", truncate, "the file is truncated"),
        ("meta.json", truncate, "the file is truncated"),
        ("meta.json", zero, "all zero bytes"),
        ("meta.json", flip, "does not match manifest.json"),
        ("manifest.json", truncate, "manifest.json"),
        ("manifest.json", zero, "manifest.json"),
        ("manifest.json", flip, "manifest.json"),
    ];
    for (i, (file, corrupt, needle)) in cases.iter().enumerate() {
        let d = tmp(&format!("case{i}"));
        copy_dir(&clean, &d);
        let folder = latest_checkpoint(&d);
        edit(&folder.join(file), corrupt);
        both_fail(&d.join("checkpoint"), &[&folder.join(file).display().to_string(), needle]);
        let _ = std::fs::remove_dir_all(&d);
    }
    // The pointer to the newest folder: garbled, zero-filled, naming a folder that is not there.
    let latest = |d: &Path| d.join("checkpoint").join(checkpoint::LATEST);
    let d = tmp("latest");
    copy_dir(&clean, &d);
    let good = std::fs::read(latest(&d)).unwrap();
    for bad in [b"garbage".to_vec(), vec![0; good.len()], {
        let mut b = good.clone();
        b[9] ^= 0x01; // epoch-0001 -> epoch-0000, not there
        b
    }] {
        std::fs::write(latest(&d), &bad).unwrap();
        both_fail(&d.join("checkpoint"), &[&latest(&d).display().to_string()]);
    }
    // A format-2 folder without its manifest.
    std::fs::write(latest(&d), &good).unwrap();
    let folder = latest_checkpoint(&d);
    std::fs::remove_file(folder.join(checkpoint::MANIFEST)).unwrap();
    both_fail(&folder, &["manifest.json: missing"]);
    let _ = std::fs::remove_dir_all(&d);
    // A format-1 checkpoint (the files directly in checkpoint/, no manifest) still loads.
    let d = tmp("legacy");
    std::fs::create_dir_all(&d).unwrap();
    let old = d.join("checkpoint");
    copy_dir(&latest_checkpoint(&clean), &old);
    std::fs::remove_file(old.join(checkpoint::MANIFEST)).unwrap();
    std::fs::remove_file(old.join(checkpoint::STATE)).unwrap();
    edit(&old.join(checkpoint::META), |b| {
        let t = String::from_utf8(b.clone()).unwrap().replacen("\"format_version\": 2", "\"format_version\": 1", 1);
        *b = t.into_bytes();
    });
    let o = bin().args(["eval", "--k", "0", "--no-analysis", "--checkpoint"]).arg(&old).output().unwrap();
    assert_ok(o, "eval of a format-1 checkpoint");
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&clean);
}

#[test]
fn another_models_shapes_are_refused_by_name() {
    let (a, b) = (tmp("shapes-a"), tmp("shapes-b"));
    train(&a, "16");
    train(&b, "24");
    // Resuming with another architecture.
    let ck = a.join("checkpoint");
    let o = ck.to_str().unwrap();
    let needles = ["model.safetensors", "has shape [16, 784], the model needs [24, 784]", "another model"];
    fails_with(bin().args(["train", "--quiet", "--hidden", "24", "--resume", o]), 5, &needles);
    // The weights of the other run put into the folder, with the manifest written anew.
    let folder = latest_checkpoint(&a);
    std::fs::copy(latest_checkpoint(&b).join(checkpoint::MODEL), folder.join(checkpoint::MODEL)).unwrap();
    checkpoint::write_manifest(&folder).unwrap();
    both_fail(&folder, &["model.safetensors", "has shape [24, 784], the model needs [16, 784]"]);
    // Through the run's root, whose `latest` recorded the old manifest.
    both_fail(&ck, &["latest", "does not match"]);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn folder_names_order_by_progress() {
    assert_eq!(checkpoint::folder_name(7, 0), "epoch-0007");
    assert_eq!(checkpoint::folder_name(7, 123), "epoch-0008-batch-000123");
    assert_eq!(checkpoint::progress("epoch-0007"), Some((7, 0, 0)));
    assert_eq!(checkpoint::progress("epoch-0008-batch-000123"), Some((7, 123, 0)));
    assert_eq!(checkpoint::progress("epoch-0008-batch-000123.2"), Some((7, 123, 2)));
    for bad in ["epoch-", "epoch-x", "epoch-0001-batch-0", "epoch-0000-batch-000001", ".tmp-epoch-0001", "latest"] {
        assert_eq!(checkpoint::progress(bad), None, "{bad}");
    }
    assert!(checkpoint::progress("epoch-0007") < checkpoint::progress("epoch-0008-batch-000001"));
    assert!(checkpoint::progress("epoch-0008-batch-000123") < checkpoint::progress("epoch-0008"));
}
