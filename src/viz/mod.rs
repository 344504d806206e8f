//! PNG pictures: grids of grayscale or RGB images (samples, reconstructions).

use std::path::Path;

/// Writes `n` images of h×w×c values in [0, 1] (item-major, HWC; c = 1 grayscale or 3 RGB) as a grid
/// with `cols` columns and a 2-pixel gap. Values outside [0, 1] are clamped; non-finite values show as
/// mid-gray.
pub fn save_grid(
    path: &Path,
    images: &[f32],
    n: usize,
    (h, w, c): (usize, usize, usize),
    cols: usize,
) -> Result<(), String> {
    if n == 0 || images.len() < n * h * w * c || !(c == 1 || c == 3) {
        return Err(format!("{}: {} values for {n} images of {h}x{w}x{c}", path.display(), images.len()));
    }
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([32u8; 3]));
    let byte = |v: f32| (if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.5 } * 255.0).round() as u8;
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                let at = ((i * h + y) * w + x) * c;
                let px = if c == 3 {
                    [byte(images[at]), byte(images[at + 1]), byte(images[at + 2])]
                } else {
                    [byte(images[at]); 3]
                };
                img.put_pixel((gap + col * (w + gap) + x) as u32, (gap + r * (h + gap) + y) as u32, image::Rgb(px));
            }
        }
    }
    let saved = if c == 3 { img.save(path) } else { image::DynamicImage::ImageRgb8(img).to_luma8().save(path) };
    saved.map_err(|e| format!("{}: {e}", path.display()))
}

/// Originals and reconstructions interleaved by rows: a row of `cols` originals, then the row of their
/// reconstructions, and so on.
pub fn save_recon(
    path: &Path,
    originals: &[f32],
    recons: &[f32],
    n: usize,
    shape: (usize, usize, usize),
    cols: usize,
) -> Result<(), String> {
    let px = shape.0 * shape.1 * shape.2;
    let mut out = Vec::with_capacity(2 * n * px);
    for start in (0..n).step_by(cols) {
        let end = (start + cols).min(n);
        for src in [originals, recons] {
            out.extend_from_slice(&src[start * px..end * px]);
            out.resize(out.len() + (start + cols - end) * px, 0.0);
        }
    }
    save_grid(path, &out, out.len() / px, shape, cols)
}

/// Largest histogram picture accepted, in bytes of RGB pixels (guards against absurd sizes).
const MAX_HISTOGRAM_BYTES: u64 = 1 << 30;

/// Writes a bar chart of code usage: one bar per entry of `counts` (code index along x), 2 pixels wide
/// when there are at most 512 entries and 1 pixel otherwise, with no gaps or margins. The picture is
/// `counts.len() * bar_width` pixels wide and `height + 1` tall: rows `0..height` hold the bars (dark on a
/// light background, bar height `round(count / max(count) * height)`, at least 1 pixel for any positive
/// count) and row `height` is a 1-pixel gray baseline. Entries with count 0 (dead codes) are drawn as a
/// red tick: the baseline under them plus up to 2 pixels above it. Empty input, non-finite or negative
/// counts and a zero height are errors naming `path`.
pub fn save_histogram(path: &Path, counts: &[f64], height: usize) -> Result<(), String> {
    let fail = |why: String| Err(format!("{}: {why}", path.display()));
    if counts.is_empty() {
        return fail("no counts to draw a histogram of".to_string());
    }
    if let Some((i, c)) = counts.iter().enumerate().find(|(_, c)| !c.is_finite() || **c < 0.0) {
        return fail(format!("count {i} is {c}; counts must be finite and non-negative"));
    }
    if height == 0 {
        return fail("histogram height must be at least 1 pixel".to_string());
    }
    let bar = if counts.len() <= 512 { 2 } else { 1 };
    let (w, h) = (counts.len() as u64 * bar as u64, height as u64 + 1);
    if w > u32::MAX as u64 || h > u32::MAX as u64 || w.saturating_mul(h).saturating_mul(3) > MAX_HISTOGRAM_BYTES {
        return fail(format!("a histogram of {w}x{h} pixels is too large"));
    }
    let (light, dark, gray, red) =
        (image::Rgb([245u8; 3]), image::Rgb([40u8; 3]), image::Rgb([150u8; 3]), image::Rgb([220u8, 0, 0]));
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, light);
    for x in 0..w as u32 {
        img.put_pixel(x, height as u32, gray);
    }
    let max = counts.iter().cloned().fold(0.0f64, f64::max);
    for (i, &c) in counts.iter().enumerate() {
        let x0 = (i * bar) as u32;
        let (top, colour) = if c > 0.0 {
            // `max > 0` here; at least one pixel so a rare code is not mistaken for a dead one.
            let px = ((c / max * height as f64).round() as usize).clamp(1, height);
            (height - px, dark)
        } else {
            (height.saturating_sub(2), red)
        };
        let bottom = if c > 0.0 { height } else { height + 1 };
        for x in x0..x0 + bar as u32 {
            for y in top..bottom {
                img.put_pixel(x, y as u32, colour);
            }
        }
    }
    img.save_with_format(path, image::ImageFormat::Png).map_err(|e| format!("{}: {e}", path.display()))
}
