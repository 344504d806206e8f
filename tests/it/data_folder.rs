//! Image-folder data sets: class folders, splits, decoding, cropping and resizing, bad files and
//! bad options. Every test writes a few tiny images to its own temp folder (no GPU).

use std::path::{Path, PathBuf};

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use vaegpu::data::folder::centre_crop;
use vaegpu::data::{load_folder, DataError, FolderData, FolderOptions, Split};

// ---------- helpers ----------

/// A fresh temp folder, removed again on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vaegpu-data-folder-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, rel: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    }

    /// Saves `img` at `rel` (format from the extension), creating folders.
    fn save(&self, rel: &str, img: &DynamicImage) -> PathBuf {
        let path = self.file(rel);
        img.save(&path).unwrap_or_else(|e| panic!("saving {}: {e}", path.display()));
        path
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.file(rel);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(rgb)))
}

fn opts(height: usize, width: usize, channels: usize) -> FolderOptions {
    FolderOptions { height, width, channels, ..FolderOptions::default() }
}

/// Every (label, pixels) item of a split.
fn items(split: &Split) -> Vec<(u8, &[u8])> {
    (0..split.len()).map(|i| (split.labels[i], split.images.image(i).unwrap())).collect()
}

/// Every (label, pixels) item of both splits.
fn all_items(data: &FolderData) -> Vec<(u8, &[u8])> {
    let mut all = items(&data.dataset.train);
    all.extend(items(&data.dataset.test));
    all
}

fn is_solid(pixels: &[u8], colour: &[u8]) -> bool {
    pixels.chunks_exact(colour.len()).all(|p| p == colour)
}

fn assert_msg(err: &DataError, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "error message {msg:?} should mention {needle:?}");
    }
}

const RED: [u8; 3] = [200, 30, 30];
const BLUE: [u8; 3] = [30, 60, 210];

/// `cats/` with 6 red images and `dogs/` with 4 blue ones, of assorted sizes.
fn write_two_classes(dir: &TempDir) {
    for i in 0..6u32 {
        dir.save(&format!("cats/cat{i}.png"), &solid(12 + i, 8 + 2 * i, RED));
    }
    for i in 0..4u32 {
        dir.save(&format!("dogs/dog{i}.png"), &solid(5 + 3 * i, 17, BLUE));
    }
}

// ---------- classes and splits ----------

#[test]
fn rgb_class_folders_give_labels_counts_and_split_sizes() {
    let dir = TempDir::new("two-classes");
    write_two_classes(&dir);
    let o = FolderOptions { test_fraction: 0.2, ..opts(8, 6, 3) };
    let data = load_folder(dir.path(), &o).expect("two-class folder");
    let ds = &data.dataset;
    assert_eq!(data.classes, ["cats", "dogs"]);
    assert!(data.skipped.is_empty());
    assert_eq!((ds.train.len(), ds.test.len()), (8, 2));
    assert_eq!(ds.image_shape(), (8, 6, 3));
    assert_eq!(ds.image_dims(), (8, 6));
    assert_eq!(ds.train.images.pixels_per_image(), 8 * 6 * 3);
    assert_eq!(ds.train.images.pixels.len(), 8 * 8 * 6 * 3);
    assert_eq!(ds.test.images.pixels.len(), 2 * 8 * 6 * 3);
    assert_eq!(ds.name, dir.path().file_name().unwrap().to_str().unwrap());
    assert_eq!(ds.source, dir.path());
    assert!(!ds.subset);
    let all = all_items(&data);
    assert_eq!(all.iter().filter(|(l, _)| *l == 0).count(), 6);
    assert_eq!(all.iter().filter(|(l, _)| *l == 1).count(), 4);
    // Every image is its class's solid colour, exactly, after resizing.
    for (label, pixels) in all {
        let colour = if label == 0 { RED } else { BLUE };
        assert!(is_solid(pixels, &colour), "label {label}: {pixels:?}");
    }
}

