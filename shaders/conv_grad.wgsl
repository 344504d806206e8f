// conv_grad.wgsl: the parameter gradient of a conv or transposed-conv layer (conv.wgsl's layout and
// geometry), as a split-K reduction in a fixed order (no atomics: results are deterministic).
//
// dW[tap·C + c, n] = Σ over (small pixel m, tap) pairs of A_c · G_n, with big = small·S − P + tap:
//   GATHER_B = false (conv layer):  A = X[big] (the layer input), G = dY[m] (its output, small)
//   GATHER_B = true  (convT layer): A = X[m] (the layer input, small), G = dY[big]
// ONES adds the bias row (row K·K·C): Σ_m G[m, n], with G read at m (pass C = 0, K = 1, S = 1, P = 0 to
// get the bias alone, e.g. a convT bias, which sums dY over its big output image).
// PRE_RELU reads max(A, 0) (the residual block's first conv reads relu(x)).
//
// conv_wgrad(_v4): invocation t = (tap, 4 channels c, 4 outputs n), or a bias tile; split s = wid.y sums
//   rows [s·rows_per_split, (s+1)·rows_per_split) of the B·SH·SW small pixels into a 4×4 tile and
//   writes OUT[out_offset + (s·rows_out + row)·N + n] (rows_out = K·K·C + ONES). Per pixel the v4 form
//   makes 2 vec4 loads for 16 FMAs; the scalar form (C or N not multiples of 4) loads with bounds.
//   grid = (ceil(tiles / WG), splits, 1).
// split_sum: OUT[out_offset + i] = Σ_{s < splits} PART[in_offset + s·len + i], i < len, in order of s.
//   grid = (ceil(len / 256), 1, 1).
// split_fold: one level of a tree over many splits, inside the scratch buffer (bound at 3 alone):
//   OUT[out_offset + g·len + i] = Σ_{s < 16, 16g + s < splits} OUT[in_offset + (16g + s)·len + i], in
//   order of s, for g < ceil(splits / 16), i < len (regions disjoint). A serial split_sum gives each
//   output one invocation looping over every split: with few outputs and thousands of splits (a
//   transposed conv's bias: 1 output channel, a split per 16 pixels) that chain of loads is the whole
//   launch's time on a GPU. Folding by 16 until at most 64 splits remain keeps every pass parallel.
//   grid = (min(ceil(len · ceil(splits / 16) / 256), 65535), 1, 1), a grid-stride loop beyond.
// im2col, im2col_flat, untap, retap, col2im: see their entries below (the matmul forms of conv layers).
// Bindings: 0 uniform Params, 1 A (read; split_sum: PART), 2 G (read), 3 OUT (read_write, =),
//   4 A as vec4, 5 G as vec4.

struct Params {
    batch: u32,
    sh: u32,
    sw: u32,
    c: u32,
    bh: u32,
    bw: u32,
    n: u32,
    k: u32,
    stride: u32,
    pad: u32,
    splits: u32,
    rows_per_split: u32,
    // Weight tiles K·K·ceil(C/4)·ceil(N/4), then bias tiles ceil(N/4) when ONES.
    tiles: u32,
    // Element offset of row 0 of split 0 in OUT (split_sum: of the first output).
    out_offset: u32,
    // split_sum, split_fold, untap: elements per split.
    len: u32,
    // split_sum, split_fold, untap: element offset of split 0's partials.
    in_offset: u32,
}

override GATHER_B: bool = false;
override ONES: bool = false;
override PRE_RELU: bool = false;
override WG: u32 = 64u;
// conv_wgrad(_v4) with C = 0 (the bias alone): every tile is a bias tile, so the loop sums G and
// nothing else. A constant, since lavapipe runs both sides of a branch it cannot prove uniform (the
// weight path's taps, divisions and A loads cost the bias-only launch 20x its sum).
override BIAS_ONLY: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> g4: array<vec4<f32>>;

struct Tile {
    tap: u32,
    c: u32,
    n: u32,
    bias: bool,
    ok: bool,
}

fn tile_of(t: u32) -> Tile {
    var q: Tile;
    let cb = (p.c + 3u) / 4u;
    let nb = (p.n + 3u) / 4u;
    let wtiles = p.k * p.k * cb * nb;
    q.ok = t < p.tiles;
    q.bias = t >= wtiles;
    if (q.bias) {
        q.tap = 0u;
        q.c = 0u;
        q.n = (t - wtiles) * 4u;
    } else {
        q.n = (t % nb) * 4u;
        q.c = ((t / nb) % cb) * 4u;
        q.tap = t / (nb * cb);
    }
    return q;
}

