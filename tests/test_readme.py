"""The README's snippets marked ``<!-- tested -->`` run as written: python blocks in order in one namespace (a block
whose first line is ``# NAME.py, ...`` is written to that file instead), yaml blocks loaded as a config whose user
tools are built. They run in a temporary working directory, so relative output paths land there."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- tested -->\n```(\w+)\n(.*?)\n```", re.DOTALL)
FILE = re.compile(r"^# (\w+\.py)\b")


def snippets_of(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def test_the_marker_finds_blocks():
    text = "a\n<!-- tested -->\n```python\nx = 1\n```\n```python\nnot = tested\n```\n<!-- tested -->\n```yaml\nk: 1\n```"
    assert snippets_of(text) == [("python", "x = 1"), ("yaml", "k: 1")]


def test_readme_snippets(tmp_path, monkeypatch):
    from arpo.config import as_config
    from arpo.tools.parser import Action
    from arpo.tools.toolbox import make_toolbox

    blocks = snippets_of((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [kind for kind, _ in blocks].count("python") >= 3 and any(kind == "yaml" for kind, _ in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "__main__"}
    for kind, code in blocks:
        if kind == "python" and FILE.match(code):
            (tmp_path / FILE.match(code).group(1)).write_text(code + "\n", encoding="utf-8")
        elif kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own snippet)
        elif kind == "yaml":
            cfg = as_config(yaml.safe_load(code))
            with make_toolbox(cfg.tools, max_calls=1) as box:
                for name in cfg.tools.custom:
                    assert box.run(Action("tool", name, "France"), 0).ok
        else:
            raise AssertionError(f"a tested block of unknown kind {kind!r}")
    assert namespace["trainer"].final_step == 1 and namespace["lora"].final_step == 1
    assert {"adapter", "policy", "trainer_state.pt"} <= {p.name for p in (tmp_path / "runs" / "capitals-lora" /
                                                                          "checkpoints" / "step_000001").iterdir()}
    assert os.path.isfile(tmp_path / "runs" / "capitals-eval" / "summary.json")
    assert 0.0 <= namespace["summary"]["accuracy"] <= 1.0
    sys.modules.pop("mytools", None)
