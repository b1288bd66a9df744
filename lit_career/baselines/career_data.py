"""CAREER's data: a panel as windows of consecutive person-years with covariate ids, and its DataModule."""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lit_career.panel.careers import CareerPanel
from lit_career.panel.transitions import transition_keys

Covariate = Literal["year", "education", "sex", "race", "location", "birth_year"]
COVARIATES: tuple[Covariate, ...] = ("year", "education", "sex", "race", "location", "birth_year")
"""CAREER's covariates (the evaluation's are :data:`lit_career.panel.transitions.COVARIATES`)."""
PER_YEAR = ("year", "education")  # the other covariates are static per person


def covariate_values(panel: CareerPanel, covariates: tuple[str, ...]) -> dict[str, pd.Series]:
    """Each covariate of every person-year as strings (NA when missing), in record order."""
    persons = panel.persons.reindex(panel.records["person_id"])
    return {
        name: (panel.records[name] if name in PER_YEAR else persons[name])
        .astype("string")
        .reset_index(drop=True)
        for name in covariates
    }


def build_covariate_vocab(
    panels: list[CareerPanel], covariates: tuple[str, ...] = COVARIATES
) -> dict[str, list[str]]:
    """Sorted distinct non-missing values of each covariate over ``panels`` (the training panels)."""
    values = [covariate_values(panel, covariates) for panel in panels]
    return {name: sorted(set().union(*(set(v[name].dropna()) for v in values))) for name in covariates}


class CareerSequences(Dataset):
    """A panel as windows of at most ``max_len`` consecutive person-years.

    Training (``every_position=False``) keeps each person's most recent ``max_len`` years. Prediction
    (``every_position=True``) scores every person-year once: the first window covers the first
    ``max_len`` years, and each later year is scored at the end of the window of its ``max_len`` most
    recent years. Covariate ids are 1 + the index in ``covariate_vocab``; unknown or missing values are 0.
    """

    def __init__(
        self,
        panel: CareerPanel,
        covariate_vocab: dict[str, list[str]],
        max_len: int,
        every_position: bool = False,
    ):
        records = panel.records
        self.states = records["state"].to_numpy().astype(np.int64)
        first, prev, _ = transition_keys(records)
        self.prev = prev.astype(np.int64)
        cov = covariate_values(panel, tuple(covariate_vocab))
        ids = [
            pd.Index(values, dtype="string").get_indexer(cov[name]) + 1
            for name, values in covariate_vocab.items()
        ]
        self.covariates = (
            np.stack(ids, axis=1).astype(np.int64) if ids else np.zeros((len(records), 0), np.int64)
        )
        self.windows = _windows(np.r_[np.flatnonzero(first), len(records)], max_len, every_position)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        start, stop, first_scored = self.windows[i]
        rows = np.arange(start, stop)
        return {
            "states": torch.from_numpy(self.states[rows]),
            "prev": torch.from_numpy(self.prev[rows]),
            "covariates": torch.from_numpy(self.covariates[rows]),
            "scored": torch.from_numpy(rows >= first_scored),
            "rows": torch.from_numpy(rows),
        }


def _windows(bounds: np.ndarray, max_len: int, every_position: bool) -> np.ndarray:
    """(start, stop, first scored row) per window, for persons whose records span ``bounds[i]:bounds[i+1]``."""
    windows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if not every_position:
            start = max(a, b - max_len)
            windows.append((start, b, start))
            continue
        head = min(b, a + max_len)
        windows.append((a, head, a))
        windows.extend((t - max_len + 1, t + 1, t) for t in range(head, b))
    return np.array(windows, dtype=np.int64).reshape(-1, 3)


def collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Right-pad windows into a batch (padding is never scored; causal attention keeps it out of real positions)."""
    pad = {"states": -1, "prev": -1, "covariates": 0, "scored": False, "rows": -1}
    return {
        k: nn.utils.rnn.pad_sequence([it[k] for it in items], batch_first=True, padding_value=v)
        for k, v in pad.items()
    }


class CareerDataModule(L.LightningDataModule):
    """Train/valid panels as shuffled (train) and ordered (valid) batches of windows."""

    def __init__(
        self,
        train: CareerPanel,
        valid: CareerPanel,
        covariate_vocab: dict[str, list[str]],
        batch_size: int = 64,
        max_len: int = 64,
        seed: int = 0,
    ):
        super().__init__()
        self.train_panel, self.valid_panel, self.covariate_vocab = train, valid, covariate_vocab
        self.batch_size, self.max_len, self.seed = batch_size, max_len, seed

    def setup(self, stage: str) -> None:
        self.train_data = CareerSequences(self.train_panel, self.covariate_vocab, self.max_len)
        self.valid_data = CareerSequences(
            self.valid_panel, self.covariate_vocab, self.max_len, every_position=True
        )

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_data, self.batch_size, shuffle=True, collate_fn=collate, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.valid_data, self.batch_size, collate_fn=collate)
