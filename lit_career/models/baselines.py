"""Baselines that emit the same per-transition distributions as the LLM: Markov, multinomial logit, bag-of-jobs.

Every baseline follows :class:`Baseline`: ``fit(train, valid)`` then ``predict(panel)``, which returns a
:class:`~lit_career.evaluation.predictions.Predictions` with one normalized row for *every* person-year
of ``panel``, in the order of :func:`~lit_career.evaluation.predictions.transition_table`.

A person's first year has no previous state. Each model predicts it from what it knows then:

* Markov: the (smoothed) distribution of first-year states in the training panel;
* logit and bag-of-jobs: the same network as for later years, with the current job set to a learned
  "no history" embedding, so the first state is predicted from the covariates (calendar year,
  education, demographics, birth year).

Smoothing: additive (Lidstone) for Markov, so states never seen in training keep a positive
probability; softmax models are positive everywhere by construction. The softmax models train in a
compact torch loop (seconds to a minute on CPU, no checkpoints needed); default hyperparameters were
picked on the bundled NLSY79 valid split (split seed 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lit_career.data.panel import EDUCATION_LEVELS, CareerPanel, assign_splits
from lit_career.data.sources import PanelSource
from lit_career.data.taxonomy import vocabulary
from lit_career.evaluation.predictions import Predictions, transition_table

SMOOTHING_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
BACKOFF_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
NUMERIC_FEATURES = ("tenure", "years_in_panel", "year", "education_change", "gap", "birth_year")
CATEGORICAL_FEATURES = ("education", "sex", "race", "location")


class Baseline(Protocol):
    """What every baseline offers: fit on a train panel (valid for tuning), predict every person-year."""

    def fit(self, train: CareerPanel, valid: CareerPanel | None = None) -> Baseline: ...

    def predict(self, panel: CareerPanel) -> Predictions: ...


def feature_table(panel: CareerPanel) -> pd.DataFrame:
    """CAREER's hand-crafted features for predicting each person-year's state (rows as ``panel.records``).

    Columns: ``current_state`` (state the year before, -1 in the first year), ``two_back_state``
    (two records back, -1 if none), ``tenure`` (calendar years in the current state's spell up to
    the previous record, 0 in the first year), ``years_in_panel`` (years since the person's first
    record), ``year``, ``education`` and ``education_change`` (level difference from the previous
    record, 0 when either is unknown), ``gap`` (years since the previous record, 0 in the first year),
    ``sex``, ``race``, ``location``, ``birth_year``.
    """
    records = panel.records
    n = len(records)
    rows = np.arange(n)
    pid = records["person_id"].to_numpy()
    years = records["year"].to_numpy(np.int64)
    states = records["state"].to_numpy(np.int64)
    first = np.r_[True, pid[1:] != pid[:-1]] if n else np.zeros(0, bool)
    position = rows - np.maximum.accumulate(np.where(first, rows, 0))
    start = rows - position

    def back(values: np.ndarray, k: int, fill: int) -> np.ndarray:
        shifted = np.r_[np.full(k, fill), values[: n - k]] if n else values
        return np.where(position >= k, shifted, fill)

    new_spell = first | (states != np.r_[-1, states[:-1]])
    spell_start = np.maximum.accumulate(np.where(new_spell, rows, 0))
    education = records["education"].cat.codes.to_numpy(np.int64)  # -1 when unknown
    prev_education = back(education, 1, -1)
    persons = panel.persons.reindex(records["person_id"])
    return pd.DataFrame(
        {
            "person_id": records["person_id"].to_numpy(),
            "current_state": back(states, 1, -1),
            "two_back_state": back(states, 2, -1),
            "tenure": back(years - years[spell_start] + 1, 1, 0),
            "years_in_panel": years - years[start],
            "year": years,
            "education": records["education"].astype("string").to_numpy(),
            "education_change": np.where(
                (education >= 0) & (prev_education >= 0), education - prev_education, 0
            ),
            "gap": np.where(position >= 1, years - back(years, 1, 0), 0),
            "sex": persons["sex"].to_numpy(),
            "race": persons["race"].to_numpy(),
            "location": persons["location"].to_numpy(),
            "birth_year": persons["birth_year"].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
        }
    )


def _mean_nll(predictions: Predictions) -> float:
    return float(-predictions.realized_log_prob().astype(np.float64).mean())


# ---------------------------------------------------------------------------------------------- Markov


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
        size = len(vocabulary())
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
        size = len(self._first)
        alpha = self.smoothing
        first = (self._first + alpha) / (self._first.sum() + alpha * size)
        bigram = (self._bigram + alpha) / (self._bigram.sum(1, keepdims=True) + alpha * size)
        prev = table["prev_state"].to_numpy(np.int64)
        probs = np.where((prev < 0)[:, None], first, bigram[np.maximum(prev, 0)])
        if self.order == 2:
            two_back = feature_table(panel)["two_back_state"].to_numpy(np.int64)
            rows = np.flatnonzero(two_back >= 0)
            probs[rows] = self._second_order(two_back[rows] * size + prev[rows], probs[rows])
        return Predictions(table, np.log(probs).astype(np.float32), self.name)

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


# ------------------------------------------------------------------------------------- softmax models


@dataclass
class _Inputs:
    """Tensors for one panel: current and two-back job (``V`` = none), covariates, targets, earlier-job bags."""

    current: torch.Tensor
    two_back: torch.Tensor
    covariates: torch.Tensor
    states: torch.Tensor  # the realized state of each row: the target, and the items of later rows' bags
    bag_start: torch.Tensor  # earlier jobs of row i are states[bag_start[i]:bag_end[i]]
    bag_end: torch.Tensor

    def __len__(self) -> int:
        return len(self.states)

    def earlier_jobs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened earlier-job states of rows ``idx`` and their bag offsets (for ``nn.EmbeddingBag``)."""
        start, length = self.bag_start[idx], self.bag_end[idx] - self.bag_start[idx]
        offsets = torch.cumsum(length, 0) - length
        flat = torch.arange(int(length.sum())) - torch.repeat_interleave(offsets - start, length)
        return self.states[flat], offsets


