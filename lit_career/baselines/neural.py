"""Softmax baselines: multinomial logit and bag-of-jobs, trained in a compact torch loop.

Both predict a person's first year with the same network as later years, the current job set to a
learned "no history" embedding, so the first state is predicted from the covariates (calendar year,
education, demographics, birth year). Softmax models are positive everywhere by construction. They
train in seconds to a minute on CPU, no checkpoints needed; default hyperparameters were picked on the
bundled NLSY79 valid split (split seed 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lit_career.baselines.features import feature_table
from lit_career.panel.careers import EDUCATION_LEVELS, CareerPanel
from lit_career.panel.predictions import Predictions
from lit_career.panel.transitions import transition_table

NUMERIC_FEATURES = ("tenure", "years_in_panel", "year", "education_change", "gap", "birth_year")
CATEGORICAL_FEATURES = ("education", "sex", "race", "location")


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

    def covariates(self, features: pd.DataFrame) -> torch.Tensor:
        """The covariate block of each row of a :func:`feature_table`-like frame (columns
        :data:`NUMERIC_FEATURES` and :data:`CATEGORICAL_FEATURES`)."""
        numeric = (features[list(NUMERIC_FEATURES)].to_numpy(np.float64) - self.mean) / self.std
        blocks = [np.nan_to_num(numeric)]
        for column, levels in self.levels.items():
            codes = pd.Categorical(features[column], categories=levels).codes
            blocks.append(np.eye(len(levels) + 1)[np.where(codes < 0, len(levels), codes)])
        return torch.as_tensor(np.concatenate(blocks, axis=1), dtype=torch.float32)

    def with_numeric(self, covariates: torch.Tensor, name: str, values: np.ndarray) -> torch.Tensor:
        """A copy of ``covariates`` with the numeric feature ``name`` set to ``values`` (one per row)."""
        i = NUMERIC_FEATURES.index(name)
        out = covariates.clone()
        out[:, i] = torch.as_tensor((values - self.mean[i]) / self.std[i], dtype=torch.float32)
        return out

    def inputs(self, panel: CareerPanel) -> _Inputs:
        features = feature_table(panel)
        size = len(panel.vocab)
        first_row = np.maximum.accumulate(
            np.where(features["current_state"].to_numpy() < 0, np.arange(len(features)), 0)
        )
        return _Inputs(
            current=torch.as_tensor(np.where(features["current_state"] < 0, size, features["current_state"])),
            two_back=torch.as_tensor(
                np.where(features["two_back_state"] < 0, size, features["two_back_state"])
            ),
            covariates=self.covariates(features),
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
        return self.logits(inputs.current[idx], inputs.two_back[idx], inputs.covariates[idx])

    def logits(self, current: torch.Tensor, two_back: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
        return self.current(current) + self.two_back(two_back) + self.covariates(covariates)


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
        return self.logits(inputs.current[idx], earlier, inputs.covariates[idx])

    def logits(self, current: torch.Tensor, earlier: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
        """Logits from the current job, the mean embedding of the earlier jobs and the covariates."""
        return self.head(self.current(current) + earlier + self.covariates(covariates))


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
        self.net = self._build(len(train.vocab), self.encoder.width)
        valid_inputs = self.encoder.inputs(valid) if valid is not None else None
        self.valid_nll = self.training.run(self.net, self.encoder.inputs(train), valid_inputs)
        return self

    def predict(self, panel: CareerPanel) -> Predictions:
        log_probs = _log_probs(self.net, self.encoder.inputs(panel)).numpy()
        return Predictions(transition_table(panel), log_probs, self.name, panel.vocab.identity)

    def simulator(self, history: CareerPanel, paths: int) -> NeuralSimulator:
        """Sampler of ``paths`` futures of each person of ``history`` (see :mod:`lit_career.forecast`)."""
        return NeuralSimulator(self.net, self.encoder, history, paths)


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


class NeuralSimulator:
    """Futures of a softmax baseline: each path carries the features :func:`feature_table` would compute.

    Per path: the current and two-back state, the year the current spell began and (bag-of-jobs) the sum
    of the embeddings of the earlier jobs; per person: the previous record's year and education, the
    first year and the static covariates. Logit paths that share (person, current, two-back, tenure)
    share a distribution, computed once.
    """

    def __init__(self, net: nn.Module, encoder: _Encoder, history: CareerPanel, paths: int):
        features = feature_table(history)
        records = history.records
        last = features.groupby("person_id", sort=False).tail(1).index.to_numpy()
        states = records["state"].to_numpy(np.int64)
        years = records["year"].to_numpy(np.int64)
        self.net, self.encoder, self.paths = net, encoder, paths
        self.persons = features.loc[last, ["sex", "race", "location", "birth_year"]].reset_index(drop=True)
        self.first_year = years[last] - features["years_in_panel"].to_numpy()[last]
        self.prev_year = years[last]
        self.prev_education = records["education"].cat.codes.to_numpy(np.int64)[last]
        self.current = np.repeat(states[last], paths)
        self.two_back = np.repeat(features["current_state"].to_numpy(np.int64)[last], paths)
        spell = np.flatnonzero(features["current_state"].to_numpy() != states)  # first record of each spell
        self.spell_start = np.repeat(years[spell[np.searchsorted(spell, last, side="right") - 1]], paths)
        if isinstance(net, BagOfJobsNet):
            weight = net.earlier.weight.detach()
            person = np.repeat(np.arange(len(last)), np.diff(np.r_[-1, last]))
            earlier = np.ones(len(records), bool)
            earlier[last] = False
            self.bag = torch.zeros(len(last), weight.shape[1]).index_add_(
                0, torch.as_tensor(person[earlier]), weight[torch.as_tensor(states[earlier])]
            )
            self.bag = self.bag.repeat_interleave(paths, 0)
            self.bag_size = torch.as_tensor(np.repeat(np.diff(np.r_[-1, last]) - 1, paths))

    @torch.no_grad()
    def step(self, year: int, education: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-state distributions of the paths in ``year`` with each person's education code (-1: unknown)."""
        self.year, self.education = year, education
        tenure = np.repeat(self.prev_year, self.paths) - self.spell_start + 1
        person_covariates = self.encoder.covariates(self._person_features())
        size = self.net.current.num_embeddings - 1
        current, two_back = self.current, np.where(self.two_back < 0, size, self.two_back)
        if isinstance(self.net, LogitNet):
            person = np.arange(len(current)) // self.paths
            keys = ((person * (size + 1) + current) * (size + 1) + two_back) * (tenure.max() + 1) + tenure
            _, first, row = np.unique(keys, return_index=True, return_inverse=True)
            covariates = self.encoder.with_numeric(person_covariates[person[first]], "tenure", tenure[first])
            logits = self.net.logits(
                torch.as_tensor(current[first]), torch.as_tensor(two_back[first]), covariates
            )
            return F.softmax(logits, -1).numpy(), row
        covariates = self.encoder.with_numeric(
            person_covariates.repeat_interleave(self.paths, 0), "tenure", tenure
        )
        earlier = self.bag / self.bag_size.clamp(min=1)[:, None]
        logits = self.net.logits(torch.as_tensor(current), earlier, covariates)
        return F.softmax(logits, -1).numpy(), np.arange(len(current))

    def advance(self, states: np.ndarray) -> None:
        """Append one drawn state per path (the year and education of the last :meth:`step`)."""
        states = states.astype(np.int64)
        if isinstance(self.net, BagOfJobsNet):
            self.bag += self.net.earlier.weight.detach()[torch.as_tensor(self.current)]
            self.bag_size += 1
        self.spell_start = np.where(states != self.current, self.year, self.spell_start)
        self.two_back, self.current = self.current, states
        self.prev_year = np.full_like(self.prev_year, self.year)
        self.prev_education = self.education

    def _person_features(self) -> pd.DataFrame:
        """One :func:`feature_table` row per person for the step's year (tenure 0: each path sets its own)."""
        year, education = self.year, self.education
        known = (education >= 0) & (self.prev_education >= 0)
        return self.persons.assign(
            tenure=0,
            years_in_panel=year - self.first_year,
            year=year,
            education=pd.Series(pd.Categorical.from_codes(education, EDUCATION_LEVELS)).astype("string"),
            education_change=np.where(known, education - self.prev_education, 0),
            gap=year - self.prev_year,
        )