// The big pixel linked to small pixel (b, sy, sx) by tap, or -1 outside the big image.
fn big_pixel(b: u32, sy: u32, sx: u32, tap: u32) -> i32 {
    let by = i32(sy * p.stride + tap / p.k) - i32(p.pad);
    let bx = i32(sx * p.stride + tap % p.k) - i32(p.pad);
    if (by < 0 || bx < 0 || by >= i32(p.bh) || bx >= i32(p.bw)) {
        return -1;
    }
    return (i32(b * p.bh) + by) * i32(p.bw) + bx;
}

fn write_tile(q: Tile, s: u32, acc: array<vec4<f32>, 4>) {
    let rows_out = p.k * p.k * p.c + select(0u, 1u, ONES);
    for (var i = 0u; i < 4u; i++) {
        let row = select(q.tap * p.c + q.c + i, p.k * p.k * p.c, q.bias);
        if ((q.bias && i > 0u) || (!q.bias && q.c + i >= p.c)) {
            continue;
        }
        let base = p.out_offset + (s * rows_out + row) * p.n;
        for (var j = 0u; j < 4u; j++) {
            if (q.n + j < p.n) {
                out[base + q.n + j] = acc[i][j];
            }
        }
    }
}

fn load_a(pix: i32, c: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (pix >= 0) {
        for (var i = 0u; i < 4u; i++) {
            if (c + i < p.c) {
                v[i] = a[u32(pix) * p.c + c + i];
            }
        }
    }
    if (PRE_RELU) {
        v = max(v, vec4<f32>(0.0));
    }
    return v;
}

fn load_g(pix: i32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (pix >= 0) {
        for (var j = 0u; j < 4u; j++) {
            if (n + j < p.n) {
                v[j] = g[u32(pix) * p.n + n + j];
            }
        }
    }
    return v;
}

fn load_a4(pix: i32, c: u32) -> vec4<f32> {
    var v = select(vec4<f32>(0.0), a4[(u32(max(pix, 0)) * p.c + c) >> 2u], pix >= 0);
    if (PRE_RELU) {
        v = max(v, vec4<f32>(0.0));
    }
    return v;
}

fn load_g4(pix: i32, n: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), g4[(u32(max(pix, 0)) * p.n + n) >> 2u], pix >= 0);
}

// A small pixel of the reduction, walked in order without divisions.
struct Cursor {
    b: u32,
    sy: u32,
    sx: u32,
}

fn cursor_at(m: u32) -> Cursor {
    let area = p.sh * p.sw;
    return Cursor(m / area, (m % area) / p.sw, m % p.sw);
}

fn advance(c: Cursor) -> Cursor {
    var n = c;
    n.sx += 1u;
    if (n.sx == p.sw) {
        n.sx = 0u;
        n.sy += 1u;
        if (n.sy == p.sh) {
            n.sy = 0u;
            n.b += 1u;
        }
    }
    return n;
}

// (A pixel, G pixel) of pair (m, tile's tap); -1 where the big pixel falls outside the image.
fn pair(q: Tile, m: u32, c: Cursor) -> vec2<i32> {
    if (q.bias) {
        return vec2<i32>(0, i32(m));
    }
    let big = big_pixel(c.b, c.sy, c.sx, q.tap);
    return select(vec2<i32>(big, i32(m)), vec2<i32>(i32(m), big), GATHER_B);
}

// Rows [begin, end) of split s.
fn split_rows(s: u32) -> vec2<u32> {
    let total = p.batch * p.sh * p.sw;
    let begin = min(s * p.rows_per_split, total);
    return vec2<u32>(begin, min(begin + p.rows_per_split, total));
}

fn outer(acc: ptr<function, array<vec4<f32>, 4>>, av: vec4<f32>, gv: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(av.x), gv, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(av.y), gv, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(av.z), gv, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(av.w), gv, (*acc)[3]);
}

