//! The u32 gather (data.wgsl gather_words) over a dataset uploaded with GpuDataset::upload_words, against
//! reference::data::gather_words, exactly: awkward sizes, a partial last batch, a shuffled order, either
//! cursor word, and nothing written past the batch.

use vaegpu::gpu::{Gpu, View};
use vaegpu::kernels::data::{GatherWords, STATE_WORDS, W_EVAL_BATCH, W_TRAIN_BATCH};
use vaegpu::models::vae::GpuDataset;
use vaegpu::reference::data::gather_words;
use vaegpu::reference::sample::{philox, seed_key};

const POISON: u32 = 0xdead_beef;

fn gpu() -> &'static Gpu {
    vaegpu::testing::shared_gpu()
}

/// Seeded full-range u32 words (high bits set too, so nothing goes through f32 unnoticed).
fn words(seed: u64, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| philox([i, 0, 0, 0], seed_key(seed))[0]).collect()
}

/// A seeded shuffle of 0..n (Fisher–Yates on Philox draws).
fn shuffled(seed: u64, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = philox([i as u32, 1, 0, 0], seed_key(seed))[0] as usize % (i + 1);
        p.swap(i, j);
    }
    p
}

/// Runs gather_words for batch `index` through `word`, checks it against the reference and that the
/// poisoned tail of the output is untouched.
fn check(g: &Gpu, data: &GpuDataset, perm: &[u32], batch: usize, index: u32, word: u32, what: &str) {
    let (n, dim) = (data.n, data.dim);
    let mut st = [0u32; STATE_WORDS];
    // The other cursor holds a different batch, so reading the wrong word shows.
    st[W_TRAIN_BATCH as usize] = if word == W_TRAIN_BATCH { index } else { index + 1 };
    st[W_EVAL_BATCH as usize] = if word == W_EVAL_BATCH { index } else { index + 1 };
    let state = g.upload("state", &st);
    let len = batch * dim;
    let out = g.upload("out", &vec![POISON; len + 7]);
    let ga = GatherWords { batch, dim, n_items: n, batch_word: word };
    let l = ga
        .launch(g, "test", (&state).into(), (&data.data).into(), (&data.perm).into(), View::new(&out, 0, len))
        .unwrap();
    g.run(&l).unwrap();
    let all: Vec<u32> = g.read(&out, 0, len + 7).unwrap();
    let src: Vec<u32> = g.read(&data.data, 0, n * dim).unwrap();
    let want = gather_words(&src, perm, dim, batch, index as usize);
    assert!(want.iter().all(|w| *w != POISON), "{what}: the poison value occurs in the data");
    assert_eq!(all[..len], want[..], "{what} {ga:?} index {index}");
    assert!(all[len..].iter().all(|w| *w == POISON), "{what}: wrote past element {len}");
}

#[test]
fn gather_words_matches_reference() {
    let g = gpu();
    let n = 37;
    let batch = 16;
    for (k, dim) in [3usize, 64, 1].into_iter().enumerate() {
        let seed = 500 + 10 * k as u64;
        let w = words(seed, n * dim);
        let data = GpuDataset::upload_words(g, "words", &w, n, dim).unwrap();
        assert_eq!((data.n, data.dim), (n, dim));
        // The uploaded words are exactly the input.
        assert_eq!(g.read::<u32>(&data.data, 0, n * dim).unwrap(), w);
        // Identity order, then a shuffled one; batches 0 and 1 are full, batch 2 holds items 32..36 and
        // repeats the last one, batch 3 lies wholly past the end (every row the last item).
        let ident: Vec<u32> = (0..n as u32).collect();
        let perm = shuffled(seed + 1, n);
        assert_ne!(perm, ident);
        for (order, name) in [(&ident, "identity"), (&perm, "shuffled")] {
            data.set_order(g, order);
            for index in 0..4 {
                for word in [W_TRAIN_BATCH, W_EVAL_BATCH] {
                    check(g, &data, order, batch, index, word, &format!("dim {dim} {name} word {word}"));
                }
            }
        }
        // A batch larger than the dataset.
        check(g, &data, &perm, 50, 0, W_TRAIN_BATCH, &format!("dim {dim} batch 50"));
    }
}

#[test]
fn gather_words_partial_batch_repeats_the_last_item() {
    let g = gpu();
    let (n, dim, batch) = (37, 3, 16);
    let w = words(7, n * dim);
    let data = GpuDataset::upload_words(g, "words", &w, n, dim).unwrap();
    let perm = shuffled(8, n);
    data.set_order(g, &perm);
    let mut st = [0u32; STATE_WORDS];
    st[W_TRAIN_BATCH as usize] = 2;
    let state = g.upload("state", &st);
    let out = g.upload("out", &vec![POISON; batch * dim]);
    let ga = GatherWords { batch, dim, n_items: n, batch_word: W_TRAIN_BATCH };
    g.run(&ga.launch(g, "test", (&state).into(), (&data.data).into(), (&data.perm).into(), (&out).into()).unwrap())
        .unwrap();
    let got: Vec<u32> = g.read(&out, 0, batch * dim).unwrap();
    for r in 0..batch {
        let item = perm[(32 + r).min(n - 1)] as usize;
        assert_eq!(got[r * dim..][..dim], w[item * dim..][..dim], "row {r}");
    }
}

#[test]
fn upload_words_and_launch_check_shapes() {
    let g = gpu();
    assert!(GpuDataset::upload_words(g, "bad", &[1, 2, 3], 2, 2).is_err());
    assert!(GpuDataset::upload_words(g, "empty", &[], 0, 3).is_err());
    let data = GpuDataset::upload_words(g, "ok", &[1, 2, 3, 4, 5, 6], 2, 3).unwrap();
    let state = g.upload("state", &[0u32; STATE_WORDS]);
    let out = g.upload("out", &[0u32; 12]);
    let (st, d, p) = ((&state).into(), (&data.data).into(), (&data.perm).into());
    // The output must hold B·dim words; the data n·dim.
    let short = GatherWords { batch: 5, dim: 3, n_items: 2, batch_word: W_TRAIN_BATCH };
    assert!(short.launch(g, "short", st, d, p, (&out).into()).is_err());
    let many = GatherWords { batch: 2, dim: 3, n_items: 3, batch_word: W_TRAIN_BATCH };
    assert!(many.launch(g, "many", st, d, p, (&out).into()).is_err());
    let empty = GatherWords { batch: 0, dim: 3, n_items: 2, batch_word: W_TRAIN_BATCH };
    assert!(empty.launch(g, "empty", st, d, p, (&out).into()).is_err());
}
