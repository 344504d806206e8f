//! Latent-space analyses (`analysis::analyze_latents`) on posteriors with known answers, and the latent
//! pictures of `viz` (normal quantiles, manifold and interpolation points, scatter plots).

use std::f64::consts::LN_2;
use std::path::PathBuf;

use vaegpu::analysis::{analyze_latents, analyze_latents_prior, mc_subset, AnalysisOptions, LatentAnalysis};
use vaegpu::reference::sample::{normal, seed_key};
use vaegpu::viz::{
    interpolation_points, inverse_normal_cdf, label_colour, manifold_points, save_scatter, ScatterFrame,
    OTHER_LABEL_COLOUR, TAB10,
};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A head [n, 2Z] from per-item (μ, logσ²) rows.
fn head_of(rows: &[(Vec<f32>, Vec<f32>)]) -> Vec<f32> {
    rows.iter().flat_map(|(m, lv)| m.iter().chain(lv).copied()).collect()
}

fn analyze(head: &[f32], n: usize, z: usize, opts: AnalysisOptions) -> LatentAnalysis {
    analyze_latents(head, n, z, &opts).unwrap_or_else(|e| panic!("analysis failed: {e}"))
}

#[test]
fn posterior_equal_to_prior_has_no_information() {
    let (n, z) = (20, 4);
    let head = vec![0.0f32; n * 2 * z];
    let a = analyze(&head, n, z, AnalysisOptions { mc_samples: 5, ..Default::default() });
    assert_eq!((a.n_items, a.latent, a.mc_items, a.mc_samples), (n, z, n, 5));
    assert_eq!(a.avg_kl, 0.0);
    assert!(a.kl_per_unit.iter().all(|&k| k == 0.0));
    // log q(z) = log q(z|x_n) = log p(z) for every draw, so the estimates are 0 up to rounding.
    assert!(a.marginal_kl.abs() < 1e-12, "marginal_kl {}", a.marginal_kl);
    assert!(a.mutual_info.abs() < 1e-12, "mutual_info {}", a.mutual_info);
    assert!(a.mutual_info_direct.abs() < 1e-12, "mutual_info_direct {}", a.mutual_info_direct);
    assert_eq!(a.active_units, 0);
    assert_eq!(a.unit_variance, vec![0.0; z]);
    assert!((a.log_n - (n as f64).ln()).abs() < 1e-15);
}

#[test]
fn two_clusters_carry_one_bit() {
    // Half the items at μ1 = +a, half at −a, σ = e^−5; unit 2 equal to the prior for everyone.
    let (n, z, a) = (200, 2, 3.0f32);
    let rows: Vec<_> = (0..n).map(|i| (vec![if i % 2 == 0 { a } else { -a }, 0.0], vec![-10.0f32, 0.0])).collect();
    let head = head_of(&rows);
    let r = analyze(&head, n, z, AnalysisOptions { mc_samples: 20, seed: 7, ..Default::default() });
    // Closed form, by hand: ½(a² + e^−10 − 1 + 10) for unit 1, 0 for unit 2.
    let kl1 = 0.5 * (9.0 + (-10.0f64).exp() - 1.0 + 10.0);
    assert!((r.avg_kl - kl1).abs() < 1e-12, "avg_kl {} vs {kl1}", r.avg_kl);
    assert!((r.kl_per_unit[0] - kl1).abs() < 1e-12 && r.kl_per_unit[1] == 0.0);
    // q(z) is the two-component mixture, each item's posterior has weight ½ of its own component:
    // log q(z|x_n) − log q(z) = log 2 for every draw (the other cluster contributes e^−(6/σ)²/2 = 0).
    assert!((r.mutual_info_direct - LN_2).abs() < 1e-9, "direct MI {}", r.mutual_info_direct);
    assert!(r.mutual_info_direct_stderr < 1e-9);
    // KL(q(z) || p) = avg_kl − log 2 for disjoint equal-weight components; the MC estimate has the
    // noise of log q(z|x_n) − log p(z) (about 0.7 nats a draw, 4000 draws).
    let tol = 4.0 * r.marginal_kl_stderr;
    assert!(r.marginal_kl_stderr > 0.0 && r.marginal_kl_stderr < 0.03, "stderr {}", r.marginal_kl_stderr);
    assert!((r.marginal_kl - (kl1 - LN_2)).abs() < tol, "marginal_kl {} vs {}", r.marginal_kl, kl1 - LN_2);
    assert!((r.mutual_info - LN_2).abs() < tol, "mutual_info {}", r.mutual_info);
    assert_eq!(r.mutual_info, r.avg_kl - r.marginal_kl);
    assert_eq!(r.active_units, 1);
    assert!((r.unit_variance[0] - 9.0).abs() < 1e-12 && r.unit_variance[1] == 0.0);
}

