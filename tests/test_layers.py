"""The layers of the code base: every module of arpo/ and arpo_kernels/ may import modules of its own layer and
of the layers below it, never of one above. Imports are read with ``ast`` (nothing is imported), those inside
functions included.

Layers, low to high (a module belongs to the layer whose name is its longest dotted prefix):

  arpo_kernels   the fused kernels: imports nothing of arpo (arpo_kernels.integrations: TRL and verl too)
  arpo           the root package alone (its ``__version__``; envs.rewards reads ``arpo.__file__``)
  arpo.algos     advantage estimators and loss variants: registries the config names (numpy, torch, kernels)
  arpo.config    the config schema
  arpo.tree      trajectory trees and batches (and ``arpo._tree``, compiled from csrc/)
  arpo.tools     python sandbox, search, the kbqa knowledge base, the toolbox (search reads ToolsConfig)
  arpo.envs      tasks, datasets and prompts, rewards (tasks ask about the tools' knowledge base)
  arpo.models    loading a tokenizer and a causal LM, the device
  arpo.engines   rollout engines (HF: arpo_kernels; SGLang)
  arpo.rollout   the ARPO / GRPO sampler (engines, tools, tree, config)
  arpo.evaluate  evaluation of a policy: rollouts (rollout) scored by the rewards (envs)
  arpo.train     the trainer (it evaluates every K steps, so arpo.evaluate is below it)
  arpo.cli       the commands: main, eval, demo, compare, plot (nothing in the library imports them)

Within a layer any import is allowed. A new top-level module must be given a layer here (a module outside
every layer fails the test).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("arpo_kernels", "arpo", "arpo.algos", "arpo.config", "arpo.tree", "arpo.tools", "arpo.envs", "arpo.models",
          "arpo.engines", "arpo.rollout", "arpo.evaluate", "arpo.train", "arpo.cli", "arpo.api")
# The root package is the public facade: its ``__getattr__`` imports ``arpo.api`` when ``arpo.Trainer`` (or another
# public name) is first asked for. That one lazy arrow goes up by design and is left out of the graph (importing
# ``arpo`` still runs nothing of the layers); test_the_root_facade_imports_the_api_only pins it to arpo.api.
FACADE = ("arpo", "arpo.api")
EXTENSIONS = {"arpo._tree": "arpo.tree"}  # compiled modules (setup.py) and the layer they belong to
SANDBOX_CHILD = "arpo.tools._sandbox_child"  # runs isolated (python -I -S): the standard library only


def layer_of(module: str) -> int | None:
    """Index in LAYERS of ``module``'s layer; None when it is in none. The root ``arpo`` layer holds the root
    package alone."""
    module = EXTENSIONS.get(module, module)
    best = None
    for i, name in enumerate(LAYERS):
        if module == name or (name != "arpo" and module.startswith(name + ".")):
            if best is None or len(name) > len(LAYERS[best]):
                best = i
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every arrow of ``graph`` (module -> modules it imports) that goes up a layer, and every module of the
    graph that is in no layer."""
    out = []
    for module, targets in sorted(graph.items()):
        for name in [module, *sorted(targets)]:
            if layer_of(name) is None:
                out.append(f"{name} is in no layer: give it one in tests/test_layers.py")
        if layer_of(module) is None:
            continue
        for target in sorted(targets):
            if layer_of(target) is not None and layer_of(target) > layer_of(module):
                out.append(f"{module} ({LAYERS[layer_of(module)]}) imports {target} "
                           f"({LAYERS[layer_of(target)]}, a higher layer)")
    return sorted(set(out))


def _statements(tree: ast.AST, lazy: bool):
    """The nodes of ``tree``; without the bodies of functions unless ``lazy`` (what importing the module runs)."""
    for node in ast.iter_child_nodes(tree):
        yield node
        if lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _statements(node, lazy)


