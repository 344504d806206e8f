//! PNG pictures: grids of grayscale or RGB images (samples, reconstructions), code-usage histograms and
//! latent scatter plots; the latent points of manifold and interpolation pictures.

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

/// Groups of rows: a row of `cols` images from each of `sources` in turn (e.g. clean, corrupted,
/// reconstructed), for images `0..cols`, then the same for the next `cols`, and so on.
pub fn save_rows(
    path: &Path,
    sources: &[&[f32]],
    n: usize,
    shape: (usize, usize, usize),
    cols: usize,
) -> Result<(), String> {
    let px = shape.0 * shape.1 * shape.2;
    let cols = cols.max(1);
    if sources.iter().any(|s| s.len() < n * px) {
        return Err(format!(
            "{}: fewer than {n} images of {}x{}x{} in a source",
            path.display(),
            shape.0,
            shape.1,
            shape.2
        ));
    }
    let mut out = Vec::with_capacity(sources.len() * n.next_multiple_of(cols) * px);
    for start in (0..n).step_by(cols) {
        let end = (start + cols).min(n);
        for src in sources {
            out.extend_from_slice(&src[start * px..end * px]);
            out.resize(out.len() + (start + cols - end) * px, 0.0);
        }
    }
    save_grid(path, &out, out.len() / px.max(1), shape, cols)
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

/// Φ⁻¹(p), the standard normal quantile, by Wichura's algorithm AS241 (PPND16, Applied Statistics 37,
/// 1988): rational approximations accurate to about 1e-16 relative. Φ⁻¹(0) = −∞, Φ⁻¹(1) = +∞, and p
/// outside [0, 1] or NaN gives NaN.
// The coefficients are quoted with the paper's 20 digits.
#[allow(clippy::excessive_precision)]
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    let horner = |c: &[f64; 8], x: f64| c.iter().rev().fold(0.0, |acc, &k| acc * x + k);
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&A, r) / horner(&B, r);
    }
    let r = (-(if q < 0.0 { p } else { 1.0 - p }).ln()).sqrt();
    let x =
        if r <= 5.0 { horner(&C, r - 1.6) / horner(&D, r - 1.6) } else { horner(&E, r - 5.0) / horner(&F, r - 5.0) };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

/// The latent points of a 2-D "learned manifold" picture (Kingma & Welling 2014, Fig. 4): a side×side
/// grid of z = (Φ⁻¹(u_c), Φ⁻¹(u_r)) with u_k = (k + ½)/side evenly spaced inside (0, 1), so each cell
/// holds the same prior mass. Row-major [side², 2] (z1, z2), point r·side + c for grid row r and column c:
/// z1 grows along a row (left to right) and z2 falls from the top row to the bottom one, so the decoded
/// images drawn with `save_grid(.., cols = side)` read like a plot with z1 on x and z2 on y. The grid is
/// exactly symmetric about 0 (and an odd side puts (0, 0) in the middle). Empty for side 0.
pub fn manifold_points(side: usize) -> Vec<f32> {
    let quantile = |k: usize| {
        // Mirror the upper half so that the values are exactly symmetric.
        let lower = k.min(side - 1 - k);
        let z = inverse_normal_cdf((lower as f64 + 0.5) / side as f64);
        if k == lower {
            z
        } else {
            -z
        }
    };
    let axis: Vec<f32> = (0..side).map(|k| quantile(k) as f32).collect();
    let mut out = Vec::with_capacity(2 * side * side);
    for r in 0..side {
        for &z1 in &axis {
            out.extend_from_slice(&[z1, axis[side - 1 - r]]);
        }
    }
    out
}

/// `steps` latent vectors on the segment from `a` to `b`, both ends included ((1 − t)·a + t·b with
/// t = k/(steps − 1), computed in f64, so the first row is exactly `a` and the last exactly `b`),
/// row-major [steps, Z]. One step gives `a` alone, zero steps nothing. Panics when `a` and `b` differ in
/// length (two latent vectors of one model cannot).
pub fn interpolation_points(a: &[f32], b: &[f32], steps: usize) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "interpolation between latent vectors of different lengths");
    let mut out = Vec::with_capacity(steps * a.len());
    for k in 0..steps {
        let t = if steps > 1 { k as f64 / (steps - 1) as f64 } else { 0.0 };
        out.extend(a.iter().zip(b).map(|(&x, &y)| ((1.0 - t) * x as f64 + t * y as f64) as f32));
    }
    out
}

