// matmul.wgsl: C = epilogue(op(A) · op(B)), the dense layer's forward and both of its backward products.
//
// Letters: M rows of C, N columns of C, K the reduced dimension.
//   op(A)[m, k] = TRANS_A ? A[k * lda + m] : A[m * lda + k]      (A: M×K, or K×M when transposed)
//   op(B)[k, n] = TRANS_B ? B[n * ldb + k] : B[k * ldb + n]      (B: K×N, or N×K when transposed)
// Bindings: 0 uniform Params, 1 A (read), 2 B (read), 3 C (read_write, M×N, row stride N, overwritten =),
//           4 Z (read, M×N; only read with DACT or RESID).
// Overrides: BIAS    - B holds one more row (row K, i.e. B[K * ldb + n]) that is added to every row of C:
//                      a Linear layer stores its weight [in, out] with the bias as row `in`.
//            ONES_ROW - op(A)'s last row (m = M-1) is all ones instead of being read: with A = X (B×in,
//                      TRANS_A) this computes [dW; db] = [X | 1]ᵀ · dY in one launch.
//            ACT     - activation applied to the result (act.wgsl codes).
//            DACT    - multiply the result by act'(z) where z = Z[m, n] is an activation output:
//                      dX_prev = (dY · Wᵀ) ⊙ act'(X_prev) in one launch.
//            RESID   - add Z[m, n] before the activation (not with DACT): a residual block's 1×1 conv,
//                      act(x + h · W1 + b1), in one launch.
// Dispatch (matmul): workgroup = WG invocations along N; each invocation owns ONE column n and TM = 8
//   consecutive rows, so grid = (ceil(N / WG), ceil(M / 8), 1). The 8 rows are the same for the whole
//   workgroup: loads of op(A) are uniform (one scalar load broadcast to all lanes on SIMD-per-invocation
//   CPUs such as lavapipe, a broadcast from cache on GPUs), loads of op(B) are one per lane and
//   contiguous across lanes when B is not transposed. 8 FMAs per loaded element, no workgroup memory and
//   no barriers (both are costly on lavapipe).
// Dispatch (matmul_v4): the same product when lda, ldb, K and N are multiples of 4, through vec4 views
//   of the same buffers (bindings 5 A, 6 B, 7 C, 8 Z). Each invocation owns 8 rows × 4 columns and steps
//   k by 4: 12 vec4 loads feed 128 FMAs (the scalar kernel: 9 scalar loads per 8 FMAs). On lavapipe,
//   where every storage-buffer load is a per-lane loop, this is what sets the speed.
//   Grid = (ceil(N / (4·WG)), ceil(M / 8), 1).
// Dispatch (matmul_naive): one output per invocation, 8×8 workgroups, grid = (ceil(N/8), ceil(M/8), 1).
//   Kept as the simplest correct kernel: an oracle and the baseline the benchmark compares to.
// Dispatch (matmul_tiled): for discrete GPUs. A 16×16 workgroup (256 invocations) owns a 64×64 tile of C
//   and steps k by BK = 16 through two workgroup-memory tiles, both k-major (tile_a[k][m], tile_b[k][n],
//   rows padded to TS = 68 floats so the transposing stores do not pile onto one bank): each step the
//   workgroup loads 16×64 of op(A) and 16×64 of op(B) (4 + 4 elements per invocation, consecutive
//   invocations on consecutive addresses of whichever layout A and B are stored in; out-of-range
//   elements, k >= K included, are zero, the ONES_ROW row is 1), a barrier, 16 rank-1 updates of the
//   invocation's 4×4 accumulators (8 workgroup loads per 16 FMAs), a barrier. Invocation (tx, ty) owns
//   rows m0 + ty + 16i and columns n0 + tx + 16j (i, j < 4): reads of tile_b and stores of C are
//   contiguous across tx, reads of tile_a are broadcasts. Every invocation takes part in every load and
//   barrier; those past M or N only skip the store. Any M, N, K; scalar bindings 1..4 like matmul.
//   Grid = (ceil(N / 64), ceil(M / 64), S). WG is not used.
//   Split K (Params.k_split != 0; S splits): workgroup z sums only k in [z·k_split, (z+1)·k_split) and
//   stores its partial product, without epilogue, as block z of C: C[(z·M + m)·N + n] (S blocks of
//   M×N). The launcher allows no BIAS, ACT, DACT or RESID with it (ONES_ROW is fine) and sums the
//   blocks afterwards (conv_grad.wgsl's split_fold and split_sum, in a fixed order). For products with
//   few tiles of C and a long K: a conv's weight gradient over every pixel of a batch.
// Dispatch (split_finish): the epilogue of a product split over K: C[i] = epilogue(Σ_{s < S} P[s·M·N + i])
//   for i < M·N, the blocks added in order of s (S = Params.k_split here: the count), with BIAS (B's row
//   K), RESID, ACT and DACT as in the unsplit kernels. P (the blocks) at binding 1, B 2, C 3, Z 4. One
//   invocation per element; grid_1d over ceil(M·N / 256): index x + y · 65535 · 256. For a dense
//   layer's forward or input gradient whose few tiles of C would leave a GPU idle.
// Dispatch (matmul_tiled128): the large-tile configuration of matmul_tiled, for products big enough to
//   fill a large GPU with 128×128 tiles. 256 invocations (1-D, tx = tid % 16, ty = tid / 16) own a
//   128×128 tile of C, each 8×8 outputs in registers: rows m0 + 4ty + i and m0 + 64 + 4ty + i, columns
//   n0 + 4tx + j and n0 + 64 + 4tx + j (i, j < 4). k steps by BK = 8 through two double-buffered
//   workgroup tiles of vec4, k-major (ta128[buf][k][m / 4], tb128[buf][k][n / 4]; 2 buffers × 2 tiles ×
//   8 × 128 floats = 16384 bytes). Each k step reads 2 vec4 of A (broadcast: a warp spans two ty) and
//   2 vec4 of B (16 consecutive vec4 across tx) and does 64 FMAs. Each BK step every invocation loads
//   one vec4 of op(A) and one of op(B) from global memory, along whichever direction is contiguous:
//   4 consecutive m (TRANS_A) / n (not TRANS_B) of one k, stored as one vec4 to the tile; or 4
//   consecutive k of one m (not TRANS_A) / n (TRANS_B), two invocations per row (32 contiguous bytes),
//   stored as 4 scalars transposed into the k-major tile. The vec4 column index is XORed with 4 when
//   k & 4 != 0 (swizzle), which makes those transposing stores conflict-free without padding (the two
//   k halves of a warp land on opposite 16-bank halves) and keeps every read conflict-free (the XOR is
//   uniform per k). The next BK step's global loads are issued into registers before the current step's
//   FMAs and stored to the other buffer after them: one barrier per BK step. Global loads go through
//   the vec4 views a4 (binding 5) and b4 (binding 6) of the same buffers when Params.vec_ok allows it
//   (bit 0: lda % 4 == 0 and A is bound at 5; bit 1: ldb % 4 == 0 and B is bound at 6) and the
//   invocation's 4 elements are all in range; otherwise 4 bounds-checked scalar loads (zeros outside,
//   the ONES_ROW row is 1), so any M, N, K. Bindings 1..4 as matmul, plus 5 and 6 (a 16-byte
//   placeholder where a buffer is too small for a vec4 view; the flag is then clear).
//   Grid = (ceil(N / 128), ceil(M / 128), 1). WG is not used.

