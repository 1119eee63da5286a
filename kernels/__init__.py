"""arpo_kernels: fused kernels for RL training (log-prob + entropy, clipped policy loss) in Triton, numba and a
torch reference. Importable on its own: it never imports `arpo`. The kernels arrive with their own issue;
today the package is empty.
"""
