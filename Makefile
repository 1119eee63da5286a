# The two commands of README.md, plus benchmarks. Each target creates .venv and installs what is missing;
# a second run installs nothing (the stamp file records the last install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: demo test bench clean

demo: $(STAMP)
	$(VENV)/bin/arpo demo

test: $(STAMP)
	$(PYTEST) tests -q
	ARPO_PURE_PYTHON=1 $(PYTEST) tests/tree -q

bench: $(STAMP)
	mkdir -p runs/bench
	$(PYTEST) bench/bench_*.py --benchmark-only --benchmark-json=runs/bench/bench.json -q
	$(PY) bench/ratios.py runs/bench/bench.json
	$(PY) bench/report.py runs/bench/bench.json

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info arpo/*.so
