"""bench/report.py: BENCHMARKS.md tables from pytest-benchmark JSON (ratios within each group, the machine)."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402


def _bench(name, group, mean, **extra):
    return {"name": name, "group": group, "stats": {"mean": mean, "min": mean * 0.9}, "extra_info": extra}


def test_report_tables_and_ratios(tmp_path):
    data = {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11"},
            "datetime": "2026-01-01", "benchmarks": [
                _bench("flat", "update step", 3.0, tokens_forwarded=100), _bench("packed", "update step", 1.5),
                _bench("torch", "loss", 0.004), _bench("numba", "loss", 0.001)]}
    cpu = tmp_path / "bench.json"
    cpu.write_text(json.dumps(data))
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({**data, "machine_info": {"node": "h200-box", "cpu": {"brand_raw": "Xeon"}}}))
    out = tmp_path / "B.md"
    report.GPU_SECTION = tmp_path / "GPU.md"
    report.main([str(cpu), "--gpu", str(gpu), "--out", str(out)])
    text = out.read_text()
    assert "Machine: Test CPU, 2 cores" in text
    assert "| packed | 1.500 s | 1.350 s | 2.00x |" in text and "| flat | 3.000 s |" in text
    assert "| numba | 1.00 ms | 0.90 ms | 4.00x |" in text and "tokens_forwarded 100" in text
    assert "## GPU (scripts/gpu_check.sh, h200-box)" in text and "Machine: Xeon" in text


def test_rows_that_could_not_run_are_printed_with_their_status(tmp_path):
    """A peer that is not installed (or needs CUDA) keeps its row: the status replaces the time, and the
    speed-ups are over the timed rows only (the no-op's time of the status row is not the slowest)."""
    import ratios

    data = {"machine_info": {}, "benchmarks": [
        _bench("verl-eager", "logprob", 0.004, err_logprobs=2.5e-7, err_grad=1e-8),
        _bench("numba", "logprob", 0.001, err_logprobs=1.2e-7),
        _bench("verl-compile", "logprob", 1e-7, status="not installed: verl"),
        _bench("liger", "gpu linear", 1e-7, status="needs CUDA")]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    text = ratios.ratios(str(path))
    assert "verl-compile" in text and "not installed: verl" in text and "needs CUDA" in text
    assert "  4.0x   vs fp64: logprobs 1.2e-07" in text and "verl-eager" in text and "grad 1.0e-08" in text
    out = tmp_path / "B.md"
    report.GPU_SECTION = tmp_path / "GPU.md"
    report.main([str(path), "--out", str(out)])
    md = out.read_text()
    assert "| verl-compile | not installed: verl | | |" in md and "| liger | needs CUDA | | |" in md
    assert "| numba | 1.00 ms | 0.90 ms | 4.00x | err_logprobs 1.2e-07 |" in md
    assert md.index("| numba |") < md.index("| verl-compile |")  # timed rows first


def test_scaling_groups_are_drawn_as_png_plots(tmp_path, monkeypatch):
    """A "step scaling: <curve>" group gets a PNG (one line per system, x from extra_info) linked under its
    table; the TRL row that could not run is left out of the plot but kept in the table."""
    rows = [_bench(f"{s}-{x}", "step scaling: M", t, system=s, x=x)
            for s, ts in (("ours", (1.0, 2.0, 4.0)), ("trl", (3.0, 6.0, 12.0))) for x, t in zip((8, 16, 32), ts)]
    rows.append(_bench("trl-64", "step scaling: M", 1e-7, system="trl", x=64, status="not installed: trl"))
    for r in rows:
        r["stats"]["max"] = r["stats"]["mean"] * 1.1
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": rows}))
    for name, value in (("GPU_SECTION", tmp_path / "GPU.md"), ("PLOTS", tmp_path / "plots"),
                        ("HERE", tmp_path / "bench")):
        monkeypatch.setattr(report, name, value)
    out = tmp_path / "B.md"
    report.main([str(path), "--out", str(out)])
    png = tmp_path / "plots" / "step_scaling_M.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = out.read_text()
    assert "![step scaling: M](plots/step_scaling_M.png)" in md
    assert md.index("| trl-64 | not installed: trl |") < md.index("![step scaling: M]")
    assert not list((tmp_path / "plots").glob("*.tmp*"))
