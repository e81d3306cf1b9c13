#!/usr/bin/env bash
# Train default-model candidates side by side on one GPU, then score each on the held-out phantoms.
#   OUT=DIR [TRAIN_S=420] bash models/gpu_sweep.sh     (from the repository root, on a CUDA machine)
# A run still going after TRAIN_S seconds is stopped and its best epoch so far is scored; continue
# it with the same command plus --workdir /tmp/w_NAME --resume. Wheels in .whl/ are installed first
# when present (machines without segmentation-models-pytorch). Results: OUT/NAME.safetensors
# (split into 15 MB parts) and OUT/results.tgz (commands, logs, histories, scores).
set -uo pipefail
OUT=${OUT:-/tmp/sweep}; mkdir -p "$OUT"
TRAIN_S=${TRAIN_S:-420}
source benchmarks/device_env.sh
LOGS=/tmp/sweep_logs; mkdir -p "$LOGS"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv > "$LOGS/nvidia-smi.txt"
# the recipe is train_default.py's defaults; EPOCHS/STEPS/EXTRA override them
COMMON="--device ${DEVICE:-cuda} --workers ${WORKERS:-5} ${EPOCHS:+--epochs $EPOCHS} ${STEPS:+--steps $STEPS} ${EXTRA:-}"
declare -A VARIANTS=([r18_2d]="--in-channels 1" [r18_3ch]="--in-channels 3" [r34_2d]="--in-channels 1 --encoder resnet34")
for name in "${!VARIANTS[@]}"; do
  echo "$name: python3 models/train_default.py $COMMON ${VARIANTS[$name]}" >> "$LOGS/commands.txt"
  timeout -k 15 "$TRAIN_S" python3 models/train_default.py $COMMON ${VARIANTS[$name]} \
    --workdir "/tmp/w_$name" --out "$OUT/$name.safetensors" > "$LOGS/$name.train.log" 2>&1 &
done
wait
for name in "${!VARIANTS[@]}"; do
  if [ ! -f "$OUT/$name.safetensors" ] && [ -f "/tmp/w_$name/model_fp32.safetensors" ]; then
    echo "$name: stopped after $TRAIN_S s, scoring its best epoch so far" >> "$LOGS/commands.txt"
    python3 -c "import sys; sys.path.insert(0, 'models'); from pathlib import Path; from train_default import write_shipped; write_shipped(Path('/tmp/w_$name/model_fp32.safetensors'), Path('$OUT/$name.safetensors'))"
  fi
  cp "/tmp/w_$name/model_fp32.safetensors.history.json" "$LOGS/$name.history.json" 2>/dev/null
done
for name in "${!VARIANTS[@]}"; do
  [ -f "$OUT/$name.safetensors" ] && python3 models/train_default.py --evaluate "$OUT/$name.safetensors" \
    --device "${DEVICE:-cuda}" ${EVAL_EXTRA:-} --data /nonexistent > "$LOGS/$name.eval.json" 2> "$LOGS/$name.eval.log" &
done
wait
tar czf "$OUT/results.tgz" -C "$LOGS" .
for f in "$OUT"/*.safetensors; do split -b 15m "$f" "$f.part-" && rm "$f"; done
for name in "${!VARIANTS[@]}"; do
  echo "$name: $(grep -o '"default": {"mean_iou": [0-9.]*' "$LOGS/$name.eval.json" 2>/dev/null)"
done
