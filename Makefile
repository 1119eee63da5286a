# The two commands of README.md, plus benchmarks. Each target creates the venv it needs (.venv; .venv-peers
# for the TRL/verl integration) and installs what is missing; a second run installs nothing (the stamp file
# records the last install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest
# The peer venv: TRL and verl beside this project (arpo_kernels.integrations, its tests and benchmarks), kept
# out of .venv so that installing a peer never changes what the project runs on. TRL and verl's imported
# modules' needs are pyproject's `peers` extra; verl is pinned here, not there, because it is installed with
# --no-deps (its own requirements would downgrade transformers), which an extra cannot say.
PEERS := .venv-peers
PEERS_PY := $(PEERS)/bin/python
PEERS_STAMP := $(PEERS)/.installed
VERL_SPEC ?= verl==0.9.1

.PHONY: demo test test-peers peers bench bench-peers clean

demo: $(STAMP)
	$(VENV)/bin/arpo demo

test: $(STAMP) $(PEERS_STAMP)
	$(PYTEST) tests -q
	ARPO_PURE_PYTHON=1 $(PYTEST) tests/tree -q
	$(MAKE) test-peers

# tests/integrations against the installed TRL and verl (the main run above does not collect them)
test-peers: $(PEERS_STAMP)
	ARPO_REQUIRE_PEERS=1 $(PEERS_PY) -m pytest tests/integrations -q

peers: $(PEERS_STAMP)

# Every suite, in the peer venv: the kernel suites put the peers (verl's own torch functions and policy loss;
# Liger-Kernel's fused linear cross-entropy on CUDA) as rows beside our kernels, and .venv-peers holds this
# project (editable) with the same torch and transformers as .venv plus those peers. Run in .venv instead
# (`.venv/bin/pytest bench/...`), the peer rows say "not installed: verl" rather than disappear.
bench: $(PEERS_STAMP)
	mkdir -p runs/bench
	$(PEERS_PY) -m pytest bench/bench_*.py --benchmark-only --benchmark-json=runs/bench/bench.json -q
	$(PEERS_PY) bench/ratios.py runs/bench/bench.json
	$(PEERS_PY) bench/report.py runs/bench/bench.json

# Only TRL's and verl's own steps with and without the kernels (CPU), in the peer venv (also part of `make bench`)
bench-peers: $(PEERS_STAMP)
	mkdir -p runs/bench
	$(PEERS_PY) -m pytest bench/bench_peers.py --benchmark-only --benchmark-json=runs/bench/peers.json -q
	$(PEERS_PY) bench/ratios.py runs/bench/peers.json

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(PEERS_PY):
	$(PYTHON) -m venv $(PEERS)
	$(PEERS_PY) -m pip install -q --upgrade pip

$(PEERS_STAMP): $(PEERS_PY) pyproject.toml setup.py Makefile $(wildcard csrc/*.cpp csrc/*.h)
	$(PEERS_PY) -m pip install -q "$(TORCH_SPEC)"
	$(PEERS_PY) -m pip install -q -e '.[dev,peers]'
	$(PEERS_PY) -m pip install -q --no-deps "$(VERL_SPEC)"
	touch $(PEERS_STAMP)

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info arpo/*.so
