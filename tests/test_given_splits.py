"""Splits the data gives (CAREER split files, a table's split column, a file of test ids, a test source) are
kept by every row, and where each split came from is recorded."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from lit_career.baselines.career_fit import held_out
from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.evaluation.evaluate import evaluate
from lit_career.llm.corpus import ResumeCorpus
from lit_career.panel.career_format import read_career, write_career
from lit_career.panel.careers import assign_splits
from lit_career.panel.predictions import Predictions
from lit_career.panel.table import ColumnMap
from lit_career.runs.row import run_row
from lit_career.runs.spec import CareerArgs, LMArgs, RowSpec
from lit_career.sources import PanelSource

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "tests" / "fixtures" / "splits"
TABLE_COLUMNS = ColumnMap(person_id="pid", year="yr", occupation="occ")
COLUMNS = replace(TABLE_COLUMNS, split="split")
SURVEY = PanelSource(kind="synthetic", population="survey", persons=200, seed=0)
NEW_WORKERS = PanelSource(kind="synthetic", population="survey", persons=20, seed=1, name="new")
TRAIN_VALID = {"train": 0.8 / 0.9, "valid": 0.1 / 0.9}
"""The default shares renormalized over train and valid: how persons are drawn when the test set is given."""
RANDOM = {"train": "random seed 0", "valid": "random seed 0"}


def row(tmp_path: Path, model: str = "markov1", **settings) -> tuple[dict, dict[str, set]]:
    """Run a row under ``tmp_path``; its metrics.json and the persons of its valid and test predictions."""
    spec = RowSpec(name=model, dataset="d", model=model, root=tmp_path / "rows", **settings)
    run_row(spec)
    return read_row(spec.out_dir)


def read_row(folder: Path) -> tuple[dict, dict[str, set]]:
    """A finished row's metrics.json and the persons of its valid and test predictions."""
    persons = {
        split: set(Predictions.read(folder / f"predictions_{split}.parquet").table["person_id"])
        for split in ("valid", "test")
    }
    return json.loads((folder / "metrics.json").read_text()), persons


@pytest.fixture(scope="module")
def career_dir(tmp_path_factory) -> Path:
    """A CAREER directory whose train/valid/test files hold 120 synthetic workers (split with seed 5)."""
    folder = tmp_path_factory.mktemp("career")
    panel = PanelSource(kind="synthetic", population="survey", persons=120, seed=0).load()
    write_career(assign_splits(panel, seed=5), folder)
    return folder


def workers(folder: Path, split: str) -> set[str]:
    """The person ids of a CAREER split file: ``<split>-<line>``."""
    lines = (folder / f"{split}.job").read_text().splitlines()
    return {f"{split}-{i}" for i in range(1, len(lines) + 1)}


def test_a_career_directory_keeps_its_own_splits(career_dir, tmp_path):
    metrics, persons = row(tmp_path, source=PanelSource(kind="career", path=str(career_dir)))
    assert persons == {split: workers(career_dir, split) for split in ("valid", "test")}
    assert metrics["train_persons"] == len(workers(career_dir, "train"))
    assert metrics["splits"] == {
        split: f"career:{career_dir / f'{split}.job'}" for split in ("train", "valid", "test")
    }
    assert metrics["version"] == 2


def test_the_corpus_keeps_a_career_directorys_splits(career_dir, tmp_path):
    corpus = ResumeCorpus(
        sources=[PanelSource(kind="career", path=str(career_dir))], max_length=512, cache_dir=str(tmp_path)
    )
    corpus.setup()
    for split in ("train", "valid", "test"):
        assert set(corpus.resumes(split)["person_id"]) == workers(career_dir, split)


def test_a_table_split_column_gives_each_persons_split():
    source = PanelSource(kind="table", path=str(SPLITS / "given.csv"), columns=COLUMNS)
    for seed in (0, 1):
        panel = assign_splits(source.load(), seed=seed)
        assert panel.persons["split"].to_dict() == {"A": "train", "B": "test", "C": "valid", "D": "train"}
    origin = f"column 'split' of {SPLITS / 'given.csv'}"
    assert panel.given_splits == {"train": origin, "valid": origin, "test": origin}


def test_a_file_of_test_ids_is_the_test_split_and_the_rest_train_and_valid(tmp_path):
    everyone = sorted(SURVEY.load().persons.index)
    test_ids = everyone[::7]
    ids_file = tmp_path / "heldout.txt"
    ids_file.write_text("\n".join(test_ids) + "\n")
    metrics, persons = row(tmp_path, source=replace(SURVEY, test_ids=str(ids_file)))
    assert persons["test"] == set(test_ids)
    rest = SURVEY.load().subset([p for p in everyone if p not in set(test_ids)])
    drawn = assign_splits(rest, TRAIN_VALID, seed=0)
    assert persons["valid"] == set(drawn.split("valid").persons.index)
    assert (
        metrics["train_persons"]
        == len(drawn.split("train").persons)
        == len(rest.persons) - len(persons["valid"])
    )
    assert metrics["splits"] == RANDOM | {"test": f"ids file {ids_file}"}


@pytest.fixture(scope="module")
def test_source_rows(tmp_path_factory) -> Path:
    """markov1 and a tiny CAREER trained on the survey and tested on other workers (``test_source``)."""
    root = tmp_path_factory.mktemp("test_source")
    tiny = CareerArgs(size="tiny", max_epochs=1, batch_size=32, accelerator="cpu")
    for model in ("markov1", "career"):
        row(root, model, source=SURVEY, test_source=NEW_WORKERS, career=tiny)
    return root / "rows" / "d"