@compute @workgroup_size(WG, 1, 1)
fn conv_wgrad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = tile_of(gid.x);
    if (!q.ok) {
        return;
    }
    let rows = split_rows(gid.y);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (BIAS_ONLY) {
        // The bias tile's sum in the same order as the loop below (acc[0] += 1·G[m]).
        if (p.n == 1u) {
            // One output channel (a transposed conv to one image channel): one load per pixel, not
            // load_g's four bounds-checked ones (on lavapipe each is a loop over the lanes).
            for (var m = rows.x; m < rows.y; m++) {
                acc[0].x += g[m];
            }
        } else {
            for (var m = rows.x; m < rows.y; m++) {
                acc[0] += load_g(i32(m), q.n);
            }
        }
        write_tile(q, gid.y, acc);
        return;
    }
    var cur = cursor_at(rows.x);
    for (var m = rows.x; m < rows.y; m++) {
        let pp = pair(q, m, cur);
        let av = select(load_a(pp.x, q.c), vec4<f32>(1.0, 0.0, 0.0, 0.0), q.bias);
        outer(&acc, av, load_g(pp.y, q.n));
        cur = advance(cur);
    }
    write_tile(q, gid.y, acc);
}

@compute @workgroup_size(WG, 1, 1)
fn conv_wgrad_v4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = tile_of(gid.x);
    if (!q.ok) {
        return;
    }
    let rows = split_rows(gid.y);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (BIAS_ONLY) {
        for (var m = rows.x; m < rows.y; m++) {
            acc[0] += load_g4(i32(m), q.n);
        }
        write_tile(q, gid.y, acc);
        return;
    }
    var cur = cursor_at(rows.x);
    for (var m = rows.x; m < rows.y; m++) {
        let pp = pair(q, m, cur);
        // The bias tile never reads A (its channel count may be 0).
        var av = vec4<f32>(1.0, 0.0, 0.0, 0.0);
        if (!q.bias) {
            av = load_a4(pp.x, q.c);
        }
        outer(&acc, av, load_g4(pp.y, q.n));
        cur = advance(cur);
    }
    write_tile(q, gid.y, acc);
}

@compute @workgroup_size(256, 1, 1)
fn split_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.len) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += a[p.in_offset + s * p.len + i];
    }
    out[p.out_offset + i] = acc;
}

// split_sum4: split_sum 4 values an invocation, through the vec4 views of PART (binding 4) and OUT
//   (binding 6), where len, in_offset and out_offset are multiples of 4 (the launcher checks): a
//   quarter of the loads and stores, each a loop over the lanes on lavapipe. grid = (ceil(len / 1024),
//   1, 1).
@compute @workgroup_size(256, 1, 1)
fn split_sum4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (4u * i >= p.len) {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < p.splits; s++) {
        acc += a4[(p.in_offset + s * p.len) / 4u + i];
    }
    out4[p.out_offset / 4u + i] = acc;
}

@compute @workgroup_size(256, 1, 1)
fn split_fold(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let groups = (p.splits + 15u) / 16u;
    let total = groups * p.len;
    for (var t = gid.x; t < total; t += nwg.x * 256u) {
        let g = t / p.len;
        let i = t % p.len;
        let end = min(16u * g + 16u, p.splits);
        var acc = 0.0;
        for (var s = 16u * g; s < end; s++) {
            acc += out[p.in_offset + s * p.len + i];
        }
        out[p.out_offset + t] = acc;
    }
}

// im2col (CPU adapters; GPUs run im2col_flat): the gathered operand laid out as a matrix, so that
//   the weight gradient becomes one matmul (matmul.wgsl): on lavapipe the three launches beat
//   conv_wgrad 2–6× on the conv VAE's layers (benches/RESULTS.md).
//   Conv layer (not GATHER_B): the layer input, OUT[m·R + tap·C + c] = A[big(m, tap), c] (0 outside
//   the image; max(·, 0) with PRE_RELU), R = K·K·C; then [dW; db] = OUTᵀ · G with a ones row (the dense
//   layer's dW) is the gradient block itself.
//   Transposed conv (GATHER_B): the output gradient, OUT[m·K·K·N + tap·N + n] = G[big(m, tap), n];
//   then Aᵀ · OUT is [C, K·K·N], which `untap` reorders into the block's [K·K·C, N] rows.
//   m < B·SH·SW small pixels. One invocation per small pixel m walks its K² taps (no division per
//   tap: AVX2 divides lane by lane, and the old one-invocation-per-(m, tap) form spent most of its
//   time there) and copies each tap's channels, with vec4 loads and stores when VEC4 (the channel
//   count a multiple of 4; an override, since lavapipe runs both sides of a branch on a uniform).
//   A grid-stride loop over the pixels. grid = (min(ceil(P / 256), 65535), 1, 1). Bindings 1 A, 2 G,
//   3 OUT, and vec4 views 4 A, 5 G, 6 OUT.
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>;

