#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see ../shared/design/gpu.md): install the carried wheels, measure the
# batched generator on the GPU, profile a few training steps, train with configs/train/gpu.toml, and write the
# checkpoint, logs and measurements to $OUT. Tiny CPU check: OUT=/tmp/out GPU_SMOKE=1 bash scripts/gpu_train.sh
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ] && [ "${GPU_SMOKE:-0}" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
PY=${PY:-python3}
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu_util.csv" 2>&1 &
    trap 'kill $! 2>/dev/null || true' EXIT  # the logger must not outlive the run (it holds the output pipe)
fi
CONFIG=configs/train/gpu.toml
EXTRA=()
if [ "${GPU_SMOKE:-0}" = 1 ]; then
    CONFIG=configs/train/tiny.toml
    EXTRA=(--steps 20)
fi
if [ -n "${STEPS:-}" ]; then  # a shorter run than the config's budget
    EXTRA=(--steps "$STEPS")
fi
$PY benchmarks/generate_bench.py --device auto --seconds "${GEN_SECONDS:-20}" --out "$OUT/generate_gpu.json" 2>&1 | tail -20 || echo "generate bench failed"
if [ "${PROFILE:-1}" = 1 ]; then
    $PY scripts/profile_steps.py --config "$CONFIG" --out "$OUT/profile.txt" 2>&1 | tail -5 || echo "profile failed"
fi
$PY -m mist.cli train --config "$CONFIG" --out-dir "$OUT/run" --quiet "${EXTRA[@]}"
$PY - "$OUT" <<'PY'
import sys, torch
from model.checkpoint import export_for_serving
out = sys.argv[1]
export_for_serving(f"{out}/run/last.pt", f"{out}/mist-gpu.pt")
print("exported", torch.load(f"{out}/mist-gpu.pt", weights_only=True)["version"])
PY
rm -f "$OUT/run/last.pt"
mv "$OUT/run/metrics.jsonl" "$OUT/metrics.jsonl" && rmdir "$OUT/run" || true
