//! Reader for the IDX format used by the MNIST family (MNIST, Fashion-MNIST, KMNIST), raw or gzip.
//!
//! An IDX file is a big-endian header followed by the data:
//!
//! ```text
//! magic: u32  = 0x0000_TTDD   (TT = element type, 0x08 = u8; DD = number of dimensions)
//! dims:  u32 × DD             (sizes, outermost first)
//! data:  product(dims) elements, row-major
//! ```
//!
//! Images are `0x00000803` (count, rows, cols) and labels `0x00000801` (count). Gzip input is
//! recognised by its magic bytes `1f 8b` and decompressed as far as its header's sizes say. Every
//! malformed input becomes a [`DataError`]; nothing here panics, and no buffer grows beyond the data
//! that is actually there (a header declaring 2^32 images over a few bytes is refused without
//! allocating).

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

/// IDX magic of a u8 image file: type 0x08 (unsigned byte), 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of a u8 label file: type 0x08 (unsigned byte), 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest decompressed size accepted from a gzip stream (guards against decompression bombs; the
/// output beyond an IDX header's declared size is only counted, never stored).
pub const MAX_DECOMPRESSED: u64 = 1 << 31;

/// Every way loading a data set can fail, as a value.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("file not found: {}", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("no {name} or {name}.gz in {}", dir.display())]
    MissingFile { dir: PathBuf, name: String },
    /// Wraps an error found while parsing a file, to say which file it was.
    #[error("{}: {inner}", path.display())]
    InFile { path: PathBuf, inner: Box<DataError> },
    #[error("empty input: 0 bytes where an IDX {what} file was expected")]
    EmptyInput { what: &'static str },
    #[error("bad magic number for IDX {what}: expected {expected:#010x}, found {found:#010x} ({})", describe_magic(*found))]
    BadMagic { what: &'static str, expected: u32, found: u32 },
    #[error("wrong number of dimensions for IDX {what}: expected {expected}, found {found}{}", if *found == 1 { " (is this a labels file?)" } else if *found == 3 { " (is this an images file?)" } else { "" })]
    WrongDims { what: &'static str, expected: u8, found: u8 },
    #[error("truncated {what}: expected {expected} bytes, found {actual}")]
    Truncated { what: &'static str, expected: usize, actual: usize },
    #[error("trailing garbage after IDX {what}: expected {expected} bytes, found {actual} ({} extra)", actual - expected)]
    TrailingGarbage { what: &'static str, expected: usize, actual: usize },
    #[error("IDX {what} too large: {detail}")]
    TooLarge { what: &'static str, detail: String },
    #[error("empty dataset: {detail}")]
    Empty { detail: String },
    #[error("count mismatch in the {split} split: {images} images but {labels} labels")]
    CountMismatch { split: &'static str, images: usize, labels: usize },
    #[error(
        "image size mismatch: train images are {train_rows}x{train_cols}, test images are {test_rows}x{test_cols}"
    )]
    ShapeMismatch { train_rows: usize, train_cols: usize, test_rows: usize, test_cols: usize },
    #[error("channel count mismatch: train images have {train} channels, test images have {test}")]
    ChannelMismatch { train: usize, test: usize },
    #[error("gzip decompression failed: {error}")]
    Decompress { error: std::io::Error },
    /// An image file (of an image-folder data set) that could not be read or decoded.
    #[error("cannot load image {}: {error}", path.display())]
    BadImage { path: PathBuf, error: String },
    /// An invalid loader option.
    #[error("bad option: {0}")]
    BadOption(String),
    /// An image folder with more class folders than labels can tell apart (labels are u8).
    #[error("{} has {count} classes; at most 256 are supported (labels are u8)", dir.display())]
    TooManyClasses { dir: PathBuf, count: usize },
}

impl DataError {
    /// The underlying error, looking through [`DataError::InFile`] wrappers.
    pub fn root(&self) -> &DataError {
        match self {
            DataError::InFile { inner, .. } => inner.root(),
            other => other,
        }
    }

    fn in_file(self, path: &Path) -> DataError {
        match self {
            // Errors about the file itself already name it.
            e @ (DataError::NotFound { .. } | DataError::Io { .. }) => e,
            e => DataError::InFile { path: path.to_path_buf(), inner: Box::new(e) },
        }
    }
}

fn describe_magic(magic: u32) -> String {
    if magic >> 16 != 0 {
        return "not an IDX header".to_string();
    }
    let ty = match (magic >> 8) & 0xff {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown element type",
    };
    format!("{ty} data, {} dimensions", magic & 0xff)
}

/// A set of equally sized u8 images, item-major: image `i` is
/// `pixels[i * d .. (i + 1) * d]` with `d = rows * cols * channels`, each row-major with the
/// channels interleaved (HWC: the `channels` values of a pixel are adjacent). IDX data is
/// grey-scale (`channels == 1`); image folders may give 1 (grey) or 3 (RGB) channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    /// Values per image (`rows * cols * channels`; "pixels" counts each channel value).
    pub fn pixels_per_image(&self) -> usize {
        self.rows.saturating_mul(self.cols).saturating_mul(self.channels)
    }

    /// The pixels of image `i` (HWC-interleaved), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let d = self.pixels_per_image();
        if i >= self.n {
            return None;
        }
        let start = i.checked_mul(d)?;
        self.pixels.get(start..start.checked_add(d)?)
    }

    /// All pixels scaled to `[0, 1]` as f32, same layout as `pixels`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| p as f32 / 255.0).collect()
    }

    /// Keeps only the first `n` images (no-op when there are fewer).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n {
            self.n = n;
            self.pixels.truncate(n.saturating_mul(self.pixels_per_image()));
        }
    }

    /// A copy with a border of `p` zero pixels on every side of every image: `rows + 2p` by
    /// `cols + 2p`, same count and channels. `p == 0` gives an identical copy.
    pub fn pad(&self, p: usize) -> Images {
        if p == 0 {
            return self.clone();
        }
        let (rows, cols, c) = (self.rows + 2 * p, self.cols + 2 * p, self.channels);
        let (src_row, dst_row) = (self.cols * c, cols * c);
        let mut pixels = vec![0u8; self.n * rows * dst_row];
        // `image(i)` is `None` only when `pixels` is shorter than the shape says; such an image stays black.
        for (i, image) in (0..self.n).filter_map(|i| Some((i, self.image(i)?))) {
            let dst = i * rows * dst_row;
            for (y, row) in image.chunks_exact(src_row.max(1)).enumerate() {
                let to = dst + (y + p) * dst_row + p * c;
                pixels[to..to + row.len()].copy_from_slice(row);
            }
        }
        Images { n: self.n, rows, cols, channels: c, pixels }
    }
}

