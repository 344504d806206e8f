#!/bin/bash
# vaegpu on a CPU adapter (lavapipe) against PyTorch eager on the same CPU, the two in turns, so that a
# host whose speed drifts from minute to minute moves both alike: the side-by-side run recorded in
# benches/RESULTS.md for machines without a GPU. Each round runs, per model, `vaegpu bench --cpu
# --steps` (1 and 16 steps per submission) and then benches/pytorch_baseline.py --device cpu.
#
# Needs (Debian 12): mesa-vulkan-drivers libvulkan1 python3-torch libopenblas0-openmp. PyTorch runs
# with /usr/bin/python3 (Debian's torch) and OpenBLAS's OpenMP build ahead of the default BLAS
# (LD_LIBRARY_PATH): the pthread build's threads and PyTorch's OpenMP threads fight over the cores
# (38.7 steps/s on the MLP VAE with both at 2 threads against 162 with the OpenMP build, 2 cores,
# 2026-11-29), and Debian's fallback reference BLAS is slower still.
#
# Usage: BIN=target/release/vaegpu OUT=bench-out-cpu benches/cpu_baseline.sh
# Settings (environment): ROUNDS (3), MODELS ("vae conv-vae"), BATCHES (128), SECS (5: least seconds
# timed per point), THREADS (nproc: PyTorch's threads; lavapipe uses every core itself), PYTHON
# (/usr/bin/python3), OPENBLAS (/usr/lib/x86_64-linux-gnu/openblas-openmp).
# Writes $OUT/vaegpu.jsonl and $OUT/torch.jsonl (one JSON document per run), log.txt (stderr), and
# prints the median steps per second of each side with their ratio.
set -u -o pipefail
BIN=${BIN:-target/release/vaegpu}
OUT=${OUT:-bench-out-cpu}
ROUNDS=${ROUNDS:-3}
MODELS=${MODELS:-vae conv-vae}
BATCHES=${BATCHES:-128}
SECS=${SECS:-5}
THREADS=${THREADS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}
OPENBLAS=${OPENBLAS:-/usr/lib/x86_64-linux-gnu/openblas-openmp}
HERE=$(dirname "$0")
mkdir -p "$OUT"
: >"$OUT/vaegpu.jsonl"
: >"$OUT/torch.jsonl"
LOG=$OUT/log.txt
{ date -u; grep -m1 "model name" /proc/cpuinfo; nproc; } >"$LOG"
for r in $(seq "$ROUNDS"); do
    for m in $MODELS; do
        echo "== round $r $m vaegpu" >>"$LOG"
        "$BIN" bench --cpu --steps --model "$m" --batches "$BATCHES" --submits 1,16 --min-seconds "$SECS" --json \
            2>>"$LOG" | tr -d '\n' >>"$OUT/vaegpu.jsonl" || echo "vaegpu $m: rc $?" >>"$LOG"
        echo >>"$OUT/vaegpu.jsonl"
        echo "== round $r $m pytorch" >>"$LOG"
        LD_LIBRARY_PATH=$OPENBLAS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} OMP_NUM_THREADS=$THREADS \
            "$PYTHON" "$HERE/pytorch_baseline.py" --device cpu --threads "$THREADS" --models "$m" \
            --batches "$BATCHES" --min-seconds "$SECS" >>"$OUT/torch.jsonl" 2>>"$LOG" \
            || echo "pytorch $m: rc $?" >>"$LOG"
    done
done
"$PYTHON" - "$OUT" <<'EOF'
import json, statistics, sys
from collections import defaultdict
out = sys.argv[1]
ours, theirs = defaultdict(list), defaultdict(list)
adapter = device = "?"
for line in open(f"{out}/vaegpu.jsonl"):
    if line.strip():
        doc = json.loads(line)
        adapter = doc["adapter"]
        for s in doc["steps"]:
            ours[(s["model"], s["batch"], s["steps_per_submit"])].append(s["steps_per_second"])
for line in open(f"{out}/torch.jsonl"):
    if line.strip():
        d = json.loads(line)
        device = f'{d["device"]}, PyTorch {d["version"]}'
        theirs[(d["model"], d["batch"])].append(d["steps_per_second"])
print(f"vaegpu: {adapter}\nPyTorch eager: {device}\nmedians of the rounds, steps/s (each round's figures in brackets)")
print(f'{"model":10} {"batch":>5} {"vaegpu 1/submit":>26} {"vaegpu 16/submit":>26} {"PyTorch":>26} {"ratio 1":>8} {"ratio 16":>8}')
fmt = lambda v: f'{statistics.median(v):7.1f} [{", ".join(f"{x:.1f}" for x in v)}]' if v else "-"
for (m, b), t in sorted(theirs.items()):
    o1, o16 = ours.get((m, b, 1), []), ours.get((m, b, 16), [])
    tm = statistics.median(t)
    r = lambda o: f"{statistics.median(o) / tm:7.2f}x" if o else "-"
    print(f"{m:10} {b:5} {fmt(o1):>26} {fmt(o16):>26} {fmt(t):>26} {r(o1):>8} {r(o16):>8}")
EOF
