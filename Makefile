# The quick start: `make demo` (the main job on the built-in lab) and `make test`.
# Both install what is missing first (scripts/setup.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test check test-unit lint bench matrix docs lock audit clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/cutover demo

# Two workers, each with its own lab on free ports: the tests wait on servers more than they
# compute, so two share two cores well (about 17 min here, against 25 in one process). The
# heaviest end-to-end tests share one xdist group, so they never starve each other.
TEST_JOBS ?= 2

test: setup
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadgroup

# For iteration, under 3 minutes: lint, the unit tests, and one real-server test per layer.
check: lint
	CUTOVER_FUZZ_EXAMPLES=25 $(BIN)/pytest tests/unit --durations=3
	$(BIN)/pytest tests/integration -m check --durations=5

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

matrix: setup
	$(BIN)/pytest tests/integration/test_fault_matrix.py -m matrix -s -p no:cacheprovider

bench: setup
	$(BIN)/pytest tests/bench -s -p no:cacheprovider

docs: setup
	$(BIN)/cutover config reference > docs/config.md
	$(BIN)/python -c 'import sys; from controller.lab.lab import example_config; sys.stdout.write(example_config())' \
		> config/examples/lab.toml

# The supply chain: requirements.in compiled into requirements.lock with every file's hash, and an
# audit of the pinned set. Both need the network (PyPI; the audit PyPI's JSON API), and run their
# tools from a venv of their own, outside the pinned set.
TOOLS := .venv-tools
$(TOOLS)/bin/pip-audit:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q pip-tools pip-audit

lock: $(TOOLS)/bin/pip-audit
	$(TOOLS)/bin/pip-compile -q --generate-hashes --allow-unsafe --no-header --strip-extras \
		-o requirements.lock requirements.in

# --strict: a package the audit could not look up (no network) is an error, not a silent pass.
audit: $(TOOLS)/bin/pip-audit
	$(TOOLS)/bin/pip-audit --strict --disable-pip --require-hashes -r requirements.lock

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
