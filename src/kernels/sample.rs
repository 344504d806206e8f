//! Launchers for shaders/sample.wgsl and shaders/sample_backward.wgsl.

use super::{need, need_len};
use crate::gpu::{Gpu, Launch, Result, View, Work};

/// Counter streams (the third Philox counter word) so that draws never collide.
pub const STREAM_TRAIN: u32 = 0;
pub const STREAM_EVAL: u32 = 1;
pub const STREAM_BINARIZE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    latent: u32,
    samples: u32,
    counter_word: u32,
    stream: u32,
    given_eps: u32,
    _pad: [u32; 2],
}

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub batch: usize,
    pub latent: usize,
    pub samples: usize,
    /// Which state word is the second counter word (0 = step for training, 2 = eval batch).
    pub counter_word: u32,
    pub stream: u32,
    /// Use the ε already in the eps buffer instead of drawing it.
    pub given_eps: bool,
}

impl Sample {
    fn params(&self) -> Params {
        Params {
            batch: self.batch as u32,
            latent: self.latent as u32,
            samples: self.samples as u32,
            counter_word: self.counter_word,
            stream: self.stream,
            given_eps: u32::from(self.given_eps),
            _pad: [0; 2],
        }
    }

    fn check(&self) -> Result<()> {
        need("sample", self.batch > 0 && self.latent > 0 && self.samples > 0, || format!("empty shape {self:?}"))
    }

    /// eps, z = μ + exp(½ lv)·eps for all M·B·Z elements.
    pub fn forward(&self, gpu: &Gpu, label: &str, state: View, head: View, eps: View, z: View) -> Result<Launch> {
        self.check()?;
        let n = self.samples * self.batch * self.latent;
        need_len("sample", "head", &head, self.batch * 2 * self.latent)?;
        need_len("sample", "eps", &eps, n)?;
        need_len("sample", "z", &z, n)?;
        need_len("sample", "state", &state, 5)?;
        // Reads μ and log σ² (once each, whatever M); writes ε and z.
        Ok(gpu
            .launch(
                format!("{label} sample[{}x{}x{}]", self.samples, self.batch, self.latent),
                "sample",
                "sample_forward",
                &[],
                Some(&self.params()),
                &[(1, state), (2, head), (3, eps), (4, z)],
                [n.div_ceil(64) as u32, 1, 1],
            )?
            .with_work(Work::words(2 * self.batch * self.latent, 2 * n)))
    }

    /// dhead += pathwise gradient of z.
    pub fn backward(&self, gpu: &Gpu, label: &str, head: View, eps: View, dz: View, dhead: View) -> Result<Launch> {
        self.check()?;
        let n = self.samples * self.batch * self.latent;
        need_len("sample_backward", "head", &head, self.batch * 2 * self.latent)?;
        need_len("sample_backward", "eps", &eps, n)?;
        need_len("sample_backward", "dz", &dz, n)?;
        need_len("sample_backward", "dhead", &dhead, self.batch * 2 * self.latent)?;
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct P {
            batch: u32,
            latent: u32,
            samples: u32,
            _pad: u32,
        }
        let p = P { batch: self.batch as u32, latent: self.latent as u32, samples: self.samples as u32, _pad: 0 };
        // Reads the head, ε, dz and dhead; adds into dhead.
        let bz = self.batch * self.latent;
        Ok(gpu
            .launch(
                format!("{label} sample_backward[{}x{}x{}]", self.samples, self.batch, self.latent),
                "sample_backward",
                "sample_backward",
                &[],
                Some(&p),
                &[(1, head), (2, eps), (3, dz), (4, dhead)],
                [bz.div_ceil(64) as u32, 1, 1],
            )?
            .with_work(Work::words(4 * bz + 2 * n, 2 * bz)))
    }
}

/// Test hook: the raw Philox words for counters (i, counter1, stream, 0), i < count, into `out` (4·count u32).
pub fn philox_words(gpu: &Gpu, count: usize, counter1: u32, stream: u32, state: View, out: View) -> Result<Launch> {
    need_len("philox", "out", &out, 4 * count)?;
    let p = Params {
        batch: count as u32,
        latent: 1,
        samples: 1,
        counter_word: counter1,
        stream,
        given_eps: 0,
        _pad: [0; 2],
    };
    gpu.launch(
        format!("philox_words[{count}]"),
        "sample",
        "philox_words",
        &[],
        Some(&p),
        &[(1, state), (3, out)],
        [count.div_ceil(64) as u32, 1, 1],
    )
}
