"""Runs: the typed row spec and record, the one row runner, prepare, sweep, preemption."""