// One value of the gathered operand (G with GATHER_B, else A, relu'd with PRE_RELU) at channel c of
// pixel pix (0 outside the image: pix < 0), ch channels a pixel; gathered4: 4 channels from c (VEC4).
fn gathered1(pix: i32, ch: u32, c: u32) -> f32 {
    if (pix < 0) {
        return 0.0;
    }
    if (GATHER_B) {
        return g[u32(pix) * ch + c];
    }
    let v = a[u32(pix) * ch + c];
    return select(v, max(v, 0.0), PRE_RELU);
}

fn gathered4(pix: i32, c: u32) -> vec4<f32> {
    if (GATHER_B) {
        return load_g4(pix, c);
    }
    return load_a4(pix, c);
}

@compute @workgroup_size(256, 1, 1)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let pixels = p.batch * p.sh * p.sw;
    let ch = select(p.c, p.n, GATHER_B);
    for (var m = gid.x; m < pixels; m += nwg.x * 256u) {
        let cur = cursor_at(m);
        let y0 = i32(cur.sy * p.stride) - i32(p.pad);
        let x0 = i32(cur.sx * p.stride) - i32(p.pad);
        // Row m, columns from tap·ch: element (m·K² + tap)·ch.
        var dst = m * p.k * p.k * ch;
        for (var ky = 0u; ky < p.k; ky++) {
            let by = y0 + i32(ky);
            for (var kx = 0u; kx < p.k; kx++) {
                let bx = x0 + i32(kx);
                var pix = -1;
                if (by >= 0 && bx >= 0 && by < i32(p.bh) && bx < i32(p.bw)) {
                    pix = (i32(cur.b * p.bh) + by) * i32(p.bw) + bx;
                }
                if (VEC4) {
                    for (var c = 0u; c < ch; c += 4u) {
                        out4[(dst + c) >> 2u] = gathered4(pix, c);
                    }
                } else {
                    for (var c = 0u; c < ch; c++) {
                        out[dst + c] = gathered1(pix, ch, c);
                    }
                }
                dst += ch;
            }
        }
    }
}

// im2col1_tex (lavapipe): im2col for a one-channel image (C = 1; N = 1 with GATHER_B) and K a multiple
//   of 4, the image read through a read-only texture that aliases its buffer (float i at texel
//   in_offset + i/4: matmul_sgtex.wgsl's layout; here in_offset is the image's first texel) and a kernel
//   row's taps stored 4 at a time: the 4 pixels of a row straddle at most two texels, so two texel loads
//   (gathers on lavapipe) and one vec4 store where im2col makes 4 loads and 4 stores, each a loop over
//   the lanes with a bounds check. The same values in the same places: im2col's bits. Bindings 0 Params,
//   6 OUT (vec4), 9 the image's texture. grid as im2col's.
@group(0) @binding(9) var img: texture_storage_2d<rgba32float, read>;

//!include texel.wgsl

// Texel t of the image's texture (t < 0, read only for values then zeroed, reads texel 0).
fn img_texel(t: i32) -> vec4<f32> {
    return textureLoad(img, texel(u32(max(t, 0))));
}

