//! IDX reader and data set loader: the bundled Fashion-MNIST subset, round trips through files,
//! and one test per kind of bad input.

use std::path::{Path, PathBuf};

use crate::common::{gzip, idx_images, idx_labels};
use vaegpu::data::{self, DataError, Images};

// ---------- helpers ----------

/// `n` images of `rows x cols` with distinct, predictable pixels.
fn sample_pixels(n: usize, rows: usize, cols: usize) -> Vec<u8> {
    (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect()
}

/// A fresh, empty folder under the system temp dir, unique to this process and test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vaegpu-data-idx-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Writes a complete small data set (raw IDX) into `dir`: 5 train and 3 test 4x3 images.
fn write_small_dataset(dir: &Path) -> (Images, Vec<u8>, Images, Vec<u8>) {
    let train = Images { n: 5, rows: 4, cols: 3, channels: 1, pixels: sample_pixels(5, 4, 3) };
    let train_labels = vec![0, 9, 3, 3, 7];
    let test =
        Images { n: 3, rows: 4, cols: 3, channels: 1, pixels: sample_pixels(3, 4, 3).iter().map(|p| !p).collect() };
    let test_labels = vec![1, 2, 8];
    write(dir, data::TRAIN_IMAGES, &idx_images(5, 4, 3, &train.pixels));
    write(dir, data::TRAIN_LABELS, &idx_labels(&train_labels));
    write(dir, data::TEST_IMAGES, &idx_images(3, 4, 3, &test.pixels));
    write(dir, data::TEST_LABELS, &idx_labels(&test_labels));
    (train, train_labels, test, test_labels)
}

fn assert_msg(err: &DataError, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "error message {msg:?} should mention {needle:?}");
    }
}

// ---------- the bundled subset ----------

#[test]
fn bundled_subset_parses() {
    let ds = data::load_bundled().expect("bundled subset");
    assert!(ds.subset);
    assert_eq!(ds.name, "fashion-mnist-subset");
    assert_eq!(ds.train.len(), 2000);
    assert_eq!(ds.test.len(), 500);
    for split in [&ds.train, &ds.test] {
        assert_eq!((split.images.rows, split.images.cols), (28, 28));
        assert_eq!(split.images.pixels.len(), split.images.n * 28 * 28);
        assert_eq!(split.labels.len(), split.images.n);
        assert!(split.labels.iter().all(|&l| l < 10), "labels must be 0..9");
        // All ten classes are present, and the images are not blank.
        for class in 0..10u8 {
            assert!(split.labels.contains(&class), "class {class} missing");
        }
        assert!(split.images.pixels.iter().any(|&p| p > 200));
    }
    assert_eq!(ds.image_dims(), (28, 28));
}

#[test]
fn bundled_files_on_disk_match_embedded_copy() {
    let dir = Path::new(data::BUNDLED_DIR);
    for name in [data::TRAIN_IMAGES, data::TRAIN_LABELS, data::TEST_IMAGES, data::TEST_LABELS] {
        let path = dir.join(format!("{name}.gz"));
        assert!(data::is_gzip(&std::fs::read(&path).unwrap()), "{} should be gzip", path.display());
    }
    let from_disk = data::load(Some(dir)).expect("subset from disk");
    let embedded = data::load_bundled().unwrap();
    assert!(!from_disk.subset, "a folder given explicitly is not flagged as the bundled subset");
    assert_eq!(from_disk.name, "fashion-mnist-subset");
    assert_eq!(from_disk.train, embedded.train);
    assert_eq!(from_disk.test, embedded.test);
}

#[test]
fn load_without_dir_gives_system_set_or_subset() {
    let ds = data::load(None).expect("default data set");
    if data::has_dataset(Path::new(data::SYSTEM_DIR)) {
        assert!(!ds.subset);
        assert_eq!(ds.name, "fashion-mnist");
        assert_eq!(ds.train.len(), 60000);
    } else {
        assert!(ds.subset);
        assert_eq!(ds.train.len(), 2000);
    }
}

