"""A finished row scores careers it never saw: ``Row.load(folder).predict(panel)`` and ``python -m lit_career
score``, for the baselines, CAREER and an LM row with its head."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.evaluation.evaluate import evaluate
from lit_career.panel.careers import assign_splits, make_panel, subsample_persons
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary
from lit_career.runs.finished import Row
from lit_career.runs.row import run_row, split_panels
from lit_career.runs.spec import CareerArgs, LMArgs, RowSpec
from lit_career.sources import PanelSource

ROOT = Path(__file__).resolve().parents[1]
SURVEY = PanelSource(kind="synthetic", population="survey", persons=200, seed=0)
BASELINES = ("markov1", "markov2", "logit", "bag_of_jobs", "career")
LM_DATA = {"max_persons": 40, "max_length": 512}
WORKER = {
    "birth_year": 1960,
    "sex": "female",
    "race": "black",
    "history": [
        {"year": 1990, "occupation": "Registered nurses", "education": "bachelors"},
        {"year": 1991, "occupation": 95, "education": "bachelors"},
        {"year": 1992, "occupation": "unemployed", "education": "bachelors"},
    ],
}


def spec(root: Path, model: str) -> RowSpec:
    """A fast row of ``model`` on the synthetic survey (CAREER tiny, two epochs)."""
    return RowSpec(
        name=model,
        dataset="d",
        model=model,
        source=SURVEY,
        root=root,
        career=CareerArgs(size="tiny", max_epochs=2),
    )


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    """Finished rows: the baselines and CAREER on the synthetic survey, and a tiny two-stage LM row on NLSY79."""
    root = tmp_path_factory.mktemp("rows")
    for model in BASELINES:
        run_row(spec(root, model))
    lm = LMArgs(
        head=ROOT / "configs/fit/head/two_stage.yaml",
        finetune=ROOT / "configs/fit/lm/lora_tiny_cpu.yaml",
        data=LM_DATA,
        finetune_overrides={"trainer.max_steps": 3},
        head_overrides={"trainer.max_epochs": 2},
    )
    run_row(RowSpec(name="llm_tiny", dataset="d", model="lm", root=root, lm=lm))
    return root / "d"


def same_predictions(got: Predictions, folder: Path, tmp_path: Path) -> None:
    """``got``, written and read back, is the row's own test predictions file."""
    got.write(tmp_path / "got.parquet")
    got, want = (
        Predictions.read(tmp_path / "got.parquet"),
        Predictions.read(folder / "predictions_test.parquet"),
    )
    pd.testing.assert_frame_equal(got.table, want.table)
    np.testing.assert_allclose(got.log_probs, want.log_probs, rtol=0, atol=1e-6)
    assert got.model == want.model


@pytest.mark.parametrize("model", BASELINES)
def test_a_finished_row_predicts_its_own_test_set_again(rows, model, tmp_path):
    test = split_panels(spec(rows.parent, model))[0]["test"]
    same_predictions(Row.load(rows / model).predict(test), rows / model, tmp_path)