#[test]
fn loading_is_deterministic_and_the_seed_picks_the_split() {
    // Ten images told apart by their red value: 0, 20, ..., 180.
    let dir = TempDir::new("determinism");
    for i in 0..10u8 {
        dir.save(&format!("{}/{i}.png", if i < 6 { "cats" } else { "dogs" }), &solid(5, 7, [20 * i, 0, 0]));
    }
    let reds = |split: &Split| -> Vec<u8> { items(split).iter().map(|(_, px)| px[0]).collect() };
    let o = FolderOptions { test_fraction: 0.2, ..opts(4, 4, 3) };
    let a = load_folder(dir.path(), &o).unwrap();
    let b = load_folder(dir.path(), &o).unwrap();
    assert_eq!(a, b);
    // The splits partition the images, each in path order.
    let (train, test) = (reds(&a.dataset.train), reds(&a.dataset.test));
    let mut all = [train.clone(), test.clone()].concat();
    all.sort();
    assert_eq!(all, (0..10).map(|i| 20 * i).collect::<Vec<u8>>());
    assert!(train.is_sorted() && test.is_sorted(), "{train:?} {test:?}");
    // Another seed, another split of the same size.
    let c = load_folder(dir.path(), &FolderOptions { seed: 1, ..o.clone() }).unwrap();
    assert_eq!(c.dataset.test.len(), 2);
    assert_ne!(reds(&a.dataset.test), reds(&c.dataset.test), "another seed should give another split");
}

#[test]
fn test_split_size_is_rounded_and_clamped() {
    let dir = TempDir::new("split-sizes");
    write_two_classes(&dir); // 10 images
    for (fraction, n_test) in [(0.0, 1), (0.04, 1), (0.1, 1), (0.25, 3), (0.5, 5), (0.94, 9), (0.99, 9)] {
        let data = load_folder(dir.path(), &FolderOptions { test_fraction: fraction, ..opts(2, 2, 1) }).unwrap();
        assert_eq!(data.dataset.test.len(), n_test, "test fraction {fraction}");
        assert_eq!(data.dataset.train.len(), 10 - n_test, "test fraction {fraction}");
    }
}

#[test]
fn files_directly_in_the_folder_form_the_last_class() {
    let dir = TempDir::new("root-class");
    dir.save("loose0.png", &solid(3, 3, RED));
    dir.save("loose1.png", &solid(3, 3, RED));
    dir.save("z/in-z.png", &solid(3, 3, BLUE));
    dir.save("a/deep/er/in-a.png", &solid(3, 3, BLUE));
    dir.write("empty-class/readme.txt", b"no images here");
    let data = load_folder(dir.path(), &FolderOptions { test_fraction: 0.5, ..opts(3, 3, 3) }).unwrap();
    assert_eq!(data.classes, ["a", "z", ""]);
    let mut labels: Vec<u8> = all_items(&data).iter().map(|(l, _)| *l).collect();
    labels.sort();
    assert_eq!(labels, [0, 1, 2, 2]);
    // With no sub-folders at all there is one class, "".
    let flat = TempDir::new("root-only");
    flat.save("0.png", &solid(3, 3, RED));
    flat.save("1.png", &solid(3, 3, RED));
    let data = load_folder(flat.path(), &opts(3, 3, 1)).unwrap();
    assert_eq!(data.classes, [""]);
    assert_eq!((data.dataset.train.len(), data.dataset.test.len()), (1, 1));
}

#[test]
fn train_and_test_subfolders_are_the_splits() {
    let dir = TempDir::new("train-test");
    for i in 0..3 {
        dir.save(&format!("train/cat/{i}.png"), &solid(4, 4, RED));
    }
    for i in 0..2 {
        dir.save(&format!("train/dog/{i}.png"), &solid(4, 4, BLUE));
    }
    dir.save("test/cat/0.png", &solid(4, 4, RED));
    dir.save("test/dog/0.png", &solid(4, 4, BLUE));
    dir.save("test/bird/0.png", &solid(4, 4, [0, 255, 0]));
    dir.save("ignored-next-to-splits.png", &solid(4, 4, [1, 2, 3]));
    dir.save(".cache/hidden.png", &solid(4, 4, [1, 2, 3]));
    // The test fraction and seed play no part with this layout.
    let o = FolderOptions { test_fraction: 0.5, seed: 7, ..opts(2, 2, 3) };
    let data = load_folder(dir.path(), &o).unwrap();
    assert_eq!(data.classes, ["bird", "cat", "dog"]);
    assert_eq!(data.dataset.train.labels, [1, 1, 1, 2, 2]);
    assert_eq!(data.dataset.test.labels, [0, 1, 2]);
    for (label, pixels) in all_items(&data) {
        let colour = [[0, 255, 0], RED, BLUE][label as usize];
        assert!(is_solid(pixels, &colour));
    }
    // A test folder without images is an empty split, named in the error.
    std::fs::remove_dir_all(dir.path().join("test")).unwrap();
    std::fs::create_dir_all(dir.path().join("test/cat")).unwrap();
    let e = load_folder(dir.path(), &o).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    assert_msg(&e, &["test split", "vaegpu-data-folder-"]);
}

