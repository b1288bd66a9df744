"""The row runner on non-LM rows, and ``evaluate``: row files, plans, same transitions, one table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.evaluation.evaluate import evaluate
from lit_career.panel.predictions import Predictions
from lit_career.runs.row import run_row
from lit_career.runs.spec import CareerArgs, RowSpec, load_plan, load_row
from lit_career.sources import PanelSource

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "configs" / "rows"
BASELINE_CONFIGS = sorted(
    p
    for p in ROWS.glob("*/*.yaml")
    if p.parent.name != "plans" and yaml.safe_load(p.read_text())["model"] != "lm"
)
MODELS = ("oracle", "markov1", "markov2", "logit", "bag_of_jobs", "career", "career_pretrained")
SURVEY = PanelSource(kind="synthetic", population="survey", persons=200, seed=0)
RESUMES = PanelSource(kind="synthetic", population="resume", persons=300, seed=0)
TINY_CAREER = dict(size="tiny", max_epochs=1, pretrain_max_epochs=1, batch_size=32, accelerator="cpu")


def run_experiment(model, source, out_dir, pretrain_source=None, split_seed=0, **career):
    """Run ``model`` on ``source`` into ``out_dir`` (a row named after its folder)."""
    out_dir = Path(out_dir)
    career = CareerArgs(pretrain_source=pretrain_source, **career)
    spec = RowSpec(
        name=out_dir.name,
        dataset=out_dir.parent.name,
        model=model,
        source=source or PanelSource(),
        split_seed=split_seed,
        career=career,
        root=out_dir.parent.parent,
    )
    return run_row(spec)


def test_baseline_plan_names_every_non_lm_row_once():
    listed = load_plan(ROWS / "plans" / "baselines.yaml")
    assert sorted(listed) == BASELINE_CONFIGS
    assert {load_row(p).model for p in BASELINE_CONFIGS} == set(MODELS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Every model on the same 200-person synthetic survey (CAREER tiny, one epoch)."""
    root = tmp_path_factory.mktemp("runs")
    for model in MODELS:
        pretrain = RESUMES if model == "career_pretrained" else None
        career = TINY_CAREER if model.startswith("career") else {}
        run_experiment(model, SURVEY, root / "synthetic" / model, pretrain_source=pretrain, **career)
    return {model: root / "synthetic" / model for model in MODELS}


def test_every_model_scores_the_same_transitions_of_each_split(runs):
    for split in ("valid", "test"):
        tables = {m: Predictions.read(d / f"predictions_{split}.parquet").table for m, d in runs.items()}
        reference = tables["markov1"][["person_id", "year", "state"]]
        assert len(reference) > 100 and (tables["markov1"]["split"] == split).all()
        for model, table in tables.items():
            pd.testing.assert_frame_equal(table[["person_id", "year", "state"]], reference, obj=model)
    valid, test = (
        set(Predictions.read(runs["oracle"] / f"predictions_{s}.parquet").table["person_id"])
        for s in ("valid", "test")
    )
    assert not valid & test


def test_run_records_sizes_and_the_pretraining(runs):
    career = json.loads((runs["career_pretrained"] / "metrics.json").read_text())
    assert career["pretrain_persons"] == 300 and career["parameters"] > 0 and career["epochs"] == 1
    logit = json.loads((runs["logit"] / "metrics.json").read_text())
    assert logit["parameters"] > 0 and logit["train_persons"] == 160


def test_evaluate_table_matches_each_runs_own_metrics(runs, tmp_path):
    table = evaluate([runs["markov1"], runs["oracle"] / "predictions_test.parquet"], tmp_path / "cmp")
    assert list(table.index) == ["markov1", "oracle"]
    for model in table.index:
        own = json.loads((runs[model] / "metrics.json").read_text())["test"]
        for metric in ("n_transitions", "ppl_all", "ppl_movers", "ppl_stayers", "switch_auc", "top1"):
            assert table.loc[model, metric] == pytest.approx(own[metric], rel=1e-9), (model, metric)
    csv = pd.read_csv(tmp_path / "cmp" / "metrics.csv", index_col="model")
    assert csv.loc["oracle", "ppl_all"] == pytest.approx(table.loc["oracle", "ppl_all"])
    assert "| oracle |" in (tmp_path / "cmp" / "metrics.md").read_text()
    assert (tmp_path / "cmp" / "perplexity.png").stat().st_size > 0


