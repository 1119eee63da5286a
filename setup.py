"""Build script: the Python packages plus the C++17 trajectory-tree extension `arpo._tree`.

Metadata and dependencies live in pyproject.toml; this file only says what to compile and where the packages are.
The kernel library lives in `arpo_kernels/` (a directory named `kernels` would shadow the PyPI package `kernels`,
which transformers imports).
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

ext = Pybind11Extension(
    "arpo._tree",
    sources=["csrc/traj_tree.cpp", "csrc/py_glue.cpp", "csrc/bindings.cpp"],
    include_dirs=["csrc"],
    cxx_std=17,
    # Identical float results to the pure-Python fallback: no fused multiply-add contraction.
    extra_compile_args=["-O3", "-ffp-contract=off"],
)

setup(
    packages=find_packages(include=["arpo", "arpo.*", "arpo_kernels", "arpo_kernels.*"]),
    ext_modules=[ext],
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
