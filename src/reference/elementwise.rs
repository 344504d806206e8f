//! CPU twin of shaders/act.wgsl and shaders/elementwise.wgsl.

use crate::kernels::Act;

pub fn act_forward(act: Act, x: f64) -> f64 {
    let slope = Act::LEAKY_SLOPE as f64;
    match act {
        Act::Identity => x,
        Act::Relu => x.max(0.0),
        Act::LeakyRelu => {
            if x > 0.0 {
                x
            } else {
                x * slope
            }
        }
        Act::Tanh => x.tanh(),
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// d act / d x expressed through y = act(x).
pub fn act_grad_from_y(act: Act, y: f64) -> f64 {
    let slope = Act::LEAKY_SLOPE as f64;
    match act {
        Act::Identity => 1.0,
        Act::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Act::LeakyRelu => {
            if y > 0.0 {
                1.0
            } else {
                slope
            }
        }
        Act::Tanh => 1.0 - y * y,
        Act::Sigmoid => y * (1.0 - y),
    }
}

/// dx = dy ⊙ act'(x) through y.
pub fn act_backward(act: Act, y: &[f64], dy: &[f64]) -> Vec<f64> {
    y.iter().zip(dy).map(|(yv, g)| g * act_grad_from_y(act, *yv)).collect()
}
