// act.wgsl: activation functions shared (by textual include) with matmul.wgsl and elementwise.wgsl.
// Codes: 0 identity, 1 ReLU, 2 LeakyReLU(slope), 3 tanh, 4 sigmoid.
// Every derivative is written through the activation's OUTPUT y, so backward needs only the saved
// output of the layer (ReLU'(0) = 0, as in PyTorch).

fn act_sigmoid(x: f32) -> f32 {
    // Stable for large |x|: never computes exp of a large positive number.
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn act_tanh(x: f32) -> f32 {
    let t = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - t) / (1.0 + t);
}

fn act_fwd(code: u32, x: f32, slope: f32) -> f32 {
    switch code {
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(x * slope, x, x > 0.0); }
        case 3u: { return act_tanh(x); }
        case 4u: { return act_sigmoid(x); }
        default: { return x; }
    }
}

// d act / d x, from the output y = act(x).
fn act_grad_from_y(code: u32, y: f32, slope: f32) -> f32 {
    switch code {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return select(slope, 1.0, y > 0.0); }
        case 3u: { return 1.0 - y * y; }
        case 4u: { return y * (1.0 - y); }
        default: { return 1.0; }
    }
}