#[test]
fn full_system_dataset_when_installed() {
    let dir = Path::new(data::SYSTEM_DIR);
    if !dir.exists() {
        println!(
            "note: {} absent, skipping the full data set test (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let ds = data::load(Some(dir)).expect("full Fashion-MNIST");
    assert_eq!(ds.train.len(), 60000);
    assert_eq!(ds.test.len(), 10000);
    assert_eq!(ds.image_dims(), (28, 28));
    assert!(ds.train.labels.iter().chain(&ds.test.labels).all(|&l| l < 10));
    // Each class has 6000 training and 1000 test items.
    for class in 0..10u8 {
        assert_eq!(ds.train.labels.iter().filter(|&&l| l == class).count(), 6000);
        assert_eq!(ds.test.labels.iter().filter(|&&l| l == class).count(), 1000);
    }
    // The bundled subset is exactly the first items of the full set.
    let sub = data::load_bundled().unwrap();
    let mut head = ds.train.clone();
    head.truncate(2000);
    assert_eq!(head, sub.train);
    let mut head = ds.test.clone();
    head.truncate(500);
    assert_eq!(head, sub.test);
}

// ---------- round trips ----------

#[test]
fn raw_files_round_trip_through_temp_dir() {
    let dir = temp_dir("raw-round-trip");
    let (train, train_labels, test, test_labels) = write_small_dataset(&dir);
    assert_eq!(data::read_images(dir.join(data::TRAIN_IMAGES)).unwrap(), train);
    assert_eq!(data::read_labels(dir.join(data::TRAIN_LABELS)).unwrap(), train_labels);
    let ds = data::load(Some(&dir)).expect("raw data set");
    assert!(!ds.subset);
    assert_eq!(ds.source, dir);
    assert!(ds.name.starts_with("vaegpu-data-idx-"), "name from folder, got {}", ds.name);
    assert_eq!(ds.train.images, train);
    assert_eq!(ds.train.labels, train_labels);
    assert_eq!(ds.test.images, test);
    assert_eq!(ds.test.labels, test_labels);
    assert_eq!(ds.train.images.image(1).unwrap(), &train.pixels[12..24]);
    assert_eq!(ds.train.images.image(5), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mixed_raw_and_gzip_files_load() {
    let dir = temp_dir("mixed");
    let (train, _, test, test_labels) = write_small_dataset(&dir);
    // Replace two files with their gzip form under the .gz name.
    for name in [data::TRAIN_IMAGES, data::TEST_LABELS] {
        let raw = std::fs::read(dir.join(name)).unwrap();
        std::fs::remove_file(dir.join(name)).unwrap();
        write(&dir, &format!("{name}.gz"), &gzip(&raw));
    }
    let ds = data::load(Some(&dir)).expect("mixed data set");
    assert_eq!(ds.train.images, train);
    assert_eq!(ds.test.images, test);
    assert_eq!(ds.test.labels, test_labels);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limited_loads_read_only_the_first_items() {
    let dir = temp_dir("limited");
    let (train, train_labels, test, test_labels) = write_small_dataset(&dir);
    for gz in [false, true] {
        if gz {
            for name in [data::TRAIN_IMAGES, data::TRAIN_LABELS, data::TEST_IMAGES, data::TEST_LABELS] {
                let raw = std::fs::read(dir.join(name)).unwrap();
                std::fs::remove_file(dir.join(name)).unwrap();
                write(&dir, &format!("{name}.gz"), &gzip(&raw));
            }
        }
        let limits = data::Limits { train: Some(2), test: Some(7) };
        let ds = data::load_limited(Some(&dir), limits).unwrap();
        let mut head = data::Split { images: train.clone(), labels: train_labels.clone() };
        head.truncate(2);
        assert_eq!(ds.train, head, "gz {gz}");
        assert_eq!((&ds.test.images, &ds.test.labels), (&test, &test_labels), "a limit above the count keeps all");
        assert_eq!(data::Limits::from_counts(0, 3), data::Limits { train: None, test: Some(3) });
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // Only the items read are checked: bytes missing before the limit are an error, a defect after it
    // goes unseen; the declared image and label counts must agree either way.
    let px = sample_pixels(6, 2, 2);
    for wrap in [|b: Vec<u8>| b, |b: Vec<u8>| gzip(&b)] {
        let cut = idx_images(6, 2, 2, &px[..10]);
        let (img, declared) = data::parse_images_limited(&wrap(cut.clone()), Some(2)).unwrap();
        assert_eq!((img.n, declared, &img.pixels[..]), (2, 6, &px[..8]));
        let e = data::parse_images_limited(&wrap(cut), Some(3)).unwrap_err();
        assert!(e.to_string().contains("truncated pixel data: expected 12 bytes, found 10"), "{e}");
        let (labels, declared) = data::parse_labels_limited(&wrap(idx_labels(&[5, 6, 7])), Some(1)).unwrap();
        assert_eq!((labels, declared), (vec![5], 3));
    }
    let dir = temp_dir("limited-counts");
    write_small_dataset(&dir);
    write(&dir, data::TRAIN_LABELS, &idx_labels(&[0, 1, 2, 3]));
    let e = data::load_limited(Some(&dir), data::Limits { train: Some(2), test: None }).unwrap_err();
    assert!(matches!(e, DataError::CountMismatch { split: "train", images: 5, labels: 4 }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gzip_and_raw_bytes_parse_the_same() {
    let raw = idx_images(2, 2, 2, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(data::parse_images(&raw).unwrap(), data::parse_images(&gzip(&raw)).unwrap());
    let raw = idx_labels(&[4, 2]);
    assert_eq!(data::parse_labels(&gzip(&raw)).unwrap(), vec![4, 2]);
    // Concatenated gzip members are one stream.
    let (a, b) = raw.split_at(5);
    let two = [gzip(a), gzip(b)].concat();
    assert_eq!(data::parse_labels(&two).unwrap(), vec![4, 2]);
}

#[test]
fn split_truncate_keeps_first_items() {
    let mut ds = data::load_bundled().unwrap();
    let first = ds.train.images.image(0).unwrap().to_vec();
    let labels = ds.train.labels[..10].to_vec();
    ds.train.truncate(10);
    assert_eq!(ds.train.len(), 10);
    assert_eq!(ds.train.images.n, 10);
    assert_eq!(ds.train.images.pixels.len(), 10 * 784);
    assert_eq!(ds.train.labels, labels);
    assert_eq!(ds.train.images.image(0).unwrap(), &first[..]);
    ds.train.truncate(100_000); // larger than the split: no-op
    assert_eq!(ds.train.len(), 10);
    ds.test.truncate(0);
    assert!(ds.test.is_empty());
    assert!(ds.test.labels.is_empty() && ds.test.images.pixels.is_empty());
}

#[test]
fn to_f32_scales_to_unit_range() {
    let img = data::parse_images(&idx_images(1, 1, 3, &[0, 51, 255])).unwrap();
    assert_eq!(img.to_f32(), vec![0.0, 0.2, 1.0]);
}

// ---------- bad inputs ----------

#[test]
fn bad_magic() {
    let mut b = idx_images(1, 2, 2, &[0; 4]);
    b[..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let e = data::parse_images(&b).unwrap_err();
    assert!(matches!(e, DataError::BadMagic { found: 0x1234_5678, .. }), "{e:?}");
    assert_msg(&e, &["bad magic", "0x00000803", "0x12345678"]);
    // A float IDX file has a valid header, but not u8 data.
    b[..4].copy_from_slice(&0x0000_0d03u32.to_be_bytes());
    assert_msg(&data::parse_images(&b).unwrap_err(), &["bad magic", "0x00000d03", "f32"]);
    // Some bytes that are not IDX at all, through labels.
    let e = data::parse_labels(b"PK\x03\x04 a zip file").unwrap_err();
    assert_msg(&e, &["bad magic", "labels", "0x00000801"]);
}

#[test]
fn wrong_dims() {
    let mut b = idx_images(1, 2, 2, &[0; 4]);
    b[3] = 2;
    let e = data::parse_images(&b).unwrap_err();
    assert!(matches!(e, DataError::WrongDims { expected: 3, found: 2, .. }), "{e:?}");
    assert_msg(&e, &["wrong number of dimensions", "expected 3, found 2"]);
    // A labels file where images are expected, and the other way round.
    let e = data::parse_images(&idx_labels(&[1, 2])).unwrap_err();
    assert_msg(&e, &["wrong number of dimensions", "labels file"]);
    let e = data::parse_labels(&idx_images(1, 1, 1, &[0])).unwrap_err();
    assert_msg(&e, &["wrong number of dimensions", "expected 1, found 3", "images file"]);
}

#[test]
fn truncated_pixel_data() {
    let b = idx_images(3, 4, 4, &sample_pixels(3, 4, 4)[..40]);
    let e = data::parse_images(&b).unwrap_err();
    assert!(matches!(e, DataError::Truncated { expected: 48, actual: 40, .. }), "{e:?}");
    assert_msg(&e, &["truncated pixel data", "expected 48 bytes", "found 40"]);
    let b = idx_labels(&[1, 2, 3]);
    let e = data::parse_labels(&b[..b.len() - 1]).unwrap_err();
    assert_msg(&e, &["truncated label data", "expected 3 bytes", "found 2"]);
}

#[test]
fn truncated_header() {
    let b = idx_images(3, 4, 4, &[]);
    let e = data::parse_images(&b[..10]).unwrap_err();
    assert!(matches!(e, DataError::Truncated { expected: 16, actual: 10, .. }), "{e:?}");
    assert_msg(&e, &["truncated header", "expected 16 bytes", "found 10"]);
    assert_msg(&data::parse_labels(&[0, 0, 8]).unwrap_err(), &["truncated header", "expected 4 bytes"]);
    assert_msg(&data::parse_labels(&[0, 0, 8, 1, 0]).unwrap_err(), &["truncated header", "expected 8 bytes"]);
}

#[test]
fn trailing_garbage() {
    let mut b = idx_images(1, 2, 2, &[1, 2, 3, 4]);
    b.extend_from_slice(b"junk");
    let e = data::parse_images(&b).unwrap_err();
    assert!(matches!(e, DataError::TrailingGarbage { .. }), "{e:?}");
    assert_msg(&e, &["trailing garbage", "4 extra"]);
    // Garbage after a gzip stream is not a gzip member either.
    let mut g = gzip(&idx_labels(&[1]));
    g.extend_from_slice(b"garbage!!!");
    assert!(data::parse_labels(&g).is_err());
}

#[test]
fn image_label_count_mismatch() {
    let e = data::Split::new("train", data::parse_images(&idx_images(2, 1, 1, &[0, 1])).unwrap(), vec![3]).unwrap_err();
    assert!(matches!(e, DataError::CountMismatch { images: 2, labels: 1, .. }), "{e:?}");
    assert_msg(&e, &["count mismatch", "train", "2 images but 1 labels"]);
    // Through the loader: test labels one short.
    let dir = temp_dir("count-mismatch");
    write_small_dataset(&dir);
    write(&dir, data::TEST_LABELS, &idx_labels(&[1, 2]));
    let e = data::load(Some(&dir)).unwrap_err();
    assert_msg(&e, &["count mismatch in the test split", "3 images but 2 labels"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_test_image_size_mismatch() {
    let dir = temp_dir("shape-mismatch");
    write_small_dataset(&dir);
    write(&dir, data::TEST_IMAGES, &idx_images(3, 3, 4, &sample_pixels(3, 3, 4)));
    let e = data::load(Some(&dir)).unwrap_err();
    assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e:?}");
    assert_msg(&e, &["image size mismatch", "4x3", "3x4"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_test_channel_mismatch() {
    let grey = data::parse_images(&idx_images(1, 2, 2, &[1, 2, 3, 4])).unwrap();
    assert_eq!(grey.channels, 1);
    let rgb = Images { n: 1, rows: 2, cols: 2, channels: 3, pixels: (0..12).collect() };
    assert_eq!(rgb.pixels_per_image(), 12);
    assert_eq!(rgb.image(0).unwrap().len(), 12);
    let train = data::Split::new("train", grey, vec![0]).unwrap();
    let test = data::Split::new("test", rgb, vec![0]).unwrap();
    let e = data::Dataset::new("mixed".into(), train.clone(), test.clone(), PathBuf::new(), false).unwrap_err();
    assert!(matches!(e, DataError::ChannelMismatch { train: 1, test: 3 }), "{e:?}");
    assert_msg(&e, &["channel count mismatch", "1 channels", "3"]);
    let ds = data::Dataset::new("grey".into(), train.clone(), train, PathBuf::new(), false).unwrap();
    assert_eq!(ds.image_shape(), (2, 2, 1));
    assert_eq!(ds.image_dims(), (2, 2));
}

#[test]
fn zero_items() {
    let e = data::parse_images(&idx_images(0, 28, 28, &[])).unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
    assert_msg(&e, &["empty dataset", "0 images"]);
    assert_msg(&data::parse_labels(&idx_labels(&[])).unwrap_err(), &["empty dataset", "0 labels"]);
    assert_msg(&data::parse_images(&idx_images(5, 0, 28, &[])).unwrap_err(), &["empty dataset", "0x28"]);
}

#[test]
fn corrupt_gzip() {
    let good = gzip(&idx_images(2, 4, 4, &sample_pixels(2, 4, 4)));
    // Flip bytes in the deflate body (after the 10-byte gzip header).
    let mut bad = good.clone();
    for b in &mut bad[10..good.len() - 8] {
        *b ^= 0x5a;
    }
    let e = data::parse_images(&bad).unwrap_err();
    assert!(matches!(e, DataError::Decompress { .. }), "{e:?}");
    assert_msg(&e, &["gzip decompression failed"]);
    // A gzip stream cut short.
    let e = data::parse_images(&good[..good.len() / 2]).unwrap_err();
    assert_msg(&e, &["gzip decompression failed"]);
    // Only the magic bytes.
    assert_msg(&data::parse_images(&[0x1f, 0x8b]).unwrap_err(), &["gzip decompression failed"]);
    // Bad CRC.
    let mut crc = good.clone();
    let n = crc.len();
    crc[n - 8] ^= 0xff;
    assert_msg(&data::parse_images(&crc).unwrap_err(), &["gzip decompression failed"]);
    // Through a file, the message also names the file.
    let dir = temp_dir("corrupt-gzip");
    let path = write(&dir, "train-images-idx3-ubyte.gz", &bad);
    let e = data::read_images(&path).unwrap_err();
    assert!(matches!(e.root(), DataError::Decompress { .. }), "{e:?}");
    assert_msg(&e, &["train-images-idx3-ubyte.gz", "gzip decompression failed"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_file() {
    let dir = temp_dir("empty-file");
    let path = write(&dir, "t10k-labels-idx1-ubyte", &[]);
    let e = data::read_labels(&path).unwrap_err();
    assert!(matches!(e.root(), DataError::EmptyInput { .. }), "{e:?}");
    assert_msg(&e, &["t10k-labels-idx1-ubyte", "empty input", "0 bytes"]);
    assert_msg(&data::parse_images(&[]).unwrap_err(), &["empty input", "images"]);
    // An empty gzip stream decompresses to nothing.
    assert_msg(&data::parse_labels(&gzip(&[])).unwrap_err(), &["empty input"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file() {
    let dir = temp_dir("missing-file");
    let path = dir.join("no-such-file-idx3-ubyte");
    let e = data::read_images(&path).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }), "{e:?}");
    assert_msg(&e, &["file not found", "no-such-file-idx3-ubyte"]);
    // A folder missing one of the four files.
    write_small_dataset(&dir);
    std::fs::remove_file(dir.join(data::TRAIN_LABELS)).unwrap();
    let e = data::load(Some(&dir)).unwrap_err();
    assert!(matches!(e, DataError::MissingFile { .. }), "{e:?}");
    assert_msg(&e, &["train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz", "missing-file"]);
    // A folder that does not exist.
    let gone = dir.join("nope");
    assert_msg(&data::load(Some(&gone)).unwrap_err(), &["file not found", "nope"]);
    // A folder where a file is expected.
    let e = data::read_images(&dir).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert_msg(&e, &["cannot read", "missing-file"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn huge_dimensions_do_not_allocate_or_panic() {
    let b = idx_images(u32::MAX, u32::MAX, u32::MAX, &[0; 16]);
    let e = data::parse_images(&b).unwrap_err();
    assert!(matches!(e, DataError::TooLarge { .. } | DataError::Truncated { .. }), "{e:?}");
}

#[test]
fn every_prefix_and_byte_flip_is_an_error_not_a_panic() {
    let raw = idx_images(3, 2, 2, &sample_pixels(3, 2, 2));
    let gz = gzip(&raw);
    for input in [&raw, &gz] {
        for len in 0..input.len() {
            assert!(data::parse_images(&input[..len]).is_err(), "prefix of {len} bytes parsed");
            let _ = data::parse_labels(&input[..len]);
        }
        for i in 0..input.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = input.clone();
                b[i] ^= flip;
                let _ = data::parse_images(&b);
                let _ = data::parse_labels(&b);
            }
        }
    }
}
