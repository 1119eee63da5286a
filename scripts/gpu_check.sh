#!/usr/bin/env bash
# GPU-machine check, one prepared run: build the C++ extension with the machine's own Python, run the
# GPU-relevant test suites (the Triton kernels compile for the GPU there), then the GPU benchmarks.
# Usage: scripts/gpu_check.sh OUT_DIR      (the device tool passes $OUT). Everything is logged to OUT_DIR.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  $py -c "import sys, torch, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
} 2>&1 | tee "$out/env.txt"

status=0
step() { echo "== $*" | tee -a "$out/summary.txt"; "$@" 2>&1 | tee -a "$out/log.txt"; rc=${PIPESTATUS[0]}; echo "== rc=$rc" | tee -a "$out/summary.txt"; [ "$rc" -eq 0 ] || status=1; }

step $py -m pip install -q --no-deps --no-build-isolation -e .
step ldd arpo/_tree*.so
# GPU-relevant suites (kernels, tree, engines incl. the HF engine on CUDA, sampler); the tools/envs suites need
# pyarrow and math-verify, which the GPU machine's Python lacks, and run on the CPU machines' CI.
step $py -m pytest tests/kernels tests/tree tests/engines tests/rollout tests/test_config.py -q -p no:cacheprovider
step env ARPO_PURE_PYTHON=1 $py -m pytest tests/tree -q -p no:cacheprovider
# GPU benchmarks only (the CPU suites are measured on the CPU machines by `make bench`)
step $py -m pytest bench/bench_*.py --benchmark-only -q -p no:cacheprovider -k gpu --benchmark-json="$out/bench.json"
step $py bench/ratios.py "$out/bench.json"
# SGLang engine smoke test (demo agent, forks served from the radix cache, tokens/s), only where the optional
# sglang extra is installed; the lent GPU machines normally have none.
if $py -c "import sglang" >/dev/null 2>&1; then
  step $py -m pytest tests/engines/test_sglang.py -q -s -p no:cacheprovider -k smoke
else
  echo "sglang not installed: smoke test skipped" | tee -a "$out/summary.txt"
fi
exit $status
