//! Host-side analyses of a trained VAE's latent space, from the encoder outputs of a test set (f64, no GPU).
//!
//! The input is the encoder head `[N, 2Z]` row-major, row n = (μ_n | logσ²_n), logσ² clamped to
//! [`LOGVAR_MIN`, `LOGVAR_MAX`] as everywhere else in the crate; the prior is p(z) = N(0, I), or a
//! learned prior given as its log-density ([`analyze_latents_prior`]).
//! [`analyze_latents`] reports
//! - the average KL term E_n KL(q(z|x_n) ‖ p) in closed form,
//! - the marginal KL(q(z) ‖ p) of the aggregate posterior q(z) = (1/N) Σ_n q(z|x_n), by Monte Carlo,
//! - the mutual information I_q(x; z) of the encoder's joint distribution, both as the difference
//!   avg_kl − marginal_kl (the "ELBO surgery" decomposition of Hoffman & Johnson 2016) and directly,
//! - the active units of Burda et al. 2016: latent dimensions whose posterior mean varies across items.
//!
//! The random draws come from the crate's Philox generator on stream [`ANALYSIS_STREAM`], so a seed gives
//! the same numbers on every machine and for any number of threads.

use serde::Serialize;

use crate::reference::sample::{normal, philox, seed_key, LOGVAR_MAX, LOGVAR_MIN};

/// Philox stream (third counter word) of the analysis draws; the training and sampling streams are
/// below 20. The second counter word is 0 for the choice of items and 1 + s for the s-th draw per item.
pub const ANALYSIS_STREAM: u32 = 20;

