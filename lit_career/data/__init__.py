"""Data layer: taxonomy, panels, resume texts, corpora."""
