"""RL algorithm pieces that are pure math over rewards, below ``arpo.train`` in the layering (numpy only; no
import of arpo.train, arpo.rollout or arpo.engines). ``advantages``: the advantage-estimator registry."""
