"""Metrics over per-transition distributions: every model, baselines included, is scored by this code.

Definitions (NLL = -log p(realized state); perplexity = exp(mean NLL)):

* ``ppl_all``: over every transition, each worker's first year included (as CAREER counts it);
  ``ppl_all_excl_first``: over transitions with a previous state (``prev_state >= 0``).
* movers: ``prev_state >= 0`` and ``state != prev_state``; stayers: ``state == prev_state``.
  First years (``prev_state == -1``) are neither: ``ppl_movers``, ``ppl_stayers``.
* switch sub-task, on transitions with ``prev_state >= 0``: P(switch) = 1 - P(state == prev_state),
  label = ``state != prev_state``.
* stay-employed sub-task, on transitions whose previous state is employed (an occupation or military,
  ``Vocabulary.is_employed``): P(employed) = total probability of the employed states, label = the
  realized state is employed.
  Both sub-tasks report AUROC of the probability (``switch_auc``, ``employed_auc``) and binary NLL, the
  mean of -log of the probability given to the realized label (``switch_nll``, ``employed_nll``).
* calibration: top-label ECE with ``bins`` equal-width bins over [0, 1]: confidence = largest
  probability, outcome = the most probable state is the realized one; ECE = sum_b n_b/N |acc_b - conf_b|
  (``ece``). ``switch_ece`` is the same for P(switch) against the switch label. :func:`reliability_curve`
  returns the bins.
* top-k accuracy (``top1``, ``top5``): the realized state is among the k most probable; ties are broken
  at random in expectation, so a uniform distribution scores k/V.
* subgroups (:func:`subgroup_perplexity`): perplexity by sex, race, birth cohort (``cohort_years``-wide
  birth-year bins aligned to multiples of the width) and education; missing values form ``unknown``.

Undefined values (an empty set of transitions, AUROC with a single class) are NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc, binary_calibration_error

from lit_career.errors import InputError
from lit_career.panel.careers import EDUCATION_LEVELS
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import employed_states, vocabulary

# Subgroup variable -> the table column it is derived from.
SUBGROUPS = {"sex": "sex", "race": "race", "cohort": "birth_year", "education": "education"}
UNKNOWN = "unknown"
CalibrationTask = Literal["top_label", "switch"]


def select_split(pred: Predictions, split: str | None) -> Predictions:
    """The transitions of ``split`` (all of them when ``split`` is None)."""
    if split is None:
        return pred
    if "split" not in pred.table:
        raise InputError(
            f"{pred.model}: predictions have no split column; evaluate with split=None", column="split"
        )
    keep = (pred.table["split"] == split).fillna(False).to_numpy(bool)
    if not keep.any():
        raise InputError(f"{pred.model}: no transitions in split {split!r}", column="split")
    if keep.all():
        return pred
    return Predictions(
        pred.table[keep].reset_index(drop=True), pred.log_probs[keep], pred.model, pred.vocabulary
    )


def evaluate_predictions(pred: Predictions, *, split: str | None = None, bins: int = 15) -> dict[str, float]:
    """All scalar metrics of one model's predictions (see the module docstring), as a flat dict."""
    pred = select_split(pred, split)
    lp, state, prev = _tensors(pred)
    nll = -lp.gather(1, state[:, None]).squeeze(1).double()
    has_prev, stay = prev >= 0, state == prev
    metrics: dict[str, float] = {
        "n_transitions": len(state),
        "n_first": int((~has_prev).sum()),
        "n_movers": int((has_prev & ~stay).sum()),
        "n_stayers": int(stay.sum()),
    }
    for name, keep in (
        ("all", None),
        ("all_excl_first", has_prev),
        ("movers", has_prev & ~stay),
        ("stayers", stay),
    ):
        metrics[f"ppl_{name}"] = _perplexity(nll if keep is None else nll[keep])

    log_stay, log_switch, switched = _switch_task(lp, state, prev)
    metrics["switch_auc"], metrics["switch_nll"] = _binary(log_switch, log_stay, switched)
    metrics["n_switch_task"] = len(switched)

    employed = torch.as_tensor(employed_states(lp.shape[1]))
    rows = (prev >= 0) & employed[prev.clamp(min=0)]
    log_out = torch.logsumexp(lp[:, ~employed][rows].double(), dim=1)
    metrics["employed_auc"], metrics["employed_nll"] = _binary(
        _log1mexp(log_out), log_out, employed[state[rows]]
    )
    metrics["n_employed_task"] = int(rows.sum())

    confidence, correct = _top_label(lp, state)
    metrics["ece"] = _ece(confidence, correct, bins)
    metrics["switch_ece"] = _ece(log_switch.exp(), switched, bins)
    metrics["top1"], metrics["top5"] = _top_k_accuracy(lp, state, (1, 5))
    return metrics