#[test]
fn more_than_256_classes_is_an_error() {
    let dir = TempDir::new("many-classes");
    let tiny = solid(1, 1, RED);
    for i in 0..256 {
        dir.save(&format!("c{i:03}/x.png"), &tiny);
    }
    let data = load_folder(dir.path(), &opts(1, 1, 1)).expect("256 classes fit in u8 labels");
    assert_eq!(data.classes.len(), 256);
    assert_eq!(all_items(&data).iter().map(|(l, _)| *l).max(), Some(255));
    dir.save("c256/x.png", &tiny);
    let e = load_folder(dir.path(), &opts(1, 1, 1)).unwrap_err();
    assert!(matches!(e, DataError::TooManyClasses { count: 257, .. }), "{e:?}");
    assert_msg(&e, &["257 classes", "at most 256"]);
}

// ---------- pixels ----------

#[test]
fn solid_colour_survives_resizing_exactly() {
    let colour = [200, 100, 50];
    let dir = TempDir::new("solid");
    dir.save("a.png", &solid(37, 23, colour));
    dir.save("b.png", &solid(5, 9, colour));
    for (h, w) in [(16, 16), (64, 48), (1, 1), (23, 37)] {
        let data = load_folder(dir.path(), &opts(h, w, 3)).unwrap();
        for (_, pixels) in all_items(&data) {
            assert_eq!(pixels.len(), h * w * 3);
            assert!(is_solid(pixels, &colour), "{h}x{w}: {pixels:?}");
        }
    }
}

#[test]
fn one_channel_gives_the_luma() {
    let colour = [200, 100, 50];
    let dir = TempDir::new("luma");
    dir.save("a.png", &solid(30, 20, colour));
    dir.save("b.png", &solid(7, 7, colour));
    let data = load_folder(dir.path(), &opts(10, 10, 1)).unwrap();
    assert_eq!(data.dataset.image_shape(), (10, 10, 1));
    let luma = solid(1, 1, colour).to_luma8().get_pixel(0, 0).0[0];
    // Rec. 709 weights, as the image crate uses.
    let expected = 0.2126 * 200.0 + 0.7152 * 100.0 + 0.0722 * 50.0;
    assert!((luma as f64 - expected).abs() <= 1.0, "luma {luma}, expected about {expected}");
    for (_, pixels) in all_items(&data) {
        assert_eq!(pixels.len(), 100);
        assert!(is_solid(pixels, &[luma]), "{pixels:?}");
    }
}

#[test]
fn centre_crop_keeps_the_middle() {
    let dir = TempDir::new("crop");
    // 40x20, left and right quarters black, middle white; and its 20x40 transpose.
    let wide = RgbImage::from_fn(40, 20, |x, _| if (10..30).contains(&x) { Rgb([255; 3]) } else { Rgb([0; 3]) });
    let tall = RgbImage::from_fn(20, 40, |_, y| if (10..30).contains(&y) { Rgb([255; 3]) } else { Rgb([0; 3]) });
    dir.save("wide.png", &DynamicImage::ImageRgb8(wide));
    dir.save("tall.png", &DynamicImage::ImageRgb8(tall));
    let data = load_folder(dir.path(), &opts(10, 10, 1)).unwrap();
    for (_, pixels) in all_items(&data) {
        assert!(pixels.iter().all(|&p| p >= 250), "should be all white: {pixels:?}");
    }
    // At the wide image's own aspect ratio nothing is cropped from it, so its black sides
    // remain; the tall one is cropped to its white middle.
    let data = load_folder(dir.path(), &opts(10, 20, 1)).unwrap();
    let dark_left: Vec<bool> = all_items(&data).iter().map(|(_, px)| px[0] < 5 && px[19] < 5 && px[10] > 250).collect();
    assert_eq!(dark_left.iter().filter(|&&d| d).count(), 1, "{dark_left:?}");
    // The crop rectangles themselves.
    assert_eq!(centre_crop(40, 20, 10, 10), (10, 0, 20, 20));
    assert_eq!(centre_crop(20, 40, 10, 10), (0, 10, 20, 20));
    assert_eq!(centre_crop(40, 20, 20, 10), (0, 0, 40, 20));
    assert_eq!(centre_crop(100, 100, 30, 20), (0, 16, 100, 67));
    assert_eq!(centre_crop(1, 1000, 4096, 1), (0, 499, 1, 1));
    assert_eq!(centre_crop(1000, 1, 1, 4096), (499, 0, 1, 1));
}