@compute @workgroup_size(256, 1, 1)
fn im2col1_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let pixels = p.batch * p.sh * p.sw;
    let bw = i32(p.bw);
    for (var m = gid.x; m < pixels; m += nwg.x * 256u) {
        let cur = cursor_at(m);
        let y0 = i32(cur.sy * p.stride) - i32(p.pad);
        let x0 = i32(cur.sx * p.stride) - i32(p.pad);
        // Row m's first vec4: element m·K².
        var dst = (m * p.k * p.k) >> 2u;
        for (var ky = 0u; ky < p.k; ky++) {
            let by = y0 + i32(ky);
            let row_ok = by >= 0 && by < i32(p.bh);
            // The float index of pixel (b, by, 0), by clamped into the image (the row is zeroed
            // below when it lies outside).
            let row = 4 * i32(p.in_offset) + (i32(cur.b * p.bh) + clamp(by, 0, i32(p.bh) - 1)) * bw;
            for (var kx = 0u; kx < p.k; kx += 4u) {
                let bx = x0 + i32(kx);
                // Pixels bx .. bx+3: components r .. r+3 of texels t and t+1.
                let f = row + bx;
                let t = f >> 2u;
                let r = f & 3;
                let lo = img_texel(t);
                let hi = img_texel(t + 1);
                var v = lo;
                v = select(v, vec4<f32>(lo.yzw, hi.x), r == 1);
                v = select(v, vec4<f32>(lo.zw, hi.xy), r == 2);
                v = select(v, vec4<f32>(lo.w, hi.xyz), r == 3);
                let xs = vec4<i32>(bx) + vec4<i32>(0, 1, 2, 3);
                let inside = (xs >= vec4<i32>(0)) & (xs < vec4<i32>(bw)) & vec4<bool>(row_ok);
                v = select(vec4<f32>(0.0), v, inside);
                if (PRE_RELU && !GATHER_B) {
                    v = max(v, vec4<f32>(0.0));
                }
                out4[dst] = v;
                dst += 1u;
            }
        }
    }
}

// bias_tex (lavapipe): conv_wgrad(_v4)'s bias-only launch (BIAS_ONLY: C = 0, K = 1; the sum of G over
//   the pixels, a transposed conv's bias) with G read through a read-only texture that aliases its
//   buffer (binding 9, G's first texel at in_offset): a texel load (a gather on lavapipe) where their
//   buffer loads are loops over the lanes. N = 1: 4 pixels a texel (rows_per_split and the pixels
//   multiples of 4); N a multiple of 4: the tile's 4 channels a texel. The same sums in the same order:
//   their bits. Invocation i = split i / tiles, tile i % tiles: a bias has few tiles (N/4), so
//   conv_wgrad's grid (x the tiles, y the splits) would be one workgroup a split, mostly idle, and
//   lavapipe's cost per workgroup would be the launch's. Bindings 0 Params, 3 OUT, 9 G's texture.
//   grid = (ceil(tiles · splits / WG), 1, 1).
@compute @workgroup_size(WG, 1, 1)
fn bias_tex(@builtin(global_invocation_id) gid: vec3<u32>) {
    let split = gid.x / p.tiles;
    let q = tile_of(gid.x % p.tiles);
    if (split >= p.splits) {
        return;
    }
    let rows = split_rows(split);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    if (p.n == 1u) {
        var s = 0.0;
        let end = rows.y >> 2u;
        for (var t = rows.x >> 2u; t < end; t++) {
            let v = textureLoad(img, texel(p.in_offset + t));
            s += v.x;
            s += v.y;
            s += v.z;
            s += v.w;
        }
        acc[0].x = s;
    } else {
        for (var m = rows.x; m < rows.y; m++) {
            acc[0] += textureLoad(img, texel(p.in_offset + ((m * p.n + q.n) >> 2u)));
        }
    }
    write_tile(q, split, acc);
}

// im2col_flat (GPUs): the same matrix, one invocation per vec4 of it (VEC4) or per value, in order:
//   unit u is row m = u / (K²·W), tap (u / W) % K², channels from (u % W)·(4 or 1), W = C/4 (or C)
//   units a tap. A warp's 32 invocations load and store consecutive channels, where im2col's one
//   invocation per row puts their stores K²·C floats apart. The divisions per unit are cheap on a
//   GPU (lavapipe divides lane by lane: it runs im2col). grid = (min(ceil(units / 256), 65535), 1, 1),
//   a grid-stride loop beyond. Bindings as im2col.
@compute @workgroup_size(256, 1, 1)
fn im2col_flat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = select(p.c, p.n, GATHER_B);
    let w = select(ch, ch / 4u, VEC4);
    let taps = p.k * p.k;
    let units = p.batch * p.sh * p.sw * taps * w;
    for (var u = gid.x; u < units; u += nwg.x * 256u) {
        let t = u / w;
        let c = u % w;
        let cur = cursor_at(t / taps);
        let pix = big_pixel(cur.b, cur.sy, cur.sx, t % taps);
        if (VEC4) {
            out4[u] = gathered4(pix, 4u * c);
        } else {
            out[u] = gathered1(pix, ch, c);
        }
    }
}

