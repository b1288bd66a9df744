"""The evaluation report: tables, plots and the W&B run written for several prediction files."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lit_career.errors import InputError
from lit_career.evaluation.evaluate import evaluate
from lit_career.evaluation.metrics import evaluate_predictions
from lit_career.evaluation.report import comparison_table, write_table
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary

V = len(vocabulary())
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_predictions(path, model: str, sharpness: float, covariates: bool = True, seed: int = 0):
    """Four-year careers of 30 workers over a few occupations; the model puts ``sharpness`` logits on the truth."""
    rng = np.random.default_rng(seed)
    n = 120
    year = np.arange(n) % 4
    state = rng.integers(0, 4, n)
    state[rng.random(n) < 0.2] = vocabulary().special("unemployed")
    table = pd.DataFrame(
        {
            "person_id": (np.arange(n) // 4).astype(str),
            "year": 2000 + year,
            "state": state,
            "prev_state": np.where(year == 0, -1, np.r_[-1, state[:-1]]),
            "gap": (year > 0).astype(int),
            "split": np.where(np.arange(n) < 80, "test", "train"),
        }
    )
    if covariates:
        table["sex"] = np.repeat(rng.choice(["female", "male"], n // 4), 4)
        table["birth_year"] = np.repeat(rng.integers(1955, 1965, n // 4), 4)
    logits = torch.randn(n, V, generator=torch.Generator().manual_seed(seed))
    logits += sharpness * torch.nn.functional.one_hot(torch.as_tensor(state), V)
    pred = Predictions(table, torch.log_softmax(logits, 1).numpy(), model)
    pred.write(path)
    return pred


def test_evaluate_writes_tables_plots_and_wandb_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    preds = {
        name: write_predictions(tmp_path / f"{name}.parquet", name, s)
        for name, s in (("weak", 0.5), ("sharp", 6.0))
    }
    out = tmp_path / "report"
    table = evaluate([tmp_path / "weak.parquet", tmp_path / "sharp.parquet"], out, wandb=True)

    assert list(table.index) == ["weak", "sharp"]
    for name, pred in preds.items():
        expected = evaluate_predictions(pred, split="test")
        assert expected["n_transitions"] == 80
        assert table.loc[name, "ppl_all"] == pytest.approx(expected["ppl_all"], rel=1e-6)
    assert table.loc["sharp", "ppl_all"] < table.loc["weak", "ppl_all"]

    csv = pd.read_csv(out / "metrics.csv", index_col="model")
    pd.testing.assert_frame_equal(csv, table, check_dtype=False, check_index_type=False, rtol=1e-9)
    markdown = (out / "metrics.md").read_text()
    assert markdown.splitlines()[0].startswith("| model | run | n_transitions | ppl_all |")
    assert markdown in capsys.readouterr().out
    subgroups = pd.read_csv(out / "subgroups.csv")
    assert set(subgroups["variable"]) == {"sex", "cohort"}  # race and education are absent from the files
    assert (subgroups.groupby(["model", "variable"])["n"].sum() == 80).all()
    for png in ("perplexity.png", "reliability.png", "perplexity_by_subgroup.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)

    (run_dir,) = (tmp_path / "wandb" / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("run-*.wandb"))
    media = run_dir / "files" / "media"
    (metrics_json,) = media.glob("table/evaluation/metrics_*.table.json")
    logged = json.loads(metrics_json.read_text())
    assert logged["columns"][:3] == ["model", "run", "n_transitions"] and [
        row[0] for row in logged["data"]
    ] == ["weak", "sharp"]
    assert list(media.glob("table/evaluation/subgroups_*.table.json"))
    images = {p.name.split("_0_")[0] for p in media.glob("images/evaluation/*.png")}
    assert images == {"perplexity", "reliability", "perplexity_by_subgroup"}


def test_evaluate_names_models_by_run_and_rejects_bad_files(tmp_path):
    for i in range(2):
        (tmp_path / f"run{i}").mkdir()
        write_predictions(tmp_path / f"run{i}/p.parquet", "markov", 2.0, covariates=False)
    table = evaluate(sorted(tmp_path.glob("run*/p.parquet")), tmp_path / "out", split=None)
    assert list(table.index) == ["run0", "run1"]  # one model name twice: the run directories tell them apart
    assert (table["n_transitions"] == 120).all()
    assert pd.read_csv(tmp_path / "out" / "subgroups.csv").empty

    with pytest.raises(InputError, match="not found"):
        evaluate([tmp_path / "missing.parquet"], tmp_path / "out")
    pred = Predictions.read(tmp_path / "run0/p.parquet")
    pred.write(tmp_path / "top.parquet", top_k=5)
    with pytest.raises(InputError, match="top_k"):
        evaluate([tmp_path / "top.parquet"], tmp_path / "out", split=None)


def test_comparison_table_orders_columns_and_write_table_round_trips(tmp_path):
    rows = {
        "logit": {"extra": 1.0, "ece": 0.1, "ppl_all": 12.5, "n_transitions": 10},
        "markov": {"ppl_all": 20.25, "ece": math.nan, "n_transitions": 10},
    }
    table = comparison_table(rows)
    assert list(table.columns) == ["n_transitions", "ppl_all", "ece", "extra"]
    assert table.index.name == "model"
    markdown, csv = write_table(table, tmp_path, "compare")
    lines = markdown.read_text().splitlines()
    assert lines[:2] == ["| model | n_transitions | ppl_all | ece | extra |", "|---|---|---|---|---|"]
    assert lines[2:] == ["| logit | 10 | 12.5000 | 0.1000 | 1.0000 |", "| markov | 10 | 20.2500 |  |  |"]
    pd.testing.assert_frame_equal(pd.read_csv(csv, index_col="model"), table)
