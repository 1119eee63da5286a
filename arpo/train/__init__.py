"""Training: advantages, batches, the policy update (the loop arrives with the trainer issue)."""