/// N items far apart with tiny σ: each z identifies its item, so I(x; z) = log N.
fn separated(n: usize) -> Vec<f32> {
    let rows: Vec<_> = (0..n).map(|i| (vec![10.0 * i as f32 - 250.0, 0.5, -1.0], vec![-10.0f32, -10.0, 0.0])).collect();
    head_of(&rows)
}

#[test]
fn separated_items_reach_log_n() {
    let n = 50;
    let head = separated(n);
    let r = analyze(&head, n, 3, AnalysisOptions { mc_samples: 4, seed: 3, ..Default::default() });
    let log_n = (n as f64).ln();
    assert!((r.log_n - log_n).abs() < 1e-15);
    assert!((r.mutual_info_direct - log_n).abs() < 1e-9, "direct MI {} vs log N {log_n}", r.mutual_info_direct);
    assert!(r.mutual_info_direct <= r.log_n + 1e-12);
    assert!((r.mutual_info - log_n).abs() < 4.0 * r.marginal_kl_stderr, "MI {}", r.mutual_info);
    assert_eq!(r.active_units, 1);

    // A subset of the items gives the same answer (log q(z) still sums over all N).
    let s = analyze(&head, n, 3, AnalysisOptions { mc_items: 10, mc_samples: 2, seed: 3, ..Default::default() });
    assert_eq!((s.mc_items, s.mc_samples), (10, 2));
    assert!((s.mutual_info_direct - log_n).abs() < 1e-9);
    assert_eq!(s.avg_kl, r.avg_kl, "the closed form always covers every item");
}

#[test]
fn active_units_count_the_varying_means() {
    let (n, z) = (100, 6);
    let rows: Vec<_> = (0..n)
        .map(|i| {
            let t = i as f32;
            // Units 0..3 vary across items (variance ≥ 0.1); unit 3 barely (variance ≈ 5e-7), 4 and 5 not.
            let mu = vec![t.sin(), 2.0 * (0.3 * t).cos(), 0.05 * t - 2.5, 1e-3 * t.sin(), 0.7, -0.2];
            (mu, vec![-1.0f32; z])
        })
        .collect();
    let head = head_of(&rows);
    let r = analyze(&head, n, z, AnalysisOptions::default());
    assert_eq!(r.active_units, 3);
    assert_eq!(r.active_threshold, 0.01);
    for j in 0..z {
        let m: Vec<f64> = rows.iter().map(|(mu, _)| mu[j] as f64).collect();
        let mean = m.iter().sum::<f64>() / n as f64;
        let var = m.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        assert!((r.unit_variance[j] - var).abs() < 1e-12 * (1.0 + var), "unit {j}: {} vs {var}", r.unit_variance[j]);
    }
    assert!(r.unit_variance[4] < 1e-15 && r.unit_variance[5] < 1e-15);
    // A higher threshold drops unit 0 (variance ≈ 0.5) but keeps units 1 (≈ 2) and 2 (≈ 2.1).
    let hi = analyze(&head, n, z, AnalysisOptions { active_threshold: 1.0, ..Default::default() });
    assert_eq!(hi.active_units, 2);
}

