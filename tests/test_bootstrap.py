"""``evaluate``'s perplexity ratios to a reference row, with a paired bootstrap over persons."""

import numpy as np
import pandas as pd
import pytest

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.evaluation.evaluate import evaluate, paired_bootstrap
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary

V = len(vocabulary())
PERSONS, YEARS = 60, 5


def write_run(path, model: str, p_true: np.ndarray):
    """Predictions of ``PERSONS`` workers over ``YEARS`` years giving the realized state ``p_true`` and
    spreading the rest evenly; written (in shuffled row order) as ``path/predictions_test.parquet``."""
    rng = np.random.default_rng(1)
    n = PERSONS * YEARS
    state = rng.integers(0, 10, n)
    year = np.arange(n) % YEARS
    probs = np.repeat(((1 - p_true) / (V - 1))[:, None], V, axis=1)
    probs[np.arange(n), state] = p_true
    table = pd.DataFrame(
        {
            "person_id": (np.arange(n) // YEARS).astype(str),
            "year": 2000 + year,
            "state": state,
            "prev_state": np.where(year == 0, -1, np.r_[-1, state[:-1]]),
            "gap": (year > 0).astype(int),
            "split": "test",
        }
    )
    order = rng.permutation(n) if model != "career" else np.arange(n)  # evaluate aligns rows by key
    pred = Predictions(table.iloc[order].reset_index(drop=True), np.log(probs[order]), model)
    pred.write(path / "predictions_test.parquet")
    return path


def p_true(low: float, high: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, PERSONS * YEARS)


def test_a_clearly_better_row_wins_and_the_reference_loses_to_it(tmp_path, capsys):
    runs = [
        write_run(tmp_path / "a", "career", p_true(0.1, 0.3, 0)),
        write_run(tmp_path / "b", "better", p_true(0.4, 0.6, 1)),
    ]
    table = evaluate(runs, tmp_path / "cmp")

    columns = list(table.columns)
    assert columns[columns.index("ppl_all") + 1 :][:4] == ["ppl_ratio", "ratio_lo", "ratio_hi", "vs_career"]
    assert table["vs_career"].to_dict() == {"career": "reference", "better": "win"}
    expected = table.loc["better", "ppl_all"] / table.loc["career", "ppl_all"]
    assert table.loc["better", "ppl_ratio"] == pytest.approx(expected, rel=1e-9)
    assert table.loc["better", "ratio_lo"] < expected < table.loc["better", "ratio_hi"] < 1
    assert table.loc["career", ["ppl_ratio", "ratio_lo", "ratio_hi"]].tolist() == [1, 1, 1]
    csv = pd.read_csv(tmp_path / "cmp" / "metrics.csv", index_col="model")
    assert csv.loc["better", "vs_career"] == "win"
    assert (
        "over career's; 95% interval from 1000 paired bootstrap"
        in (tmp_path / "cmp" / "metrics.md").read_text()
    )
    assert "1000 paired bootstrap" in capsys.readouterr().out

    flipped = evaluate(runs, tmp_path / "cmp", reference="better", bootstrap=200, seed=3)
    assert flipped["vs_better"].to_dict() == {"career": "loss", "better": "reference"}
    assert flipped.loc["career", "ratio_lo"] > 1


def test_identical_rows_tie_with_ratio_exactly_one(tmp_path):
    p = p_true(0.1, 0.5, 0)
    table = evaluate(
        [write_run(tmp_path / "a", "career", p), write_run(tmp_path / "b", "copy", p)], tmp_path / "cmp"
    )
    assert table.loc["copy", ["ppl_ratio", "ratio_lo", "ratio_hi"]].tolist() == [1, 1, 1]
    assert table.loc["copy", "vs_career"] == "tie"


def test_no_ratio_columns_without_a_career_row(tmp_path):
    table = evaluate([write_run(tmp_path / "a", "markov1", p_true(0.1, 0.5, 0))], tmp_path / "cmp")
    assert "ppl_ratio" not in table and "ppl_ratio" not in (tmp_path / "cmp" / "metrics.md").read_text()


def test_unknown_reference_is_a_one_line_input_error(tmp_path, capsys):
    runs = [
        write_run(tmp_path / "a", "career", p_true(0.1, 0.5, 0)),
        write_run(tmp_path / "b", "copy", p_true(0.1, 0.5, 1)),
    ]
    with pytest.raises(InputError, match=r"no row named 'nope'.*rows: career, copy"):
        evaluate(runs, tmp_path / "cmp", reference="nope")
    with pytest.raises(SystemExit) as exit_:
        main(
            ["evaluate", f"[{runs[0]}, {runs[1]}]", "--out_dir", str(tmp_path / "cmp"), "--reference", "nope"]
        )
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: no row named 'nope' to compare against; rows: career, copy"
    ]


def person_level_diffs(persons: int, per_person: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NLL of a reference row and of a row whose per-person NLL difference is random (mean 0.1)."""
    rng = np.random.default_rng(seed)
    diff = np.repeat(rng.normal(0.1, 0.5, persons), per_person)
    reference = rng.exponential(2.0, persons * per_person)
    return np.stack([reference, reference + diff]), np.repeat(np.arange(persons), per_person)


def width(result: pd.DataFrame) -> float:
    return float(result.loc[1, "ratio_hi"] - result.loc[1, "ratio_lo"])


def test_bootstrap_resamples_persons_and_is_paired():
    nll, persons = person_level_diffs(50, 10)
    result = paired_bootstrap(nll, persons, reference=0, resamples=1000, seed=0)
    assert result.loc[1, "ppl_ratio"] == pytest.approx(np.exp(nll[1].mean() - nll[0].mean()))
    # Paired: noise shared by both rows cancels exactly.
    shared = nll + np.random.default_rng(5).normal(0, 3, nll.shape[1])
    pd.testing.assert_frame_equal(paired_bootstrap(shared, persons, 0, 1000, 0), result, rtol=1e-9)
    # Over persons: treating each transition as its own person understates the spread of person-level effects.
    assert width(paired_bootstrap(nll, np.arange(nll.shape[1]), 0, 1000, 0)) < width(result) / 2
    # More persons, narrower interval.
    assert width(paired_bootstrap(*person_level_diffs(800, 10), 0, 1000, 0)) < width(result) / 2
    # Persons are labels, not positions.
    pd.testing.assert_frame_equal(paired_bootstrap(nll, 7 * persons + 100, 0, 1000, 0), result)