/// Whether `bytes` begin with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// What the header of an IDX u8 file declares.
struct Header {
    dims: Vec<usize>,
    /// Bytes of the header (magic and sizes).
    len: usize,
    /// Bytes of data that must follow: the product of `dims`.
    data_len: usize,
}

/// Parses the header at the start of `bytes` (which may hold only a prefix of the file), checking
/// the magic, the number of dimensions and that the declared size fits in a `usize`.
fn parse_header(bytes: &[u8], what: &'static str, expected_magic: u32) -> Result<Header, DataError> {
    if bytes.is_empty() {
        return Err(DataError::EmptyInput { what });
    }
    if bytes.len() < 4 {
        return Err(DataError::Truncated { what: "header", expected: 4, actual: bytes.len() });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic >> 8 != expected_magic >> 8 {
        return Err(DataError::BadMagic { what, expected: expected_magic, found: magic });
    }
    let ndims = (magic & 0xff) as u8;
    let expected_dims = (expected_magic & 0xff) as u8;
    if ndims != expected_dims {
        return Err(DataError::WrongDims { what, expected: expected_dims, found: ndims });
    }
    let len = 4 + 4 * ndims as usize;
    if bytes.len() < len {
        return Err(DataError::Truncated { what: "header", expected: len, actual: bytes.len() });
    }
    let dims: Vec<usize> =
        bytes[4..len].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let data_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|d| d.checked_add(len).map(|_| d))
        .ok_or_else(|| DataError::TooLarge { what, detail: format!("dimensions {dims:?} overflow usize") })?;
    Ok(Header { dims, len, data_len })
}

