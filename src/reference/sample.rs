//! CPU twin of shaders/philox.wgsl, shaders/sample.wgsl and shaders/sample_backward.wgsl.

pub const LOGVAR_MIN: f64 = -30.0;
pub const LOGVAR_MAX: f64 = 20.0;

/// Philox4x32-10 (Salmon et al.): 4 words from a 128-bit counter and a 64-bit key.
pub fn philox(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [((p1 >> 32) as u32) ^ c[1] ^ k[0], p1 as u32, ((p0 >> 32) as u32) ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

/// Top 23 bits to a float strictly inside (0, 1), exactly as the GPU does it (exact in f32: the sum
/// needs 24 significant bits).
pub fn u32_to_unit(r: u32) -> f64 {
    ((r >> 9) as f64 + 0.5) / 8_388_608.0
}

pub fn box_muller(r0: u32, r1: u32) -> f64 {
    let u1 = u32_to_unit(r0);
    let u2 = u32_to_unit(r1);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2 - std::f64::consts::PI).cos()
}

pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// ε for element i of a draw with second counter word `c1` and stream `stream`.
pub fn normal(i: u32, c1: u32, stream: u32, key: [u32; 2]) -> f64 {
    let r = philox([i, c1, stream, 0], key);
    box_muller(r[0], r[1])
}

/// (eps, z) for head [B, 2Z] (μ | logσ²), M samples, rows m·B + b.
pub fn sample_forward(
    head: &[f64],
    batch: usize,
    latent: usize,
    samples: usize,
    c1: u32,
    stream: u32,
    key: [u32; 2],
) -> (Vec<f64>, Vec<f64>) {
    let n = samples * batch * latent;
    let mut eps = vec![0.0; n];
    let mut z = vec![0.0; n];
    for i in 0..n {
        let j = i % latent;
        let b = (i / latent) % batch;
        let e = normal(i as u32, c1, stream, key);
        let mu = head[b * 2 * latent + j];
        let lv = head[b * 2 * latent + latent + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
        eps[i] = e;
        z[i] = mu + (0.5 * lv).exp() * e;
    }
    (eps, z)
}

/// The pathwise gradient of z with respect to head, to ADD to dhead.
pub fn sample_backward(head: &[f64], eps: &[f64], dz: &[f64], batch: usize, latent: usize, samples: usize) -> Vec<f64> {
    let mut dhead = vec![0.0; batch * 2 * latent];
    for b in 0..batch {
        for j in 0..latent {
            let raw = head[b * 2 * latent + latent + j];
            let lv = raw.clamp(LOGVAR_MIN, LOGVAR_MAX);
            let mut dmu = 0.0;
            let mut dlv = 0.0;
            for m in 0..samples {
                let r = (m * batch + b) * latent + j;
                dmu += dz[r];
                dlv += dz[r] * eps[r];
            }
            dhead[b * 2 * latent + j] = dmu;
            dhead[b * 2 * latent + latent + j] =
                if (LOGVAR_MIN..=LOGVAR_MAX).contains(&raw) { dlv * 0.5 * (0.5 * lv).exp() } else { 0.0 };
        }
    }
    dhead
}