def test_a_test_source_is_the_whole_test_set_of_baselines_and_career(test_source_rows):
    drawn = assign_splits(SURVEY.load(), TRAIN_VALID, seed=0)
    for model in ("markov1", "career"):
        metrics, persons = read_row(test_source_rows / model)
        assert persons["test"] == set(NEW_WORKERS.load().persons.index)
        assert persons["valid"] == set(drawn.split("valid").persons.index)
        assert metrics["train_persons"] == len(drawn.split("train").persons)
        assert metrics["splits"] == RANDOM | {"test": "every person of synthetic:survey seed 1"}
    table = evaluate([test_source_rows / "markov1", test_source_rows / "career"], test_source_rows / "cmp")
    assert list(table.index) == ["markov1", "career"]  # the same test transitions


def test_an_lm_row_with_a_test_source_scores_the_baselines_transitions(test_source_rows, tmp_path):
    lm = LMArgs(head=ROOT / "configs/fit/head/likelihood.yaml", data={"max_length": 512})
    spec = dict(source=SURVEY, test_source=NEW_WORKERS, lm=lm)
    metrics, persons = row(tmp_path, "lm", **spec)
    assert persons["test"] == set(NEW_WORKERS.load().persons.index)
    baseline = json.loads((test_source_rows / "markov1" / "metrics.json").read_text())
    assert metrics["splits"] == baseline["splits"]
    runs = [test_source_rows / "markov1", tmp_path / "rows" / "d" / "lm"]
    for split in ("valid", "test"):
        assert len(evaluate(runs, tmp_path / "cmp", split=split)) == 2  # same transitions as markov1


def test_a_pretraining_panel_with_test_ids_holds_out_valid_from_the_rest(tmp_path):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("B\n")
    table = PanelSource(
        kind="table", path=str(SPLITS / "given.csv"), columns=TABLE_COLUMNS, test_ids=str(ids_file)
    )
    train, valid = held_out(table.load())
    assert set(train.persons.index) | set(valid.persons.index) == {"A", "C", "D"}


@pytest.mark.parametrize(
    "fixture, row_, message",
    [
        ("missing_split.csv", 4, "split is missing"),
        ("unknown_split.csv", 3, "split 'validation' is not one of ['train', 'valid', 'test']"),
        ("two_splits.csv", 3, "person 'A' is in split 'test' here but 'train' on an earlier row"),
    ],
)
def test_bad_split_column_names_file_row_and_column(fixture, row_, message):
    with pytest.raises(InputError) as err:
        PanelSource(kind="table", path=str(SPLITS / fixture), columns=COLUMNS).load()
    assert (err.value.file, err.value.row, err.value.column) == (str(SPLITS / fixture), row_, "split")
    assert message in err.value.message and "\n" not in str(err.value)


def test_test_ids_not_in_the_panel_are_counted_and_named(tmp_path):
    ids = SPLITS / "unknown_ids.txt"
    with pytest.raises(InputError) as err:
        PanelSource(
            kind="table", path=str(SPLITS / "given.csv"), columns=TABLE_COLUMNS, test_ids=str(ids)
        ).load()
    assert err.value.file == str(ids)
    assert "2 of 3 test person id(s) are not in given (4 persons), e.g. 'Z9', 'Y8'" in err.value.message


def test_test_ids_cannot_override_splits_the_data_gives(career_dir, tmp_path):
    (tmp_path / "ids.txt").write_text("train-1\n")
    with pytest.raises(InputError, match="already gives its splits"):
        PanelSource(kind="career", path=str(career_dir), test_ids=str(tmp_path / "ids.txt")).load()


def test_a_test_source_must_be_another_panel():
    with pytest.raises(InputError, match="test_source is the row's source"):
        RowSpec(name="m", dataset="d", model="markov1", source=SURVEY, test_source=SURVEY)


@pytest.mark.parametrize("kind", ["table", "career"])
def test_a_source_without_a_path_exits_2_with_one_line(kind, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["prepare", "--source.kind", kind, "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: a {kind!r} source needs a path"


def test_a_row_with_test_ids_not_in_its_panel_exits_2_with_one_line(tmp_path, capsys):
    ids = SPLITS / "unknown_ids.txt"
    spec = tmp_path / "row.yaml"
    source = {
        "kind": "table",
        "path": str(SPLITS / "given.csv"),
        "columns": vars(TABLE_COLUMNS),
        "test_ids": str(ids),
    }
    spec.write_text(yaml.safe_dump({"name": "markov1", "dataset": "d", "model": "markov1", "source": source}))
    with pytest.raises(SystemExit) as done:
        main(["row", "--spec", str(spec), "--root", str(tmp_path)])
    assert done.value.code == 2
    message = "2 of 3 test person id(s) are not in given (4 persons), e.g. 'Z9', 'Y8'"
    assert capsys.readouterr().err.splitlines() == [f"error: {ids}: {message}"]


def test_a_test_source_that_cannot_be_read_is_an_input_error(tmp_path):
    missing = PanelSource(kind="table", path=str(tmp_path / "missing.csv"), columns=TABLE_COLUMNS)
    with pytest.raises(InputError, match="missing.csv: file not found"):
        row(tmp_path, source=SURVEY, test_source=missing)


def test_writing_career_files_replaces_each_file_whole(career_dir, tmp_path, monkeypatch):
    folder = tmp_path / "career"
    panel = read_career(career_dir)
    write_career(panel, folder)
    before = {path.name: path.read_text() for path in folder.iterdir()}

    def cut_off(self, text, encoding=None):
        Path.write_bytes(self, text[: len(text) // 2].encode())
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", cut_off)
    with pytest.raises(OSError, match="disk full"):
        write_career(panel.subset(panel.persons.index[:3]), folder)
    monkeypatch.undo()
    assert {path.name: path.read_text() for path in folder.iterdir()} == before
