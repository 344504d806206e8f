//! A data set from a folder of images (PNG, JPEG, BMP), labelled by sub-folder.
//!
//! # Which files
//!
//! Every file under the folder, at any depth, whose extension is `png`, `jpg`, `jpeg` or `bmp`
//! (any case). Names starting with `.` (hidden files and folders) are ignored, and so is
//! everything inside a hidden folder. Symbolic links to files are read; symbolic links to
//! folders are never followed (so link loops cannot hang the loader). Files are taken in path
//! order, so loading is deterministic.
//!
//! # Classes (labels)
//!
//! Each top-level sub-folder that holds at least one image file (at any depth) is a class;
//! the classes are sorted by folder name and a class's label is its index. Image files directly
//! in the folder itself belong to a class named `""`, which, when there are such files, comes
//! after all the named classes. A folder with no sub-folders is therefore one class, `""`.
//! Labels are u8, so more than 256 classes is an error ([`DataError::TooManyClasses`]).
//!
//! # Splits
//!
//! When the folder's (non-hidden) sub-folders are exactly `train` and `test` (case-sensitive),
//! those are the two splits, and the class rule above applies inside each of them; classes are
//! matched by name across the two (the class list is the sorted union, `""` last). Image files
//! directly in the top folder are then ignored (with a warning), and
//! [`FolderOptions::test_fraction`] and [`FolderOptions::seed`] are not used.
//!
//! Otherwise the usable images (those that decoded; skipped files take no part) are split at
//! random, deterministically: their path-ordered list is shuffled by a Fisher–Yates shuffle
//! driven by splitmix64 seeded with [`FolderOptions::seed`], the first
//! `round(test_fraction * n)` go to the test split, clamped to `1..=n - 1`, and the rest to the
//! train split. This needs at least 2 usable images. Within each split the items keep their
//! path order (the trainer shuffles batches itself).
//!
//! # Pixels
//!
//! Each file is decoded with the `image` crate (format guessed from the content, else from the
//! extension), converted to 8-bit grey (`channels == 1`, luma with the Rec. 709 weights) or
//! 8-bit RGB (`channels == 3`), dropping any alpha, centre-cropped to the target aspect ratio
//! (the largest centred crop with aspect `width / height`), and resized to `width × height`
//! with a triangle (bilinear) filter. Converting before resizing keeps alpha out of the
//! filter and gives the same result as converting after, up to rounding. The target size is
//! required: there is no "keep the native size" mode, since all images of a data set must have
//! one size.
//!
//! # Bad files
//!
//! A file that cannot be read or decoded is a [`DataError::BadImage`] naming it. With
//! [`FolderOptions::skip_bad`] (the default) it is logged with a warning, listed in
//! [`FolderData::skipped`], and left out; without, loading stops with that error (the first bad
//! file in path order). A sub-folder that cannot be listed is handled the same way. Nothing
//! here panics on any input: a panic inside a decoder is caught and becomes a `BadImage`. A folder
//! without image files that holds some of the four IDX files of [`super::load_dir`] is an IDX folder
//! missing the others: [`DataError::MissingFile`] names the first one missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};

use super::{folder_name, DataError, Dataset, Images, Split};

/// Largest accepted target height or width.
pub const MAX_SIDE: usize = 4096;

/// File extensions (lower case) of the image files that are loaded.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// How to turn a folder of images into a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderOptions {
    /// Target image height in pixels (1..=4096).
    pub height: usize,
    /// Target image width in pixels (1..=4096).
    pub width: usize,
    /// 1 (grey-scale) or 3 (RGB).
    pub channels: usize,
    /// Share of the images put in the test split when the folder has no `train`/`test`
    /// sub-folders, in `[0, 1)`.
    pub test_fraction: f64,
    /// Skip files that cannot be read or decoded (with a warning) instead of failing.
    pub skip_bad: bool,
    /// Seed of the random train/test split.
    pub seed: u64,
}

impl Default for FolderOptions {
    /// 28×28 grey-scale (like Fashion-MNIST), 10% test, bad files skipped, seed 0.
    fn default() -> Self {
        FolderOptions { height: 28, width: 28, channels: 1, test_fraction: 0.1, skip_bad: true, seed: 0 }
    }
}

impl FolderOptions {
    /// Checks every option is in range.
    pub fn validate(&self) -> Result<(), DataError> {
        for (what, v) in [("height", self.height), ("width", self.width)] {
            if !(1..=MAX_SIDE).contains(&v) {
                return Err(DataError::BadOption(format!("image {what} must be in 1..={MAX_SIDE}, got {v}")));
            }
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(DataError::BadOption(format!("channels must be 1 (grey) or 3 (RGB), got {}", self.channels)));
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(DataError::BadOption(format!("test fraction must be in [0, 1), got {}", self.test_fraction)));
        }
        Ok(())
    }
}

/// A data set loaded from an image folder, with what the labels mean and what was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderData {
    /// The images; `name` is the folder's name, `source` the folder, `subset` false.
    pub dataset: Dataset,
    /// Class names: label `i` is `classes[i]` (a sub-folder name, or `""` for files directly
    /// in the folder).
    pub classes: Vec<String>,
    /// Files (or sub-folders) left out because they could not be read or decoded, with the
    /// reason, in path order. Always empty when `skip_bad` is off (loading fails instead).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Loads the images under `dir` as a data set; see the [module docs](self) for the rules.
