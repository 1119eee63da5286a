"""Rollout: the tool loop and the ARPO / GRPO samplers (sampler.py)."""
