//! CPU twin of shaders/matmul.wgsl. Row-major; a Linear layer's weight is [in, out] with the bias as
//! row `in` (one [(in+1), out] block), exactly as on the GPU.

use super::elementwise::{act_forward, act_grad_from_y};
use crate::kernels::Act;

/// C[m×n] = A[m×k]·B[k×n] (+ bias row B\[k\] when `bias`).
pub fn matmul(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, bias: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = if bias { b[k * n + j] } else { 0.0 };
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// Transpose of an r×c matrix.
pub fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// Linear forward: y = act(x·W + b), x [rows, din], w [(din+1), dout].
pub fn linear_forward(x: &[f64], w: &[f64], rows: usize, din: usize, dout: usize, act: Act) -> Vec<f64> {
    let mut y = matmul(x, w, rows, dout, din, true);
    for v in &mut y {
        *v = act_forward(act, *v);
    }
    y
}

/// Linear backward from dy (gradient w.r.t. the layer OUTPUT y, after activation).
/// Returns (dx [rows, din], dw [(din+1), dout]); dx ⊙ act_prev'(x) is applied when `dact_x` is set
/// (the fused epilogue of the GPU kernel).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &[f64],
    w: &[f64],
    y: &[f64],
    dy: &[f64],
    rows: usize,
    din: usize,
    dout: usize,
    act: Act,
    dact_x: Act,
) -> (Vec<f64>, Vec<f64>) {
    let dpre: Vec<f64> = dy.iter().zip(y).map(|(g, yv)| g * act_grad_from_y(act, *yv)).collect();
    // dW = [x | 1]ᵀ · dpre
    let mut dw = vec![0.0; (din + 1) * dout];
    for r in 0..rows {
        for i in 0..=din {
            let xv = if i == din { 1.0 } else { x[r * din + i] };
            for j in 0..dout {
                dw[i * dout + j] += xv * dpre[r * dout + j];
            }
        }
    }
    // dx = dpre · W[0..din]ᵀ
    let mut dx = vec![0.0; rows * din];
    for r in 0..rows {
        for i in 0..din {
            let mut acc = 0.0;
            for j in 0..dout {
                acc += dpre[r * dout + j] * w[i * dout + j];
            }
            dx[r * din + i] = acc * act_grad_from_y(dact_x, x[r * din + i]);
        }
    }
    (dx, dw)
}
