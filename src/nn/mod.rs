//! Layers and the flat parameter layout shared by the GPU model, the CPU reference and checkpoints.
//!
//! Every parameter of a model lives in one flat f32 buffer (and so do its gradients and both Adam
//! moments), so that the optimizer, the gradient norm and a checkpoint each touch one buffer. A Linear
//! layer owns a [(in + 1), out] row-major block: the weight W [in, out] (y = x·W) with the bias as the
//! extra last row. Blocks start at multiples of 64 floats (256 bytes), the largest storage-binding
//! offset alignment wgpu allows, so each block can be bound on its own.

use crate::kernels::Act;

pub mod gpu;
pub mod net;

pub use net::{Layer, Net, NetBuilder, Op, Shape};

pub const BLOCK_ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub name: String,
    pub din: usize,
    pub dout: usize,
    pub act: Act,
    /// Inputs per output for the initialisation bound 1/√fan_in (din, except for a transposed conv).
    pub fan_in: usize,
    /// Offset of the block in the flat parameter buffer, in f32 elements.
    pub offset: usize,
}

impl Linear {
    pub fn len(&self) -> usize {
        (self.din + 1) * self.dout
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bias_offset(&self) -> usize {
        self.offset + self.din * self.dout
    }
    pub fn flops_forward(&self, rows: usize) -> f64 {
        2.0 * (rows * self.din * self.dout) as f64
    }
}

/// The layers of a model, in order, with their places in the flat buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamLayout {
    pub layers: Vec<Linear>,
    /// Total f32 elements including alignment padding.
    pub total: usize,
}

impl ParamLayout {
    pub fn push(&mut self, name: &str, din: usize, dout: usize, act: Act) -> usize {
        self.push_with_fan_in(name, din, dout, act, din)
    }

    /// A [(din + 1), dout] block whose initialisation bound is 1/√fan_in.
    pub fn push_with_fan_in(&mut self, name: &str, din: usize, dout: usize, act: Act, fan_in: usize) -> usize {
        let offset = self.total;
        let l = Linear { name: name.to_string(), din, dout, act, fan_in, offset };
        self.total = (offset + l.len()).next_multiple_of(BLOCK_ALIGN);
        self.layers.push(l);
        self.layers.len() - 1
    }

    pub fn count(&self) -> usize {
        self.layers.iter().map(Linear::len).sum()
    }

    /// PyTorch's default Linear/Conv initialisation: W and b ~ U(−1/√fan_in, 1/√fan_in), from a seeded Philox stream.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let key = crate::reference::sample::seed_key(seed);
        let mut p = vec![0.0f32; self.total];
        for (li, l) in self.layers.iter().enumerate() {
            let bound = 1.0 / (l.fan_in as f64).sqrt();
            for i in 0..l.len() {
                let r = crate::reference::sample::philox([i as u32, li as u32, 3, 0], key);
                let u = crate::reference::sample::u32_to_unit(r[0]);
                p[l.offset + i] = ((2.0 * u - 1.0) * bound) as f32;
            }
        }
        p
    }

    pub fn layer(&self, name: &str) -> Option<&Linear> {
        self.layers.iter().find(|l| l.name == name)
    }
}
