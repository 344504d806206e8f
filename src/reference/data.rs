//! CPU twins of shaders/data.wgsl's gather and gather_words.

use super::sample::{philox, u32_to_unit};

/// x[r, d] for a batch: rows past n_items repeat the last item.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    pixels: &[u8],
    perm: &[u32],
    dim: usize,
    batch: usize,
    batch_index: usize,
    binarize: bool,
    step: u32,
    key: [u32; 2],
) -> Vec<f64> {
    let n = perm.len();
    let mut x = vec![0.0; batch * dim];
    for r in 0..batch {
        let item = perm[(batch_index * batch + r).min(n - 1)] as usize;
        for d in 0..dim {
            let i = r * dim + d;
            let mut v = pixels[item * dim + d] as f32 / 255.0;
            if binarize {
                let u = u32_to_unit(philox([i as u32, step, crate::kernels::sample::STREAM_BINARIZE, 0], key)[0]);
                v = if (u as f32) < v { 1.0 } else { 0.0 };
            }
            x[i] = v as f64;
        }
    }
    x
}

/// words[r, d] for a batch of u32 items (code maps): rows past n_items repeat the last item.
pub fn gather_words(data: &[u32], perm: &[u32], dim: usize, batch: usize, batch_index: usize) -> Vec<u32> {
    let n = perm.len();
    let mut out = vec![0; batch * dim];
    for r in 0..batch {
        let item = perm[(batch_index * batch + r).min(n - 1)] as usize;
        out[r * dim..(r + 1) * dim].copy_from_slice(&data[item * dim..(item + 1) * dim]);
    }
    out
}
