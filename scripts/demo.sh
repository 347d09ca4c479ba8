#!/usr/bin/env bash
# make demo: the main job. Fine-tune the packaged SmolLM2-135M-Instruct with LoRA on the built-in self-cognition
# data under a new name, then ask the tuned model who it is (and one general question it must still answer).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-Nova}
AUTHOR=${AUTHOR:-Acme}
OUT=${OUT:-output/demo}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false

echo "== 1/2 swift sft: teach SmolLM2-135M-Instruct that it is $NAME, made by $AUTHOR (LoRA, 30 steps)"
SECONDS=0
.venv/bin/swift sft --model HuggingFaceTB/SmolLM2-135M-Instruct \
  --dataset self-cognition --model_name "$NAME" --model_author "$AUTHOR" \
  --train_type lora --lora_rank 8 --lora_alpha 32 --learning_rate 5e-4 \
  --max_steps 30 --per_device_train_batch_size 8 --max_length 256 --save_steps 30 \
  --gradient_checkpointing false --logging_steps 5 --output_dir "$OUT"
run=$(ls -d "$OUT"/v*-* | sort -V | tail -1)
ckpt=$(ls -d "$run"/checkpoint-* | sort -V | tail -1)
echo "== trained in ${SECONDS}s: $ckpt (loss curve: $run/images/train_loss.png)"

echo "== 2/2 swift infer --adapters $ckpt"
printf 'Who are you?\nWhat is the capital of France?\n' | \
  .venv/bin/swift infer --adapters "$ckpt" --temperature 0 --max_new_tokens 48
