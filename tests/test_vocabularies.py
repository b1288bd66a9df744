"""Bring your own vocabulary: a table of codes and titles (the bundled O*NET-SOC 2010 one, or a user's file),
named by a source, carried by the panel, used by the models, the resume renderer and the closed-set scorer,
and recorded in the predictions."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.panel.careers import subsample_persons
from lit_career.panel.nlsy79 import load_nlsy79
from lit_career.panel.predictions import Predictions
from lit_career.panel.table import ColumnMap
from lit_career.panel.taxonomy import vocabulary
from lit_career.panel.vocabularies import load_vocabulary
from lit_career.runs.finished import Row
from lit_career.runs.row import run_row
from lit_career.runs.spec import LMArgs, RowSpec, load_row
from lit_career.sources import PanelSource
from lit_career.text.resume import parse, render_panel

ROOT = Path(__file__).resolve().parents[1]
CROSSWALK = ROOT / "lit_career/resources/occupations/onetsoc2010_to_occ1990dd.csv"
COLUMNS = ColumnMap(education="education", birth_year="birth_year", sex="sex", race="race")


@pytest.fixture(scope="module")
def onet_csv(tmp_path_factory) -> Path:
    """80 NLSY79 persons recoded to O*NET-SOC 2010 (each occ1990dd code to its first O*NET code, special
    states by key; the occupations with no O*NET code get a code outside the vocabulary)."""
    panel = subsample_persons(load_nlsy79(), 80)
    table = vocabulary().table.iloc[panel.records["state"].to_numpy()]
    first = pd.read_csv(CROSSWALK, dtype=str).drop_duplicates("occ1990dd")
    onet = table["code"].astype(str).map(dict(zip(first["occ1990dd"], first["onetsoc2010"], strict=True)))
    codes = np.where(table["is_special"], table["key"], onet.fillna("99-9999.99"))
    out = panel.records.assign(occupation=codes, education=panel.records["education"].astype(object))
    path = tmp_path_factory.mktemp("onet") / "onet.csv"
    out.merge(panel.persons.reset_index(), on="person_id").to_csv(path, index=False)
    return path


def onet_source(path: Path, **kwargs) -> PanelSource:
    return PanelSource(kind="table", path=str(path), vocabulary="onet_soc_2010", columns=COLUMNS, **kwargs)


def test_the_bundled_onet_vocabulary_has_the_official_titles_then_the_special_states():
    vocab, occ = load_vocabulary("onet_soc_2010"), vocabulary()
    assert (
        vocab.num_occupations == 963
        and vocab.titles[vocab.index_of_code()["11-1011.00"]] == "Chief Executives"
    )
    specials = occ.table[occ.table["is_special"]]
    tail = vocab.table.iloc[vocab.num_occupations :]
    assert (
        tail["title"].tolist() == specials["title"].tolist()
        and tail["key"].tolist() == specials["key"].tolist()
    )
    assert vocab.is_employed().tolist()[-6:] == occ.is_employed().tolist()[-6:]
    assert load_vocabulary("occ1990dd") is occ and vocab.identity != occ.identity


def test_unknown_codes_follow_the_policy_with_counts(onet_csv):
    unmapped = onet_source(onet_csv, unknown_codes="unmapped").load()
    dropped = onet_source(onet_csv, unknown_codes="drop").load()
    outside = int((pd.read_csv(onet_csv)["occupation"] == "99-9999.99").sum())
    assert outside > 0
    assert unmapped.removed == {"unknown occupation code mapped to 'unmapped' (kept)": outside}
    assert dropped.removed["unknown occupation code"] == outside
    assert (unmapped.records["state"] == unmapped.vocab.special("unmapped")).sum() == outside
    with pytest.raises(SystemExit) as exit_info:
        main(["row", "--spec", str(_row_file(onet_csv.parent, onet_csv, "markov1", "error"))])
    assert exit_info.value.code == 2


def _row_file(folder: Path, csv: Path, model: str, policy: str = "unmapped") -> Path:
    path = folder / f"{model}.yaml"
    path.write_text(
        f"name: {model}\ndataset: onet\nmodel: {model}\nroot: {folder / 'rows'}\n"
        f"source: {{kind: table, path: {csv}, vocabulary: onet_soc_2010, unknown_codes: {policy}, "
        "columns: {education: education, birth_year: birth_year, sex: sex, race: race}}\n"
    )
    return path


def test_a_baseline_row_runs_over_onet_and_records_its_vocabulary(onet_csv, capsys):
    main(["row", "--spec", str(_row_file(onet_csv.parent, onet_csv, "markov1"))])
    folder = onet_csv.parent / "rows/onet/markov1"
    vocab = load_vocabulary("onet_soc_2010")
    saved = Predictions.read(folder / "predictions_test.parquet")
    assert saved.vocabulary == vocab.identity and saved.log_probs.shape[1] == len(vocab)
    assert (
        pq.read_schema(folder / "predictions_test.parquet").metadata[b"vocabulary"] == vocab.identity.encode()
    )
    row = Row.load(folder)
    assert row.vocab.identity == vocab.identity
    panel = onet_source(onet_csv, unknown_codes="unmapped").load()
    assert row.predict(panel).log_probs.shape == (len(panel), len(vocab))
    with pytest.raises(Exception, match="over the vocabulary occ1990dd"):
        row.predict(subsample_persons(load_nlsy79(), 5))
    # a row over occ1990dd cannot be compared with it: one line naming both vocabularies
    other = Predictions(
        saved.table, np.zeros((len(saved.table), len(vocabulary()))), "occ", vocabulary().identity
    )
    other.write(onet_csv.parent / "occ.parquet")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "evaluate",
                f'["{folder}/predictions_test.parquet","{onet_csv.parent}/occ.parquet"]',
                "--split",
                "test",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and vocab.identity in err and vocabulary().identity in err


def test_the_tiny_lm_renders_and_scores_onet_titles(onet_csv, tmp_path):
    source = onet_source(onet_csv, unknown_codes="unmapped", name="onet")
    panel = source.load()
    texts, _ = render_panel(panel)
    first = panel.records.iloc[0]
    assert f"{first['year']}: {panel.vocab.titles[first['state']]}\n" in texts["text"].iloc[0]
    assert parse(texts["text"].iloc[0], vocab=panel.vocab)["states"][0] == first["state"]
    lm = LMArgs(
        head=ROOT / "configs/fit/head/two_stage.yaml",
        finetune=ROOT / "configs/fit/lm/lora_tiny_cpu.yaml",
        data={"sources": [source], "max_persons": 40, "max_length": 512},
        finetune_overrides={"trainer.max_steps": 2},
        head_overrides={"trainer.max_epochs": 1},
    )
    run_row(RowSpec(name="llm_tiny", dataset="onet", model="lm", root=tmp_path, lm=lm, source=source))
    saved = Predictions.read(tmp_path / "onet/llm_tiny/predictions_test.parquet")
    vocab = load_vocabulary("onet_soc_2010")
    assert saved.vocabulary == vocab.identity and saved.log_probs.shape[1] == len(vocab)
    assert Row.load(tmp_path / "onet/llm_tiny").vocab.identity == vocab.identity


@pytest.mark.parametrize(
    ("content", "row", "column", "what"),
    [
        ("code,title\n11-1,A\n11-2,B\n11-1,C\n", 4, "code", "is duplicated"),
        ("code,title\n11-1,A\n11-2,\n", 3, "title", "is empty"),
        ("code,name\n11-1,A\n", None, None, "lacks ['title']"),
        ("code,title\n11-1,A\nno_job,Idle\n", 3, "code", "is a special state's"),
    ],
)
def test_a_bad_vocabulary_file_is_one_error_line(tmp_path, capsys, content, row, column, what):
    vocab = tmp_path / "mine.csv"
    vocab.write_text(content)
    data = tmp_path / "data.csv"
    data.write_text("person_id,year,occupation\n1,2000,11-1\n")
    spec = tmp_path / "row.yaml"
    spec.write_text(
        f"name: m\ndataset: d\nmodel: markov1\nroot: {tmp_path}\n"
        f"source: {{kind: table, path: {data}, vocabulary: {vocab}}}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["row", "--spec", str(spec)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and what in err and str(vocab) in err
    if row is not None:
        assert f"row {row}" in err and f"column {column!r}" in err or f"column {column}" in err


def test_a_user_vocabulary_table_is_used_by_the_panel_and_the_renderer(tmp_path):
    (tmp_path / "mine.csv").write_text("code,title,group\nA1,Baker,food\nB2,Welder,metal\n")
    (tmp_path / "data.csv").write_text("person_id,year,occupation\n1,2000,A1\n1,2001,no_job\n1,2002,B2\n")
    panel = PanelSource(
        kind="table", path=str(tmp_path / "data.csv"), vocabulary=str(tmp_path / "mine.csv")
    ).load()
    assert len(panel.vocab) == 2 + 6 and panel.records["state"].tolist() == [
        0,
        panel.vocab.special("no_job"),
        1,
    ]
    text = render_panel(panel)[0]["text"].iloc[0]
    assert "2000: Baker\n2001: No job reported\n2002: Welder\n" in text


def _mine(tmp_path: Path) -> Path:
    (tmp_path / "mine.csv").write_text("code,title\nA1,Baker\nB2,Welder\n")
    return tmp_path / "mine.csv"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_crosswalk_maps_the_data_codes_to_the_vocabulary_and_unknown_ones_follow_the_policy(
    tmp_path, suffix
):
    pairs = pd.DataFrame({"from": [101, 102, 201, 201], "to": ["A1", "A1", "B2", "B2"]})
    crosswalk = tmp_path / f"cw.{suffix}"
    pairs.to_parquet(crosswalk) if suffix == "parquet" else pairs.to_csv(crosswalk, index=False)
    (tmp_path / "data.csv").write_text(
        "person_id,year,occupation\n1,2000,101\n1,2001,102\n1,2002,no_job\n1,2003,201\n2,2000,A1\n2,2001,999\n"
    )

    def load(policy):
        source = PanelSource(
            kind="table",
            path=str(tmp_path / "data.csv"),
            vocabulary=str(_mine(tmp_path)),
            crosswalk=str(crosswalk),
            unknown_codes=policy,
        )
        return source.load()

    kept = load("unmapped")
    unmapped, no_job = kept.vocab.special("unmapped"), kept.vocab.special("no_job")
    assert kept.records["state"].tolist() == [0, 0, no_job, 1, unmapped, unmapped]
    assert kept.removed == {"unknown occupation code mapped to 'unmapped' (kept)": 2}
    dropped = load("drop")
    assert dropped.records["state"].tolist() == [0, 0, no_job, 1]
    assert dropped.removed["unknown occupation code"] == 2
    with pytest.raises(InputError, match=r"row 6, column 'occupation': code not in the crosswalk .*'A1'"):
        load("error")


@pytest.mark.parametrize(
    ("content", "row", "column", "what"),
    [
        ("from,to\n101,A1\n102,B2\n101,B2\n", 4, "from", "'101' maps to 'B2' here but to 'A1' above"),
        ("from,to\n101,A1\n102,C3\n", 3, "to", "'C3' is not in the mine vocabulary"),
        ("from,target\n101,A1\n", 1, "to", "lacks ['to']"),
        ("from,to\n101,A1\n,B2\n", 3, "from", "from is empty"),
    ],
)
def test_a_bad_crosswalk_file_is_one_error_line(tmp_path, capsys, content, row, column, what):
    crosswalk = tmp_path / "cw.csv"
    crosswalk.write_text(content)
    (tmp_path / "data.csv").write_text("person_id,year,occupation\n1,2000,101\n")
    spec = tmp_path / "row.yaml"
    spec.write_text(
        f"name: m\ndataset: d\nmodel: markov1\nroot: {tmp_path}\n"
        f"source: {{kind: table, path: {tmp_path / 'data.csv'}, vocabulary: {_mine(tmp_path)}, "
        f"crosswalk: {crosswalk}}}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["row", "--spec", str(spec)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
    assert f"{crosswalk}, row {row}, column {column!r}" in err and what in err


def test_the_likelihood_head_scores_the_onet_titles_end_to_end(onet_csv, tmp_path):
    source = onet_source(onet_csv, unknown_codes="unmapped", name="onet")
    lm = LMArgs(
        head=ROOT / "configs/fit/head/likelihood.yaml",
        data={"sources": [source], "max_persons": 30, "max_length": 512},
        head_overrides={"trainer.max_epochs": 1},
    )
    run_row(
        RowSpec(name="llm_tiny_likelihood", dataset="onet", model="lm", root=tmp_path, lm=lm, source=source)
    )
    saved = Predictions.read(tmp_path / "onet/llm_tiny_likelihood/predictions_test.parquet")
    vocab = load_vocabulary("onet_soc_2010")
    assert saved.vocabulary == vocab.identity and saved.log_probs.shape == (len(saved.table), len(vocab))
    probs = np.exp(saved.log_probs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (saved.log_probs.std(axis=1) > 0).all()  # every title scored on its own, not a uniform fill
    assert saved.table["state"].lt(vocab.num_occupations).any()  # realized O*NET occupations among targets


def test_the_shipped_onet_example_is_what_its_script_writes_and_loads_over_onet(tmp_path, monkeypatch):
    out = tmp_path / "panel.csv"
    script = ROOT / "benchmarks/make_onet_example.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
    shipped = ROOT / "configs/rows/onet_example/panel.csv"
    assert out.read_bytes() == shipped.read_bytes()
    monkeypatch.chdir(ROOT)  # the row file's path is relative to the repository root
    panel = load_row(ROOT / "configs/rows/onet_example/logit.yaml").source.load()
    assert len(panel.persons) == 300 and panel.vocab.identity == load_vocabulary("onet_soc_2010").identity
