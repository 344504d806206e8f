//! The conv VAE end to end on an image folder the test generates (RGB PNGs in two class folders, one
//! corrupt file): `vaegpu train --model conv-vae --data <folder>` writes the same outputs as the MLP VAE,
//! the loss falls, eval and sample read the checkpoint back; a bad architecture for the image size is a
//! clear error.

use crate::common::{self as common, bin};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    common::tmp("convfolder", name)
}

/// 96 RGB images of 20x20 (resized to 16x16 by the loader): a coloured square on a dark background,
/// red ones in class "a", blue ones in class "b", at positions from a fixed sequence; plus a corrupt PNG.
fn make_folder(dir: &Path) {
    for (class, colour) in [("a", [230u8, 40, 40]), ("b", [40, 60, 230])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..48u32 {
            let (x0, y0) = ((i * 7) % 12, (i * 5) % 12);
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                if (x0..x0 + 8).contains(&x) && (y0..y0 + 8).contains(&y) {
                    image::Rgb(colour)
                } else {
                    image::Rgb([10, 10, 20])
                }
            });
            img.save(dir.join(class).join(format!("{i:03}.png"))).unwrap();
        }
    }
    std::fs::write(dir.join("a").join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
}

#[test]
fn conv_vae_trains_on_a_generated_rgb_folder() {
    let data = tmp("data");
    make_folder(&data);
    let out = tmp("run");
    let o = bin()
        .args(["train", "--model", "conv-vae", "--channels", "8,16", "--latent", "4", "--image-size", "16"])
        .args(["--batch", "16", "--epochs", "4", "--lr", "0.003", "--quiet", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "train failed: {stderr}");
    assert!(stderr.contains("broken.png"), "the corrupt file is not named: {stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[3] < 0.9 * losses[0], "the loss did not fall: {losses:?}");
    for f in ["samples.png", "recon.png", "config.toml", "checkpoint/model.safetensors", "checkpoint/meta.json"] {
        assert!(vaegpu::testing::run_file(&out, f).is_file(), "missing {f}");
    }
    let recon = image::open(out.join("recon.png")).unwrap();
    assert_eq!(recon.color(), image::ColorType::Rgb8, "RGB data gives RGB pictures");

    // The checkpoint names conv tensors as PyTorch does.
    let st = std::fs::read(vaegpu::testing::run_file(&out, "checkpoint/model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&st).unwrap();
    let w = tensors.tensor("enc.conv1.weight").unwrap();
    assert_eq!(w.shape(), &[8, 3, 4, 4]);
    let w = tensors.tensor("dec.deconv1.weight").unwrap();
    assert_eq!(w.shape(), &[8, 3, 4, 4]);

    let o = bin().args(["eval", "--json", "--checkpoint"]).arg(out.join("checkpoint")).output().unwrap();
    assert!(o.status.success(), "eval failed: {}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["test_loss"].as_f64().unwrap().is_finite());
    let png = out.join("s.png");
    let o = bin()
        .args(["sample", "--n", "8", "--checkpoint"])
        .arg(out.join("checkpoint"))
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(o.status.success(), "sample failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(png.is_file());

    // Strict mode stops at the corrupt file, naming it.
    let o = bin()
        .args([
            "train",
            "--model",
            "conv-vae",
            "--image-size",
            "16",
            "--strict-images",
            "--epochs",
            "1",
            "--quiet",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(tmp("strict"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.png"));

    // An image size the strides do not divide is refused with a message naming the layer, before the
    // output folder is made.
    let bad = tmp("bad");
    let o = bin()
        .args(["train", "--model", "conv-vae", "--image-size", "18", "--epochs", "1", "--quiet", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("enc.conv2") && err.contains("does not divide"), "{err}");
    assert!(!bad.exists(), "a refused run left {}", bad.display());
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&out);
}
