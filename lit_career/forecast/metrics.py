"""Forecast metrics, all scored on the person-years that have a record (the realized state).

* **Log score** of the realized state h years ahead, two estimates from the K sampled paths:
  ``log_score`` = log of the paths' mean of the model's own probability of that state given each path's
  drawn past (a Rao-Blackwellized estimate of the h-year-ahead probability; no smoothing needed, every
  model puts positive mass on every state the data realize), with its Monte Carlo standard error
  ``log_score_se`` (delta method); ``log_score_counts`` = log((count + alpha) / (K + alpha V)), the share
  of paths in that state with add-alpha smoothing over the vocabulary V. ``perplexity`` = exp(-log_score).
* **AUCs** by horizon: ``no_job_auc`` (P(no job reported) against the realized state being it) and
  ``switch_auc`` (P(another state than the last one before the cutoff) against the realized state being
  another).
* **Aggregate shares** per year (:func:`shares`): for no job and each occupation group, the forecast share
  among the persons with a record that year, its central ``level`` interval over the paths (path k's
  share counts every person's k-th path) and the realized share.
* **Calibration** of the group forecasts: ``coverage``, the share of person-years whose realized group
  is in the smallest set of groups holding ``level`` of the forecast probability, and ``set_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc

from lit_career.panel.taxonomy import vocabulary


@dataclass(frozen=True)
class Categories:
    """No job, the other non-work states and the occupation groups of one level, as the forecasts' categories."""

    names: list[str]
    of_state: np.ndarray
    """Category of each vocabulary state."""

    def of_probs(self, probs: np.ndarray) -> np.ndarray:
        """Category distributions [..., categories] from state distributions [..., V]."""
        return probs @ np.eye(len(self.names), dtype=probs.dtype)[self.of_state]


def categories(level: Literal[12, 17] = 12) -> Categories:
    """The ``level`` occupation groups (Autor-Dorn 12 or the 17 Census groups), then each special state."""
    table = vocabulary().table
    group = table[f"group{level}"].to_numpy()
    occupations = table[group > 0]
    titles = occupations.groupby(f"group{level}")[f"group{level}_title"].agg(lambda s: s.mode()[0])
    special = np.flatnonzero(group < 0)
    of_state = np.where(group > 0, group - 1, 0)
    of_state[special] = level + np.arange(len(special))
    return Categories(list(titles) + table["title"].iloc[special].tolist(), of_state)


def by_year(
    states: np.ndarray,
    probs: np.ndarray,
    mc_se: np.ndarray,
    realized: np.ndarray,
    last: np.ndarray,
    years: np.ndarray,
    cutoff: int,
    *,
    alpha: float,
    level: float,
) -> pd.DataFrame:
    """One row per forecast year and one (``all``) over every scored person-year: see the module docstring.

    Shapes: ``states`` [persons, paths, years], ``probs``/``mc_se`` [persons, years, V], ``realized``
    [persons, years] (-1: no record), ``last`` [persons] (the state at the last record before the cutoff).
    """
    vocab, groups = vocabulary(), categories(12)
    no_job = vocab.special("no_job")
    rows = []
    for h in [*range(len(years)), None]:
        keep = realized >= 0 if h is None else np.zeros_like(realized, bool)
        if h is not None:
            keep[:, h] = realized[:, h] >= 0
        person, step = np.nonzero(keep)
        state = realized[person, step]
        p = probs[person, step, state].astype(np.float64)
        counts = (states[person, :, step] == state[:, None]).sum(1)
        group_probs = groups.of_probs(probs[person, step].astype(np.float64))
        in_set = forecast_set(group_probs, level)
        rows.append(
            {
                "year": "all" if h is None else str(years[h]),
                "horizon": "all" if h is None else str(years[h] - cutoff),
                "n": len(state),
                "log_score": np.log(p).mean(),
                "log_score_se": np.sqrt(np.sum((mc_se[person, step, state] / p) ** 2)) / max(len(p), 1),
                "perplexity": np.exp(-np.log(p).mean()),
                "log_score_counts": np.log((counts + alpha) / (states.shape[1] + alpha * len(vocab))).mean(),
                "no_job_auc": auc(probs[person, step, no_job], state == no_job),
                "switch_auc": auc(1 - probs[person, step, last[person]], state != last[person]),
                "coverage": in_set[np.arange(len(state)), groups.of_state[state]].mean(),
                "set_size": in_set.sum(1).mean(),
            }
        )
    return pd.DataFrame(rows)


def forecast_set(probs: np.ndarray, level: float) -> np.ndarray:
    """The smallest set of categories holding at least ``level`` of each distribution [n, categories] (bool)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, 1)
    needed = (np.cumsum(ranked, 1) - ranked) < level  # still short of the level before this category
    out = np.zeros_like(needed)
    np.put_along_axis(out, order, needed, 1)
    return out


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """AUROC of ``score`` for ``label`` (NaN with a single class)."""
    if label.all() or not label.any():
        return float("nan")
    return float(binary_auroc(torch.as_tensor(score, dtype=torch.float64), torch.as_tensor(label).long()))


def shares(
    states: np.ndarray, probs: np.ndarray, realized: np.ndarray, years: np.ndarray, *, level: float
) -> pd.DataFrame:
    """Forecast and realized share of each category per year, among the persons with a record that year."""
    groups = categories(12)
    size = len(groups.names)
    frames = []
    for h, year in enumerate(years):
        seen = np.flatnonzero(realized[:, h] >= 0)
        drawn = groups.of_state[states[seen, :, h]]  # [persons, paths]
        per_path = np.stack([np.bincount(column, minlength=size) for column in drawn.T]) / max(len(seen), 1)
        low, high = np.quantile(per_path, [(1 - level) / 2, (1 + level) / 2], axis=0)
        realized_share = np.bincount(groups.of_state[realized[seen, h]], minlength=size) / max(len(seen), 1)
        frames.append(
            pd.DataFrame(
                {
                    "year": year,
                    "category": groups.names,
                    "n": len(seen),
                    "forecast": groups.of_probs(probs[seen, h].astype(np.float64)).mean(0),
                    "low": low,
                    "high": high,
                    "realized": realized_share,
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    return table.assign(inside=(table["low"] <= table["realized"]) & (table["realized"] <= table["high"]))