#[test]
fn one_dimensional_marginal_kl_matches_numerical_integration() {
    let mu = [-2.0f32, -0.5, 0.3, 1.1, 2.5];
    let lv = [-1.0f32, 0.0, -2.0, -0.5, 0.4];
    let head: Vec<f32> = mu.iter().zip(&lv).flat_map(|(&m, &l)| [m, l]).collect();
    let n = mu.len();
    // KL(q || p) = ∫ q log(q / p) with q the equal-weight mixture, on a grid of step 1e-4 over [−25, 25]
    // (the integrand is smooth and negligible at the ends, so the Riemann sum is exact to ~1e-12).
    let h = 1e-4;
    let mut exact = 0.0;
    for k in 0..=500_000 {
        let z = -25.0 + k as f64 * h;
        let q: f64 = mu
            .iter()
            .zip(&lv)
            .map(|(&m, &l)| {
                let (m, l) = (m as f64, l as f64);
                (-0.5 * (LN_2PI + l + (z - m) * (z - m) / l.exp())).exp()
            })
            .sum::<f64>()
            / n as f64;
        if q > 0.0 {
            let log_p = -0.5 * (LN_2PI + z * z);
            exact += q * (q.ln() - log_p) * h;
        }
    }
    let r = analyze(&head, n, 1, AnalysisOptions { mc_items: 0, mc_samples: 20_000, seed: 11, ..Default::default() });
    assert_eq!(r.mc_items, n);
    // Tolerance: 4 standard errors of the estimate (each under 0.01 with 100000 draws).
    assert!(r.marginal_kl_stderr < 0.01 && r.mutual_info_direct_stderr < 0.01);
    let tol = 4.0 * r.marginal_kl_stderr;
    assert!((r.marginal_kl - exact).abs() < tol, "MC {} vs integral {exact} (tol {tol})", r.marginal_kl);
    let exact_mi = r.avg_kl - exact;
    assert!(exact_mi > 0.3 && exact_mi < (n as f64).ln());
    let tol = 4.0 * r.mutual_info_direct_stderr;
    assert!((r.mutual_info_direct - exact_mi).abs() < tol, "direct MI {} vs {exact_mi}", r.mutual_info_direct);
}

#[test]
fn seeded_results_repeat_and_seeds_differ() {
    let mu = [-2.0f32, -0.5, 0.3, 1.1, 2.5, 0.0];
    let head: Vec<f32> = mu.iter().flat_map(|&m| [m, -0.7, 0.2 * m, 0.1]).collect();
    let opts = AnalysisOptions { mc_items: 4, mc_samples: 3, seed: 5, ..Default::default() };
    let (a, b) = (analyze(&head, 6, 2, opts), analyze(&head, 6, 2, opts));
    assert_eq!(a.marginal_kl.to_bits(), b.marginal_kl.to_bits());
    assert_eq!(a.mutual_info_direct.to_bits(), b.mutual_info_direct.to_bits());
    let c = analyze(&head, 6, 2, AnalysisOptions { seed: 6, ..opts });
    assert_ne!(a.marginal_kl, c.marginal_kl);
    assert_eq!((a.seed, a.stream, c.seed), (5, 20, 6));
    assert!(a.method.contains("Hoffman") && a.method.contains("Burda"));
    let json = serde_json::to_value(&a).expect("serialize");
    assert!(json["marginal_kl"].is_f64() && json["unit_variance"].as_array().map(|v| v.len()) == Some(2));
}

#[test]
fn mc_subset_is_distinct_sorted_and_seeded() {
    let s = mc_subset(100, 10, 1);
    assert_eq!(s.len(), 10);
    assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|&i| i < 100));
    assert_eq!(s, mc_subset(100, 10, 1));
    assert_ne!(s, mc_subset(100, 10, 2));
    assert_eq!(mc_subset(5, 0, 1), vec![0, 1, 2, 3, 4]);
    assert_eq!(mc_subset(5, 9, 1), vec![0, 1, 2, 3, 4]);
}

#[test]
fn bad_inputs_are_errors_naming_the_problem() {
    let opts = AnalysisOptions::default();
    let e = analyze_latents(&[], 0, 2, &opts).unwrap_err();
    assert!(e.contains("n = 0"), "{e}");
    let e = analyze_latents(&[0.0; 8], 2, 0, &opts).unwrap_err();
    assert!(e.contains("latent = 0"), "{e}");
    for len in [7, 9] {
        let e = analyze_latents(&vec![0.0; len], 2, 2, &opts).unwrap_err();
        assert!(e.contains(&format!("head has {len} values")) && e.contains("expected"), "{e}");
    }
    let mut head = vec![0.0f32; 8];
    head[5] = f32::NAN;
    let e = analyze_latents(&head, 2, 2, &opts).unwrap_err();
    assert!(e.contains("item 1") && e.contains("μ[1]") && e.contains("not finite"), "{e}");
    head[5] = 0.0;
    head[3] = f32::INFINITY;
    let e = analyze_latents(&head, 2, 2, &opts).unwrap_err();
    assert!(e.contains("item 0") && e.contains("logσ²[1]"), "{e}");
    head[3] = 0.0;
    let e = analyze_latents(&head, 2, 2, &AnalysisOptions { mc_samples: 0, ..opts }).unwrap_err();
    assert!(e.contains("mc_samples"), "{e}");
}

