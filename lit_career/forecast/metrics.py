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
* **Against a reference** (:func:`against_reference`): each forecast share inside another forecast's interval
  or not, e.g. a learned model's against the synthetic oracle's.
* **Calibration** of the group forecasts: ``coverage``, the share of person-years whose realized group
  is in the smallest set of groups holding ``level`` of the forecast probability, and ``set_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc

from lit_career.errors import InputError
from lit_career.panel.taxonomy import Vocabulary


@dataclass(frozen=True)
class Categories:
    """The occupation groups of one grouping, then each non-work state, as the forecasts' categories."""

    names: list[str]
    of_state: np.ndarray
    """Category of each vocabulary state."""

    def of_probs(self, probs: np.ndarray) -> np.ndarray:
        """Category distributions [..., categories] from state distributions [..., V]."""
        return probs @ np.eye(len(self.names), dtype=probs.dtype)[self.of_state]


def groupings(vocab: Vocabulary) -> list[str]:
    """The vocabulary's groupings of its occupations, the main one first: occ1990dd's ``group12`` (Autor-Dorn)
    and ``group17`` (Census); a table vocabulary's ``group`` when it gives one; none otherwise."""
    table = vocab.table
    occupations = table[~table["is_special"].to_numpy(bool)]
    given = [c for c in ("group12", "group17", "group") if c in table]
    return [c for c in given if _filled(occupations[c]).any()]


def categories(vocab: Vocabulary, grouping: str | None = None) -> Categories:
    """The groups of ``grouping`` (default: the vocabulary's main one; a vocabulary without groups has one
    category of every occupation), then each special state. Groups are ordered by their value; an occupation
    a table leaves ungrouped is in the category "No group"."""
    table = vocab.table
    special = table["is_special"].to_numpy(bool)
    grouping = grouping or next(iter(groupings(vocab)), None)
    if grouping is None:
        names, of_occupation = ["Any occupation"], np.zeros((~special).sum(), np.int64)
    else:
        group = table.loc[~special, grouping].astype(object)
        group = group.where(_filled(group), None)
        title = table.loc[~special, f"{grouping}_title"].astype(object)
        title = title.where(_filled(title), group.astype(str))
        values = sorted(group.dropna().unique())
        names = [title[group == v].mode()[0] for v in values]
        index = {v: i for i, v in enumerate(values)}
        of_occupation = group.map(lambda v: index.get(v, len(values))).to_numpy(np.int64)
        names += ["No group"] if group.isna().any() else []
    of_state = np.empty(len(table), np.int64)
    of_state[~special] = of_occupation
    of_state[special] = len(names) + np.arange(special.sum())
    return Categories(names + table.loc[special, "title"].tolist(), of_state)


def _filled(values: pd.Series) -> pd.Series:
    """Which values are given: neither missing nor empty (tables read an empty cell as "")."""
    return values.notna() & values.ne("")


def by_year(
    states: np.ndarray,
    probs: np.ndarray,
    mc_se: np.ndarray,
    realized: np.ndarray,
    last: np.ndarray,
    years: np.ndarray,
    cutoff: int,
    vocab: Vocabulary,
    *,
    alpha: float,
    level: float,
) -> pd.DataFrame:
    """One row per forecast year and one (``all``) over every scored person-year: see the module docstring.

    Shapes: ``states`` [persons, paths, years], ``probs``/``mc_se`` [persons, years, V], ``realized``
    [persons, years] (-1: no record), ``last`` [persons] (the state at the last record before the cutoff).
    """
    groups = categories(vocab)
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
    states: np.ndarray,
    probs: np.ndarray,
    realized: np.ndarray,
    years: np.ndarray,
    vocab: Vocabulary,
    *,
    level: float,
) -> pd.DataFrame:
    """Forecast and realized share of each category of the vocabulary's main grouping (:func:`categories`)
    per year, among the persons with a record that year."""
    groups = categories(vocab)
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


def against_reference(shares: pd.DataFrame, reference: pd.DataFrame, file: str) -> pd.DataFrame:
    """``shares`` with the interval of the same year and category in another forecast's ``reference`` shares
    (``low_reference``, ``high_reference``) and whether the forecast share lies in it (``inside_reference``):
    e.g. a model's no-job share against the oracle's band. The two must cover the same years and categories."""
    keys = ["year", "category"]
    if set(map(tuple, shares[keys].to_numpy())) != set(map(tuple, reference[keys].to_numpy())):
        raise InputError(
            "the reference forecast covers other years or categories than this one: forecast the same panel, "
            "cutoff and horizon",
            file=file,
        )
    bands = reference[[*keys, "low", "high"]].rename(
        columns={"low": "low_reference", "high": "high_reference"}
    )
    table = shares.merge(bands, on=keys, how="left", validate="one_to_one")
    inside = (table["low_reference"] <= table["forecast"]) & (table["forecast"] <= table["high_reference"])
    return table.assign(inside_reference=inside)
