// philox.wgsl: Philox4x32-10 counter-based generator (Salmon et al., SC'11), shared by textual include.
// philox(counter, key) -> 4 independent uniform u32 words; the CPU twin is src/reference/sample.rs.
// Uniform floats take the top 23 bits: u = ((r >> 9) + 0.5) / 2^23, strictly inside (0, 1) and exact
// in f32 (the sum needs 24 significant bits, which f32 has).
// A standard normal uses Box–Muller on two words: sqrt(-2 ln u1) · cos(2π u2 − π)
// (the angle kept in (−π, π), where GPU cos is specified to be accurate).

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    // 32×32 -> 64-bit product from 16-bit halves (WGSL has no 64-bit integers). Returns (hi, lo).
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    let lo = a * b;
    return vec2<u32>(hi, lo);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var i = 0u; i < 10u; i++) {
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

fn u32_to_unit(r: u32) -> f32 {
    return (f32(r >> 9u) + 0.5) * (1.0 / 8388608.0);
}

fn box_muller(r0: u32, r1: u32) -> f32 {
    let u1 = u32_to_unit(r0);
    let u2 = u32_to_unit(r1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2 - 3.141592653589793);
}