/// A trained-looking head: 10 active units with spread means and small variances, 10 inactive ones
/// at the prior.
fn synthetic_head(n: usize, z: usize) -> Vec<f32> {
    let key = seed_key(99);
    let mut head = Vec::with_capacity(n * 2 * z);
    for i in 0..n {
        let eps = |j: usize, c: u32| normal((i * z + j) as u32, c, 0, key);
        head.extend((0..z).map(|j| if j < z / 2 { eps(j, 0) as f32 } else { 0.01 * eps(j, 0) as f32 }));
        head.extend((0..z).map(|j| if j < z / 2 { (-3.0 + 0.3 * eps(j, 1)) as f32 } else { 0.0 }));
    }
    head
}

/// Timing at the size of the Fashion-MNIST test set: `cargo test --release --test analysis -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn timing_test_set_size() {
    let (n, z) = (10_000, 20);
    let head = synthetic_head(n, z);
    let started = std::time::Instant::now();
    let r = analyze(&head, n, z, AnalysisOptions::default());
    let secs = started.elapsed().as_secs_f64();
    println!("N = {n}, Z = {z}, default options: {secs:.3} s");
    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    let started = std::time::Instant::now();
    let all = analyze(&head, n, z, AnalysisOptions { mc_items: 0, ..Default::default() });
    println!(
        "all {n} items: {:.3} s, marginal_kl {} ± {}",
        started.elapsed().as_secs_f64(),
        all.marginal_kl,
        all.marginal_kl_stderr
    );
    assert_eq!(r.active_units, 10);
}

// ---- pictures ----

#[test]
#[allow(clippy::excessive_precision)]
fn inverse_normal_cdf_matches_known_quantiles() {
    // Reference values from mpmath at 30 digits.
    let cases = [
        (0.975, 1.959963984540054),
        (0.025, -1.959963984540054),
        (0.001, -3.090232306167813),
        (1e-10, -6.361340902404056),
        (0.841344746068542948585, 1.0),
        (0.0227501319481792072, -2.0),
        (6.22096057427178412e-16, -8.0),
        (2.75362411860623369e-89, -20.0),
    ];
    for (p, x) in cases {
        let got = inverse_normal_cdf(p);
        assert!((got - x).abs() < 1e-13 * x.abs().max(1.0), "Φ⁻¹({p}) = {got}, expected {x}");
    }
    assert_eq!(inverse_normal_cdf(0.5), 0.0);
    for k in 1..1000 {
        let p = k as f64 / 1000.0;
        let (lo, hi) = (inverse_normal_cdf(p), inverse_normal_cdf(1.0 - p));
        assert!((lo + hi).abs() < 1e-12, "symmetry at {p}: {lo} vs {hi}");
        assert!(inverse_normal_cdf(p + 1e-4) > lo, "monotone at {p}");
    }
    assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
    assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
    assert!(
        inverse_normal_cdf(-0.1).is_nan() && inverse_normal_cdf(1.5).is_nan() && inverse_normal_cdf(f64::NAN).is_nan()
    );
}