@dataclass
class _Encoder:
    """Standardizes numeric features and one-hot encodes categorical ones (unknown/missing level last)."""

    mean: np.ndarray
    std: np.ndarray
    levels: dict[str, list[str]]

    @classmethod
    def fit(cls, features: pd.DataFrame) -> _Encoder:
        numeric = features[list(NUMERIC_FEATURES)].to_numpy(np.float64)
        std = np.nan_to_num(np.nanstd(numeric, axis=0), nan=1.0)
        levels = {c: sorted(features[c].dropna().unique()) for c in CATEGORICAL_FEATURES if c != "education"}
        levels["education"] = list(EDUCATION_LEVELS)
        return cls(np.nan_to_num(np.nanmean(numeric, axis=0)), np.where(std > 0, std, 1.0), levels)

    @property
    def width(self) -> int:
        return len(NUMERIC_FEATURES) + sum(len(v) + 1 for v in self.levels.values())

    def inputs(self, panel: CareerPanel) -> _Inputs:
        features = feature_table(panel)
        numeric = (features[list(NUMERIC_FEATURES)].to_numpy(np.float64) - self.mean) / self.std
        blocks = [np.nan_to_num(numeric)]
        for column, levels in self.levels.items():
            codes = pd.Categorical(features[column], categories=levels).codes
            blocks.append(np.eye(len(levels) + 1)[np.where(codes < 0, len(levels), codes)])
        size = len(vocabulary())
        first_row = np.maximum.accumulate(
            np.where(features["current_state"].to_numpy() < 0, np.arange(len(features)), 0)
        )
        return _Inputs(
            current=torch.as_tensor(np.where(features["current_state"] < 0, size, features["current_state"])),
            two_back=torch.as_tensor(
                np.where(features["two_back_state"] < 0, size, features["two_back_state"])
            ),
            covariates=torch.as_tensor(np.concatenate(blocks, axis=1), dtype=torch.float32),
            states=torch.as_tensor(panel.records["state"].to_numpy(np.int64)),
            bag_start=torch.as_tensor(first_row),
            bag_end=torch.as_tensor(np.maximum(np.arange(len(features)) - 1, first_row)),
        )


