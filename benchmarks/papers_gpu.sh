#!/usr/bin/env bash
# Issue 16's two studies at a larger scale on one GPU, one command (docs/papers.md):
#   1. Distilling Step-by-Step vs label-only on SVAMP: the whole 800-problem pool, fractions
#      12.5-100%, 2 seeds, SmolLM2-135M + LoRA student, the 200 test problems; then the
#      seed-pooled paired table (benchmarks/distill_seeds.py).
#   2. Proxy-Tuning on gsm-symbolic: base Qwen2.5-Coder-1.5B alone (zero-shot), the 0.5B expert
#      alone (LoRA), the proxy (1.5B steered by the LoRA-tuned 0.5B against the untuned 0.5B,
#      alpha searched on validation), and the 1.5B tuned directly (LoRA), in one compare.
#
#   bash benchmarks/papers_gpu.sh [OUT]          # default OUT: runs/papers-gpu
#   SMOKE=1 bash benchmarks/papers_gpu.sh OUT    # the same commands at a tiny size on CPU, to check the script
#
# Needs: lmadapt installed, the models pulled (`lmadapt pull smollm2-135m qwen2.5-coder-0.5b
# qwen2.5-coder-1.5b`), `lmadapt pull data gsm-symbolic` (reasoning-gym), and the SVAMP release
# folder (SVAMP=..., default ../shared/data/distill-step-by-step/svamp). Both studies resume
# where they stopped when run again with the same OUT.
set -euo pipefail

OUT=${1:-runs/papers-gpu}
SVAMP=${SVAMP:-../shared/data/distill-step-by-step/svamp}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}

if [ "${SMOKE:-0}" = 1 ]; then
  HW=(--device cpu)
  BASE=smollm2-135m SMALL=smollm2-135m STUDENT=smollm2-135m
  DSS=(max_train_examples=16 max_eval_examples=6 epochs=1 batch_size=4 eval_batch_size=6)
  FRACTIONS=0.5,1.0 SEEDS="0 1"
  METHODS="zero-shot,lora,proxy"  # one model plays every role: its lora is both the expert and the direct run
  GSM=(max_train_examples=12 max_eval_examples=4 epochs=1 batch_size=4 eval_batch_size=4 max_new_tokens=8
       max_length=512 search_trials=2)
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU visible to torch; SMOKE=1 runs the tiny CPU version of this script" >&2
    exit 2
  fi
  HW=(--device cuda --dtype bfloat16)
  BASE=qwen2.5-coder-1.5b SMALL=qwen2.5-coder-0.5b STUDENT=smollm2-135m
  DSS=(epochs=4 batch_size=16 eval_batch_size=200)
  FRACTIONS=0.125,0.25,0.5,1.0 SEEDS="0 1"
  METHODS="zero-shot,lora@$SMALL,proxy,lora"
  GSM=(max_eval_examples=500 epochs=1 batch_size=16 eval_batch_size=100 max_new_tokens=320 max_length=1024
       search_trials=4)
fi
if [ ! -d "$SVAMP" ]; then
  echo "error: SVAMP release folder $SVAMP not found; set SVAMP=path/to/distill-step-by-step/svamp" >&2
  exit 2
fi
mkdir -p "$OUT"
began=$(date +%s)

# 1. DSS vs label-only, both variants of a seed in one process (one GPU)
folders=()
for seed in $SEEDS; do
  echo "== DSS, seed $seed ($(( $(date +%s) - began )) s)"
  lmadapt distill train --model "$STUDENT" --train "$SVAMP:train" --eval "$SVAMP:test" \
    --out "$OUT/dss-s$seed" --fractions "$FRACTIONS" "${HW[@]}" \
    distill_student=lora distill_student_args=lora_r=16,lora_alpha=32 distill_alpha=0.5 \
    distill_rationale_max_tokens=64 lr=2e-3 max_length=192 max_new_tokens=20 eval_each_epoch=false \
    seed="$seed" "${DSS[@]}"
  folders+=("$OUT/dss-s$seed")
done
"$PY" "$HERE/distill_seeds.py" "${folders[@]}" --out "$OUT/dss_seeds.json" | tee "$OUT/dss_seeds.md"

# 2. Proxy-tuning on math: base alone, expert alone, proxy (alpha on validation), direct LoRA
echo "== Proxy-tuning on gsm-symbolic ($(( $(date +%s) - began )) s)"
printf 'proxy_alpha: {low: 0.25, high: 2.0}\n' > "$OUT/proxy_space.yaml"
lmadapt compare --methods "$METHODS" --model "$BASE" \
  --train gsm-symbolic --eval gsm-symbolic:test --out "$OUT/proxy-gsm" "${HW[@]}" \
  metric=numeric proxy_small="$SMALL" search_space="$OUT/proxy_space.yaml" resume=true \
  "${GSM[@]}"
echo "== done in $(( $(date +%s) - began )) s: $OUT/dss_seeds.md, $OUT/proxy-gsm/report.md"