//!include matmul_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;

@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> z4: array<vec4<f32>>;

fn load_a(m: u32, k: u32) -> f32 {
    if (ONES_ROW && m == p.m - 1u) {
        return 1.0;
    }
    if (TRANS_A) {
        return a[k * p.lda + m];
    }
    return a[m * p.lda + k];
}

fn load_b(k: u32, n: u32) -> f32 {
    if (TRANS_B) {
        return b[n * p.ldb + k];
    }
    return b[k * p.ldb + n];
}

fn finish(m: u32, n: u32, acc: f32) {
    if (m >= p.m) {
        return;
    }
    var v = acc;
    if (BIAS) {
        v += b[p.k * p.ldb + n];
    }
    if (RESID) {
        v += z[m * p.n + n];
    }
    v = act_fwd(ACT, v, p.slope);
    if (DACT != 0u) {
        v *= act_grad_from_y(DACT, z[m * p.n + n], p.slope);
    }
    c[m * p.n + n] = v;
}

@compute @workgroup_size(256, 1, 1)
fn split_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
    let len = p.m * p.n;
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= len) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.k_split; s++) {
        acc += a[s * len + i];
    }
    finish(i / p.n, i % p.n, acc);
}

@compute @workgroup_size(WG, 1, 1)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wid.x * WG + lid.x;
    if (n >= p.n) {
        return;
    }
    let m0 = wid.y * 8u;
    // Rows past the end are clamped for loading (uniform, no divergence) and skipped when storing.
    let last = p.m - 1u;
    let r0 = min(m0, last);
    let r1 = min(m0 + 1u, last);
    let r2 = min(m0 + 2u, last);
    let r3 = min(m0 + 3u, last);
    let r4 = min(m0 + 4u, last);
    let r5 = min(m0 + 5u, last);
    let r6 = min(m0 + 6u, last);
    let r7 = min(m0 + 7u, last);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let bv = load_b(k, n);
        let a0 = vec4<f32>(load_a(r0, k), load_a(r1, k), load_a(r2, k), load_a(r3, k));
        let a1 = vec4<f32>(load_a(r4, k), load_a(r5, k), load_a(r6, k), load_a(r7, k));
        acc0 = fma(a0, vec4<f32>(bv), acc0);
        acc1 = fma(a1, vec4<f32>(bv), acc1);
    }
    finish(m0, n, acc0.x);
    finish(m0 + 1u, n, acc0.y);
    finish(m0 + 2u, n, acc0.z);
    finish(m0 + 3u, n, acc0.w);
    finish(m0 + 4u, n, acc1.x);
    finish(m0 + 5u, n, acc1.y);
    finish(m0 + 6u, n, acc1.z);
    finish(m0 + 7u, n, acc1.w);
}