def reliability_curve(
    pred: Predictions, bins: int = 15, *, task: CalibrationTask = "top_label", split: str | None = None
) -> pd.DataFrame:
    """One row per equal-width bin: ``lower``, ``upper``, ``count``, mean ``confidence`` and ``accuracy``
    (NaN for empty bins). ``task="switch"`` bins P(switch) against the switch label. The last bin holds
    probability 1 too, whereas torchmetrics' ECE gives exactly 1 a bin of its own."""
    pred = select_split(pred, split)
    lp, state, prev = _tensors(pred)
    if task == "top_label":
        confidence, outcome = _top_label(lp, state)
    else:
        _, log_switch, outcome = _switch_task(lp, state, prev)
        confidence = log_switch.exp()
    confidence = confidence.clamp(0, 1).numpy()
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        return pd.DataFrame(
            {
                "lower": np.arange(bins) / bins,
                "upper": np.arange(1, bins + 1) / bins,
                "count": count,
                "confidence": np.bincount(index, confidence, bins) / count,
                "accuracy": np.bincount(index, outcome.numpy().astype(np.float64), bins) / count,
            }
        )


def subgroup_labels(table: pd.DataFrame, by: str, cohort_years: int = 5) -> pd.Series:
    """The group of each transition for subgroup variable ``by`` (one of :data:`SUBGROUPS`)."""
    if by not in SUBGROUPS:
        raise ValueError(f"unknown subgroup variable {by!r}; choose from {list(SUBGROUPS)}")
    column = SUBGROUPS[by]
    if column not in table:
        raise InputError(f"predictions have no {column} column", column=column)
    if by == "cohort":
        start = (pd.to_numeric(table[column]).astype("Int64") // cohort_years) * cohort_years
        labels = start.astype("string") + "-" + (start + cohort_years - 1).astype("string")
    else:
        labels = table[column].astype("string")
    return labels.fillna(UNKNOWN).rename(by)


def subgroup_perplexity(
    pred: Predictions, by: str, *, split: str | None = None, cohort_years: int = 5
) -> pd.DataFrame:
    """Perplexity per group of ``by``: index = group; columns ``n``, ``ppl`` (all transitions),
    ``n_excl_first``, ``ppl_excl_first``. Groups are sorted (education by level), ``unknown`` last."""
    pred = select_split(pred, split)
    lp, state, prev = _tensors(pred)
    nll = -lp.gather(1, state[:, None]).squeeze(1).double().numpy()
    first = (prev < 0).numpy()
    frame = pd.DataFrame({"nll": nll, "nll_excl_first": np.where(first, np.nan, nll)})
    frame[by] = subgroup_labels(pred.table, by, cohort_years).to_numpy()
    out = frame.groupby(by).agg(
        n=("nll", "size"),
        ppl=("nll", "mean"),
        n_excl_first=("nll_excl_first", "count"),
        ppl_excl_first=("nll_excl_first", "mean"),
    )
    out[["ppl", "ppl_excl_first"]] = np.exp(out[["ppl", "ppl_excl_first"]])
    return out.loc[sorted(out.index, key=lambda g: _group_order(by, g))]


def _group_order(by: str, group: str) -> tuple:
    if group == UNKNOWN:
        return (2, group)
    if by == "education" and group in EDUCATION_LEVELS:
        return (0, EDUCATION_LEVELS.index(group))
    return (1, group)


def _tensors(pred: Predictions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated log-probabilities [N, V] (float32), realized states and previous states (int64)."""
    bundled = pred.vocabulary_identity == vocabulary().identity
    size = len(vocabulary()) if bundled else (pred.log_probs.shape[1:] or [0])[0]
    if pred.log_probs.ndim != 2 or pred.log_probs.shape[1] != size:
        raise InputError(
            f"{pred.model}: distributions have shape {pred.log_probs.shape}, expected [N, {size}]"
        )
    if len(pred.table) == 0:
        raise InputError(f"{pred.model}: no transitions to evaluate")
    lp = torch.from_numpy(np.require(pred.log_probs, np.float32, ["C", "W"]))
    state = torch.tensor(pred.table["state"].to_numpy(np.int64))
    prev = torch.tensor(pred.table["prev_state"].to_numpy(np.int64))
    for name, values, low in (("state", state, 0), ("prev_state", prev, -1)):
        bad = torch.nonzero((values < low) | (values >= size)).flatten()
        if len(bad):
            raise InputError(
                f"{pred.model}: {name} {int(values[bad[0]])} outside [{low}, {size})",
                row=int(bad[0]),
                column=name,
            )
    total = torch.logsumexp(lp, dim=1)
    bad = torch.nonzero(~(total.abs() < 1e-3)).flatten()
    if len(bad):
        raise InputError(
            f"{pred.model}: distribution sums to {math.exp(float(total[bad[0]])):.6f}, not 1", row=int(bad[0])
        )
    return lp, state, prev


def _perplexity(nll: torch.Tensor) -> float:
    return math.exp(float(nll.mean())) if len(nll) else math.nan


def _log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - p) from log p (float64)."""
    return torch.log(-torch.expm1(log_p.clamp(max=0)))


def _switch_task(lp: torch.Tensor, state: torch.Tensor, prev: torch.Tensor):
    """log P(stay), log P(switch) and the switch label on transitions with a previous state."""
    rows = prev >= 0
    log_stay = lp.gather(1, prev.clamp(min=0)[:, None]).squeeze(1)[rows].double()
    return log_stay, _log1mexp(log_stay), state[rows] != prev[rows]


def _binary(log_pos: torch.Tensor, log_neg: torch.Tensor, label: torch.Tensor) -> tuple[float, float]:
    """AUROC of P(positive) and mean binary NLL of the realized label."""
    if len(label) == 0:
        return math.nan, math.nan
    nll = float(-torch.where(label, log_pos, log_neg).mean())
    both = 0 < int(label.sum()) < len(label)
    auc = float(binary_auroc(log_pos.exp(), label.long(), validate_args=False)) if both else math.nan
    return auc, nll


def _top_label(lp: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence and whether the most probable state is the realized one."""
    top, argmax = lp.max(dim=1)
    return top.double().exp(), argmax == state


def _ece(confidence: torch.Tensor, outcome: torch.Tensor, bins: int) -> float:
    if len(outcome) == 0:
        return math.nan
    return float(
        binary_calibration_error(confidence.clamp(0, 1), outcome.long(), n_bins=bins, validate_args=False)
    )


def _top_k_accuracy(lp: torch.Tensor, state: torch.Tensor, ks: tuple[int, ...]) -> list[float]:
    """Probability that the realized state is among the k most probable, ties broken at random."""
    realized = lp.gather(1, state[:, None])
    top = lp.topk(max(ks), dim=1).values
    above = (top > realized).sum(dim=1)  # exact while below max(ks), which is all that matters
    tied = (top == realized).sum(dim=1)
    spill = top[:, -1] == realized[:, 0]  # ties may continue past the top max(ks): count them all
    tied[spill] = (lp[spill] == realized[spill]).sum(dim=1)
    return [float(((k - above) / tied.clamp(min=1)).clamp(0, 1).double().mean()) for k in ks]