def imports_of(source: str, module: str, is_package: bool, known: set[str], lazy: bool = True) -> set[str]:
    """The arpo / arpo_kernels modules that ``source`` (the code of ``module``) imports: anywhere in it, or with
    ``lazy`` False only where importing the module runs (not inside functions). ``from X import name`` is
    X.name when that is a module (in ``known``), else X."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in _statements(ast.parse(source), lazy):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in ("arpo", "arpo_kernels")}
    return found


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package) for every .py file of arpo/ and arpo_kernels/."""
    out = {}
    for top in ("arpo", "arpo_kernels"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def import_graph(lazy: bool = True) -> dict[str, set[str]]:
    """module -> the arpo modules it imports (``lazy``: also inside functions)."""
    modules = _modules()
    known = set(modules) | set(EXTENSIONS)
    graph = {name: imports_of(path.read_text(encoding="utf-8"), name, package, known, lazy)
             for name, (path, package) in modules.items()}
    graph[FACADE[0]].discard(FACADE[1])
    return graph


def reachable(start: str) -> set[str]:
    """Every arpo module that ``start`` may import, directly or not, when any of their functions runs; of the
    packages above a module, only what importing them runs (``arpo.cli``'s commands import lazily)."""
    every, loading = import_graph(), import_graph(lazy=False)
    seen, todo = set(), [(start, every)]
    while todo:
        name, graph = todo.pop()
        if (name, id(graph)) in seen:
            continue
        seen.add((name, id(graph)))
        todo += [(m, every) for m in graph.get(name, ())]
        todo += [(".".join(name.split(".")[:i]), loading) for i in range(1, name.count(".") + 1)]
    return {name for name, _ in seen}


# ----------------------------------------------------------------------------------------------------------
# the code base


def test_no_import_goes_up_a_layer():
    graph = import_graph()
    assert len(graph) > 50 and "arpo.train.trainer" in graph  # the walk found the code base
    assert violations(graph) == []


def test_the_root_facade_imports_the_api_only():
    source = (ROOT / "arpo" / "__init__.py").read_text(encoding="utf-8")
    known = set(_modules())
    assert imports_of(source, "arpo", True, known, lazy=True) == {"arpo.api"}
    assert imports_of(source, "arpo", True, known, lazy=False) == set()  # `import arpo` loads no layer


def test_the_integrations_import_only_the_kernels():
    graph = import_graph()
    assert graph["arpo_kernels.integrations"] == set()  # nor TRL or verl: tests/test_packaging.py
    for name in ("arpo_kernels.integrations.trl", "arpo_kernels.integrations.verl"):
        assert graph[name] and all(m.startswith("arpo_kernels.") for m in graph[name]), (name, graph[name])


def test_evaluation_never_imports_training():
    for start in ("arpo.evaluate", "arpo.cli.eval"):
        assert not {m for m in reachable(start) if m.startswith("arpo.train")}, start
    assert {"arpo.envs.datasets", "arpo.models", "arpo.evaluate"} <= reachable("arpo.cli.eval")
    assert "arpo.train.trainer" in reachable("arpo.cli.demo")  # the check sees training where there is some


def test_the_sandbox_child_imports_the_standard_library_only():
    tree = ast.parse((ROOT / "arpo" / "tools" / "_sandbox_child.py").read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] if n.module and not n.level else "." for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom)}
    assert names and names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
    assert import_graph()[SANDBOX_CHILD] == set()


# ----------------------------------------------------------------------------------------------------------
# the check itself: it can fail


def test_the_check_finds_upward_arrows_and_unplaced_modules():
    graph = {
        "arpo.envs.tasks": {"arpo.tools.search", "arpo.envs.example"},  # down and sideways: fine
        "arpo.tools.toolbox": {"arpo.envs.tasks"},  # up: tools below envs
        "arpo_kernels.hf": {"arpo"},  # the kernels import nothing of arpo
        "arpo.evaluate": {"arpo.cli.eval", "arpo.rollout.sampler"},  # the library never imports a command
        "arpo.tree": {"arpo._tree", "arpo"},  # the extension is the tree's own
        "arpo.train.trainer": {"arpo.algos.estimators", "arpo.evaluate"},
        "arpo.newthing": set(),
    }
    assert violations(graph) == sorted([
        "arpo.evaluate (arpo.evaluate) imports arpo.cli.eval (arpo.cli, a higher layer)",
        "arpo.newthing is in no layer: give it one in tests/test_layers.py",
        "arpo.tools.toolbox (arpo.tools) imports arpo.envs.tasks (arpo.envs, a higher layer)",
        "arpo_kernels.hf (arpo_kernels) imports arpo (arpo, a higher layer)",
    ])
    real = import_graph()
    real["arpo.tools.toolbox"] = real["arpo.tools.toolbox"] | {"arpo.envs.tasks"}  # the arrow this test removed
    assert violations(real) == ["arpo.tools.toolbox (arpo.tools) imports arpo.envs.tasks (arpo.envs, a higher "
                                "layer)"]


@pytest.mark.parametrize("module, package, source, expected", [
    ("arpo.train.trainer", False,
     "import numpy\nimport arpo.tools.search\nfrom ..envs import rewards as r\nfrom . import checkpoint\n"
     "from ..config import ARPOConfig\nfrom arpo_kernels import linear_logprob_entropy\n"
     "def f():\n    from ..cli.eval import run_eval\n",
     {"arpo.tools.search", "arpo.envs.rewards", "arpo.train.checkpoint", "arpo.config", "arpo_kernels",
      "arpo.cli.eval"}),
    ("arpo.tree", True, "from . import py_tree\nfrom .batch import FlatBatch\nfrom .. import _tree\n",
     {"arpo.tree.py_tree", "arpo.tree.batch", "arpo._tree"}),
    ("arpo.envs.rewards", False, "import arpo\nfrom arpo.config import REWARD_FNS\n", {"arpo", "arpo.config"}),
])
def test_imports_are_resolved(module, package, source, expected):
    known = {"arpo.envs.rewards", "arpo.train.checkpoint", "arpo.tree.py_tree", "arpo.tree.batch", "arpo._tree",
             "arpo.tools.search", "arpo.cli.eval"}
    assert imports_of(source, module, package, known) == expected