// untap (after im2col with GATHER_B and the matmul): OUT[out_offset + (tap·C + c)·N + n] =
//   Σ_{s < splits} PART[in_offset + s·len + c·K·K·N + tap·N + n] (in order of s; one split unless the
//   matmul split K), one invocation per element of the K·K·C × N block.
//   grid = (ceil(K·K·C·N / 256), 1, 1) (at most 65535 groups: checked by the launcher).
@compute @workgroup_size(256, 1, 1)
fn untap(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.k * p.k * p.c * p.n) {
        return;
    }
    let src = p.in_offset + tap_major(i);
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += a[src + s * p.len];
    }
    out[p.out_offset + i] = acc;
}

// untap4: untap 4 values an invocation (n .. n+3 of one tap and channel: N a multiple of 4, as are len,
//   in_offset and out_offset; the launcher checks), through the vec4 views (bindings 4, 6): a quarter
//   of the loads, stores and tap_major divisions, which lavapipe makes lane by lane.
//   grid = (ceil(K·K·C·N / 1024), 1, 1).
@compute @workgroup_size(256, 1, 1)
fn untap4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = 4u * gid.x;
    if (i >= p.k * p.k * p.c * p.n) {
        return;
    }
    let src = (p.in_offset + tap_major(i)) / 4u;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < p.splits; s++) {
        acc += a4[src + s * (p.len / 4u)];
    }
    out4[(p.out_offset + i) / 4u] = acc;
}

// Where element i = (tap·C + c)·N + n of the K·K·C × N block stands in the [C, K·K·N] matrix.
fn tap_major(i: u32) -> u32 {
    let cn = p.c * p.n;
    let tap = i / cn;
    let c = (i % cn) / p.n;
    let n = i % p.n;
    return (c * p.k * p.k + tap) * p.n + n;
}

// retap (the inverse of untap, for a transposed conv's input gradient on the im2col path): OUT[c·K·K·N
//   + tap·N + n] = A[(tap·C + c)·N + n], the block's K·K·C × N weight rows (A, binding 1) as the
//   [C, K·K·N] matrix Wt. With im2col (GATHER_B) of the output gradient, dX = I · Wtᵀ is one matmul.
//   With FLIP the taps are reversed (tap → K·K − 1 − tap): a stride-1 conv's input gradient is the
//   conv of dY with the flipped kernel, so im2col of dY (padding K − 1 − pad) times Wtᵀ gives dX.
//   One invocation per weight; grid = (ceil(K·K·C·N / 256), 1, 1) (at most 65535 groups: checked by
//   the launcher).
override FLIP: bool = false;

// Where weight i of the block goes in the [C, K·K·N] matrix (its tap reversed with FLIP).
fn retap_dest(i: u32) -> u32 {
    var j = i;
    if (FLIP) {
        let cn = p.c * p.n;
        j = (p.k * p.k - 1u - i / cn) * cn + i % cn;
    }
    return tap_major(j);
}

@compute @workgroup_size(256, 1, 1)
fn retap(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.k * p.k * p.c * p.n) {
        return;
    }
    out[retap_dest(i)] = a[i];
}

// retap4: retap 4 weights an invocation (n .. n+3: N a multiple of 4; the launcher checks), through the
//   vec4 views (bindings 4, 6). grid = (ceil(K·K·C·N / 1024), 1, 1).
@compute @workgroup_size(256, 1, 1)
fn retap4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = 4u * gid.x;
    if (i >= p.k * p.k * p.c * p.n) {
        return;
    }
    out4[retap_dest(i) / 4u] = a4[i / 4u];
}

// col2im (the matmul forms, `--conv matmul`: a transposed conv's forward and a conv's input
//   gradient, which write the big image from the small one). First one matmul gives every (small pixel, tap) product,
//   PROD[m·K·K·N + tap·N + n] (m < B·SH·SW): a transposed conv's X · Wt with Wt from `retap`, a conv's
//   dY · Wᵀ with its weight block read transposed. Then each big value sums the products that land
//   on it, in tap order: OUT[b, by, bx, n] = act(Σ PROD[(b, sy, sx), (ky·K + kx)·N + n] + bias) over
//   by = sy·S − P + ky, bx = sx·S − P + kx; ONES adds the bias (W's row K·K·C, C = the small image's
//   channels), ACT the activation, DACT multiplies by act'(Z) instead (an input gradient); RESID adds
//   R before the activation (1) or after the act' factor (2), as conv.wgsl's epilogue does.
//   One invocation per big pixel and 4 channels; VEC4 (N a multiple of 4) loads and stores vec4.
//   Bindings 1 PROD, 2 W (ONES) or Z (DACT) or PROD again, 3 OUT, 7 R (PROD again without RESID), and
//   the vec4 views 4, 5, 6, 8 of the same. grid = (min(ceil(B·BH·BW·ceil(N/4) / 256), 65535), 1, 1),
//   a grid-stride loop beyond.

