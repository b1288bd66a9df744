"""Models: base LMs, fine-tuning, scoring heads and baselines."""