@compute @workgroup_size(8, 8, 1)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    if (n >= p.n || m >= p.m) {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc += load_a(m, k) * load_b(k, n);
    }
    finish(m, n, acc);
}

// Row r of the 8-row tile as 4 consecutive k (A row-major), with ONES_ROW applied.
fn a_row4(r: u32, k: u32) -> vec4<f32> {
    let m = min(r, p.m - 1u);
    if (ONES_ROW && m == p.m - 1u) {
        return vec4<f32>(1.0);
    }
    return a4[(m * p.lda + k) >> 2u];
}

// Rows m0..m0+3 of op(A) at one k (A stored transposed, k-major), with ONES_ROW applied.
fn a_col4(m0: u32, k: u32) -> vec4<f32> {
    let rows_stored = select(p.m, p.m - 1u, ONES_ROW);
    let v = a4[(k * p.lda + min(m0, p.lda - 4u)) >> 2u];
    if (m0 + 3u < rows_stored) {
        return v;
    }
    // Tail of the tile: rows past the stored ones are 1 (the ones row) or unused.
    var out = v;
    for (var i = 0u; i < 4u; i++) {
        if (m0 + i >= rows_stored) {
            out[i] = select(0.0, 1.0, ONES_ROW && m0 + i == p.m - 1u);
        }
    }
    return out;
}

fn store4(m: u32, n4: u32, acc: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    var v = acc;
    let row4 = p.n >> 2u;
    if (BIAS) {
        v += b4[((p.k * p.ldb) >> 2u) + n4];
    }
    if (RESID) {
        v += z4[m * row4 + n4];
    }
    v = vec4<f32>(act_fwd(ACT, v.x, p.slope), act_fwd(ACT, v.y, p.slope), act_fwd(ACT, v.z, p.slope), act_fwd(ACT, v.w, p.slope));
    if (DACT != 0u) {
        let zv = z4[m * row4 + n4];
        v *= vec4<f32>(act_grad_from_y(DACT, zv.x, p.slope), act_grad_from_y(DACT, zv.y, p.slope),
                       act_grad_from_y(DACT, zv.z, p.slope), act_grad_from_y(DACT, zv.w, p.slope));
    }
    c4[m * row4 + n4] = v;
}

