"""What a row writes beside its predictions: ``metrics.json``, a typed and versioned record."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lit_career.io import write_file_atomic
from lit_career.panel.careers import CareerPanel, split_origin

RECORD_VERSION = 2
"""2: ``splits`` added."""


@dataclass
class RowRecord:
    """The settings, sizes, times and metrics of a finished row (``evaluate`` and the README read these)."""

    model: str
    """Row name."""
    version: int = RECORD_VERSION
    """Version of this record's layout."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The row spec as run."""
    splits: dict[str, str] = field(default_factory=dict)
    """Where each split's persons come from: ``{"train": "random seed 0", "test": "ids file heldout.txt"}``
    (several sources: ``"<source>: <origin>"`` joined by ``; ``)."""
    parameters: int | None = None
    """Parameters of the whole model (LM rows: LM plus head)."""
    epochs: int | None = None
    """Training epochs run (early stopping may end them sooner)."""
    fit_seconds: float | None = None
    """Wall time of fitting (LM rows: fine-tuning plus the head)."""
    valid: dict[str, float] = field(default_factory=dict)
    """Metrics of the valid split (:func:`~lit_career.evaluation.metrics.evaluate_predictions`)."""
    test: dict[str, float] = field(default_factory=dict)
    """Metrics of the test split."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Model-specific facts, written at the top level: train_persons, size, pretrain_persons,
    pretrain_epochs, lm_parameters, trainable_parameters, head_parameters, steps, tokens_seen,
    epoch_fraction, finetune_seconds, predict_{valid,test}_seconds, likelihood_bound, bound_seconds."""

    def as_json(self) -> dict[str, Any]:
        record = asdict(self)
        return {**{k: v for k, v in record.items() if k != "extra"}, **record["extra"]}

    def write(self, folder: Path) -> Path:
        text = json.dumps(self.as_json(), indent=2, default=str) + "\n"
        return write_file_atomic(Path(folder) / "metrics.json", lambda tmp: tmp.write_text(text))


def split_origins(parts: dict[str, dict[str, CareerPanel]], seed: int) -> dict[str, str]:
    """Where each split's persons come from, from its part of each source (``split → source → panel``, as
    drawn with ``seed``); sources with no persons in a split are left out of it."""
    origins = {}
    for split, by_source in parts.items():
        found = {
            name: split_origin(panel, split, seed) for name, panel in by_source.items() if len(panel.persons)
        }
        single = len(found) == 1
        origins[split] = "; ".join(
            origin if single else f"{name}: {origin}" for name, origin in found.items()
        )
    return origins


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
