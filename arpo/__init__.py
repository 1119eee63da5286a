"""ARPO engine: agentic RL with entropy-branched tool-use rollouts, tree-packed updates and fused kernels.

Importing `arpo` is light and has no side effects. The public Python API (``arpo.Trainer``,
``arpo.evaluate_checkpoint``, ``arpo.custom_tool``, ``arpo.ToolResult``, ``arpo.load_config``; see ``arpo.api``)
is imported on first use; subpackages are imported where they are used (`arpo.tree`, `arpo.config`, ...).
"""
__version__ = "0.1.0"

_API = ("Trainer", "evaluate_checkpoint", "custom_tool", "ToolResult", "ToolSpec", "load_config", "ConfigError")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'arpo' has no attribute {name!r}")