@compute @workgroup_size(WG, 1, 1)
fn matmul_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n4 = wid.x * WG + lid.x;
    if (n4 * 4u >= p.n) {
        return;
    }
    let n = n4 * 4u;
    let m0 = wid.y * 8u;
    var acc: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k = 0u; k < p.k; k += 4u) {
        // B tile: rows k..k+3 of op(B), each a vec4 over the 4 columns.
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if (TRANS_B) {
            let c0 = b4[(n * p.ldb + k) >> 2u];
            let c1 = b4[((n + 1u) * p.ldb + k) >> 2u];
            let c2 = b4[((n + 2u) * p.ldb + k) >> 2u];
            let c3 = b4[((n + 3u) * p.ldb + k) >> 2u];
            b0 = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
            b1 = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
            b2 = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
            b3 = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
        } else {
            b0 = b4[(k * p.ldb + n) >> 2u];
            b1 = b4[((k + 1u) * p.ldb + n) >> 2u];
            b2 = b4[((k + 2u) * p.ldb + n) >> 2u];
            b3 = b4[((k + 3u) * p.ldb + n) >> 2u];
        }
        if (TRANS_A) {
            for (var h = 0u; h < 2u; h++) {
                let q0 = a_col4(m0 + 4u * h, k);
                let q1 = a_col4(m0 + 4u * h, k + 1u);
                let q2 = a_col4(m0 + 4u * h, k + 2u);
                let q3 = a_col4(m0 + 4u * h, k + 3u);
                for (var i = 0u; i < 4u; i++) {
                    acc[4u * h + i] += q0[i] * b0 + q1[i] * b1 + q2[i] * b2 + q3[i] * b3;
                }
            }
        } else {
            for (var r = 0u; r < 8u; r++) {
                let a = a_row4(m0 + r, k);
                acc[r] += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
            }
        }
    }
    for (var r = 0u; r < 8u; r++) {
        store4(m0 + r, n4, acc[r]);
    }
}

const TILE: u32 = 64u;
const BK: u32 = 16u;
const BK128: u32 = 8u;
const TS: u32 = 68u;

var<workgroup> tile_a: array<f32, BK * TS>; // tile_a[k * TS + m]
var<workgroup> tile_b: array<f32, BK * TS>; // tile_b[k * TS + n]

// op(A)[m, k] with zeros outside M×K (the ones row only spans k < K).
fn load_a_or_zero(m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    return load_a(m, k);
}

// op(B)[k, n] with zeros outside K×N (never the bias row).
fn load_b_or_zero(k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
    return load_b(k, n);
}

@compute @workgroup_size(16, 16, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    let tx = lid.x;
    let ty = lid.y;
    // acc[i][j]: row m0 + ty + 16i, column n0 + tx + 16j.
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // This workgroup's k range: all of K, or split z's.
    let split = p.k_split != 0u;
    let kb = select(0u, wid.z * p.k_split, split);
    let ke = select(p.k, min(p.k, kb + p.k_split), split);
    for (var k0 = kb; k0 < ke; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let idx = r * 256u + tid;
            // Consecutive invocations walk the contiguous direction of each stored matrix.
            var am: u32;
            var ak: u32;
            if (TRANS_A) {
                am = idx % TILE;
                ak = idx / TILE;
            } else {
                ak = idx % BK;
                am = idx / BK;
            }
            var va = 0.0;
            if (k0 + ak < ke) {
                va = load_a_or_zero(m0 + am, k0 + ak);
            }
            tile_a[ak * TS + am] = va;
            var bk: u32;
            var bn: u32;
            if (TRANS_B) {
                bk = idx % BK;
                bn = idx / BK;
            } else {
                bn = idx % TILE;
                bk = idx / TILE;
            }
            var vb = 0.0;
            if (k0 + bk < ke) {
                vb = load_b_or_zero(k0 + bk, n0 + bn);
            }
            tile_b[bk * TS + bn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ra = kk * TS + ty;
            let rb = kk * TS + tx;
            let av = vec4<f32>(tile_a[ra], tile_a[ra + 16u], tile_a[ra + 32u], tile_a[ra + 48u]);
            let bv = vec4<f32>(tile_b[rb], tile_b[rb + 16u], tile_b[rb + 32u], tile_b[rb + 48u]);
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let m = m0 + ty + 16u * i;
            let n = n0 + tx + 16u * j;
            if (split) {
                if (m < p.m && n < p.n) {
                    c[(wid.z * p.m + m) * p.n + n] = acc[i][j];
                }
            } else if (n < p.n) {
                finish(m, n, acc[i][j]);
            }
        }
    }
}