#[test]
fn manifold_points_read_like_a_plot() {
    let p = manifold_points(3);
    assert_eq!(p.len(), 18);
    assert_eq!((p[8], p[9]), (0.0, 0.0), "the middle of an odd grid is the origin");
    let q = inverse_normal_cdf(5.0 / 6.0) as f32;
    // Top-left is (−q, +q), bottom-right (+q, −q).
    assert_eq!((p[0], p[1]), (-q, q));
    assert_eq!((p[16], p[17]), (q, -q));
    let side = 7;
    let p = manifold_points(side);
    assert_eq!(p.len(), 2 * side * side);
    for r in 0..side {
        for c in 0..side {
            let (z1, z2) = (p[2 * (r * side + c)], p[2 * (r * side + c) + 1]);
            let u = |k: usize| inverse_normal_cdf((k as f64 + 0.5) / side as f64) as f32;
            assert!((z1 - u(c)).abs() < 1e-6 && (z2 - u(side - 1 - r)).abs() < 1e-6);
            if c > 0 {
                assert!(z1 > p[2 * (r * side + c - 1)], "z1 grows to the right");
                assert_eq!(z2, p[2 * (r * side + c - 1) + 1], "z2 constant along a row");
            }
            if r > 0 {
                assert!(z2 < p[2 * ((r - 1) * side + c) + 1], "z2 falls downwards");
            }
            // Exact symmetry about the origin.
            let m = 2 * ((side - 1 - r) * side + side - 1 - c);
            assert_eq!((z1, z2), (-p[m], -p[m + 1]));
        }
    }
    assert!(manifold_points(0).is_empty());
}

