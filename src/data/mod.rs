//! Data sets of the MNIST family (Fashion-MNIST, MNIST, KMNIST) in IDX format.
//!
//! [`load`] reads the four standard files from a folder, or with no folder given the full
//! Fashion-MNIST from the Debian package `dataset-fashion-mnist` when it is installed, and
//! otherwise a small subset bundled with the crate (embedded in the binary).
//!
//! [`folder::load_folder`] builds a data set from a folder of PNG/JPEG/BMP images instead.

pub mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

pub use folder::{load_folder, FolderData, FolderOptions};
pub use idx::{
    is_gzip, parse_images, parse_images_limited, parse_labels, parse_labels_limited, read_images, read_images_limited,
    read_labels, read_labels_limited, DataError, Images, IMAGES_MAGIC, LABELS_MAGIC,
};

/// Where the Debian package `dataset-fashion-mnist` installs the full data set.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Where the bundled subset lives in the source tree (its bytes are also embedded in the binary).
pub const BUNDLED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fashion-mnist-subset");

/// Standard file names (without `.gz`) of the four IDX files of a data set.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

mod bundled {
    pub const TRAIN_IMAGES: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/train-images-idx3-ubyte.gz");
    pub const TRAIN_LABELS: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/train-labels-idx1-ubyte.gz");
    pub const TEST_IMAGES: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/t10k-images-idx3-ubyte.gz");
    pub const TEST_LABELS: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz");
}

/// Images with one label each (`labels.len() == images.n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub images: Images,
    pub labels: Vec<u8>,
}

impl Split {
    /// Pairs images with labels, checking the counts agree. `split` names it in errors.
    pub fn new(split: &'static str, images: Images, labels: Vec<u8>) -> Result<Split, DataError> {
        if images.n != labels.len() {
            return Err(DataError::CountMismatch { split, images: images.n, labels: labels.len() });
        }
        if images.n == 0 {
            return Err(DataError::Empty { detail: format!("the {split} split has no items") });
        }
        Ok(Split { images, labels })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.images.n
    }

    pub fn is_empty(&self) -> bool {
        self.images.n == 0
    }

    /// Keeps only the first `n` items (no-op when there are fewer), for quick runs.
    pub fn truncate(&mut self, n: usize) {
        self.images.truncate(n);
        self.labels.truncate(n);
    }

    /// A copy whose images get a border of `p` zero pixels on every side (labels unchanged).
    pub fn pad(&self, p: usize) -> Split {
        Split { images: self.images.pad(p), labels: self.labels.clone() }
    }
}

/// A train/test pair of splits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Short name: `fashion-mnist`, `fashion-mnist-subset`, or the folder name it was loaded from.
    pub name: String,
    pub train: Split,
    pub test: Split,
    /// The folder the files came from (for the bundled subset: [`BUNDLED_DIR`], although the
    /// bytes are read from the copy embedded in the binary).
    pub source: PathBuf,
    /// True for the small subset bundled with the crate.
    pub subset: bool,
}

impl Dataset {
    /// Image height and width (the same for both splits).
    pub fn image_dims(&self) -> (usize, usize) {
        (self.train.images.rows, self.train.images.cols)
    }

    /// Image height, width and channel count (the same for both splits).
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.train.images.rows, self.train.images.cols, self.train.images.channels)
    }

    /// Pairs two splits, checking their images have the same size and channel count.
    pub fn new(name: String, train: Split, test: Split, source: PathBuf, subset: bool) -> Result<Dataset, DataError> {
        let (a, b) = (&train.images, &test.images);
        if (a.rows, a.cols) != (b.rows, b.cols) {
            return Err(DataError::ShapeMismatch {
                train_rows: a.rows,
                train_cols: a.cols,
                test_rows: b.rows,
                test_cols: b.cols,
            });
        }
        if a.channels != b.channels {
            return Err(DataError::ChannelMismatch { train: a.channels, test: b.channels });
        }
        Ok(Dataset { name, train, test, source, subset })
    }

    /// A copy whose images (both splits) get a border of `p` zero pixels on every side; name, source
    /// and subset flag unchanged.
    pub fn pad(&self, p: usize) -> Dataset {
        Dataset {
            name: self.name.clone(),
            train: self.train.pad(p),
            test: self.test.pad(p),
            source: self.source.clone(),
            subset: self.subset,
        }
    }
}

/// The path of `name` or `name.gz` in `dir`, whichever exists (the uncompressed one first).
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::MissingFile { dir: dir.to_path_buf(), name: name.to_string() })
}