def test_evaluate_logs_the_table_and_plot_to_wandb(runs, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    with wandb.init(
        project="open", dir=str(tmp_path / "open")
    ):  # a run left open, as a fit's logger leaves it
        table = evaluate([runs["markov1"], runs["oracle"]], tmp_path / "cmp", wandb=True)
    (run,) = tmp_path.glob("wandb/offline-run-*/files/media")  # its own run, under WANDB_DIR
    images = {p.name.split("_0_")[0] for p in run.glob("images/evaluation/*.png")}
    assert images == {"perplexity", "reliability", "perplexity_by_subgroup"}
    (logged,) = run.glob("table/evaluation/metrics_*.table.json")
    logged = json.loads(logged.read_text())
    ppl = {r[logged["columns"].index("model")]: r[logged["columns"].index("ppl_all")] for r in logged["data"]}
    assert ppl == pytest.approx(table["ppl_all"].to_dict())


def test_evaluate_expands_globs_and_names_rows_by_model(runs, tmp_path):
    table = evaluate([runs["oracle"].parent / "markov*"], tmp_path / "cmp", split="valid")
    assert sorted(table.index) == ["markov1", "markov2"]


def test_oracle_beats_markov_on_synthetic_data(runs, tmp_path):
    table = evaluate(list(runs.values()), tmp_path / "cmp")
    assert len(table) == len(MODELS)
    assert table.loc["oracle", "ppl_all"] < table.loc["markov1", "ppl_all"]
    assert table.loc["oracle", "ppl_movers"] < table.loc["markov1", "ppl_movers"]


def test_evaluate_names_the_run_scored_on_other_transitions(runs, tmp_path):
    other = tmp_path / "d" / "markov1_seed1"
    run_experiment("markov1", SURVEY, other, split_seed=1)
    with pytest.raises(InputError, match="markov1_seed1.*other transitions"):
        evaluate([runs["markov1"], other], tmp_path / "cmp")


def test_evaluate_tells_apart_runs_of_the_same_model_by_directory(runs, tmp_path):
    copy = tmp_path / "markov1_again"
    copy.mkdir()
    (copy / "predictions_test.parquet").write_bytes(
        (runs["markov1"] / "predictions_test.parquet").read_bytes()
    )
    table = evaluate([runs["markov1"], copy], tmp_path / "cmp")
    assert sorted(table.index) == ["markov1", "markov1_again"]
    assert table.loc["markov1", "ppl_all"] == table.loc["markov1_again", "ppl_all"]


def test_evaluate_rejects_missing_runs(tmp_path):
    with pytest.raises(InputError, match="no predictions_test.parquet"):
        evaluate([tmp_path], tmp_path / "cmp")
    with pytest.raises(InputError, match="no run matches"):
        evaluate([tmp_path / "nothing*"], tmp_path / "cmp")


@pytest.mark.parametrize(
    "model, source, pretrain",
    [("oracle", None, None), ("career_pretrained", SURVEY, None), ("career", SURVEY, RESUMES)],
)
def test_models_refuse_sources_they_cannot_use(model, source, pretrain, tmp_path):
    with pytest.raises(InputError):
        run_experiment(model, source, tmp_path / "d" / model, pretrain_source=pretrain)


def test_nlsy79_config_runs_on_a_subsample_from_the_command_line(tmp_path):
    config = ROWS / "nlsy79" / "markov2.yaml"
    small = tmp_path / "markov2.yaml"
    small.write_text(config.read_text() + "max_persons: 60\n")
    main(["row", "--spec", str(small), "--root", str(tmp_path)])
    metrics = json.loads((tmp_path / "nlsy79" / "markov2" / "metrics.json").read_text())
    assert metrics["model"] == "markov2" and metrics["train_persons"] == 48 and metrics["version"] == 2
    assert metrics["splits"] == {split: "random seed 0" for split in ("train", "valid", "test")}
    test = Predictions.read(tmp_path / "nlsy79" / "markov2" / "predictions_test.parquet")
    assert test.table["person_id"].nunique() == 6
    assert np.isfinite(metrics["test"]["ppl_all"])