/// Too few data bytes after the header of an IDX `what` ("images" or "labels") file.
fn truncated_data(what: &'static str, expected: usize, actual: usize) -> DataError {
    let what = if what == "images" { "pixel data" } else { "label data" };
    DataError::Truncated { what, expected, actual }
}

/// Checks that `total` bytes (the header's `h.len` included) are exactly what `h` declares.
fn check_length(h: &Header, what: &'static str, total: usize) -> Result<(), DataError> {
    let data = total - h.len;
    if data < h.data_len {
        return Err(truncated_data(what, h.data_len, data));
    }
    if data > h.data_len {
        return Err(DataError::TrailingGarbage { what, expected: h.len + h.data_len, actual: total });
    }
    Ok(())
}

/// Parses an IDX u8 file (raw or gzip) with the magic `expected_magic`; returns the declared sizes and
/// the data that follows the header: exactly `product(sizes)` bytes, or with `max_items` the first
/// `min(sizes[0], max_items)` items only.
///
/// Nothing is allocated beyond what the input holds: raw input is borrowed, and a gzip stream is
/// decompressed header first, then only up to the size that header declares (refused above
/// [`MAX_DECOMPRESSED`]); any further output is counted, not kept, to report trailing garbage.
/// A decompression error anywhere in the stream takes precedence over what the header says.
///
/// With `max_items`, a gzip stream is decompressed only as far as those items, and the length is only
/// checked to hold them: a defect after them (truncation, trailing bytes, a bad checksum) goes unseen.
fn parse_u8_idx<'a>(
    bytes: &'a [u8],
    what: &'static str,
    expected_magic: u32,
    max_items: Option<usize>,
) -> Result<(Vec<usize>, Cow<'a, [u8]>), DataError> {
    // Bytes of data wanted: all of it, or the first `max_items` items.
    let wanted = |h: &Header| match max_items {
        Some(m) if m < h.dims[0] => Some(m * (h.data_len / h.dims[0])),
        _ => None,
    };
    if !is_gzip(bytes) {
        let h = parse_header(bytes, what, expected_magic)?;
        if let Some(want) = wanted(&h) {
            let have = bytes.len() - h.len;
            return match bytes.get(h.len..h.len + want) {
                Some(data) => Ok((h.dims, Cow::Borrowed(data))),
                None => Err(truncated_data(what, want, have)),
            };
        }
        check_length(&h, what, bytes.len())?;
        return Ok((h.dims, Cow::Borrowed(&bytes[h.len..])));
    }
    let decompress = |error| DataError::Decompress { error };
    let mut dec = flate2::read::MultiGzDecoder::new(bytes);
    // The rest of the stream, decompressed and counted but not kept.
    let count_rest = |dec: &mut flate2::read::MultiGzDecoder<&[u8]>| {
        std::io::copy(&mut dec.take(MAX_DECOMPRESSED), &mut std::io::sink()).map_err(decompress)
    };
    let header_len = 4 + 4 * (expected_magic & 0xff) as u64;
    let mut out = Vec::new();
    (&mut dec).take(header_len).read_to_end(&mut out).map_err(decompress)?;
    let h = match parse_header(&out, what, expected_magic) {
        Ok(h) => h,
        Err(e) => {
            count_rest(&mut dec)?;
            return Err(e);
        }
    };
    let want = wanted(&h);
    let total = h.len as u64 + want.unwrap_or(h.data_len) as u64;
    if total > MAX_DECOMPRESSED {
        return Err(DataError::TooLarge {
            what,
            detail: format!(
                "the header declares {total} bytes ({:?}), more than the {MAX_DECOMPRESSED} accepted from a gzip stream",
                h.dims
            ),
        });
    }
    // `out` grows with the output actually produced, never to more than the declared size.
    out.clear();
    if let Some(want) = want {
        (&mut dec).take(want as u64).read_to_end(&mut out).map_err(decompress)?;
        if out.len() < want {
            return Err(truncated_data(what, want, out.len()));
        }
        return Ok((h.dims, Cow::Owned(out)));
    }
    (&mut dec).take(h.data_len as u64).read_to_end(&mut out).map_err(decompress)?;
    let extra = count_rest(&mut dec)?;
    let actual = usize::try_from(extra).ok().and_then(|e| (h.len + out.len()).checked_add(e)).unwrap_or(usize::MAX);
    check_length(&h, what, actual)?;
    Ok((h.dims, Cow::Owned(out)))
}

