# make setup: create .venv and install everything (idempotent); make demo; make test.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_VIDEO ?= $(shell $(BIN)/python -c "import builder.samples as s; print(s.sample_path('bikes'))" 2>/dev/null)

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m builder demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
