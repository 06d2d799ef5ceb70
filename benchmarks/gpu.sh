#!/usr/bin/env bash
# The prepared GPU run (issues #7, #5, #4), one command on one GPU, at most 9.5 minutes:
#   1. GPT-2 124M training step, ours eager / compiled beside HF, MFU (benchmarks/gpu_step.py)
#   2. gpt/shakespeare-char.yaml through `tsuite fit` (compiled, bf16): wall time to val loss 1.47
#   3. Multi30k en->de and de->en (benchmarks/multi30k.py), the two directions side by side
# Data: DATA=folder holding tinyshakespeare/input.txt and multi30k/ (default ../shared/data).
# Missing Python packages (datasets, jsonargparse, num2words...): wheels in .whl/ are installed
# first, as the device README says.
# Results: $OUT (default benchmarks/results/gpu): logs, summary.txt. SMOKE=1 runs every part
# tiny (CPU ok) to check the script itself.
# On a lent device machine (no registry, no ../shared): first, here,
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64
#     -d .whl datasets dill multiprocess jsonargparse docstring_parser typeshed_client num2words
#     fsspec pyarrow   (the versions of .venv) and cp -r ../shared/data/{tinyshakespeare,multi30k} .gpu_data/
# then run `DATA=.gpu_data bash benchmarks/gpu.sh` carrying .whl and .gpu_data (both git-ignored).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
DATA=${DATA:-../shared/data}
PY=${PY:-python3}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TSUITE_CACHE=${TSUITE_CACHE:-/tmp/tsuite-cache} WANDB_MODE=disabled
RUNS=${RUNS:-/tmp/tsuite-runs}

if [ "$SMOKE" != 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
    # all of them, pyarrow included: datasets on the GPU image's own pyarrow once failed to
    # pickle a MonthDayNano type
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo cpu) |
    tee "$OUT/device.txt"
$PY -c "import torch, lightning, datasets, transformers; print('torch', torch.__version__, \
'lightning', lightning.__version__, 'datasets', datasets.__version__, 'transformers', \
transformers.__version__)" | tee -a "$OUT/device.txt"

if [ "$SMOKE" = 1 ]; then
    STEP_ARGS=(--quick --steps 3)
    SHAKESPEARE=(--trainer.accelerator=cpu --trainer.max_steps=20 --trainer.val_check_interval=10
        '--model.init_args.arch={n_layers: 1, n_heads: 2, d_model: 32, d_ff: 64, max_len: 256}')
    MULTI30K=(--reduced --trainer.accelerator=cpu --trainer.max_steps=12 --average 2
        --keep_checkpoints_every=4 --trainer.limit_val_batches=2)
else
    STEP_ARGS=()
    SHAKESPEARE=()
    MULTI30K=()
fi

echo "== 1. GPT-2 124M training step"
timeout -k 10 120 $PY -m benchmarks.gpu_step "${STEP_ARGS[@]}" 2>&1 | tee "$OUT/gpu_step.log" | grep -v Warning

echo "== 2. shakespeare-char to validation loss 1.47"
start=$(date +%s.%N)
timeout -k 10 200 $PY -m experiments fit -c experiments/configs/gpt/shakespeare-char.yaml \
    -c experiments/configs/trainer/gpu.yaml --model.init_args.compile=true \
    "--data.init_args.source={kind: local, name: $DATA/tinyshakespeare/input.txt, sample_by: document, validation_fraction: 0.1}" \
    --experiment=bench/shakespeare-char --runs_dir="$RUNS" --trainer.max_time=00:00:02:30 \
    "${SHAKESPEARE[@]}" \
    >"$OUT/shakespeare.log" 2>&1
status=$?
end=$(date +%s.%N)
tail -n 12 "$OUT/shakespeare.log"
summary=$(ls -t "$RUNS"/bench/shakespeare-char/version_*/summary.json 2>/dev/null | head -1)
[ -n "$summary" ] && cp "$summary" "$OUT/shakespeare-summary.json"
$PY - "$summary" "$start" "$end" "$status" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
path, start, end, status = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"shakespeare-char: exit {status}, process wall {end - start:.1f} s (startup, data, compile included)")
if path:
    s = json.loads(open(path).read())
    reached = [h for h in s["history"] if h.get("val/loss", 9) <= 1.47]
    print(f"  best val/loss {s['best'].get('val/loss', float('nan')):.4f} after {s['steps']} steps; fit {s['wall_seconds']} s")
    for h in s["history"]:
        print(f"  step {h['step']:>5}  val/loss {h.get('val/loss', float('nan')):.4f}  at {h['wall_seconds']:>6.1f} s of fit")
    if reached:
        print(f"  val/loss <= 1.47 first at step {reached[0]['step']}, {reached[0]['wall_seconds']} s into fit")
    else:
        print("  val/loss 1.47 not reached")
EOF

echo "== 3. Multi30k, both directions at once"
for direction in en-de de-en; do
    timeout -k 10 250 $PY -m benchmarks.multi30k --data "$DATA/multi30k" --directions $direction \
        --runs_dir "$RUNS" --trainer.max_time=00:00:02:50 "${MULTI30K[@]}" \
        >"$OUT/multi30k-$direction.log" 2>&1 &
done
wait
for direction in en-de de-en; do tail -n 6 "$OUT/multi30k-$direction.log" | tee -a "$OUT/summary.txt"; done
