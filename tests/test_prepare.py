import subprocess
import sys

import pandas as pd

from lit_career.panel.table import ColumnMap
from lit_career.runs.prepare import prepare
from lit_career.sources import PanelSource

COLUMNS = ColumnMap(person_id="pid", year="yr", occupation="occ")


def test_prepare_writes_corpus_and_summary(tmp_path, capsys):
    summary = prepare(
        PanelSource(kind="table", path="tests/fixtures/good/long.csv", columns=COLUMNS),
        out_dir=tmp_path,
        split_fractions={"train": 1.0},
    )
    assert summary["persons"] == 2 and summary["person_years"] == 4 and summary["transitions"] == 2
    assert summary["occupation_switch_rate"] == 1.0  # A: 4 -> 7; B's first pair starts from no job
    texts = pd.read_parquet(tmp_path / "texts.parquet")
    transitions = pd.read_parquet(tmp_path / "transitions.parquet")
    assert len(texts) == 2 and len(transitions) == 4
    assert "switch_rate" in capsys.readouterr().out


def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_career",
            "prepare",
            "--source.kind",
            "table",
            "--source.path",
            "tests/fixtures/bad/empty.csv",
            "--out_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: tests/fixtures/bad/empty.csv: file is empty"
