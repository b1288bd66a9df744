"""Evaluation: per-transition distributions, metrics, reports."""
