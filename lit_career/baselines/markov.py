"""First- and second-order Markov chains over states, with additive smoothing tuned on valid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lit_career.baselines.features import feature_table
from lit_career.panel.careers import CareerPanel
from lit_career.panel.predictions import Predictions
from lit_career.panel.transitions import transition_table

SMOOTHING_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
BACKOFF_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def _mean_nll(predictions: Predictions) -> float:
    return float(-predictions.realized_log_prob().astype(np.float64).mean())


@dataclass
class MarkovBaseline:
    """First- or second-order Markov chain over states, with additive smoothing.

    Order 1: ``P(s | b) = (n(b, s) + smoothing) / (n(b) + smoothing * V)`` for previous state ``b``;
    first years use the smoothed distribution of first-year states.
    Order 2 backs off to order 1 by interpolation: ``P(s | a, b) = (n(a, b, s) + backoff * P1(s | b)) /
    (n(a, b) + backoff)`` with ``a`` the state two records back, so an unseen context ``(a, b)`` gets
    exactly ``P1(s | b)``; second years (no ``a``) use ``P1`` and first years the first-year distribution.

    With ``valid`` given to :meth:`fit` (and ``tune``), ``smoothing`` is chosen from
    :data:`SMOOTHING_GRID` by the order-1 valid NLL, then ``backoff`` from :data:`BACKOFF_GRID` by the
    order-2 valid NLL; ``valid_nll`` keeps the grid's scores.
    """

    order: Literal[1, 2] = 1
    smoothing: float = 0.1
    backoff: float = 300.0
    tune: bool = True

    def __post_init__(self) -> None:
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {self.order}")
        self.valid_nll: dict[str, dict[float, float]] = {}

    @property
    def name(self) -> str:
        return f"markov{self.order}"

    def fit(self, train: CareerPanel, valid: CareerPanel | None = None) -> MarkovBaseline:
        size = len(train.vocab)
        table = transition_table(train)
        prev, state = table["prev_state"].to_numpy(np.int64), table["state"].to_numpy(np.int64)
        self._first = np.bincount(state[prev < 0], minlength=size).astype(np.float64)
        self._bigram = np.zeros((size, size))
        np.add.at(self._bigram, (prev[prev >= 0], state[prev >= 0]), 1)
        two_back = feature_table(train)["two_back_state"].to_numpy(np.int64)
        has = two_back >= 0
        self._trigram_keys, self._trigram_counts = np.unique(
            (two_back[has] * size + prev[has]) * size + state[has], return_counts=True
        )
        if valid is not None and self.tune:
            self._tune(valid)
        return self

    def _tune(self, valid: CareerPanel) -> None:
        order = self.order
        self.order = 1
        self.valid_nll["smoothing"] = {}
        for value in SMOOTHING_GRID:
            self.smoothing = value
            self.valid_nll["smoothing"][value] = _mean_nll(self.predict(valid))
        self.smoothing = min(self.valid_nll["smoothing"], key=self.valid_nll["smoothing"].get)
        self.order = order
        if order == 2:
            self.valid_nll["backoff"] = {}
            for value in BACKOFF_GRID:
                self.backoff = value
                self.valid_nll["backoff"][value] = _mean_nll(self.predict(valid))
            self.backoff = min(self.valid_nll["backoff"], key=self.valid_nll["backoff"].get)

    def predict(self, panel: CareerPanel) -> Predictions:
        table = transition_table(panel)
        prev = table["prev_state"].to_numpy(np.int64)
        two_back = feature_table(panel)["two_back_state"].to_numpy(np.int64) if self.order == 2 else None
        log_probs = np.log(self.probs(prev, two_back)).astype(np.float32)
        return Predictions(table, log_probs, self.name, panel.vocab.identity)

    def probs(self, prev: np.ndarray, two_back: np.ndarray | None = None) -> np.ndarray:
        """Next-state distributions [n, V] after previous states ``prev`` (-1: first year) and, for order 2,
        the states two records back ``two_back`` (-1: none)."""
        size = len(self._first)
        alpha = self.smoothing
        first = (self._first + alpha) / (self._first.sum() + alpha * size)
        bigram = (self._bigram + alpha) / (self._bigram.sum(1, keepdims=True) + alpha * size)
        probs = np.where((prev < 0)[:, None], first, bigram[np.maximum(prev, 0)])
        if self.order == 2 and two_back is not None:
            rows = np.flatnonzero(two_back >= 0)
            probs[rows] = self._second_order(two_back[rows] * size + prev[rows], probs[rows])
        return probs

    def simulator(self, history: CareerPanel, paths: int) -> MarkovSimulator:
        """Sampler of ``paths`` futures of each person of ``history`` (see :mod:`lit_career.forecast`)."""
        return MarkovSimulator(self, history, paths)

    def _second_order(self, contexts: np.ndarray, first_order: np.ndarray) -> np.ndarray:
        """``(n(ctx, s) + backoff * P1) / (n(ctx) + backoff)`` for each row's context ``a * V + b``."""
        size = first_order.shape[1]
        unique, inverse = np.unique(contexts, return_inverse=True)
        counts = np.zeros((len(unique), size))
        train_context = self._trigram_keys // size
        keep = np.isin(train_context, unique)
        counts[np.searchsorted(unique, train_context[keep]), self._trigram_keys[keep] % size] = (
            self._trigram_counts[keep]
        )
        counts = counts[inverse]
        return (counts + self.backoff * first_order) / (counts.sum(1, keepdims=True) + self.backoff)


class MarkovSimulator:
    """Markov futures: each path carries its last two states; paths that share them share a distribution."""

    def __init__(self, model: MarkovBaseline, history: CareerPanel, paths: int):
        last = feature_table(history).groupby("person_id", sort=False).tail(1)
        states = history.records["state"].to_numpy(np.int64)[last.index]
        self.model, self.prev = model, np.repeat(states, paths)
        self.two_back = np.repeat(last["current_state"].to_numpy(np.int64), paths)

    def step(self, year: int, education: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct distributions and the row of each path (year and education do not enter a Markov chain)."""
        size = len(self.model._first)
        two_back = self.two_back if self.model.order == 2 else np.full_like(self.prev, -1)
        keys, row = np.unique((two_back + 1) * size + self.prev, return_inverse=True)
        return self.model.probs(keys % size, keys // size - 1), row

    def advance(self, states: np.ndarray) -> None:
        self.two_back, self.prev = self.prev, states.astype(np.int64)
