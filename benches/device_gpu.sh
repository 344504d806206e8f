#!/bin/bash
# The benchmark run recorded in benches/RESULTS.md for an NVIDIA GPU through Vulkan, with the PyTorch
# eager baseline in the same run. Expects the vaegpu release binary at $BIN (default
# target/release/vaegpu) and writes its figures under $OUT (default ./bench-out):
#   gpu.txt          nvidia-smi's name, driver and clocks
#   kernels_vae.json bench --model vae (matmuls of the MLP VAE, both kernels, and the step's kernels)
#   kernels_conv.json bench --model conv-vae (with each conv kernel the adapter did not choose)
#   kernels_vae1024.json the same at batch 1024 (with the split-K rows where the adapter splits)
#   kernels_conv1024.json bench --model conv-vae at batch 1024
#   conv_<k>.json    bench --steps --model conv-vae with --conv k forced (gather, tiled, matmul)
#   vae_split_<b>.json bench --steps --model vae at batches 128, 512 and 1024 with --split-k b (true,
#                    false): the weight gradients' and the forwards' and input gradients' split K
#   launches_split_<b>.json bench --launches --model vae at batch 128 with --split-k b: per launch
#   launches_1024.json bench --launches --model vae at batch 1024 (the adapter's own choices)
#   matmul.json      bench --model matmul (square products, both kernels)
#   steps.json       bench --steps for every model family, batches 32-1024, 1/4/16/64 steps per submit
#   torch.jsonl      benches/pytorch_baseline.py, MLP VAE and conv VAE at the same batches
#   tests_<k>.txt    with IT set (the integration-test binary of `cargo test --tests --no-run`): the
#                    conv and matmul kernel tests and the model steps against the reference with
#                    each conv kernel forced (VAEGPU_CONV=k), so that the GPU's own paths (im2col_flat,
#                    the split-K weight gradient, conv_tiled) run against the reference there
#   log.txt          everything printed on stderr
# Each command has its own time limit; together at most 590 s, within one 600-s device call (on an
# H100 they took seconds to tens of seconds each).
# Usage: BIN=... IT=... OUT=... benches/device_gpu.sh (the device tool returns at most 8 files: write
# OUT outside $OUT and tar it into $OUT).
# Through the device tool (its README: the Vulkan loader as .gl/): here, build and strip the two
# binaries into an ignored folder (about 10 + 25 MB):
#   cargo build --release --locked && cargo test --locked --tests --no-run
#   mkdir -p .devbin && strip -o .devbin/vaegpu target/release/vaegpu
#   strip -o .devbin/it $(ls -t target/debug/deps/it-* | grep -v '\.d$' | head -1)
# then run, carrying .gl and .devbin:
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; BIN=.devbin/vaegpu IT=.devbin/it OUT=/tmp/b \
#   benches/device_gpu.sh; tar czf $OUT/bench.tgz -C /tmp/b .
set -u
BIN=${BIN:-target/release/vaegpu}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan} VAEGPU_CACHE_DIR=${VAEGPU_CACHE_DIR:-$OUT/.cache}
# The start-up timings of the matmul and conv kernels (info) go to log.txt.
export VAEGPU_LOG=${VAEGPU_LOG:-vaegpu=info}
BATCHES=${BATCHES:-32,128,512,1024}
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv; date -u; } \
    >"$OUT/gpu.txt" 2>&1
run() { # name, timeout, command...
    local name=$1 t=$2
    shift 2
    echo "== $name: $*" >>"$LOG"
    local s=$SECONDS
    timeout "$t" "$@" >"$OUT/$name" 2>>"$LOG"
    echo "== $name: rc $? in $((SECONDS - s)) s" >>"$LOG"
}
if [ -n "${IT:-}" ]; then
    for k in matmul tiled gather; do
        VAEGPU_CONV=$k run "tests_$k.txt" 35 "$IT" --test-threads 8 kernels_conv:: kernels_matmul:: model:: \
            nn_cols bench_ceiling::conv
    done
fi
run kernels_vae.json 25 "$BIN" bench --model vae --reps 50 --json
run kernels_vae1024.json 40 "$BIN" bench --model vae --batch 1024 --reps 20 --json
run kernels_conv.json 30 "$BIN" bench --model conv-vae --reps 50 --json
run kernels_conv1024.json 40 "$BIN" bench --model conv-vae --batch 1024 --reps 20 --json
for k in gather tiled matmul; do
    run "conv_$k.json" 35 "$BIN" bench --steps --conv "$k" --model conv-vae --batches 128,512,1024 --submits 16 \
        --min-seconds 0.5 --json
done
for k in true false; do
    run "vae_split_$k.json" 30 "$BIN" bench --steps --split-k "$k" --model vae --batches 128,512,1024 --submits 1,16 \
        --min-seconds 0.5 --json
    run "launches_split_$k.json" 10 "$BIN" bench --launches --split-k "$k" --model vae --batch 128 --rounds 3 \
        --warmup-ms 50 --json
done
run launches_1024.json 10 "$BIN" bench --launches --model vae --batch 1024 --rounds 3 --warmup-ms 50 --json
run matmul.json 35 "$BIN" bench --model matmul --sizes 128,256,512,1024,2048,4096 --reps 20 --json
run steps.json 80 "$BIN" bench --steps --model all --batches "$BATCHES" --submits 1,4,16,64 --min-seconds 0.5 --json
run torch.jsonl 40 python3 benches/pytorch_baseline.py --models vae,conv-vae --batches "$BATCHES" --min-seconds 1
tail -n 3 "$LOG"