def test_a_finished_lm_row_recomputes_its_test_predictions(rows, tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_CAREER_CACHE", str(tmp_path / "cache"))  # no cached tokens or features to reuse
    test = assign_splits(subsample_persons(PanelSource().load(), LM_DATA["max_persons"]), seed=0).split(
        "test"
    )
    same_predictions(Row.load(rows / "llm_tiny").predict(test), rows / "llm_tiny", tmp_path)
    assert any((tmp_path / "cache" / "features").iterdir())


@pytest.mark.parametrize("model", ["logit", "llm_tiny"])
def test_score_writes_a_new_panels_predictions_for_evaluate(rows, model, tmp_path):
    new = PanelSource(kind="synthetic", population="survey", persons=30, seed=1)
    out = tmp_path / "new.parquet"
    main(["score", "--row", str(rows / model), *source_args(new), "--out", str(out)])
    predictions = Predictions.read(out)
    predictions.check_normalized()
    assert predictions.model == model and set(predictions.table["split"]) == {"test"}
    assert set(predictions.table["person_id"]) == set(new.load().persons.index)
    table = evaluate([out], out_dir=tmp_path / "evaluation")
    assert table.loc[model, "n_transitions"] == len(new.load().records)


def source_args(source: PanelSource) -> list[str]:
    return [f"--source.{key}={getattr(source, key)}" for key in ("kind", "population", "persons", "seed")]


@pytest.mark.parametrize("model", ["markov1", "career", "llm_tiny"])
def test_a_worker_file_gives_the_top_k_next_states(rows, model, tmp_path, capsys):
    (tmp_path / "worker.json").write_text(json.dumps(WORKER))
    history = pd.DataFrame(WORKER["history"]).assign(birth_year=1960, sex="female", race="black")
    history.to_csv(tmp_path / "worker.csv", index=False)
    shown = []
    for file in ("worker.json", "worker.csv"):
        main(["score", "--row", str(rows / model), "--worker", str(tmp_path / file), "--top_k", "4"])
        shown.append(capsys.readouterr().out.splitlines())
    assert [lines[2:] for lines in shown] == [shown[0][2:]] * 2  # the same table from either file
    assert shown[0][0].startswith(f"{model}: likeliest states of worker in 1993")
    probabilities = [float(line.split()[-1]) for line in shown[0][3:]]
    assert len(probabilities) == 4 and probabilities == sorted(probabilities, reverse=True)


def test_top_k_is_the_distribution_of_the_year_after_the_history(rows):
    """A worker whose last year follows the one before with the same education: top_k of the history before it
    is the distribution the row gives that last year."""
    row, panel = Row.load(rows / "bag_of_jobs"), SURVEY.load()
    records, person = panel.records, panel.records["person_id"]
    follows = records["year"].diff().eq(1) & records["education"].eq(records["education"].shift())
    last = follows & person.eq(person.shift()) & person.ne(person.shift(-1))
    worker = panel.subset([person[last].iloc[0]])
    top = row.top_k(make_panel(worker.records.iloc[:-1], worker.persons, "one"), 3)
    last = row.predict(worker).log_probs[-1]
    assert list(top["code"]) == list(vocabulary().codes[np.argsort(-last)[:3]])
    np.testing.assert_allclose(top["probability"], np.sort(np.exp(last))[::-1][:3], rtol=1e-5)


def error_line(args: list[str], capsys) -> str:
    """The one line ``python -m lit_career score`` prints when it exits 2."""
    with pytest.raises(SystemExit) as done:
        main(["score", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    return err[0]


@pytest.mark.parametrize(
    ("model", "remove", "named"),
    [
        ("logit", "metrics.json", "metrics.json"),
        ("career", "model.safetensors", "model.safetensors"),
        ("llm_tiny", "head/checkpoints/best.ckpt", "best.ckpt"),
        ("llm_tiny", "head/config.yaml", "config.yaml"),
        ("llm_tiny", "finetune/adapter", "finetune/adapter"),
    ],
)
def test_an_incomplete_row_folder_names_what_it_lacks(rows, model, remove, named, tmp_path, capsys):
    folder = shutil.copytree(rows / model, tmp_path / model)
    path = folder / remove
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    line = error_line(["--row", str(folder), "--worker", str(tmp_path / "w.json")], capsys)
    assert named in line and str(folder) in line


def test_a_row_written_before_models_were_saved_must_run_again(rows, tmp_path, capsys):
    folder = shutil.copytree(rows / "markov1", tmp_path / "markov1")
    record = json.loads((folder / "metrics.json").read_text())
    del record["saved_model"]
    (folder / "metrics.json").write_text(json.dumps(record))
    (folder / "model.safetensors").unlink()
    line = error_line(["--row", str(folder), "--worker", str(tmp_path / "w.json")], capsys)
    assert "before rows saved their fitted model: run the row again" in line


def test_covariate_values_a_row_never_trained_with_are_refused_by_name(rows, tmp_path, capsys):
    table = pd.DataFrame(
        {"person_id": ["a", "a", "b"], "year": [1990, 1991, 2030], "occupation": [95, 95, 22]}
    )
    table.assign(race=["1", "1", "2"]).to_csv(tmp_path / "new.csv", index=False)
    args = [
        "--source.kind",
        "table",
        "--source.path",
        str(tmp_path / "new.csv"),
        "--out",
        str(tmp_path / "p.parquet"),
    ]
    line = error_line(["--row", str(rows / "logit"), *args, "--source.columns.race", "race"], capsys)
    assert "column 'race'" in line and "race values 1, 2" in line
    assert "column 'year'" in error_line(
        ["--row", str(rows / "career"), *args], capsys
    )  # CAREER embeds years
    main(["score", "--row", str(rows / "logit"), *args])  # the logit takes years as numbers, any year
    assert len(Predictions.read(tmp_path / "p.parquet").table) == 3


def test_states_outside_the_vocabulary_and_unknown_occupations_are_named(rows, tmp_path, capsys):
    panel = SURVEY.load()
    records = panel.records.assign(
        state=panel.records["state"].where(panel.records.index != 3, len(vocabulary()))
    )
    with pytest.raises(InputError, match=f"states \\[{len(vocabulary())}\\]"):
        Row.load(rows / "markov2").predict(make_panel(records, panel.persons, "bad"))
    worker = {"history": [{"year": 1990, "occupation": "astronaut"}, {"year": 1991, "occupation": 12345}]}
    (tmp_path / "w.json").write_text(json.dumps(worker))
    line = error_line(["--row", str(rows / "logit"), "--worker", str(tmp_path / "w.json")], capsys)
    assert "unknown occupation(s) ['astronaut', '12345']" in line
