//! PNG pictures: grids of grayscale images (samples, reconstructions).

use std::path::Path;

/// Writes `n` grayscale images of h×w values in [0, 1] (item-major) as a grid with `cols` columns and a
/// 2-pixel gap. Values outside [0, 1] are clamped; non-finite values show as mid-gray.
pub fn save_grid(path: &Path, images: &[f32], n: usize, h: usize, w: usize, cols: usize) -> Result<(), String> {
    if n == 0 || images.len() < n * h * w {
        return Err(format!("{}: {} values for {n} images of {h}x{w}", path.display(), images.len()));
    }
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut img = image::GrayImage::from_pixel(gw as u32, gh as u32, image::Luma([32u8]));
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                let v = images[i * h * w + y * w + x];
                let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.5 };
                img.put_pixel(
                    (gap + c * (w + gap) + x) as u32,
                    (gap + r * (h + gap) + y) as u32,
                    image::Luma([(v * 255.0).round() as u8]),
                );
            }
        }
    }
    img.save(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Originals and reconstructions interleaved by rows: a row of `cols` originals, then the row of their
/// reconstructions, and so on.
pub fn save_recon(
    path: &Path,
    originals: &[f32],
    recons: &[f32],
    n: usize,
    h: usize,
    w: usize,
    cols: usize,
) -> Result<(), String> {
    let px = h * w;
    let mut out = Vec::with_capacity(2 * n * px);
    for start in (0..n).step_by(cols) {
        let end = (start + cols).min(n);
        for src in [originals, recons] {
            out.extend_from_slice(&src[start * px..end * px]);
            out.resize(out.len() + (start + cols - end) * px, 0.0);
        }
    }
    save_grid(path, &out, out.len() / px, h, w, cols)
}