/// Whether `dir` holds all four IDX files (either name form).
pub fn has_dataset(dir: &Path) -> bool {
    [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS].iter().all(|name| find_file(dir, name).is_ok())
}

/// How many items of each split to keep; `None` keeps them all.
///
/// IDX files are then read (and decompressed) only as far as those items: a run on the first few
/// hundred of Fashion-MNIST's 60 000 images skips most of the work (about 3 s on two cores), but a
/// defect in the file after them goes unnoticed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub train: Option<usize>,
    pub test: Option<usize>,
}

impl Limits {
    /// From the config convention, where 0 means no limit.
    pub fn from_counts(train: usize, test: usize) -> Limits {
        let some = |n: usize| (n > 0).then_some(n);
        Limits { train: some(train), test: some(test) }
    }
}

/// Loads the four IDX files from `dir`.
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    load_dir_limited(dir, Limits::default())
}

/// Loads the first `limits` items of each split from the four IDX files in `dir`. The image and
/// label counts the headers declare must still agree.
pub fn load_dir_limited(dir: &Path, limits: Limits) -> Result<Dataset, DataError> {
    if !dir.exists() {
        return Err(DataError::NotFound { path: dir.to_path_buf() });
    }
    let split = |split: &'static str, images: &str, labels: &str, limit: Option<usize>| {
        let (images, n_images) = read_images_limited(find_file(dir, images)?, limit)?;
        let (labels, n_labels) = read_labels_limited(find_file(dir, labels)?, limit)?;
        if n_images != n_labels {
            return Err(DataError::CountMismatch { split, images: n_images, labels: n_labels });
        }
        Split::new(split, images, labels)
    };
    let train = split("train", TRAIN_IMAGES, TRAIN_LABELS, limits.train)?;
    let test = split("test", TEST_IMAGES, TEST_LABELS, limits.test)?;
    Dataset::new(folder_name(dir), train, test, dir.to_path_buf(), false)
}

/// The file name of `dir` (resolving `.` and `..` when possible), or `dataset` when it has none.
pub(crate) fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_string())
}

/// Loads the Fashion-MNIST subset embedded in the binary (first 2000 train, 500 test items).
pub fn load_bundled() -> Result<Dataset, DataError> {
    let file = |name: &str| PathBuf::from(BUNDLED_DIR).join(format!("{name}.gz"));
    let images = |name: &str, b: &[u8]| parse_images(b).map_err(|e| in_file(e, file(name)));
    let labels = |name: &str, b: &[u8]| parse_labels(b).map_err(|e| in_file(e, file(name)));
    let train = Split::new(
        "train",
        images(TRAIN_IMAGES, bundled::TRAIN_IMAGES)?,
        labels(TRAIN_LABELS, bundled::TRAIN_LABELS)?,
    )?;
    let test =
        Split::new("test", images(TEST_IMAGES, bundled::TEST_IMAGES)?, labels(TEST_LABELS, bundled::TEST_LABELS)?)?;
    Dataset::new("fashion-mnist-subset".to_string(), train, test, PathBuf::from(BUNDLED_DIR), true)
}

fn in_file(inner: DataError, path: PathBuf) -> DataError {
    DataError::InFile { path, inner: Box::new(inner) }
}

/// Loads a data set: from `dir` when given; otherwise the full Fashion-MNIST in [`SYSTEM_DIR`]
/// when installed, else the bundled subset (with a warning saying how to install the full set).
pub fn load(dir: Option<&Path>) -> Result<Dataset, DataError> {
    load_limited(dir, Limits::default())
}

/// [`load`], keeping the first `limits` items of each split (read no further in IDX files).
pub fn load_limited(dir: Option<&Path>, limits: Limits) -> Result<Dataset, DataError> {
    if let Some(dir) = dir {
        return load_dir_limited(dir, limits);
    }
    let system = Path::new(SYSTEM_DIR);
    if has_dataset(system) {
        let mut ds = load_dir_limited(system, limits)?;
        ds.name = "fashion-mnist".to_string();
        return Ok(ds);
    }
    let mut ds = load_bundled()?;
    for (split, limit) in [(&mut ds.train, limits.train), (&mut ds.test, limits.test)] {
        if let Some(n) = limit {
            split.truncate(n);
        }
    }
    tracing::warn!(
        "the full Fashion-MNIST data set is not installed in {SYSTEM_DIR}; using the bundled \
         subset ({} train / {} test images). Install the full set with \
         `apt-get install dataset-fashion-mnist` or pass a folder of IDX files",
        ds.train.len(),
        ds.test.len()
    );
    Ok(ds)
}