pub fn load_folder(dir: &Path, opts: &FolderOptions) -> Result<FolderData, DataError> {
    opts.validate()?;
    let mut skipped = Vec::new();
    let top = list_dir(dir).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound { path: dir.to_path_buf() },
        _ => DataError::Io { path: dir.to_path_buf(), error },
    })?;
    let sub_names: Vec<&str> = top.dirs.iter().filter_map(|d| d.file_name().and_then(|n| n.to_str())).collect();
    let train_test = top.dirs.len() == 2 && sub_names == ["test", "train"];

    // (split, class name, path) for every image file: split 0 = train, 1 = test, 2 = not yet split.
    let mut files: Vec<(usize, String, PathBuf)> = Vec::new();
    if train_test {
        if !top.files.is_empty() {
            tracing::warn!(
                "{}: ignoring {} image file(s) next to the train and test folders",
                dir.display(),
                top.files.len()
            );
        }
        for (split, name) in [(0, "train"), (1, "test")] {
            let sub = dir.join(name);
            let listing = list_dir(&sub).map_err(|error| DataError::Io { path: sub.clone(), error })?;
            scan_classes(listing, split, opts.skip_bad, &mut files, &mut skipped)?;
        }
    } else {
        scan_classes(top, 2, opts.skip_bad, &mut files, &mut skipped)?;
    }

    // Classes: sorted names, "" last.
    let names: BTreeSet<&str> = files.iter().map(|(_, c, _)| c.as_str()).collect();
    let mut classes: Vec<String> = names.iter().filter(|c| !c.is_empty()).map(|c| c.to_string()).collect();
    if names.contains("") {
        classes.push(String::new());
    }
    if classes.len() > 256 {
        return Err(DataError::TooManyClasses { dir: dir.to_path_buf(), count: classes.len() });
    }
    if files.is_empty() {
        // A folder of IDX files that lacks one of the four is not an image folder: name the missing file.
        let idx = [super::TRAIN_IMAGES, super::TRAIN_LABELS, super::TEST_IMAGES, super::TEST_LABELS];
        if idx.iter().any(|name| super::find_file(dir, name).is_ok()) {
            if let Some(Err(e)) = idx.iter().map(|name| super::find_file(dir, name)).find(Result::is_err) {
                return Err(e);
            }
        }
        return Err(DataError::Empty {
            detail: format!("no image files ({}) in {}", IMAGE_EXTENSIONS.join(", "), dir.display()),
        });
    }

    // Decode everything (in parallel, results in file order), then keep the usable ones.
    let paths: Vec<&Path> = files.iter().map(|(_, _, p)| p.as_path()).collect();
    let decoded = decode_all(&paths, opts);
    let mut items: Vec<(usize, u8, Vec<u8>)> = Vec::with_capacity(files.len());
    for ((split, class, path), result) in files.iter().zip(decoded) {
        match result {
            Ok(pixels) => {
                // The class is in `classes` by construction, and there are at most 256.
                let label = classes.iter().position(|c| c == class).unwrap_or(0) as u8;
                items.push((*split, label, pixels));
            }
            Err(error) if opts.skip_bad => {
                tracing::warn!("skipping {}: {error}", path.display());
                skipped.push((path.clone(), error));
            }
            Err(error) => return Err(DataError::BadImage { path: path.clone(), error }),
        }
    }
    skipped.sort();
    let skipped_note = if skipped.is_empty() { String::new() } else { format!(" ({} skipped)", skipped.len()) };

    if !train_test {
        let n = items.len();
        if n < 2 {
            return Err(DataError::Empty {
                detail: format!(
                    "{} holds {n} usable image(s){skipped_note}; at least 2 are needed for a train and a test split",
                    dir.display()
                ),
            });
        }
        let n_test = ((opts.test_fraction * n as f64).round() as usize).clamp(1, n - 1);
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, opts.seed);
        let mut is_test = vec![false; n];
        for &i in &order[..n_test] {
            is_test[i] = true;
        }
        for (item, test) in items.iter_mut().zip(is_test) {
            item.0 = usize::from(test);
        }
    }

    let (h, w, c) = (opts.height, opts.width, opts.channels);
    let mut make_split = |which: usize, split: &'static str| -> Result<Split, DataError> {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for (_, label, px) in items.iter_mut().filter(|it| it.0 == which) {
            pixels.append(px);
            labels.push(*label);
        }
        if labels.is_empty() {
            return Err(DataError::Empty {
                detail: format!("the {split} split of {} has no usable images{skipped_note}", dir.display()),
            });
        }
        Split::new(split, Images { n: labels.len(), rows: h, cols: w, channels: c, pixels }, labels)
    };
    let train = make_split(0, "train")?;
    let test = make_split(1, "test")?;
    tracing::info!(
        "loaded {} train and {} test images of {h}x{w}x{c} in {} classes from {}{skipped_note}",
        train.len(),
        test.len(),
        classes.len(),
        dir.display()
    );
    let dataset = Dataset::new(folder_name(dir), train, test, dir.to_path_buf(), false)?;
    Ok(FolderData { dataset, classes, skipped })
}