/// Matplotlib's "tab10" categorical palette: the colour of labels 0..=9 in [`save_scatter`].
pub const TAB10: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour of labels ≥ 10 in [`save_scatter`] (a lighter gray than tab10's label 7).
pub const OTHER_LABEL_COLOUR: [u8; 3] = [190, 190, 190];

/// The colour of a label in [`save_scatter`].
pub fn label_colour(label: u8) -> [u8; 3] {
    TAB10.get(label as usize).copied().unwrap_or(OTHER_LABEL_COLOUR)
}

/// Smallest and largest scatter plots accepted, in pixels per side.
const SCATTER_MIN: usize = 64;
const SCATTER_MAX: usize = 8192;

/// Where [`save_scatter`] puts things in a picture of `size`×`size` pixels: the plot is the square of
/// `side` pixels at (`left`, `top`) (the legend lies to its right, in the last 22% of the width), and it
/// shows [−range, range]² with (0, 0) in its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScatterFrame {
    pub left: u32,
    pub top: u32,
    pub side: u32,
    pub range: f64,
}

impl ScatterFrame {
    /// Margin in pixels between the plot's edge and the outermost dot centre (room for the 1-pixel
    /// border and a 3×3 dot).
    const MARGIN: u32 = 2;

    /// The frame of a scatter plot of `points` ([N, 2], finite). `range` is 1.05·max|v| rounded up to
    /// 1, 2, 2.5 or 5 times a power of ten (1 when every value is 0).
    pub fn new(size: usize, points: &[f32]) -> ScatterFrame {
        let size = size as u32;
        let side = size - size * 22 / 100;
        let max = points.iter().fold(0.0f64, |m, v| m.max((*v as f64).abs()));
        ScatterFrame { left: 0, top: (size - side) / 2, side, range: nice_ceil(1.05 * max) }
    }

