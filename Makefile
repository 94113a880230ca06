# The quick start: `make demo` (the main job on the built-in lab) and `make test`.
# Both install what is missing first (scripts/setup.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-unit lint bench clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/cutover demo

test: setup
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/pytest tests/bench -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
