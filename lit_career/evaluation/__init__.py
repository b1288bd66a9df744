"""Evaluation: metrics, reports and comparisons of Predictions."""
