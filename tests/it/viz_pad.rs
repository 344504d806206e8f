//! Zero padding of image sets (`Images::pad`, `Split::pad`, `Dataset::pad`) and the code-usage
//! histogram picture (`viz::save_histogram`).

use std::path::PathBuf;

use vaegpu::data::{Dataset, Images, Split};
use vaegpu::viz::save_histogram;

/// Two 3x2 RGB images whose values are all distinct and non-zero, so misplaced copies show.
fn two_rgb_images() -> Images {
    let (n, rows, cols, channels) = (2, 3, 2, 3);
    let pixels = (0..n * rows * cols * channels).map(|v| v as u8 + 1).collect();
    Images { n, rows, cols, channels, pixels }
}

#[test]
fn pad_adds_zero_border_and_keeps_interior() {
    let img = two_rgb_images();
    let p = 2;
    let out = img.pad(p);
    assert_eq!((out.n, out.rows, out.cols, out.channels), (2, 7, 6, 3));
    assert_eq!(out.pixels.len(), 2 * 7 * 6 * 3);
    for i in 0..2 {
        let (a, b) = (img.image(i).unwrap(), out.image(i).unwrap());
        for y in 0..7 {
            for x in 0..6 {
                for ch in 0..3 {
                    let got = b[(y * 6 + x) * 3 + ch];
                    let inside = (p..p + 3).contains(&y) && (p..p + 2).contains(&x);
                    if inside {
                        let want = a[((y - p) * 2 + (x - p)) * 3 + ch];
                        assert_eq!(got, want, "image {i} pixel ({y},{x}) channel {ch}");
                    } else {
                        assert_eq!(got, 0, "border of image {i} at ({y},{x}) channel {ch}");
                    }
                }
            }
        }
    }
    // Every original value appears exactly once, and the rest are the border's zeros.
    let nonzero: Vec<u8> = out.pixels.iter().copied().filter(|&v| v != 0).collect();
    assert_eq!(nonzero, img.pixels);
    assert_eq!(img.pad(0), img);
}

#[test]
fn pad_of_split_and_dataset() {
    let split = Split::new("train", two_rgb_images(), vec![3, 7]).unwrap();
    let padded = split.pad(1);
    assert_eq!(padded.labels, vec![3, 7]);
    assert_eq!(padded.images, split.images.pad(1));
    assert_eq!(split.pad(0), split);

    let ds = Dataset::new("toy".to_string(), split.clone(), split.clone(), PathBuf::from("/nowhere"), true).unwrap();
    let pd = ds.pad(3);
    assert_eq!(pd.image_shape(), (9, 8, 3));
    assert_eq!((pd.name.as_str(), pd.source.as_path(), pd.subset), ("toy", ds.source.as_path(), true));
    assert_eq!(pd.train, split.pad(3));
    assert_eq!(pd.test, split.pad(3));
    assert_eq!(ds.pad(0), ds);
}

/// A fresh folder under the system temp dir, unique to this process and `tag`.
fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("vaegpu-viz-pad-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_red(p: image::Rgb<u8>) -> bool {
    p[0] > 150 && p[1] < 80 && p[2] < 80
}

fn is_dark(p: image::Rgb<u8>) -> bool {
    p.0.iter().all(|&v| v < 100)
}

fn is_light(p: image::Rgb<u8>) -> bool {
    p.0.iter().all(|&v| v > 200)
}

#[test]
fn histogram_geometry_bars_and_dead_codes() {
    let dir = temp_dir("hist");
    let path = dir.join("usage.png");
    let counts = [4.0, 0.0, 2.0, 1.0];
    let height = 16;
    save_histogram(&path, &counts, height).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    // 4 entries (<= 512): 2-px bars, no margins; `height` rows of bars plus the baseline row.
    assert_eq!(img.dimensions(), (8, 17));
    let base = height as u32;

    // The dead code (index 1, columns 2..4) is a red tick on the baseline and just above it,
    // with nothing drawn higher up.
    for x in 2..4 {
        assert!(is_red(*img.get_pixel(x, base)), "baseline under dead code at x={x}: {:?}", img.get_pixel(x, base));
        assert!(is_red(*img.get_pixel(x, base - 1)), "tick above dead code at x={x}");
        for y in 0..base - 2 {
            assert!(is_light(*img.get_pixel(x, y)), "dead code column {x} drawn at row {y}");
        }
    }
    // The baseline elsewhere is gray (neither light background, dark bar, nor red).
    for x in [0, 1, 4, 5, 6, 7] {
        let p = *img.get_pixel(x, base);
        assert!(!is_red(p) && !is_dark(p) && !is_light(p), "baseline at x={x} is {p:?}");
    }
    // Bar heights proportional to count / max over `height` rows: 16, 8 and 4 pixels.
    for (i, want) in [(0usize, 16u32), (2, 8), (3, 4)] {
        for x in [2 * i as u32, 2 * i as u32 + 1] {
            let drawn = (0..base).filter(|&y| is_dark(*img.get_pixel(x, y))).count() as u32;
            assert_eq!(drawn, want, "bar {i} at x={x}");
            // Bars stand on the baseline: the lowest `want` rows are dark, those above are light.
            assert!(is_dark(*img.get_pixel(x, base - 1)));
            assert!(want == height as u32 || is_light(*img.get_pixel(x, base - want - 1)));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn histogram_bar_width_and_tiny_counts() {
    let dir = temp_dir("wide");
    let path = dir.join("wide.png");
    // 600 entries (> 512): 1-px bars. A count far below the max still gets one dark pixel.
    let mut counts = vec![1000.0; 600];
    counts[10] = 1.0;
    counts[20] = 0.0;
    save_histogram(&path, &counts, 128).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (600, 129));
    assert!(is_dark(*img.get_pixel(10, 127)) && is_light(*img.get_pixel(10, 126)));
    assert!(is_red(*img.get_pixel(20, 128)));
    assert!(is_dark(*img.get_pixel(19, 0)) && is_dark(*img.get_pixel(21, 0)));

    // Exactly 512 entries still get 2-px bars; all dead codes draw without dividing by zero.
    let path = dir.join("dead.png");
    save_histogram(&path, &[0.0; 512], 1).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1024, 2));
    assert!(img.pixels().all(|&p| is_red(p)));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn histogram_rejects_bad_input_naming_the_path() {
    let dir = temp_dir("bad");
    let path = dir.join("bad.png");
    let cases: [(&[f64], usize); 6] = [
        (&[], 128),
        (&[1.0, -1.0], 128),
        (&[f64::NAN, 1.0], 128),
        (&[f64::INFINITY], 128),
        (&[1.0, 2.0], 0),
        (&[-0.5], 8),
    ];
    for (counts, height) in cases {
        let err = save_histogram(&path, counts, height).expect_err(&format!("{counts:?} at height {height}"));
        assert!(err.contains(&path.display().to_string()), "error does not name the path: {err}");
        assert!(!path.exists(), "a file was written for {counts:?}");
    }
    // A path in a folder that does not exist is an error too, not a panic.
    let missing = dir.join("no-such-folder").join("h.png");
    let err = save_histogram(&missing, &[1.0], 8).unwrap_err();
    assert!(err.contains("no-such-folder"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