// matmul_tiled128: double-buffered tiles of 8 k-rows × 32 vec4 (128 floats), 256 vec4 per buffer.
var<workgroup> ta128: array<vec4<f32>, 512>; // ta128[buf * 256 + sw128(k, m / 4)][m % 4]
var<workgroup> tb128: array<vec4<f32>, 512>; // tb128[buf * 256 + sw128(k, n / 4)][n % 4]

// Index of vec4 column c4 of k-row k in one buffer, swizzled: columns XOR 4 for k = 4..7.
fn sw128(k: u32, c4: u32) -> u32 {
    return k * 32u + (c4 ^ (k & 4u));
}

// This invocation's 4 elements of op(A) for the BK step at k0 (see the header for the mapping).
fn fetch_a128(m0: u32, k0: u32, tid: u32) -> vec4<f32> {
    let rows = select(p.m, p.m - 1u, ONES_ROW); // rows of op(A) stored in A
    let fast = (p.vec_ok & 1u) != 0u;
    if (TRANS_A) {
        let k = k0 + (tid >> 5u);
        let m = m0 + ((tid & 31u) << 2u);
        if (fast && k < p.k && m + 4u <= rows) {
            return a4[(k * p.lda + m) >> 2u];
        }
        return vec4<f32>(load_a_or_zero(m, k), load_a_or_zero(m + 1u, k), load_a_or_zero(m + 2u, k),
                         load_a_or_zero(m + 3u, k));
    }
    let m = m0 + (tid >> 1u);
    let k = k0 + ((tid & 1u) << 2u);
    if (fast && m < rows && k + 4u <= p.k) {
        return a4[(m * p.lda + k) >> 2u];
    }
    return vec4<f32>(load_a_or_zero(m, k), load_a_or_zero(m, k + 1u), load_a_or_zero(m, k + 2u),
                     load_a_or_zero(m, k + 3u));
}

// This invocation's 4 elements of op(B) for the BK step at k0.
fn fetch_b128(n0: u32, k0: u32, tid: u32) -> vec4<f32> {
    let fast = (p.vec_ok & 2u) != 0u;
    if (TRANS_B) {
        let n = n0 + (tid >> 1u);
        let k = k0 + ((tid & 1u) << 2u);
        if (fast && n < p.n && k + 4u <= p.k) {
            return b4[(n * p.ldb + k) >> 2u];
        }
        return vec4<f32>(load_b_or_zero(k, n), load_b_or_zero(k + 1u, n), load_b_or_zero(k + 2u, n),
                         load_b_or_zero(k + 3u, n));
    }
    let k = k0 + (tid >> 5u);
    let n = n0 + ((tid & 31u) << 2u);
    if (fast && k < p.k && n + 4u <= p.n) {
        return b4[(k * p.ldb + n) >> 2u];
    }
    return vec4<f32>(load_b_or_zero(k, n), load_b_or_zero(k, n + 1u), load_b_or_zero(k, n + 2u),
                     load_b_or_zero(k, n + 3u));
}

// Stores fetch_a128's vec4 into buffer `buf` (0 or 256) of ta128.
fn put_a128(buf: u32, tid: u32, v: vec4<f32>) {
    if (TRANS_A) {
        ta128[buf + sw128(tid >> 5u, tid & 31u)] = v;
    } else {
        // 4 consecutive k of row m = tid / 2: one scalar into each of 4 k-rows.
        let m = tid >> 1u;
        let k = (tid & 1u) << 2u;
        let c4 = m >> 2u;
        let e = m & 3u;
        ta128[buf + sw128(k, c4)][e] = v.x;
        ta128[buf + sw128(k + 1u, c4)][e] = v.y;
        ta128[buf + sw128(k + 2u, c4)][e] = v.z;
        ta128[buf + sw128(k + 3u, c4)][e] = v.w;
    }
}