#[test]
fn interpolation_includes_both_ends_exactly() {
    let a = [0.1f32, -2.0, 3.3];
    let b = [1.7f32, 0.25, -1e-3];
    let p = interpolation_points(&a, &b, 5);
    assert_eq!(p.len(), 15);
    assert_eq!(&p[..3], &a);
    assert_eq!(&p[12..], &b);
    for j in 0..3 {
        let mid = 0.5 * (a[j] as f64 + b[j] as f64);
        assert!((p[6 + j] as f64 - mid).abs() < 1e-6);
        let quarter = 0.75 * a[j] as f64 + 0.25 * b[j] as f64;
        assert!((p[3 + j] as f64 - quarter).abs() < 1e-6);
    }
    assert_eq!(interpolation_points(&a, &b, 1), a.to_vec());
    assert!(interpolation_points(&a, &b, 0).is_empty());
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("vaegpu-analysis-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn scatter_plot_puts_labels_colours_at_points() {
    let dir = temp_dir("scatter");
    let path = dir.join("scatter.png");
    let points = [1.0f32, 1.0, -2.0, 0.5, 0.5, -1.5, 0.0, 0.0];
    let labels = [3u8, 7, 12, 9];
    let names =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    save_scatter(&path, &points, &labels, 256, Some(&names)).expect("scatter");
    let img = image::open(&path).expect("read back").to_rgb8();
    assert_eq!(img.dimensions(), (256, 256));
    let frame = ScatterFrame::new(256, &points);
    assert_eq!(frame.range, 2.5, "1.05 · 2 rounded up");
    for (p, &label) in points.chunks_exact(2).zip(&labels) {
        let (x, y) = frame.to_pixel(p[0], p[1]);
        assert_eq!(img.get_pixel(x, y).0, label_colour(label), "label {label} at ({}, {})", p[0], p[1]);
    }
    assert_eq!(label_colour(12), OTHER_LABEL_COLOUR);
    // The origin is at the centre of the plot square, positive z2 upwards.
    let (ox, oy) = frame.to_pixel(0.0, 0.0);
    assert_eq!((ox, oy), (frame.left + frame.side / 2, frame.top + frame.side / 2));
    assert!(frame.to_pixel(1.0, 1.0).1 < oy && frame.to_pixel(1.0, 1.0).0 > ox);
    // The legend, right of the plot, has a square for each label present and none for the others.
    let legend_has = |c: [u8; 3]| img.enumerate_pixels().any(|(x, _, px)| x >= frame.side && px.0 == c);
    assert!(legend_has(TAB10[3]) && legend_has(TAB10[7]) && legend_has(TAB10[9]) && legend_has(OTHER_LABEL_COLOUR));
    assert!(!img.pixels().any(|px| px.0 == TAB10[0]), "label 0 is absent");

    // Without names, and at another size.
    let path = dir.join("plain.png");
    save_scatter(&path, &points, &labels, 100, None).expect("scatter");
    assert_eq!(image::open(&path).expect("read back").to_rgb8().dimensions(), (100, 100));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scatter_plot_rejects_bad_input() {
    let dir = temp_dir("scatter-bad");
    let path = dir.join("bad.png");
    let name = path.display().to_string();
    let cases: [(&[f32], &[u8], usize, &str); 5] = [
        (&[], &[], 256, "no points"),
        (&[0.0, 1.0, 2.0], &[1, 2], 256, "3 coordinates for 2 labels"),
        (&[0.0, 1.0, f32::NAN, 2.0], &[1, 2], 256, "point 1"),
        (&[0.0, 1.0], &[1], 10, "size 10"),
        (&[0.0, 1.0], &[1], 100_000, "size 100000"),
    ];
    for (points, labels, size, why) in cases {
        let e = save_scatter(&path, points, labels, size, None).unwrap_err();
        assert!(e.contains(&name) && e.contains(why), "{e}");
    }
    assert!(!path.exists());
    let e = save_scatter(&dir.join("no/such/dir.png"), &[0.0, 1.0], &[1], 128, None).unwrap_err();
    assert!(e.contains("no/such/dir.png"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A learned prior given as a log-density: with N(0, I) itself the Monte Carlo numbers equal the standard
/// path's; with a shifted prior N(c, I) the Monte Carlo average KL matches the closed form
/// ½ Σ_j (σ² + (μ − c)² − 1 − log σ²) within 4 standard errors, and I = avg_kl − marginal_kl does not move.
#[test]
fn learned_prior_log_density_is_used_for_the_kl_terms() {
    let (n, z) = (300, 3);
    let head = synthetic_head(n, z);
    let opts = AnalysisOptions { mc_items: 0, mc_samples: 4, ..Default::default() };
    let standard = analyze(&head, n, z, opts);
    assert_eq!(standard.prior, "standard");
    assert_eq!(standard.avg_kl_stderr, 0.0);
    let normal_logp = |shift: f64| {
        move |zs: &[f64], rows: usize| -> Vec<f64> {
            assert_eq!(zs.len(), rows * 3);
            zs.chunks_exact(3)
                .map(|r| -0.5 * r.iter().map(|v| LN_2PI + (v - shift) * (v - shift)).sum::<f64>())
                .collect()
        }
    };
    let same = normal_logp(0.0);
    let a = analyze_latents_prior(&head, n, z, &opts, Some(&same)).unwrap();
    assert_eq!(a.prior, "learned");
    assert!((a.marginal_kl - standard.marginal_kl).abs() < 1e-9, "{} vs {}", a.marginal_kl, standard.marginal_kl);
    assert!((a.mutual_info_direct - standard.mutual_info_direct).abs() < 1e-12);
    assert!(
        (a.avg_kl - standard.avg_kl).abs() < 4.0 * a.avg_kl_stderr,
        "{} ± {} vs {}",
        a.avg_kl,
        a.avg_kl_stderr,
        standard.avg_kl
    );

    let c = 0.7;
    let shifted = normal_logp(c);
    let b = analyze_latents_prior(&head, n, z, &opts, Some(&shifted)).unwrap();
    let exact: f64 = head
        .chunks_exact(2 * z)
        .map(|r| {
            (0..z)
                .map(|j| {
                    let (m, lv) = (r[j] as f64, r[z + j] as f64);
                    0.5 * (lv.exp() + (m - c) * (m - c) - 1.0 - lv)
                })
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    assert!(b.avg_kl_stderr > 0.0);
    assert!(
        (b.avg_kl - exact).abs() < 4.0 * b.avg_kl_stderr,
        "MC avg_kl {} ± {} vs exact {exact}",
        b.avg_kl,
        b.avg_kl_stderr
    );
    assert!(b.avg_kl > standard.avg_kl, "a shifted prior is further from the posteriors");
    assert!((b.mutual_info - b.mutual_info_direct).abs() < 1e-9);
    assert!((b.mutual_info_direct - standard.mutual_info_direct).abs() < 1e-12, "I_q does not depend on p");
    // a prior whose density is not finite is an error, not a NaN in the report
    let bad = |_: &[f64], rows: usize| vec![f64::NAN; rows];
    let e = analyze_latents_prior(&head, n, z, &opts, Some(&bad)).unwrap_err();
    assert!(e.contains("not finite"), "{e}");
}