/// The non-hidden entries of one folder, sorted by path.
struct Listing {
    /// Image files (by extension), including symbolic links to files.
    files: Vec<PathBuf>,
    /// Sub-folders (never symbolic links).
    dirs: Vec<PathBuf>,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn list_dir(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing { files: Vec::new(), dirs: Vec::new() };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // `DirEntry::file_type` does not follow symbolic links.
        let ty = entry.file_type()?;
        if ty.is_dir() {
            listing.dirs.push(path);
        } else if is_image_file(&path) {
            if ty.is_symlink() && !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                tracing::debug!("not following {} (a link to a folder, or broken)", path.display());
                continue;
            }
            listing.files.push(path);
        }
    }
    listing.files.sort();
    listing.dirs.sort();
    Ok(listing)
}

/// Adds the image files of `listing` to `out`: files directly in it as class `""`, files under
/// each sub-folder (at any depth) as the class named after that sub-folder.
fn scan_classes(
    listing: Listing,
    split: usize,
    skip_bad: bool,
    out: &mut Vec<(usize, String, PathBuf)>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<(), DataError> {
    for sub in listing.dirs {
        let class = sub.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut found = Vec::new();
        walk(&sub, skip_bad, &mut found, skipped)?;
        out.extend(found.into_iter().map(|p| (split, class.clone(), p)));
    }
    out.extend(listing.files.into_iter().map(|p| (split, String::new(), p)));
    Ok(())
}

/// All image files under `root` (iteratively, not following links to folders), sorted.
fn walk(
    root: &Path,
    skip_bad: bool,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<(), DataError> {
    let mut stack = vec![root.to_path_buf()];
    let start = out.len();
    while let Some(dir) = stack.pop() {
        match list_dir(&dir) {
            Ok(listing) => {
                out.extend(listing.files);
                stack.extend(listing.dirs);
            }
            Err(error) if skip_bad => {
                tracing::warn!("skipping folder {}: {error}", dir.display());
                skipped.push((dir, error.to_string()));
            }
            Err(error) => return Err(DataError::Io { path: dir, error }),
        }
    }
    out[start..].sort();
    Ok(())
}

/// Decodes every file, using all cores; the results are in the order of `paths`.
fn decode_all(paths: &[&Path], opts: &FolderOptions) -> Vec<Result<Vec<u8>, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 32).min(paths.len());
    if threads <= 1 {
        return paths.iter().map(|p| decode(p, opts)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Vec<u8>, String>>> = (0..paths.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        done.push((i, decode(path, opts)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            // `decode` catches panics, so a worker cannot fail; if one did, its files stay `None`.
            for (i, r) in worker.join().unwrap_or_default() {
                results[i] = Some(r);
            }
        }
    });
    results.into_iter().map(|r| r.unwrap_or_else(|| Err("the decoding thread failed".to_string()))).collect()
}

/// Decodes one file into `height × width × channels` u8 values (HWC), or says why it cannot.
fn decode(path: &Path, opts: &FolderOptions) -> Result<Vec<u8>, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_inner(path, opts))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("the image decoder panicked: {what}"))
        }
    }
}

fn decode_inner(path: &Path, opts: &FolderOptions) -> Result<Vec<u8>, String> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(format!("the image has no pixels ({w}x{h})"));
    }
    let (x, y, cw, ch) = centre_crop(w, h, opts.width as u32, opts.height as u32);
    let (tw, th) = (opts.width as u32, opts.height as u32);
    Ok(if opts.channels == 1 {
        let grey = img.to_luma8();
        imageops::resize(&*imageops::crop_imm(&grey, x, y, cw, ch), tw, th, FilterType::Triangle).into_raw()
    } else {
        let rgb = img.to_rgb8();
        imageops::resize(&*imageops::crop_imm(&rgb, x, y, cw, ch), tw, th, FilterType::Triangle).into_raw()
    })
}

/// The largest centred `(x, y, width, height)` crop of a `w × h` image with the aspect ratio
/// `tw / th` (rounded to whole pixels, at least 1×1).
pub fn centre_crop(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32, u32, u32) {
    let (w64, h64, tw64, th64) = (w as u64, h as u64, tw.max(1) as u64, th.max(1) as u64);
    let (cw, ch) = if w64 * th64 > h64 * tw64 {
        // Wider than the target: keep the full height.
        (((2 * h64 * tw64 + th64) / (2 * th64)).clamp(1, w64), h64)
    } else {
        // Taller (or the same): keep the full width.
        (w64, ((2 * w64 * th64 + tw64) / (2 * tw64)).clamp(1, h64))
    };
    let (cw, ch) = (cw as u32, ch as u32);
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// splitmix64 (Steele, Lea & Flood 2014): a tiny, good-enough PRNG for shuffling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for any realistic `n`).
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Fisher–Yates shuffle driven by splitmix64 seeded with `seed`.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}