fn put_b128(buf: u32, tid: u32, v: vec4<f32>) {
    if (TRANS_B) {
        let n = tid >> 1u;
        let k = (tid & 1u) << 2u;
        let c4 = n >> 2u;
        let e = n & 3u;
        tb128[buf + sw128(k, c4)][e] = v.x;
        tb128[buf + sw128(k + 1u, c4)][e] = v.y;
        tb128[buf + sw128(k + 2u, c4)][e] = v.z;
        tb128[buf + sw128(k + 3u, c4)][e] = v.w;
    } else {
        tb128[buf + sw128(tid >> 5u, tid & 31u)] = v;
    }
}

// Row m of the invocation's outputs: columns n..n+3 (lo) and n+64..n+67 (hi).
fn store128(m: u32, n: u32, lo: vec4<f32>, hi: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            finish(m, n + j, lo[j]);
        }
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + 64u + j < p.n) {
            finish(m, n + 64u + j, hi[j]);
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn matmul_tiled128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let m0 = wid.y * 128u;
    let n0 = wid.x * 128u;
    let tx = tid & 15u;
    let ty = tid >> 4u;
    // cRH: row m0 + 4ty + R (R < 4) or m0 + 64 + 4ty + R - 4 (R >= 4); H = 0 columns n0 + 4tx + 0..3,
    // H = 1 columns n0 + 64 + 4tx + 0..3. Named registers, never indexed.
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    // Iteration t loads BK step t from global memory into registers (none past the last step), runs
    // step t - 1's FMAs from the buffer the previous iteration filled (none at t = 0) while those loads
    // are in flight, then stores the registers into the other buffer. That buffer was last read by
    // iteration t - 1's FMAs, which every invocation finished before the barrier that ended it.
    let steps = (p.k + BK128 - 1u) / BK128;
    for (var t = 0u; t <= steps; t++) {
        let load = t < steps; // uniform, like t > 0u
        var ga = vec4<f32>(0.0);
        var gb = vec4<f32>(0.0);
        if (load) {
            ga = fetch_a128(m0, t * BK128, tid);
            gb = fetch_b128(n0, t * BK128, tid);
        }
        if (t > 0u) {
            let cur = ((t - 1u) & 1u) * 256u;
            for (var kk = 0u; kk < BK128; kk++) {
                let a_lo = ta128[cur + sw128(kk, ty)];
                let a_hi = ta128[cur + sw128(kk, ty + 16u)];
                let b_lo = tb128[cur + sw128(kk, tx)];
                let b_hi = tb128[cur + sw128(kk, tx + 16u)];
                c00 = fma(vec4<f32>(a_lo.x), b_lo, c00);
                c01 = fma(vec4<f32>(a_lo.x), b_hi, c01);
                c10 = fma(vec4<f32>(a_lo.y), b_lo, c10);
                c11 = fma(vec4<f32>(a_lo.y), b_hi, c11);
                c20 = fma(vec4<f32>(a_lo.z), b_lo, c20);
                c21 = fma(vec4<f32>(a_lo.z), b_hi, c21);
                c30 = fma(vec4<f32>(a_lo.w), b_lo, c30);
                c31 = fma(vec4<f32>(a_lo.w), b_hi, c31);
                c40 = fma(vec4<f32>(a_hi.x), b_lo, c40);
                c41 = fma(vec4<f32>(a_hi.x), b_hi, c41);
                c50 = fma(vec4<f32>(a_hi.y), b_lo, c50);
                c51 = fma(vec4<f32>(a_hi.y), b_hi, c51);
                c60 = fma(vec4<f32>(a_hi.z), b_lo, c60);
                c61 = fma(vec4<f32>(a_hi.z), b_hi, c61);
                c70 = fma(vec4<f32>(a_hi.w), b_lo, c70);
                c71 = fma(vec4<f32>(a_hi.w), b_hi, c71);
            }
        }
        if (load) {
            put_a128((t & 1u) * 256u, tid, ga);
            put_b128((t & 1u) * 256u, tid, gb);
        }
        workgroupBarrier();
    }
    let m = m0 + 4u * ty;
    let n = n0 + 4u * tx;
    store128(m, n, c00, c01);
    store128(m + 1u, n, c10, c11);
    store128(m + 2u, n, c20, c21);
    store128(m + 3u, n, c30, c31);
    store128(m + 64u, n, c40, c41);
    store128(m + 65u, n, c50, c51);
    store128(m + 66u, n, c60, c61);
    store128(m + 67u, n, c70, c71);
}
