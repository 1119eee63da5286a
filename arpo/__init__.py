"""ARPO engine: agentic RL with entropy-branched tool-use rollouts, tree-packed updates and fused kernels.

Importing `arpo` is light and has no side effects; subpackages are imported where they are used
(`arpo.tree`, `arpo.config`, ...).
"""
__version__ = "0.1.0"