/// Draws evaluated together against each item's posterior (keeps the item rows in cache).
const DRAW_BLOCK: usize = 8;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Settings of [`analyze_latents`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnalysisOptions {
    /// Items whose posteriors are sampled for the Monte Carlo estimates, chosen at random without
    /// replacement from the seed; 0 or at least N means every item. log q(z) always sums over all N.
    pub mc_items: usize,
    /// Draws z ~ q(z|x_n) per sampled item (at least 1).
    pub mc_samples: usize,
    /// Philox key of the item choice and the draws.
    pub seed: u64,
    /// A unit is active when the variance over items of its posterior mean exceeds this.
    pub active_threshold: f64,
}

impl Default for AnalysisOptions {
    /// 2000 items × 1 draw: each draw costs O(N·Z) for log q(z), so N = 10000, Z = 20 takes a fraction
    /// of a second on two cores in release mode (N = 60000 about 36 times that), and the standard errors
    /// of the estimates stay around a tenth of a nat for a typical trained model.
    fn default() -> Self {
        Self { mc_items: 2000, mc_samples: 1, seed: 0, active_threshold: 0.01 }
    }
}

/// The result of [`analyze_latents`] (all values in nats).
#[derive(Debug, Clone, Serialize)]
pub struct LatentAnalysis {
    /// N, the items analysed.
    pub n_items: usize,
    /// Z, the latent dimensions.
    pub latent: usize,
    /// The prior the KL terms are taken against: "standard" (N(0, I)) or "learned".
    pub prior: &'static str,
    /// (1/N) Σ_n KL(q(z|x_n) ‖ p): closed form over all items for N(0, I); for a learned prior the Monte
    /// Carlo mean of log q(z|x_n) − log p(z) over the draws.
    pub avg_kl: f64,
    /// Standard error of `avg_kl` (0 for the closed form).
    pub avg_kl_stderr: f64,
    /// The closed-form average KL(q(z|x_n) ‖ N(0, I)) per latent dimension (they sum to `avg_kl` for the
    /// standard prior; with a learned prior they measure the distance to N(0, I) only).
    pub kl_per_unit: Vec<f64>,
    /// KL(q(z) ‖ p(z)) of the aggregate posterior, Monte Carlo.
    pub marginal_kl: f64,
    /// Standard error of `marginal_kl` (sample standard deviation of the draws / √draws).
    pub marginal_kl_stderr: f64,
    /// I_q(x; z) = avg_kl − marginal_kl (for a learned prior both are Monte Carlo means over the same
    /// draws, so this equals `mutual_info_direct`).
    pub mutual_info: f64,
    /// I_q(x; z) estimated directly: the mean over the draws of log q(z|x_n) − log q(z).
    pub mutual_info_direct: f64,
    /// Standard error of `mutual_info_direct`.
    pub mutual_info_direct_stderr: f64,
    /// log N: `mutual_info_direct` can never exceed it (log q(z) ≥ log q(z|x_n) − log N).
    pub log_n: f64,
    /// Units j with Var_n(μ_nj) > `active_threshold`.
    pub active_units: usize,
    /// The threshold used for `active_units`.
    pub active_threshold: f64,
    /// Var_n(μ_nj) for every unit j (population variance, divided by N).
    pub unit_variance: Vec<f64>,
    /// Items actually sampled (N when `mc_items` was 0 or at least N).
    pub mc_items: usize,
    /// Draws per sampled item.
    pub mc_samples: usize,
    /// Seed of the draws.
    pub seed: u64,
    /// Philox stream of the draws.
    pub stream: u32,
    /// The estimators, in words.
    pub method: String,
}

/// Analyses the encoder outputs `head` ([n, 2·latent], row n = μ_n | logσ²_n) of a data set; see the
/// module docs and the fields of [`LatentAnalysis`]. Bad shapes, non-finite values and unusable options
/// are errors with a message naming the problem.
pub fn analyze_latents(
    head: &[f32],
    n: usize,
    latent: usize,
    opts: &AnalysisOptions,
) -> Result<LatentAnalysis, String> {
    analyze_latents_prior(head, n, latent, opts, None)
}

/// The log-density of a learned prior: log p(z_r) for `rows` rows of `z` ([rows, latent] row-major).
pub type LogPrior<'a> = &'a dyn Fn(&[f64], usize) -> Vec<f64>;

/// [`analyze_latents`] against the prior `log_prior` (None = N(0, I)): the marginal KL and the average KL
/// then take log p(z) from it (the average KL by Monte Carlo over the same draws).
pub fn analyze_latents_prior(
    head: &[f32],
    n: usize,
    latent: usize,
    opts: &AnalysisOptions,
    log_prior: Option<LogPrior>,
) -> Result<LatentAnalysis, String> {
    if n == 0 {
        return Err("latent analysis needs at least one item (n = 0)".to_string());
    }
    if latent == 0 {
        return Err("latent analysis needs at least one latent dimension (latent = 0)".to_string());
    }
    let row = 2 * latent;
    let expected = n.checked_mul(row).ok_or_else(|| format!("{n} items of {row} values overflow"))?;
    if head.len() != expected {
        return Err(format!(
            "head has {} values, expected n × 2·latent = {n} × {row} = {expected} (μ | logσ² per item)",
            head.len()
        ));
    }
    if let Some(i) = head.iter().position(|v| !v.is_finite()) {
        let (item, col) = (i / row, i % row);
        let what = if col < latent { format!("μ[{col}]") } else { format!("logσ²[{}]", col - latent) };
        return Err(format!("head value {} of item {item} ({what}) is not finite", head[i]));
    }
    if opts.mc_samples == 0 || opts.mc_samples >= u32::MAX as usize {
        return Err(format!("mc_samples must be between 1 and {} (got {})", u32::MAX - 1, opts.mc_samples));
    }
    if !opts.active_threshold.is_finite() {
        return Err(format!("active_threshold must be finite (got {})", opts.active_threshold));
    }
    if expected / 2 > u32::MAX as usize + 1 || n > u32::MAX as usize {
        return Err(format!("{n} items × {latent} units exceed the 2^32 Philox counters of one draw"));
    }

    // Posterior parameters in f64: μ, 1/σ² and the normaliser of each log q(z|x_m).
    let mut mu = vec![0.0f64; n * latent];
    let mut logvar = vec![0.0f64; n * latent];
    for (m, r) in head.chunks_exact(row).enumerate() {
        for j in 0..latent {
            mu[m * latent + j] = r[j] as f64;
            logvar[m * latent + j] = (r[latent + j] as f64).clamp(LOGVAR_MIN, LOGVAR_MAX);
        }
    }
    let inv_var: Vec<f64> = logvar.iter().map(|lv| (-lv).exp()).collect();
    let norm: Vec<f64> =
        logvar.chunks_exact(latent).map(|lv| -0.5 * lv.iter().map(|l| LN_2PI + l).sum::<f64>()).collect();

    // Closed-form KL per unit: ½(μ² + σ² − 1 − logσ²), averaged over items.
    let mut kl_per_unit = vec![0.0f64; latent];
    for (i, (&m, &lv)) in mu.iter().zip(&logvar).enumerate() {
        kl_per_unit[i % latent] += 0.5 * (m * m + lv.exp() - 1.0 - lv);
    }
    kl_per_unit.iter_mut().for_each(|k| *k /= n as f64);
    let avg_kl = kl_per_unit.iter().sum::<f64>();

    // Variance over items of each unit's posterior mean (two passes).
    let mut mean = vec![0.0f64; latent];
    for (i, &m) in mu.iter().enumerate() {
        mean[i % latent] += m;
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut unit_variance = vec![0.0f64; latent];
    for (i, &m) in mu.iter().enumerate() {
        let d = m - mean[i % latent];
        unit_variance[i % latent] += d * d;
    }
    unit_variance.iter_mut().for_each(|v| *v /= n as f64);
    let active_units = unit_variance.iter().filter(|&&v| v > opts.active_threshold).count();

    // Monte Carlo over draws z ~ q(z|x_n) of the chosen items.
    let items = mc_subset(n, opts.mc_items, opts.seed);
    let samples = opts.mc_samples;
    let key = seed_key(opts.seed);
    let draws = items.len() * samples;
    let post = Posteriors { n, latent, mu: &mu, logvar: &logvar, inv_var: &inv_var, norm: &norm };
    let blocks = draws.div_ceil(DRAW_BLOCK);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, 64).min(blocks);
    let per_thread = blocks.div_ceil(threads) * DRAW_BLOCK;
    let results: Vec<Vec<DrawTerms>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, end) = ((t * per_thread).min(draws), ((t + 1) * per_thread).min(draws));
                let (items, post) = (&items, &post);
                s.spawn(move || post.draw_terms(items, samples, key, start..end))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a latent analysis thread panicked".to_string()))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .collect::<Result<_, String>>()?;

    // log p(z) of every draw: N(0, I) as drawn, or the learned prior's over all draws at once.
    let flat: Vec<&DrawTerms> = results.iter().flatten().collect();
    let log_p: Vec<f64> = match log_prior {
        None => flat.iter().map(|d| d.log_p).collect(),
        Some(f) => {
            let z: Vec<f64> = flat.iter().flat_map(|d| d.z.iter().copied()).collect();
            let lp = f(&z, flat.len());
            if lp.len() != flat.len() {
                return Err(format!("the prior gave {} log-densities for {} draws", lp.len(), flat.len()));
            }
            if let Some(i) = lp.iter().position(|v| !v.is_finite()) {
                return Err(format!("the prior's log-density of draw {i} is not finite ({})", lp[i]));
            }
            lp
        }
    };
    // log q(z) − log p(z) and log q(z|x_n) − log q(z) per draw, summed in draw order.
    let log_n = (n as f64).ln();
    let kl_terms: Vec<f64> = flat.iter().zip(&log_p).map(|(d, lp)| d.log_q_agg - log_n - lp).collect();
    let mi_terms: Vec<f64> = flat.iter().map(|d| d.log_q_own - (d.log_q_agg - log_n)).collect();
    let (marginal_kl, marginal_kl_stderr) = mean_stderr(&kl_terms);
    let (mutual_info_direct, mutual_info_direct_stderr) = mean_stderr(&mi_terms);
    let (prior, avg_kl, avg_kl_stderr, avg_method) = match log_prior {
        None => ("standard", avg_kl, 0.0, format!("closed-form KL(q(z|x_n) || N(0,I)) averaged over all {n} items")),
        Some(_) => {
            let terms: Vec<f64> = flat.iter().zip(&log_p).map(|(d, lp)| d.log_q_own - lp).collect();
            let (m, se) = mean_stderr(&terms);
            (
                "learned",
                m,
                se,
                "Monte Carlo mean of log q(z|x_n) - log p(z) over the draws below (learned prior; \
                 kl_per_unit stays the closed-form KL to N(0,I))"
                    .to_string(),
            )
        }
    };

    let method = format!(
        "avg_kl: {avg_method}. marginal_kl: Monte Carlo mean of log q(z) - log p(z) over {samples} draw(s) \
         z ~ q(z|x_n) for each of {} items (Philox stream {ANALYSIS_STREAM}, seed {}), q(z) = (1/N) sum_m \
         q(z|x_m) over all {n} items; mutual_info = avg_kl - marginal_kl (Hoffman & Johnson 2016), \
         mutual_info_direct = mean of log q(z|x_n) - log q(z) over the same draws (at most log N). Active \
         units: Var_n(mu_nj) > {} (Burda et al. 2016).",
        items.len(),
        opts.seed,
        opts.active_threshold
    );
    Ok(LatentAnalysis {
        n_items: n,
        latent,
        prior,
        avg_kl,
        avg_kl_stderr,
        kl_per_unit,
        marginal_kl,
        marginal_kl_stderr,
        mutual_info: avg_kl - marginal_kl,
        mutual_info_direct,
        mutual_info_direct_stderr,
        log_n,
        active_units,
        active_threshold: opts.active_threshold,
        unit_variance,
        mc_items: items.len(),
        mc_samples: samples,
        seed: opts.seed,
        stream: ANALYSIS_STREAM,
        method,
    })
}

