#!/usr/bin/env bash
# Issue 15's GPU measurement in one command (docs/train_speed.md): lmadapt's training loop against
# TRL SFTTrainer + peft, LoRA r16 on q/v, on a randomly initialised Llama of ~1.1B parameters
# (hidden 2048, 22 layers, 32 query / 4 key-value heads, SmolLM2's 49,152-token vocabulary), bf16
# autocast, batch 8 of ~1,024-token chat rows (half prompt, half answer; loss on the answer),
# 20 steps, 2 interleaved repeats; then lmadapt under the DeepSpeed ZeRO-2 and ZeRO-3 configs in
# examples/deepspeed (one process) when deepspeed is installed.
# Target (issue 15): lmadapt LoRA >= 62k tokens/s at <= 12 GiB peak allocated.
#
#   bash benchmarks/gpu_train_speed.sh [OUT]          # default OUT: runs/gpu-train-speed
#   SMOKE=1 bash benchmarks/gpu_train_speed.sh OUT    # a tiny random Llama, 128-token rows, on CPU
#
# Needs: lmadapt with its bench extra (trl) and SmolLM2's tokenizer (`lmadapt pull smollm2-135m`,
# or TOKENIZER=a folder holding one). No model or data set is downloaded.
set -euo pipefail

OUT=${1:-runs/gpu-train-speed}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}
TOKENIZER=${TOKENIZER:-smollm2-135m}

if [ "${SMOKE:-0}" = 1 ]; then
  SPEED=(--model random:llama-tiny --synthetic-tokens 128 --max-length 160 --steps 2 --batch 2 --repeats 1 --threads 1)
  TUNE=(--device cpu max_length=160 batch_size=2)
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU visible to torch; SMOKE=1 runs the tiny CPU version of this script" >&2
    exit 2
  fi
  SPEED=(--model random:llama-1.1b --synthetic-tokens 1024 --max-length 1056 --steps 20 --batch 8 --repeats 2
         --precision bf16)
  TUNE=(--device cuda precision=bf16 max_length=1056 batch_size=8)
fi
mkdir -p "$OUT"
began=$(date +%s)

echo "== lmadapt vs TRL + peft ($(( $(date +%s) - began )) s)"
"$PY" "$HERE/train_speed.py" --datasets synthetic --setups lora --tokenizer "$TOKENIZER" "${SPEED[@]}" \
  --work "$OUT/work" --out "$OUT/gpu_train_speed.json" | tee "$OUT/gpu_train_speed.md"

# The same model and rows under DeepSpeed: ZeRO-2 and ZeRO-3, one process each.
if "$PY" -c "import deepspeed" 2>/dev/null; then
  for stage in zero2 zero3; do
    echo "== lmadapt under DeepSpeed $stage ($(( $(date +%s) - began )) s)"
    rm -rf "$OUT/deepspeed-$stage"
    accelerate launch --use_deepspeed --deepspeed_config_file "$HERE/../examples/deepspeed/$stage.json" \
      --num_processes 1 -m lmadapt tune --method lora --model "$OUT/work/random-model" \
      --train "$OUT/work/data/synthetic.jsonl" --out "$OUT/deepspeed-$stage" "${TUNE[@]}" \
      lora_r=16 lora_alpha=32 lora_target_modules=q_proj,v_proj epochs=1 val_split=0 \
      eval_each_epoch=false max_eval_examples=1 max_new_tokens=1 2>&1 | tail -n 3
  done
else
  echo "== DeepSpeed: skipped (deepspeed is not installed)"
fi
echo "== done in $(( $(date +%s) - began )) s: $OUT/gpu_train_speed.md"