    /// The pixel (x, y) at which the point (v1, v2) is drawn (values beyond the range are pinned to
    /// the edge).
    pub fn to_pixel(&self, v1: f32, v2: f32) -> (u32, u32) {
        let span = (self.side - 1 - 2 * Self::MARGIN) as f64;
        let at = |v: f64| (((v + self.range) / (2.0 * self.range)).clamp(0.0, 1.0) * span).round() as u32;
        (self.left + Self::MARGIN + at(v1 as f64), self.top + Self::MARGIN + at(-(v2 as f64)))
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `v` (1 for zero or non-finite).
fn nice_ceil(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let k = v.log10().floor() as i32;
    for k in [k - 1, k, k + 1] {
        // Dividing by an exact power of ten keeps values like 0.25 exact in print.
        let base = |m: f64| if k >= 0 { m * 10f64.powi(k) } else { m / 10f64.powi(-k) };
        for m in [1.0, 2.0, 2.5, 5.0] {
            if base(m) >= v {
                return base(m);
            }
        }
    }
    v
}

/// Writes a `size`×`size` PNG scatter plot of the 2-D points `points` ([N, 2], e.g. latent means)
/// coloured by `labels` (\[N\]; [`TAB10`] for 0..=9, [`OTHER_LABEL_COLOUR`] for the rest), on white:
/// a square plot on the left showing [−R, R]² (see [`ScatterFrame`]; R is written in small digits at
/// the ends of the positive axes), light gray axes through 0, a 3×3 dot per point (drawn in order, so
/// later points cover earlier ones), and on the right a legend of the labels present: a coloured
/// square and the label's name from `names` (indexed by label; the digit when absent), in a built-in
/// 3×5 pixel font (letters upper-cased, long names cut). Errors, naming `path`: no points, `points`
/// not twice as long as `labels`, a non-finite coordinate, a size outside 64..=8192, or the write.
pub fn save_scatter(
    path: &Path,
    points: &[f32],
    labels: &[u8],
    size: usize,
    names: Option<&[&str]>,
) -> Result<(), String> {
    let fail = |why: String| Err(format!("{}: {why}", path.display()));
    if labels.is_empty() || points.is_empty() {
        return fail("no points to draw a scatter plot of".to_string());
    }
    if points.len() != 2 * labels.len() {
        return fail(format!("{} coordinates for {} labels; need 2 per label", points.len(), labels.len()));
    }
    if let Some(i) = points.iter().position(|v| !v.is_finite()) {
        return fail(format!("point {} has a non-finite coordinate {}", i / 2, points[i]));
    }
    if !(SCATTER_MIN..=SCATTER_MAX).contains(&size) {
        return fail(format!("scatter plot size {size} is outside {SCATTER_MIN}..={SCATTER_MAX} pixels"));
    }
    let frame = ScatterFrame::new(size, points);
    let scale = (size / 320).max(1) as u32;
    let (white, light, border, ink) = ([255u8; 3], [215u8, 215, 215], [170u8, 170, 170], [90u8, 90, 90]);
    let mut img = image::RgbImage::from_pixel(size as u32, size as u32, image::Rgb(white));
    let (l, t, s) = (frame.left, frame.top, frame.side);
    fill(&mut img, l, t, s, 1, border);
    fill(&mut img, l, t + s - 1, s, 1, border);
    fill(&mut img, l, t, 1, s, border);
    fill(&mut img, l + s - 1, t, 1, s, border);
    let (ox, oy) = frame.to_pixel(0.0, 0.0);
    fill(&mut img, l + 1, oy, s - 2, 1, light);
    fill(&mut img, ox, t + 1, 1, s - 2, light);
    let range = format_range(frame.range);
    let text_w = |text: &str| text.chars().count() as u32 * 4 * scale;
    let right = l + s - 1 - ScatterFrame::MARGIN;
    draw_text(&mut img, right.saturating_sub(text_w(&range)), oy + 2 * scale, &range, scale, ink);
    draw_text(&mut img, ox + 2 * scale, t + 1 + ScatterFrame::MARGIN, &range, scale, ink);
    for (p, &label) in points.chunks_exact(2).zip(labels) {
        let (x, y) = frame.to_pixel(p[0], p[1]);
        fill(&mut img, x.saturating_sub(1), y.saturating_sub(1), 3, 3, label_colour(label));
    }
    // Legend: the labels present in increasing order, then "other" for any label ≥ 10.
    let mut present = [false; 11];
    labels.iter().for_each(|&lb| present[(lb as usize).min(10)] = true);
    let (x0, mut y) = (l + s + 3 * scale, t + 1);
    let max_chars = ((size as u32).saturating_sub(x0 + 9 * scale) / (4 * scale)) as usize;
    for (label, _) in present.iter().enumerate().filter(|(_, &p)| p) {
        let colour = if label < 10 { TAB10[label] } else { OTHER_LABEL_COLOUR };
        let text = match (label, names.and_then(|n| n.get(label))) {
            (10, _) => "other".to_string(),
            (_, Some(name)) => name.to_string(),
            _ => label.to_string(),
        };
        let text: String = text.chars().take(max_chars).collect();
        fill(&mut img, x0, y, 5 * scale, 5 * scale, colour);
        draw_text(&mut img, x0 + 8 * scale, y, &text, scale, ink);
        y += 8 * scale;
    }
    img.save_with_format(path, image::ImageFormat::Png).map_err(|e| format!("{}: {e}", path.display()))
}

/// The axis range as written on the plot ("2.5", "0.05", "1E6").
fn format_range(r: f64) -> String {
    if (1e-3..1e5).contains(&r) {
        format!("{r}")
    } else {
        format!("{r:e}")
    }
}

/// Fills a w×h rectangle, clipped to the image.
fn fill(img: &mut image::RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    for yy in y..(y.saturating_add(h)).min(img.height()) {
        for xx in x..(x.saturating_add(w)).min(img.width()) {
            img.put_pixel(xx, yy, image::Rgb(colour));
        }
    }
}

/// Draws `text` with its top-left corner at (x, y) in the 3×5 font, each font pixel `scale`² pixels,
/// 4·scale pixels per character; clipped to the image.
fn draw_text(img: &mut image::RgbImage, x: u32, y: u32, text: &str, scale: u32, colour: [u8; 3]) {
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        let cx = x + i as u32 * 4 * scale;
        for (ry, bits) in rows.iter().enumerate() {
            for rx in 0..3u32 {
                if bits & (0b100 >> rx) != 0 {
                    fill(img, cx + rx * scale, y + ry as u32 * scale, scale, scale, colour);
                }
            }
        }
    }
}

/// The 3×5 bitmap of a character: five rows, bit 2 the left pixel. Letters are upper-cased; characters
/// without a glyph are blank.
fn glyph(ch: char) -> [u8; 5] {
    match ch.to_ascii_uppercase() {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'J' => [0b001, 0b001, 0b001, 0b101, 0b010],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b101, 0b101, 0b101],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'Q' => [0b010, 0b101, 0b101, 0b110, 0b011],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        'Z' => [0b111, 0b001, 0b010, 0b100, 0b111],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '/' => [0b001, 0b001, 0b010, 0b100, 0b100],
        '_' => [0b000, 0b000, 0b000, 0b000, 0b111],
        '(' => [0b010, 0b100, 0b100, 0b100, 0b010],
        ')' => [0b010, 0b001, 0b001, 0b001, 0b010],
        _ => [0; 5],
    }
}
