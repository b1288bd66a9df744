"""Metrics against examples computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from lit_career.errors import InputError
from lit_career.evaluation.metrics import (
    evaluate_predictions,
    reliability_curve,
    subgroup_perplexity,
)
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary

V = len(vocabulary())
NO_JOB = vocabulary().special("no_job")
NILF = vocabulary().special("not_in_labor_force")


def predictions(dists: list[dict[int, float]], table: pd.DataFrame, model: str = "toy") -> Predictions:
    """Distributions given as {state: probability}; every other state gets probability 0."""
    log_probs = np.full((len(dists), V), -np.inf, np.float32)
    for i, dist in enumerate(dists):
        for s, p in dist.items():
            log_probs[i, s] = math.log(p)
    return Predictions(table, log_probs, model)


# Three workers: A (0, 0, 1), B (no job, 2), C (2, not in labor force).
TOY_DISTS = [
    {0: 0.5, 1: 0.25, NO_JOB: 0.25},
    {0: 0.78, 1: 0.12, NO_JOB: 0.1},
    {0: 0.5, 1: 0.2, 2: 0.1, NO_JOB: 0.2},
    {NO_JOB: 0.62, 0: 0.38},
    {NO_JOB: 0.55, 0: 0.1, 1: 0.1, 3: 0.1, 4: 0.1, 2: 0.04, 5: 0.01},
    {2: 0.7, 0: 0.3},
    {2: 0.85, NILF: 0.15},
]
TOY_TABLE = pd.DataFrame(
    {
        "person_id": ["A", "A", "A", "B", "B", "C", "C"],
        "year": [2000, 2001, 2002, 2000, 2001, 2000, 2001],
        "state": [0, 0, 1, NO_JOB, 2, 2, NILF],
        "prev_state": [-1, 0, 0, -1, NO_JOB, -1, 2],
        "gap": [0, 1, 1, 0, 1, 0, 1],
        "sex": pd.array(["F", "F", "F", "M", "M", None, None], dtype="string"),
        "race": pd.array(["hispanic"] * 3 + ["black"] * 2 + ["other"] * 2, dtype="string"),
        "birth_year": pd.array([1957] * 3 + [1961] * 2 + [1964] * 2, dtype="Int64"),
        "education": pd.array(
            ["high_school", "high_school", "some_college", None, None, "graduate", "graduate"], dtype="string"
        ),
        "split": ["test"] * 5 + ["train"] * 2,
    }
)


def ppl(*probs: float) -> float:
    return math.prod(probs) ** (-1 / len(probs))


@pytest.fixture
def toy() -> Predictions:
    return predictions(TOY_DISTS, TOY_TABLE.copy())


def test_perplexities_movers_stayers_and_first_years(toy):
    m = evaluate_predictions(toy)
    realized = [0.5, 0.78, 0.2, 0.62, 0.04, 0.7, 0.15]
    assert m["n_transitions"] == 7 and m["n_first"] == 3 and m["n_movers"] == 3 and m["n_stayers"] == 1
    assert m["ppl_all"] == pytest.approx(ppl(*realized), rel=1e-5)
    assert m["ppl_all_excl_first"] == pytest.approx(ppl(0.78, 0.2, 0.04, 0.15), rel=1e-5)
    assert m["ppl_movers"] == pytest.approx(ppl(0.2, 0.04, 0.15), rel=1e-5)
    assert m["ppl_stayers"] == pytest.approx(1 / 0.78, rel=1e-5)


def test_switch_and_stay_employed_subtasks(toy):
    m = evaluate_predictions(toy)
    # Switch task on the 4 rows with a previous state: P(switch) = .22 (stayed), .5, .45, .15 (switched).
    # Positive-negative pairs ranked right: .5 > .22, .45 > .22, .15 < .22.
    assert m["n_switch_task"] == 4
    assert m["switch_auc"] == pytest.approx(2 / 3)
    assert m["switch_nll"] == pytest.approx(
        -(math.log(0.78) + math.log(0.5) + math.log(0.45) + math.log(0.15)) / 4, rel=1e-5
    )
    # Employed task: rows whose previous state is an occupation (B's row after no job is excluded).
    # P(employed) = .9, .8 (stayed employed) and .85 (left for not in labor force): one pair of two right.
    assert m["n_employed_task"] == 3
    assert m["employed_auc"] == pytest.approx(1 / 2)
    assert m["employed_nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.15)) / 3, rel=1e-5)


def test_top_k_accuracy(toy):
    m = evaluate_predictions(toy)
    # Most probable state is realized in rows 0, 1, 3, 5; row 4's realized state ranks 6th.
    assert m["top1"] == pytest.approx(4 / 7)
    assert m["top5"] == pytest.approx(6 / 7)


def test_top_k_breaks_ties_at_random_in_expectation():
    table = TOY_TABLE.iloc[:2].copy()
    uniform = predictions([dict.fromkeys(range(V), 1 / V)] * 2, table)
    m = evaluate_predictions(uniform)
    assert m["top1"] == pytest.approx(1 / V, rel=1e-4) and m["top5"] == pytest.approx(5 / V, rel=1e-4)
    # Realized state 1 ties with state 0 for first place: top-1 in half the draws.
    pair = predictions([{0: 0.4, 1: 0.4, 2: 0.2}, {0: 0.4, 1: 0.4, 2: 0.2}], table.assign(state=[1, 2]))
    m = evaluate_predictions(pair)
    assert m["top1"] == pytest.approx((0.5 + 0) / 2) and m["top5"] == 1


def test_ece_bins_by_confidence(toy):
    m = evaluate_predictions(toy)
    # Top-label (confidence, correct): (.5, 1) (.78, 1) (.5, 0) (.62, 1) (.55, 0) (.7, 1) (.85, 0).
    # 15 bins: the two .5 rows share bin 7 (accuracy .5 = confidence); each other row is alone in its bin.
    assert m["ece"] == pytest.approx((0 + 0.22 + 0.38 + 0.55 + 0.3 + 0.85) / 7, rel=1e-5)
    # Switch: P(switch) .22 (label 0), .5, .45, .15 (label 1), each in its own bin.
    assert m["switch_ece"] == pytest.approx((0.22 + 0.5 + 0.55 + 0.85) / 4, rel=1e-5)


def test_reliability_curve_matches_ece(toy):
    curve = reliability_curve(toy)
    assert len(curve) == 15 and curve["count"].sum() == 7
    assert curve.loc[7, "count"] == 2 and curve.loc[7, "accuracy"] == 0.5
    assert curve.loc[7, "confidence"] == pytest.approx(0.5)
    assert curve.loc[0, "count"] == 0 and np.isnan(curve.loc[0, "accuracy"])
    filled = curve[curve["count"] > 0]
    ece = (filled["count"] / 7 * (filled["accuracy"] - filled["confidence"]).abs()).sum()
    assert ece == pytest.approx(evaluate_predictions(toy)["ece"], rel=1e-5)
    switch = reliability_curve(toy, task="switch")
    assert switch["count"].sum() == 4 and switch.loc[3, "accuracy"] == 0 and switch.loc[6, "accuracy"] == 1


def test_ece_near_zero_when_calibrated():
    rng = np.random.default_rng(0)
    n, k = 20_000, 4
    probs = rng.dirichlet(np.ones(k), size=n)
    realized = (probs.cumsum(1) < rng.random((n, 1))).sum(1)
    table = pd.DataFrame(
        {"person_id": np.arange(n).astype(str), "year": 2000, "state": realized, "prev_state": -1, "gap": 0}
    )
    log_probs = np.full((n, V), -np.inf, np.float32)
    log_probs[:, :k] = np.log(probs)
    assert evaluate_predictions(Predictions(table, log_probs))["ece"] < 0.02


def test_ece_of_miscalibrated_model_matches_formula():
    # 500 rows say 0.9 for state 0 and 300 are right; 500 say 0.3 and 250 are right.
    confident = {0: 0.9, 1: 0.1}
    unsure = {0: 0.3, 1: 0.25, 2: 0.25, 3: 0.2}
    states = [0] * 300 + [1] * 200 + [0] * 250 + [1] * 250
    table = pd.DataFrame({"person_id": "p", "year": range(1000), "state": states, "prev_state": -1, "gap": 0})
    m = evaluate_predictions(predictions([confident] * 500 + [unsure] * 500, table))
    assert m["ece"] == pytest.approx(0.5 * abs(0.6 - 0.9) + 0.5 * abs(0.5 - 0.3), rel=1e-5)


def test_split_selects_transitions(toy):
    m = evaluate_predictions(toy, split="test")
    assert m["n_transitions"] == 5
    assert m["ppl_all"] == pytest.approx(ppl(0.5, 0.78, 0.2, 0.62, 0.04), rel=1e-5)
    assert np.isnan(m["employed_auc"])  # both remaining employed-task rows stay employed: one class
    with pytest.raises(InputError, match="no transitions in split"):
        evaluate_predictions(toy, split="validation")


def test_subgroup_perplexity_counts_and_values(toy):
    sex = subgroup_perplexity(toy, "sex")
    assert list(sex.index) == ["F", "M", "unknown"]
    assert sex["n"].tolist() == [3, 2, 2] and sex["n_excl_first"].tolist() == [2, 1, 1]
    assert sex.loc["F", "ppl"] == pytest.approx(ppl(0.5, 0.78, 0.2), rel=1e-5)
    assert sex.loc["F", "ppl_excl_first"] == pytest.approx(ppl(0.78, 0.2), rel=1e-5)
    assert sex.loc["unknown", "ppl"] == pytest.approx(ppl(0.7, 0.15), rel=1e-5)
    cohort = subgroup_perplexity(toy, "cohort")
    assert cohort["n"].to_dict() == {"1955-1959": 3, "1960-1964": 4}
    assert subgroup_perplexity(toy, "cohort", cohort_years=10)["n"].to_dict() == {
        "1950-1959": 3,
        "1960-1969": 4,
    }
    education = subgroup_perplexity(toy, "education")
    assert education["n"].to_dict() == {"high_school": 2, "some_college": 1, "graduate": 2, "unknown": 2}


def test_bad_predictions_raise_input_errors(toy):
    unnormalized = Predictions(toy.table, toy.log_probs + np.float32(0.1), "toy")
    with pytest.raises(InputError, match="sums to"):
        evaluate_predictions(unnormalized)
    out_of_range = Predictions(toy.table.assign(state=[0, 0, 1, V, 2, 2, 0]), toy.log_probs, "toy")
    with pytest.raises(InputError, match="state 347 outside"):
        evaluate_predictions(out_of_range)
    with pytest.raises(InputError, match="no split column"):
        evaluate_predictions(Predictions(toy.table.drop(columns="split"), toy.log_probs), split="test")