//!include act.wgsl

override ACT: u32 = 0u;
override DACT: u32 = 0u;
override SLOPE: f32 = 0.01;
override VEC4: bool = false;
// The residual R added (conv.wgsl's codes): 1 before the activation, 2 after the act' factor.
override RESID: u32 = 0u;
// col2im: the stride as a constant (the launcher passes the layer's), so that its divisions and
// remainders by S compile to shifts and multiplies instead of lane-by-lane divisions; 0 reads p.stride.
override STRIDE: u32 = 0u;

@group(0) @binding(7) var<storage, read> r: array<f32>;
@group(0) @binding(8) var<storage, read> r4: array<vec4<f32>>;

// Four values from element i of `a` (which = 0), `g` (1) or `r` (2): one vec4 load with VEC4 (i a
// multiple of 4), else channels n .. n+3 one by one (those from p.n on read as 0).
fn load4(which: u32, i: u32, n: u32) -> vec4<f32> {
    if (VEC4) {
        switch which {
            case 0u: { return a4[i >> 2u]; }
            case 1u: { return g4[i >> 2u]; }
            default: { return r4[i >> 2u]; }
        }
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u && n + j < p.n; j++) {
        switch which {
            case 0u: { v[j] = a[i + j]; }
            case 1u: { v[j] = g[i + j]; }
            default: { v[j] = r[i + j]; }
        }
    }
    return v;
}

@compute @workgroup_size(256, 1, 1)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // One invocation per big pixel and 4 channels (vec4 loads and stores with VEC4: N a multiple of 4).
    let n4 = (p.n + 3u) / 4u;
    let total = p.batch * p.bh * p.bw * n4;
    let row = p.k * p.k * p.n;
    let st = select(p.stride, STRIDE, STRIDE != 0u);
    for (var u = gid.x; u < total; u += nwg.x * 256u) {
        let n = (u % n4) * 4u;
        let pix = u / n4;
        let bx = pix % p.bw;
        let by = (pix / p.bw) % p.bh;
        let b = pix / (p.bw * p.bh);
        var acc = vec4<f32>(0.0);
        // ky runs over the taps of by's phase; sy = (by + P − ky) / S falls as ky rises.
        for (var ky = (by + p.pad) % st; ky < p.k && ky <= by + p.pad; ky += st) {
            let sy = (by + p.pad - ky) / st;
            if (sy >= p.sh) {
                continue;
            }
            for (var kx = (bx + p.pad) % st; kx < p.k && kx <= bx + p.pad; kx += st) {
                let sx = (bx + p.pad - kx) / st;
                if (sx < p.sw) {
                    acc += load4(0u, ((b * p.sh + sy) * p.sw + sx) * row + (ky * p.k + kx) * p.n + n, n);
                }
            }
        }
        let i = pix * p.n + n;
        if (ONES) {
            acc += load4(1u, p.k * p.k * p.c * p.n + n, n);
        }
        if (RESID == 1u) {
            acc += load4(2u, i, n);
        }
        acc = vec4<f32>(act_fwd(ACT, acc.x, SLOPE), act_fwd(ACT, acc.y, SLOPE), act_fwd(ACT, acc.z, SLOPE),
                        act_fwd(ACT, acc.w, SLOPE));
        if (DACT != 0u) {
            let zv = load4(1u, i, n);
            acc *= vec4<f32>(act_grad_from_y(DACT, zv.x, SLOPE), act_grad_from_y(DACT, zv.y, SLOPE),
                             act_grad_from_y(DACT, zv.z, SLOPE), act_grad_from_y(DACT, zv.w, SLOPE));
        }
        if (RESID == 2u) {
            acc += load4(2u, i, n);
        }
        if (VEC4) {
            out4[i >> 2u] = acc;
        } else {
            for (var j = 0u; j < 4u && n + j < p.n; j++) {
                out[i + j] = acc[j];
            }
        }
    }
}