#[test]
fn jpeg_bmp_and_rgba_png_decode() {
    let dir = TempDir::new("formats");
    let colour = [100, 150, 200];
    dir.save("jpg/a.jpg", &solid(16, 16, colour));
    // Upper-case extensions count too (saved under a lower-case name, then renamed).
    let p = dir.save("jpg/b.jpeg", &solid(20, 12, colour));
    std::fs::rename(&p, p.with_extension("JPEG")).unwrap();
    dir.save("bmp/c.bmp", &solid(9, 9, colour));
    let p = dir.save("bmp/d.bmp", &solid(9, 5, colour));
    std::fs::rename(&p, p.with_extension("Bmp")).unwrap();
    // Alpha is dropped: transparent and opaque pixels of one colour load as that colour.
    let rgba = RgbaImage::from_fn(8, 8, |x, _| Rgba([colour[0], colour[1], colour[2], (x * 30) as u8]));
    dir.save("png/e.png", &DynamicImage::ImageRgba8(rgba));
    dir.write("png/notes.txt", b"not an image");
    let data = load_folder(dir.path(), &FolderOptions { test_fraction: 0.4, ..opts(8, 8, 3) }).unwrap();
    assert!(data.skipped.is_empty(), "{:?}", data.skipped);
    assert_eq!(data.classes, ["bmp", "jpg", "png"]);
    let all = all_items(&data);
    assert_eq!(all.len(), 5);
    for (label, pixels) in all {
        if data.classes[label as usize] == "jpg" {
            let close = pixels.chunks_exact(3).all(|p| p.iter().zip(colour).all(|(&a, b)| a.abs_diff(b) <= 4));
            assert!(close, "jpeg pixels far from {colour:?}: {pixels:?}");
        } else {
            assert!(is_solid(pixels, &colour), "{}: {pixels:?}", data.classes[label as usize]);
        }
    }
}

// ---------- bad input ----------

