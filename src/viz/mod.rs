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