/// The items [`analyze_latents`] samples: `k` distinct indices of `0..n` in increasing order, chosen by a
/// partial Fisher–Yates shuffle driven by Philox (stream [`ANALYSIS_STREAM`], second counter word 0);
/// all of `0..n` when `k` is 0 or at least `n`.
pub fn mc_subset(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if k == 0 || k >= n {
        return idx;
    }
    let key = seed_key(seed);
    for i in 0..k {
        let w = philox([i as u32, 0, ANALYSIS_STREAM, 0], key);
        let r = ((w[0] as u64) << 32) | w[1] as u64;
        let pick = i + (r % (n - i) as u64) as usize;
        idx.swap(i, pick);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// The log-densities of one draw z ~ q(z|x_n).
struct DrawTerms {
    /// log q(z|x_n) for the item it was drawn from.
    log_q_own: f64,
    /// log Σ_m q(z|x_m) over all items (log q(z) + log N).
    log_q_agg: f64,
    /// log p(z) under N(0, I).
    log_p: f64,
    /// The draw (for a learned prior's log-density).
    z: Vec<f64>,
}

/// All items' diagonal Gaussian posteriors, flattened [n, latent].
struct Posteriors<'a> {
    n: usize,
    latent: usize,
    mu: &'a [f64],
    logvar: &'a [f64],
    inv_var: &'a [f64],
    /// −½ Σ_j (log 2π + logσ²_mj) per item.
    norm: &'a [f64],
}

impl Posteriors<'_> {
    /// The terms of draws `range` (draw d is sample d % samples of item items[d / samples]), in blocks of
    /// [`DRAW_BLOCK`]. Each draw's arithmetic is the same whatever block or thread it lands in.
    fn draw_terms(
        &self,
        items: &[usize],
        samples: usize,
        key: [u32; 2],
        range: std::ops::Range<usize>,
    ) -> Vec<DrawTerms> {
        let (n, zl) = (self.n, self.latent);
        let mut out = Vec::with_capacity(range.len());
        let mut z = vec![0.0f64; DRAW_BLOCK * zl];
        let mut logq = vec![0.0f64; DRAW_BLOCK * n];
        let mut start = range.start;
        while start < range.end {
            let count = DRAW_BLOCK.min(range.end - start);
            for b in 0..count {
                let (item, s) = (items[(start + b) / samples], (start + b) % samples);
                for j in 0..zl {
                    let at = item * zl + j;
                    let eps = normal(at as u32, s as u32 + 1, ANALYSIS_STREAM, key);
                    z[b * zl + j] = self.mu[at] + (0.5 * self.logvar[at]).exp() * eps;
                }
            }
            // log q(z_b | x_m) for every item m: the O(N·Z) part.
            for m in 0..n {
                let (mu_m, iv_m) = (&self.mu[m * zl..(m + 1) * zl], &self.inv_var[m * zl..(m + 1) * zl]);
                for (b, zb) in z.chunks_exact(zl).take(count).enumerate() {
                    let mut acc = 0.0;
                    for j in 0..zl {
                        let d = zb[j] - mu_m[j];
                        acc += d * d * iv_m[j];
                    }
                    logq[b * n + m] = self.norm[m] - 0.5 * acc;
                }
            }
            for b in 0..count {
                let row = &logq[b * n..(b + 1) * n];
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                let zb = &z[b * zl..(b + 1) * zl];
                out.push(DrawTerms {
                    log_q_own: row[items[(start + b) / samples]],
                    log_q_agg: max + sum.ln(),
                    log_p: -0.5 * zb.iter().map(|v| LN_2PI + v * v).sum::<f64>(),
                    z: zb.to_vec(),
                });
            }
            start += count;
        }
        out
    }
}

/// Mean and standard error (sample standard deviation / √len; 0 for a single value).
fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let len = v.len() as f64;
    let mean = v.iter().sum::<f64>() / len;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (len - 1.0);
    (mean, (var / len).sqrt())
}