class LogitNet(nn.Module):
    """Multinomial logit: one-hot current and two-back state (as full ``V x V`` tables) + linear covariates."""

    def __init__(self, size: int, covariates: int):
        super().__init__()
        self.current = nn.Embedding(size + 1, size)
        self.two_back = nn.Embedding(size + 1, size)
        self.covariates = nn.Linear(covariates, size)
        for parameter in self.parameters():
            nn.init.zeros_(parameter)

    def forward(self, inputs: _Inputs, idx: torch.Tensor) -> torch.Tensor:
        return (
            self.current(inputs.current[idx])
            + self.two_back(inputs.two_back[idx])
            + self.covariates(inputs.covariates[idx])
        )


class BagOfJobsNet(nn.Module):
    """Current-job embedding + mean embedding of earlier jobs + projected covariates → MLP → logits."""

    def __init__(self, size: int, covariates: int, dim: int, hidden: int):
        super().__init__()
        self.current = nn.Embedding(size + 1, dim)
        self.earlier = nn.EmbeddingBag(size, dim, mode="mean")
        self.covariates = nn.Linear(covariates, dim)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, size))

    def forward(self, inputs: _Inputs, idx: torch.Tensor) -> torch.Tensor:
        earlier = self.earlier(*inputs.earlier_jobs(idx))
        return self.head(
            self.current(inputs.current[idx]) + earlier + self.covariates(inputs.covariates[idx])
        )


@dataclass
class _Training:
    """Mini-batch Adam on cross-entropy + ``l2`` * squared weights, early stopping on valid NLL."""

    lr: float
    l2: float
    batch_size: int
    max_epochs: int
    patience: int
    seed: int

    def run(self, net: nn.Module, train: _Inputs, valid: _Inputs | None) -> list[float]:
        """Train ``net`` in place (best valid epoch restored); returns the valid NLL per epoch."""
        weights = [p for name, p in net.named_parameters() if not name.endswith("bias")]
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        history: list[float] = []
        best_state = None
        for _ in range(self.max_epochs):
            net.train()
            for idx in torch.randperm(len(train), generator=generator).split(self.batch_size):
                loss = F.cross_entropy(net(train, idx), train.states[idx])
                loss = loss + self.l2 * sum(w.pow(2).sum() for w in weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if valid is None:
                continue
            history.append(_nll(net, valid))
            if history[-1] <= min(history):
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            elif len(history) - 1 - int(np.argmin(history)) >= self.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        return history


@torch.no_grad()
def _log_probs(net: nn.Module, inputs: _Inputs, batch_size: int = 8192) -> torch.Tensor:
    net.eval()
    return torch.cat(
        [F.log_softmax(net(inputs, idx), -1) for idx in torch.arange(len(inputs)).split(batch_size)]
    )


def _nll(net: nn.Module, inputs: _Inputs) -> float:
    log_probs = _log_probs(net, inputs)
    return float(-log_probs[torch.arange(len(inputs)), inputs.states].double().mean())


class _NeuralBaseline:
    """Shared fit/predict of the softmax baselines: encode features, build the net, train, predict."""

    name: str
    training: _Training

    def _build(self, size: int, covariates: int) -> nn.Module:
        raise NotImplementedError

    def fit(self, train: CareerPanel, valid: CareerPanel | None = None):
        self.encoder = _Encoder.fit(feature_table(train))
        torch.manual_seed(self.training.seed)
        self.net = self._build(len(vocabulary()), self.encoder.width)
        valid_inputs = self.encoder.inputs(valid) if valid is not None else None
        self.valid_nll = self.training.run(self.net, self.encoder.inputs(train), valid_inputs)
        return self

    def predict(self, panel: CareerPanel) -> Predictions:
        log_probs = _log_probs(self.net, self.encoder.inputs(panel)).numpy()
        return Predictions(transition_table(panel), log_probs, self.name)


class LogitBaseline(_NeuralBaseline):
    """Multinomial logit on :func:`feature_table`'s features.

    One-hot current and two-back state, standardized numeric features (missing → mean), one-hot
    categorical covariates (with a missing/unseen level). Trained by mini-batch Adam on cross-entropy
    plus ``l2`` times the squared coefficients; with ``valid``, stops when its NLL has not improved for
    ``patience`` epochs and keeps the best epoch (``valid_nll`` holds the curve).
    """

    name = "logit"

    def __init__(
        self,
        lr: float = 0.01,
        l2: float = 1e-5,
        batch_size: int = 1024,
        max_epochs: int = 50,
        patience: int = 3,
        seed: int = 0,
    ):
        self.training = _Training(lr, l2, batch_size, max_epochs, patience, seed)

    def _build(self, size: int, covariates: int) -> nn.Module:
        return LogitNet(size, covariates)


class BagOfJobsBaseline(_NeuralBaseline):
    """Bag-of-jobs: embedding of the current job + mean embedding of all earlier states + covariates.

    "Earlier" means every state of the person before the current one (the previous year's); the
    first two years have an empty bag (zero vector). The sum goes through a one-hidden-layer MLP to
    the softmax. Covariates are those of :class:`LogitBaseline` (without the occupation one-hots).
    Training as in :class:`LogitBaseline`.
    """

    name = "bag_of_jobs"

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 256,
        lr: float = 0.001,
        l2: float = 1e-5,
        batch_size: int = 1024,
        max_epochs: int = 50,
        patience: int = 3,
        seed: int = 0,
    ):
        self.dim, self.hidden = dim, hidden
        self.training = _Training(lr, l2, batch_size, max_epochs, patience, seed)

    def _build(self, size: int, covariates: int) -> nn.Module:
        return BagOfJobsNet(size, covariates, self.dim, self.hidden)


