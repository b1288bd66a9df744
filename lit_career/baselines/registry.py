"""The baselines by name (:func:`make_baseline`) and what every baseline offers (:class:`Baseline`).

Every baseline follows :class:`Baseline`: ``fit(train, valid)`` then ``predict(panel)``, which returns a
:class:`~lit_career.panel.predictions.Predictions` with one normalized row for *every* person-year
of ``panel``, in the order of :func:`~lit_career.panel.transitions.transition_table`.

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

from typing import Literal, Protocol

from lit_career.baselines.markov import MarkovBaseline
from lit_career.baselines.neural import BagOfJobsBaseline, LogitBaseline
from lit_career.panel.careers import CareerPanel
from lit_career.panel.predictions import Predictions


class Baseline(Protocol):
    """What every baseline offers: fit on a train panel (valid for tuning), predict every person-year."""

    def fit(self, train: CareerPanel, valid: CareerPanel | None = None) -> Baseline: ...

    def predict(self, panel: CareerPanel) -> Predictions: ...


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
