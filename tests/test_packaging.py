"""Packaging facts the rest of the project relies on: import names and light, side-effect-free imports."""
import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_arpo_kernels_imports_alone():
    out = run("import sys, arpo_kernels; print(arpo_kernels.__file__); print('arpo' in sys.modules)")
    path, imported_arpo = out.splitlines()
    assert path.replace("\\", "/").endswith("arpo_kernels/__init__.py")
    assert imported_arpo == "False"


def test_core_imports_are_light():
    out = run("import sys, arpo, arpo.config, arpo.tree, arpo.cli; "
              "print(sorted(m for m in ('torch', 'transformers', 'triton', 'numba') if m in sys.modules))")
    assert out == "[]"


def test_the_integrations_package_imports_neither_library():
    out = run("import sys, arpo_kernels.integrations; "
              "print(sorted(m for m in ('arpo', 'trl', 'verl') if m in sys.modules))")
    assert out == "[]"