/// Parses an IDX u8 image file (magic `0x00000803`), raw or gzip.
pub fn parse_images(bytes: &[u8]) -> Result<Images, DataError> {
    parse_images_limited(bytes, None).map(|(images, _)| images)
}

/// Like [`parse_images`], keeping (and with gzip, decompressing) only the first `max_items` images
/// when given; also returns the count the header declares.
pub fn parse_images_limited(bytes: &[u8], max_items: Option<usize>) -> Result<(Images, usize), DataError> {
    let (dims, data) = parse_u8_idx(bytes, "images", IMAGES_MAGIC, max_items)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 {
        return Err(DataError::Empty { detail: format!("the images file holds 0 images of {rows}x{cols}") });
    }
    if rows == 0 || cols == 0 {
        return Err(DataError::Empty { detail: format!("the images file holds {n} images of size {rows}x{cols}") });
    }
    let kept = max_items.map_or(n, |m| m.min(n));
    Ok((Images { n: kept, rows, cols, channels: 1, pixels: data.into_owned() }, n))
}

/// Parses an IDX u8 label file (magic `0x00000801`), raw or gzip.
pub fn parse_labels(bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    parse_labels_limited(bytes, None).map(|(labels, _)| labels)
}

/// Like [`parse_labels`], keeping only the first `max_items` labels when given; also returns the
/// count the header declares.
pub fn parse_labels_limited(bytes: &[u8], max_items: Option<usize>) -> Result<(Vec<u8>, usize), DataError> {
    let (dims, data) = parse_u8_idx(bytes, "labels", LABELS_MAGIC, max_items)?;
    if dims[0] == 0 {
        return Err(DataError::Empty { detail: "the labels file holds 0 labels".to_string() });
    }
    Ok((data.into_owned(), dims[0]))
}

/// Reads a whole file, telling "not found" apart from other failures.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound { path: path.to_path_buf() },
        _ => DataError::Io { path: path.to_path_buf(), error },
    })
}

/// Reads an IDX u8 image file, raw or gzip. Parse errors are wrapped in [`DataError::InFile`].
pub fn read_images(path: impl AsRef<Path>) -> Result<Images, DataError> {
    read_images_limited(path, None).map(|(images, _)| images)
}

/// Reads an IDX u8 label file, raw or gzip. Parse errors are wrapped in [`DataError::InFile`].
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    read_labels_limited(path, None).map(|(labels, _)| labels)
}

/// [`read_images`] through [`parse_images_limited`].
pub fn read_images_limited(path: impl AsRef<Path>, max_items: Option<usize>) -> Result<(Images, usize), DataError> {
    let path = path.as_ref();
    read_file(path).and_then(|b| parse_images_limited(&b, max_items)).map_err(|e| e.in_file(path))
}

/// [`read_labels`] through [`parse_labels_limited`].
pub fn read_labels_limited(path: impl AsRef<Path>, max_items: Option<usize>) -> Result<(Vec<u8>, usize), DataError> {
    let path = path.as_ref();
    read_file(path).and_then(|b| parse_labels_limited(&b, max_items)).map_err(|e| e.in_file(path))
}
