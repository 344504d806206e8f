//! Bad input of every kind through the `vaegpu` binary, one test each: IDX files, image folders,
//! configuration files and command-line values. Each must end in a clear message and the exit code
//! README documents (2 usage or configuration, 3 data), never in a panic. Configuration and
//! command-line errors stop before the GPU is opened; data errors open it (lavapipe here) and stop
//! while loading; the one run that trains uses a few 4×4 images.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{gzip, idx_images, idx_labels};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

// ---------- helpers ----------

/// A fresh temp folder, removed again on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vaegpu-bad-input-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` at `rel` (creating folders) and returns the path.
    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Saves `img` at `rel` (format from the extension).
    fn save(&self, rel: &str, img: &DynamicImage) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(&path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vaegpu train --quiet` writing into `dir/out`.
fn train(dir: &TempDir) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vaegpu"));
    c.args(["train", "--quiet", "--out"]).arg(dir.path().join("out"));
    c
}

/// `train` of a tiny model (hidden 4, latent 2, batch 2) for one epoch: for the data tests.
fn tiny(dir: &TempDir) -> Command {
    let mut c = train(dir);
    c.args(["--epochs", "1", "--hidden", "4", "--latent", "2", "--batch", "2"]);
    c
}

/// Runs `cmd`, asserts its exit code and that stderr holds every needle and no panic; returns stderr.
fn fails(cmd: &mut Command, code: i32, needles: &[&str]) -> String {
    let o = cmd.output().expect("the binary runs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked") && o.status.code() != Some(101), "{cmd:?} panicked:\n{err}");
    assert_eq!(o.status.code(), Some(code), "{cmd:?}: exit code\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "{cmd:?}: expected {needle:?} in:\n{err}");
    }
    err
}

fn pixels(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 37 % 256) as u8).collect()
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// A valid IDX folder (6 train and 3 test images of 4×4, raw files) for a test to spoil one file of.
fn idx_folder(test: &str) -> TempDir {
    let dir = TempDir::new(test);
    dir.write(TRAIN_IMAGES, &idx_images(6, 4, 4, &pixels(6 * 16)));
    dir.write(TRAIN_LABELS, &idx_labels(&[0, 1, 2, 3, 4, 5]));
    dir.write(TEST_IMAGES, &idx_images(3, 4, 4, &pixels(3 * 16)));
    dir.write(TEST_LABELS, &idx_labels(&[6, 7, 8]));
    dir
}

/// `train --data <dir>` on the IDX folder must fail with exit code 3 and the needles.
fn idx_fails(dir: &TempDir, needles: &[&str]) {
    fails(tiny(dir).arg("--data").arg(dir.path()), 3, needles);
}

// ---------- IDX files (exit code 3) ----------

#[test]
fn idx_bad_magic() {
    let dir = idx_folder("idx-magic");
    let mut b = idx_images(6, 4, 4, &pixels(6 * 16));
    b[..4].copy_from_slice(b"\x89PNG");
    dir.write(TRAIN_IMAGES, &b);
    idx_fails(&dir, &[TRAIN_IMAGES, "bad magic number for IDX images", "expected 0x00000803, found 0x89504e47"]);
}

#[test]
fn idx_truncated_header() {
    let dir = idx_folder("idx-header");
    dir.write(TEST_IMAGES, &idx_images(3, 4, 4, &[])[..10]);
    idx_fails(&dir, &[TEST_IMAGES, "truncated header: expected 16 bytes, found 10"]);
}

#[test]
fn idx_truncated_data() {
    let dir = idx_folder("idx-data");
    dir.write(TRAIN_IMAGES, &idx_images(6, 4, 4, &pixels(6 * 16 - 5)));
    idx_fails(&dir, &[TRAIN_IMAGES, "truncated pixel data: expected 96 bytes, found 91"]);
}

#[test]
fn idx_truncated_labels() {
    let dir = idx_folder("idx-labels");
    let b = idx_labels(&[6, 7, 8]);
    dir.write(TEST_LABELS, &b[..b.len() - 1]);
    idx_fails(&dir, &[TEST_LABELS, "truncated label data: expected 3 bytes, found 2"]);
}

#[test]
fn idx_trailing_garbage() {
    let dir = idx_folder("idx-trailing");
    let mut b = idx_labels(&[0, 1, 2, 3, 4, 5]);
    b.extend_from_slice(b"junk");
    dir.write(TRAIN_LABELS, &b);
    idx_fails(&dir, &[TRAIN_LABELS, "trailing garbage after IDX labels", "4 extra"]);
}

#[test]
fn idx_empty_file() {
    let dir = idx_folder("idx-empty");
    dir.write(TEST_LABELS, &[]);
    idx_fails(&dir, &[TEST_LABELS, "empty input: 0 bytes where an IDX labels file was expected"]);
}

#[test]
fn idx_image_and_label_counts_disagree() {
    let dir = idx_folder("idx-counts");
    dir.write(TRAIN_LABELS, &idx_labels(&[0, 1, 2, 3, 4]));
    idx_fails(&dir, &["count mismatch in the train split: 6 images but 5 labels"]);
}

#[test]
fn idx_images_with_zero_rows() {
    let dir = idx_folder("idx-zero-rows");
    dir.write(TRAIN_IMAGES, &idx_images(6, 0, 4, &[]));
    idx_fails(&dir, &[TRAIN_IMAGES, "empty dataset: the images file holds 6 images of size 0x4"]);
}

#[test]
fn idx_labels_file_where_images_belong() {
    let dir = idx_folder("idx-dims");
    dir.write(TEST_IMAGES, &idx_labels(&[6, 7, 8]));
    idx_fails(&dir, &[TEST_IMAGES, "wrong number of dimensions for IDX images: expected 3, found 1", "labels file"]);
}

#[test]
fn idx_train_and_test_image_sizes_differ() {
    let dir = idx_folder("idx-sizes");
    dir.write(TRAIN_IMAGES, &idx_images(6, 28, 28, &pixels(6 * 28 * 28)));
    dir.write(TEST_IMAGES, &idx_images(3, 32, 32, &pixels(3 * 32 * 32)));
    idx_fails(&dir, &["image size mismatch: train images are 28x28, test images are 32x32"]);
}

#[test]
fn idx_header_claiming_four_billion_images() {
    // Refused from the sizes alone: nothing of the claimed 3.4 TB is allocated.
    let dir = idx_folder("idx-huge");
    dir.write(TRAIN_IMAGES, &idx_images(u32::MAX, 28, 28, &pixels(28 * 28)));
    idx_fails(&dir, &[TRAIN_IMAGES, "truncated pixel data: expected 3367254359280 bytes, found 784"]);
}

#[test]
fn idx_gzip_header_claiming_four_billion_images() {
    let dir = idx_folder("idx-huge-gz");
    std::fs::remove_file(dir.path().join(TRAIN_IMAGES)).unwrap();
    dir.write(&format!("{TRAIN_IMAGES}.gz"), &gzip(&idx_images(u32::MAX, 28, 28, &pixels(28 * 28))));
    idx_fails(&dir, &[TRAIN_IMAGES, "IDX images too large", "more than the 2147483648 accepted from a gzip stream"]);
}

#[test]
fn idx_corrupt_gzip() {
    let dir = idx_folder("idx-gzip");
    std::fs::remove_file(dir.path().join(TEST_IMAGES)).unwrap();
    let mut b = gzip(&idx_images(3, 4, 4, &pixels(3 * 16)));
    let n = b.len();
    for x in &mut b[10..n - 8] {
        *x ^= 0x5a;
    }
    dir.write(&format!("{TEST_IMAGES}.gz"), &b);
    idx_fails(&dir, &[&format!("{TEST_IMAGES}.gz"), "gzip decompression failed"]);
}

#[test]
fn idx_gzip_cut_short() {
    let dir = idx_folder("idx-gzip-short");
    std::fs::remove_file(dir.path().join(TRAIN_IMAGES)).unwrap();
    let b = gzip(&idx_images(6, 4, 4, &pixels(6 * 16)));
    dir.write(&format!("{TRAIN_IMAGES}.gz"), &b[..b.len() - 12]);
    idx_fails(&dir, &[&format!("{TRAIN_IMAGES}.gz"), "gzip decompression failed"]);
}

#[test]
fn idx_gzip_with_a_bad_checksum() {
    let dir = idx_folder("idx-gzip-crc");
    std::fs::remove_file(dir.path().join(TRAIN_LABELS)).unwrap();
    let mut b = gzip(&idx_labels(&[0, 1, 2, 3, 4, 5]));
    let n = b.len();
    b[n - 8] ^= 0xff;
    dir.write(&format!("{TRAIN_LABELS}.gz"), &b);
    idx_fails(&dir, &[&format!("{TRAIN_LABELS}.gz"), "gzip decompression failed"]);
}

#[test]
fn idx_folder_missing_a_file() {
    // Three of the four files: the missing one is named (not "no image files").
    let dir = idx_folder("idx-missing");
    std::fs::remove_file(dir.path().join(TEST_LABELS)).unwrap();
    idx_fails(&dir, &[&format!("no {TEST_LABELS} or {TEST_LABELS}.gz in")]);
}

#[test]
fn data_folder_that_does_not_exist() {
    let dir = TempDir::new("no-folder");
    fails(tiny(&dir).arg("--data").arg(dir.path().join("nope")), 3, &["file not found", "nope"]);
}

// ---------- image folders (exit code 3, or a warning) ----------

fn grey(w: u32, h: u32, v: u8) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_pixel(w, h, Luma([v])))
}

/// A PNG cut off halfway: a valid signature and header, then nothing.
fn truncated_png() -> Vec<u8> {
    let mut b = std::io::Cursor::new(Vec::new());
    grey(16, 16, 90).write_to(&mut b, image::ImageFormat::Png).unwrap();
    let b = b.into_inner();
    b[..b.len() / 2].to_vec()
}

/// Six good images of mixed sizes and colour types (grey, RGB, RGBA, BMP, JPEG) in two classes, and
/// two bad files: text named `.png` and a truncated PNG.
fn mixed_folder(test: &str) -> TempDir {
    let dir = TempDir::new(test);
    dir.save("a/grey.png", &grey(4, 4, 10));
    dir.save("a/wide.png", &DynamicImage::ImageRgb8(RgbImage::from_pixel(9, 3, Rgb([200, 10, 10]))));
    dir.save("a/alpha.png", &DynamicImage::ImageRgba8(RgbaImage::from_pixel(5, 7, Rgba([1, 2, 3, 128]))));
    dir.save("b/tall.bmp", &grey(3, 8, 250));
    dir.save("b/photo.jpg", &DynamicImage::ImageRgb8(RgbImage::from_pixel(6, 6, Rgb([20, 200, 90]))));
    dir.save("b/big.png", &grey(40, 30, 128));
    dir.write("a/notes.png", b"this is not a picture\n");
    dir.write("b/cut.png", &truncated_png());
    dir
}

#[test]
fn image_folder_bad_file_stops_a_strict_run() {
    let dir = mixed_folder("strict");
    let bad = dir.path().join("a/notes.png");
    fails(
        tiny(&dir).arg("--strict-images").arg("--data").arg(dir.path()),
        3,
        &["cannot load image", &bad.display().to_string()],
    );
}

#[test]
fn image_folder_bad_file_stops_a_run_with_skip_bad_images_false() {
    let dir = mixed_folder("strict-config");
    let cfg = dir.write("run.toml", b"skip_bad_images = false\nimage_size = [4, 4]\nchannels = 1\n");
    let bad = dir.path().join("a/notes.png");
    fails(
        tiny(&dir).arg("--config").arg(&cfg).arg("--data").arg(dir.path()),
        3,
        &["cannot load image", &bad.display().to_string()],
    );
}

#[test]
fn image_folder_truncated_png_is_named() {
    let dir = TempDir::new("truncated-png");
    dir.save("x.png", &grey(4, 4, 1));
    dir.save("y.png", &grey(4, 4, 2));
    let cut = dir.write("z.png", &truncated_png());
    fails(
        tiny(&dir).arg("--strict-images").arg("--data").arg(dir.path()),
        3,
        &["cannot load image", &cut.display().to_string()],
    );
}

#[test]
fn image_folder_bad_files_skipped_with_a_warning_and_mixed_images_train() {
    // The loader does not refuse mixed sizes or colour types: it crops, resizes and converts them all.
    let dir = mixed_folder("skip");
    let o = tiny(&dir)
        .args(["--image-size", "4", "--image-channels", "1", "--train-limit", "4", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("panicked"), "{err}");
    for bad in ["a/notes.png", "b/cut.png"] {
        let line = format!("warning: skipped {}", dir.path().join(bad).display());
        assert!(err.contains(&line), "expected {line:?} in:\n{err}");
    }
    assert!(dir.path().join("out/metrics.jsonl").is_file());
}

#[test]
fn image_folder_with_only_bad_files() {
    let dir = TempDir::new("only-bad");
    dir.write("x.png", b"not an image");
    dir.write("y.jpg", &[]);
    fails(
        tiny(&dir).arg("--data").arg(dir.path()),
        3,
        &["holds 0 usable image(s) (2 skipped); at least 2 are needed for a train and a test split"],
    );
}

#[test]
fn image_folder_that_is_empty() {
    let dir = TempDir::new("empty-folder");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("class")).unwrap();
    dir.write("data/readme.txt", b"no pictures here");
    fails(
        tiny(&dir).arg("--data").arg(&data),
        3,
        &["empty dataset: no image files (png, jpg, jpeg, bmp) in", &data.display().to_string()],
    );
}

#[test]
fn image_folder_with_one_image() {
    let dir = TempDir::new("one-image");
    dir.save("data/only.png", &grey(4, 4, 7));
    fails(tiny(&dir).arg("--data").arg(dir.path().join("data")), 3, &["holds 1 usable image(s); at least 2"]);
}

#[test]
fn image_folder_test_split_with_no_usable_image() {
    let dir = TempDir::new("empty-test-split");
    dir.save("data/train/a/1.png", &grey(4, 4, 7));
    dir.save("data/train/a/2.png", &grey(4, 4, 9));
    dir.write("data/test/a/3.png", b"broken");
    fails(
        tiny(&dir).arg("--data").arg(dir.path().join("data")),
        3,
        &["skipping", "3.png", "the test split of", "has no usable images (1 skipped)"],
    );
}

// ---------- configuration files (exit code 2) ----------

/// `train --config` with `toml` must fail with exit code 2 and the needles (before opening the GPU).
fn config_fails(test: &str, toml: &str, needles: &[&str]) {
    let dir = TempDir::new(test);
    let cfg = dir.write("run.toml", toml.as_bytes());
    let err = fails(train(&dir).arg("--config").arg(&cfg), 2, needles);
    assert!(err.contains("error: config: ") && err.matches("config:").count() == 1, "{err}");
    assert!(!err.contains("adapter:"), "a configuration error must stop before the GPU is opened:\n{err}");
}

macro_rules! bad_config {
    ($($name:ident: $toml:expr => [$($needle:expr),+ $(,)?];)*) => {
        $(
            #[test]
            fn $name() {
                config_fails(stringify!($name), $toml, &[$($needle),+]);
            }
        )*
    };
}

bad_config! {
    // Syntax and unknown keys.
    config_not_toml: "epochs = \nbatch = 3" => ["run.toml", "TOML parse error", "line 1"];
    config_duplicate_key: "epochs = 1\nepochs = 2\n" => ["run.toml", "duplicate key"];
    config_unknown_top_level_key: "epochs = 1\nlearning_rate = 0.1\n" => ["run.toml", "unknown field `learning_rate`", "expected one of"];
    config_unknown_table: "[optimizer]\nlr = 0.1\n" => ["unknown field `optimizer`"];
    config_unknown_key_in_vae: "[vae]\nlatnet = 4\n" => ["run.toml", "unknown field `latnet`", "latent"];
    config_unknown_key_in_vae_conv: "model = \"conv-vae\"\n[vae.conv]\nkernel = 3\n" => ["unknown field `kernel`", "channels"];
    config_unknown_key_in_vae_prior: "[vae.prior]\nlayers = 3\n" => ["unknown field `layers`", "flow_layers"];
    config_unknown_key_in_vq: "model = \"vq-vae\"\n[vq]\ncode = 16\n" => ["unknown field `code`", "codes"];
    config_unknown_key_in_ae: "model = \"ae\"\n[ae]\nsparse = \"l1\"\n" => ["unknown field `sparse`", "sparsity"];
    // Wrong types.
    config_batch_is_a_string: "batch = \"128\"\n" => ["run.toml", "invalid type: string \"128\"", "batch"];
    config_epochs_negative: "epochs = -1\n" => ["run.toml", "invalid value: integer `-1`", "epochs"];
    config_lr_is_an_array: "lr = [0.1]\n" => ["run.toml", "invalid type", "lr"];
    config_binarize_is_a_number: "binarize = 1\n" => ["run.toml", "invalid type: integer `1`, expected a boolean"];
    config_hidden_is_a_number: "[vae]\nhidden = 400\n" => ["run.toml", "invalid type: integer `400`, expected a sequence"];
    config_image_size_one_value: "image_size = [32]\n" => ["run.toml", "image_size", "invalid length 1"];
    config_unknown_activation: "[vae]\nact = \"swish\"\n" => ["run.toml", "unknown variant `swish`", "relu"];
    config_vae_is_a_value: "vae = 3\n" => ["run.toml", "invalid type: integer `3`", "vae"];
    // Values out of range.
    config_unknown_model: "model = \"gan\"\n" => ["unknown model 'gan'", "vae, conv-vae"];
    config_batch_zero: "batch = 0\n" => ["batch must be in 1..=65535, got 0"];
    config_batch_too_large: "batch = 70000\n" => ["batch must be in 1..=65535, got 70000"];
    config_lr_zero: "lr = 0.0\n" => ["lr must be a finite number > 0, got 0"];
    config_lr_negative: "lr = -0.001\n" => ["lr must be a finite number > 0, got -0.001"];
    config_lr_nan: "lr = nan\n" => ["lr must be a finite number > 0, got NaN"];
    config_lr_infinite: "lr = inf\n" => ["lr must be a finite number > 0, got inf"];
    config_epochs_zero: "epochs = 0\n" => ["epochs must be >= 1, got 0"];
    config_steps_per_submit_zero: "steps_per_submit = 0\n" => ["steps_per_submit and log_every must be >= 1"];
    config_adam_beta1_one: "adam_beta1 = 1.0\n" => ["adam betas must be in [0, 1)"];
    config_adam_eps_zero: "adam_eps = 0.0\n" => ["adam_eps must be a finite number > 0, got 0"];
    config_adam_eps_infinite: "adam_eps = inf\n" => ["adam_eps must be a finite number > 0, got inf"];
    config_weight_decay_negative: "weight_decay = -0.1\n" => ["weight_decay must be a finite number >= 0, got -0.1"];
    config_weight_decay_infinite: "weight_decay = inf\n" => ["weight_decay must be a finite number >= 0, got inf"];
    config_max_grad_norm_nan: "max_grad_norm = nan\n" => ["max_grad_norm must be a finite number >= 0, got NaN"];
    config_image_size_zero: "image_size = [0, 32]\n" => ["image_size must be [height, width], each in 1..=4096, got [0, 32]"];
    config_image_size_too_large: "image_size = [32, 5000]\n" => ["image_size must be [height, width], each in 1..=4096, got [32, 5000]"];
    config_channels_two: "channels = 2\n" => ["channels must be 1 (grayscale) or 3 (RGB), got 2"];
    config_test_fraction_zero: "test_fraction = 0.0\n" => ["test_fraction must be in (0, 1), got 0"];
    config_test_fraction_one: "test_fraction = 1.0\n" => ["test_fraction must be in (0, 1), got 1"];
    config_test_fraction_above_one: "test_fraction = 1.5\n" => ["test_fraction must be in (0, 1), got 1.5"];
    config_test_fraction_negative: "test_fraction = -0.1\n" => ["test_fraction must be in (0, 1), got -0.1"];
    config_test_fraction_nan: "test_fraction = nan\n" => ["test_fraction must be in (0, 1), got NaN"];
    config_vae_latent_zero: "[vae]\nlatent = 0\n" => ["vae: latent must be > 0"];
    config_vae_hidden_zero: "[vae]\nhidden = [400, 0]\n" => ["vae: hidden widths must be > 0"];
    config_vae_beta_negative: "[vae]\nbeta = -1.0\n" => ["vae: beta must be a finite number >= 0, got -1"];
    config_vae_beta_nan: "[vae]\nbeta = nan\n" => ["vae: beta must be a finite number >= 0, got NaN"];
    config_vae_samples_zero: "[vae]\nsamples = 0\n" => ["vae: samples must be in 1..=4096, got 0"];
    config_vae_sigma_zero: "[vae]\nsigma = 0.0\n" => ["vae: sigma must be a finite number > 0, got 0"];
    config_vae_flow_layers_zero: "[vae.prior]\nkind = \"flow\"\nflow_layers = 0\n" => ["flow_layers must be in 1..=64, got 0"];
    config_vae_conv_without_conv_model: "[vae.conv]\nchannels = [8]\nstrides = [2]\n" => ["[vae.conv] is set but model is 'vae'"];
    config_vq_codes_one: "model = \"vq-vae\"\n[vq]\ncodes = 1\n" => ["vq: need dim >= 1, 2 <= codes <= 65536"];
    config_vq_decay_one: "model = \"vq-vae\"\n[vq]\ndecay = 1.0\n" => ["vq: need beta >= 0, 0 < decay < 1 and eps > 0"];
    config_vq_eps_infinite: "model = \"vq-vae\"\n[vq]\neps = inf\n" => ["vq: eps must be a finite number > 0, got inf"];
    config_vq_levels_mismatch: "model = \"vq-vae\"\n[vq]\nlevels = 2\n" => ["model vq-vae has 1 level(s), [vq] levels = 2"];
    config_ae_latent_zero: "model = \"ae\"\n[ae]\nlatent = 0\n" => ["ae: latent must be > 0"];
    config_ae_sparse_target_one: "model = \"ae\"\n[ae]\nsparse_target = 1.0\n" => ["ae: sparse_target must be in (0, 1), got 1"];
    config_ae_noise_level_negative: "model = \"ae\"\n[ae]\nnoise = \"gaussian\"\nnoise_level = -1.0\n" => ["ae: noise_level must be a finite number >= 0, got -1"];
}

#[test]
fn config_file_missing() {
    let dir = TempDir::new("config-missing");
    let cfg = dir.path().join("nope.toml");
    fails(train(&dir).arg("--config").arg(&cfg), 2, &["error: config: ", "nope.toml", "cannot read"]);
}

#[test]
fn config_file_not_utf8() {
    let dir = TempDir::new("config-binary");
    let cfg = dir.write("run.toml", b"epochs = 1\n\xff\xfe\x00garbage");
    fails(train(&dir).arg("--config").arg(&cfg), 2, &["error: config: ", "run.toml", "UTF-8"]);
}

#[test]
fn config_file_is_a_folder() {
    let dir = TempDir::new("config-folder");
    fails(train(&dir).arg("--config").arg(dir.path()), 2, &["error: config: ", "cannot read"]);
}

// ---------- command-line values (exit code 2) ----------

/// `train` with `args` must fail with exit code 2 and the needles, before opening the GPU.
fn cli_fails(test: &str, args: &[&str], needles: &[&str]) {
    let dir = TempDir::new(test);
    let err = fails(train(&dir).args(args), 2, needles);
    assert!(!err.contains("adapter:"), "a usage error must stop before the GPU is opened:\n{err}");
}

macro_rules! bad_cli {
    ($($name:ident: [$($arg:expr),+] => [$($needle:expr),+ $(,)?];)*) => {
        $(
            #[test]
            fn $name() {
                cli_fails(stringify!($name), &[$($arg),+], &[$($needle),+]);
            }
        )*
    };
}

bad_cli! {
    cli_batch_zero: ["--batch", "0"] => ["batch must be in 1..=65535, got 0"];
    cli_batch_not_a_number: ["--batch", "many"] => ["invalid value 'many' for '--batch <BATCH>'", "invalid digit"];
    cli_batch_negative: ["--batch=-5"] => ["invalid value '-5' for '--batch <BATCH>'"];
    cli_lr_nan: ["--lr", "nan"] => ["lr must be a finite number > 0, got NaN"];
    cli_lr_negative: ["--lr=-0.01"] => ["lr must be a finite number > 0, got -0.01"];
    cli_lr_not_a_number: ["--lr", "fast"] => ["invalid value 'fast' for '--lr <LR>'"];
    cli_epochs_zero: ["--epochs", "0"] => ["epochs must be >= 1, got 0"];
    cli_latent_zero: ["--latent", "0"] => ["vae: latent must be > 0"];
    cli_hidden_zero: ["--hidden", "400,0"] => ["vae: hidden widths must be > 0"];
    cli_beta_negative: ["--beta=-1"] => ["vae: beta must be a finite number >= 0, got -1"];
    cli_samples_zero: ["--samples", "0"] => ["vae: samples must be in 1..=4096, got 0"];
    cli_weight_decay_nan: ["--weight-decay", "nan"] => ["weight_decay must be a finite number >= 0, got NaN"];
    cli_image_size_zero: ["--image-size", "0"] => ["--image-size: expected HxW or N, got '0'"];
    cli_image_size_garbage: ["--image-size", "32xbig"] => ["--image-size: expected HxW or N, got '32xbig'"];
    cli_image_channels_two: ["--image-channels", "2"] => ["channels must be 1 (grayscale) or 3 (RGB), got 2"];
    cli_unknown_model: ["--model", "gan"] => ["unknown model 'gan'"];
    cli_unknown_likelihood: ["--likelihood", "poisson"] => ["unknown likelihood 'poisson'"];
    cli_unknown_flag: ["--learning-rate", "0.1"] => ["unexpected argument '--learning-rate'"];
    cli_vq_flag_without_vq_model: ["--codes", "16"] => ["--codes", "need --model vq-vae or vq-vae-2"];
}

#[test]
fn model_too_large_for_the_adapter() {
    // 2 × 784 × 1.4M weights (8.8 GB) exceed every adapter's buffer and binding limits: refused before
    // anything is allocated or trained, naming the limit and the shortfall, exit code 4.
    let dir = TempDir::new("too_large");
    let args = ["--epochs", "1", "--hidden", "1400000", "--latent", "2", "--batch", "2", "--train-limit", "4"];
    let err =
        fails(train(&dir).args(args), 4, &["cannot fit this model: limit max_", "the model needs 88", "x the limit"]);
    assert!(err.contains("adapter '"), "{err}");
    assert!(!dir.path().join("out/checkpoint").exists());
}

#[test]
fn backend_not_in_this_build() {
    // OpenGL is an opt-in feature; without it the flag is refused by name, before any adapter is opened.
    if cfg!(feature = "gl") {
        return;
    }
    let dir = TempDir::new("backend_gl");
    let err = fails(train(&dir).args(["--backend", "gl"]), 4, &["backend 'gl' is not in this build", "--features gl"]);
    assert!(!err.contains("adapter:"), "{err}");
}

#[test]
fn bench_rounds_at_least_one_and_not_with_steps() {
    // Refused before any adapter is opened, exit code 2.
    let bin = env!("CARGO_BIN_EXE_vaegpu");
    for args in [&["bench", "--launches", "--rounds", "0"][..], &["bench", "--rounds", "0"]] {
        let err = fails(Command::new(bin).args(args), 2, &["--rounds must be at least 1"]);
        assert!(!err.contains("adapter:"), "{err}");
    }
    fails(
        Command::new(bin).args(["bench", "--steps", "--rounds", "3"]),
        2,
        &["'--steps' cannot be used with '--rounds"],
    );
}
