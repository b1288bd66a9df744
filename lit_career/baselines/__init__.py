"""Baselines that emit Predictions: Markov, logit, bag-of-jobs, CAREER."""