# ------------------------------------------------------------------------------------------------ run

BaselineName = Literal["markov1", "markov2", "logit", "bag_of_jobs"]


def make_baseline(name: BaselineName, seed: int = 0) -> Baseline:
    """The baseline called ``name`` with default settings (``seed`` for the trained ones)."""
    if name in ("markov1", "markov2"):
        return MarkovBaseline(order=int(name[-1]))
    if name == "logit":
        return LogitBaseline(seed=seed)
    if name == "bag_of_jobs":
        return BagOfJobsBaseline(seed=seed)
    raise ValueError(f"unknown baseline {name!r}; choose from markov1, markov2, logit, bag_of_jobs")


def run_baseline(
    name: BaselineName,
    source: PanelSource,
    out_dir: Path,
    split_seed: int = 0,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
) -> dict:
    """Fit baseline ``name`` on the train split of ``source`` (valid for tuning/early stopping), write
    ``predictions_valid.parquet`` and ``predictions_test.parquet`` to ``out_dir`` and return their metrics
    (:func:`~lit_career.evaluation.metrics.evaluate_predictions`) with the fit time."""
    from lit_career.evaluation.metrics import evaluate_predictions  # imports torchmetrics: only when run

    panel = assign_splits(source.load(), fractions, seed=split_seed)
    train, valid, test = (panel.split(s) for s in ("train", "valid", "test"))
    start = time.perf_counter()
    model = make_baseline(name, seed).fit(train, valid)
    summary: dict = {"model": name, "fit_seconds": round(time.perf_counter() - start, 2)}
    out_dir = Path(out_dir)
    for split, part in (("valid", valid), ("test", test)):
        predictions = model.predict(part)
        predictions.write(out_dir / f"predictions_{split}.parquet")
        summary[split] = evaluate_predictions(predictions)
    return summary