#[test]
fn bad_files_are_skipped_or_reported() {
    let dir = TempDir::new("bad-files");
    for i in 0..3 {
        dir.save(&format!("a/good{i}.png"), &solid(4, 4, RED));
    }
    dir.save("b/good.png", &solid(4, 4, BLUE));
    let mut state = 0x1234_5678_u32;
    let noise: Vec<u8> = (0..300)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    let corrupt = dir.write("a/corrupt.png", &noise);
    let empty = dir.write("b/empty.jpg", &[]);

    let data = load_folder(dir.path(), &opts(4, 4, 3)).expect("bad files are skipped by default");
    let skipped: Vec<&PathBuf> = data.skipped.iter().map(|(p, _)| p).collect();
    assert_eq!(skipped, [&corrupt, &empty]);
    assert!(data.skipped.iter().all(|(_, why)| !why.is_empty()));
    assert_eq!(data.dataset.train.len() + data.dataset.test.len(), 4);
    assert_eq!(data.classes, ["a", "b"]);

    let strict = FolderOptions { skip_bad: false, ..opts(4, 4, 3) };
    let e = load_folder(dir.path(), &strict).unwrap_err();
    assert!(matches!(&e, DataError::BadImage { path, .. } if *path == corrupt), "{e:?}");
    assert_msg(&e, &["cannot load image", "corrupt.png"]);
    std::fs::remove_file(&corrupt).unwrap();
    let e = load_folder(dir.path(), &strict).unwrap_err();
    assert!(matches!(&e, DataError::BadImage { path, .. } if *path == empty), "{e:?}");
    assert_msg(&e, &["empty.jpg"]);

    // Nothing usable left: an empty data set, naming the folder and the skipped count.
    let only_bad = TempDir::new("only-bad");
    only_bad.write("x.png", &noise);
    only_bad.write("y.jpg", &[]);
    let e = load_folder(only_bad.path(), &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    assert_msg(&e, &["vaegpu-data-folder-", "only-bad", "2 skipped"]);
}

#[test]
fn hidden_entries_are_ignored_and_folder_links_not_followed() {
    let dir = TempDir::new("hidden-links");
    dir.save("a/x.png", &solid(3, 3, RED));
    dir.save("b/z.png", &solid(3, 3, BLUE));
    dir.write("a/.hidden.png", b"would fail to decode");
    dir.write(".git/y.png", b"would fail to decode");
    dir.write("b/.thumbs/t.png", b"would fail to decode");
    #[cfg(unix)]
    {
        // A link loop back to the top folder, and a link to a file (which is read).
        std::os::unix::fs::symlink(dir.path(), dir.path().join("a/loop")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop-at-top")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("b/z.png"), dir.path().join("a/link.png")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone.png"), dir.path().join("b/broken.png")).unwrap();
    }
    let data = load_folder(dir.path(), &FolderOptions { test_fraction: 0.5, ..opts(3, 3, 3) }).unwrap();
    assert!(data.skipped.is_empty(), "{:?}", data.skipped);
    assert_eq!(data.classes, ["a", "b"]);
    let mut labels: Vec<u8> = all_items(&data).iter().map(|(l, _)| *l).collect();
    labels.sort();
    let expected: &[u8] = if cfg!(unix) { &[0, 0, 1] } else { &[0, 1] };
    assert_eq!(labels, expected);
}

#[test]
fn empty_or_missing_folders_are_errors() {
    let dir = TempDir::new("empty");
    let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    assert_msg(&e, &["no image files", "vaegpu-data-folder-"]);
    // Only non-images and hidden images.
    dir.write("notes.txt", b"hello");
    dir.write("sub/.hidden.png", b"x");
    let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    // One image cannot make two splits.
    dir.save("one.png", &solid(2, 2, RED));
    let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    assert_msg(&e, &["1 usable image", "at least 2"]);
    // A folder that does not exist, and a file where a folder is expected.
    let gone = dir.path().join("nope");
    let e = load_folder(&gone, &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }), "{e:?}");
    assert_msg(&e, &["nope"]);
    let e = load_folder(&dir.path().join("notes.txt"), &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert_msg(&e, &["notes.txt"]);
}

#[test]
fn bad_options_are_rejected() {
    let dir = TempDir::new("options");
    dir.save("a.png", &solid(2, 2, RED));
    dir.save("b.png", &solid(2, 2, RED));
    let d = FolderOptions::default();
    assert_eq!((d.height, d.width, d.channels, d.test_fraction, d.skip_bad, d.seed), (28, 28, 1, 0.1, true, 0));
    assert!(load_folder(dir.path(), &d).is_ok());
    let cases = [
        (FolderOptions { height: 0, ..d.clone() }, "height"),
        (FolderOptions { width: 4097, ..d.clone() }, "width"),
        (FolderOptions { channels: 2, ..d.clone() }, "channels"),
        (FolderOptions { channels: 4, ..d.clone() }, "channels"),
        (FolderOptions { channels: 0, ..d.clone() }, "channels"),
        (FolderOptions { test_fraction: 1.0, ..d.clone() }, "test fraction"),
        (FolderOptions { test_fraction: -0.1, ..d.clone() }, "test fraction"),
        (FolderOptions { test_fraction: f64::NAN, ..d.clone() }, "test fraction"),
    ];
    for (o, needle) in cases {
        let e = load_folder(dir.path(), &o).unwrap_err();
        assert!(matches!(e, DataError::BadOption(_)), "{o:?}: {e:?}");
        assert_msg(&e, &["bad option", needle]);
        // Options are checked before the folder is looked at.
        let e = load_folder(&dir.path().join("nope"), &o).unwrap_err();
        assert!(matches!(e, DataError::BadOption(_)), "{o:?}: {e:?}");
    }
    assert!(load_folder(dir.path(), &FolderOptions { height: 4096, width: 1, ..d.clone() }).is_ok());
}
