from pathlib import Path

import pandas as pd
import pytest

from lit_career.errors import InputError
from lit_career.panel.careers import assign_splits
from lit_career.panel.table import ColumnMap, load_table
from lit_career.panel.taxonomy import vocabulary

FIXTURES = Path(__file__).parent / "fixtures"
COLUMNS = ColumnMap(person_id="pid", year="yr", occupation="occ")


def test_long_table_with_column_mapping():
    columns = ColumnMap(
        person_id="pid", year="yr", occupation="occ", education="edu", birth_year="by", sex="sex", race="race"
    )
    panel = load_table(FIXTURES / "good" / "long.csv", columns)
    vocab = vocabulary()
    assert panel.records["person_id"].tolist() == ["A", "A", "B", "B"]
    assert [vocab.titles[s] for s in panel.records["state"]] == [
        "Chief executives, public administrators, and legislators",
        "Financial managers",
        "No job reported",
        "Laborers, freight, stock, and material handlers, n.e.c.",
    ]
    assert panel.records["education"].isna().tolist() == [False, False, True, False]
    assert panel.persons.loc["B", "birth_year"] == 1975 and panel.persons.loc["A", "sex"] == "female"


def test_parquet_reads_like_csv(tmp_path):
    table = pd.read_csv(FIXTURES / "good" / "long.csv", dtype=str)
    table.to_parquet(tmp_path / "long.parquet")
    a = load_table(FIXTURES / "good" / "long.csv", COLUMNS)
    b = load_table(tmp_path / "long.parquet", COLUMNS)
    pd.testing.assert_frame_equal(a.records, b.records)


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        (
            "duplicate_person_year.csv",
            "duplicate_person_year.csv, row 4, column 'yr': duplicate record for person 'A' in year 2002",
        ),
        (
            "non_integer_year.csv",
            "non_integer_year.csv, row 3, column 'yr': year '2002.5' is not an integer year",
        ),
        (
            "out_of_range_year.csv",
            "out_of_range_year.csv, row 3, column 'yr': year '3020' is not an integer year",
        ),
        ("unknown_code.csv", "unknown_code.csv, row 4, column 'occ': unknown occ1990dd code '123456'"),
        ("missing_column.csv", "missing_column.csv, row 1, column 'yr': missing required column(s) ['yr']"),
        ("empty.csv", "empty.csv: file is empty"),
        (
            "truncated.csv",
            "truncated.csv, row 4, column 'occ': last row has 2 of 3 fields: the file looks truncated",
        ),
        (
            "unknown_education.csv",
            "unknown_education.csv, row 2, column 'edu': education 'phd' is not one of",
        ),
    ],
)
def test_bad_input_gives_one_line_message_naming_file_row_column(fixture, message):
    columns = ColumnMap(
        person_id="pid", year="yr", occupation="occ", education="edu" if "education" in fixture else None
    )
    with pytest.raises(InputError) as err:
        load_table(FIXTURES / "bad" / fixture, columns)
    text = str(err.value)
    assert "\n" not in text
    assert message in text


def test_drop_policy_counts_removed_rows():
    panel = load_table(FIXTURES / "bad" / "unknown_code.csv", COLUMNS, unknown_codes="drop")
    assert len(panel) == 2
    assert panel.removed == {"unknown occupation code": 1, "persons left without records": 1}


def test_splits_are_disjoint_deterministic_and_follow_fractions(tmp_path):
    table = pd.DataFrame({"pid": [f"p{i}" for i in range(1000)], "yr": "2000", "occ": "4"})
    table.to_csv(tmp_path / "panel.csv", index=False)
    panel = load_table(tmp_path / "panel.csv", COLUMNS)
    a = assign_splits(panel, {"train": 0.7, "valid": 0.2, "test": 0.1}, seed=3)
    b = assign_splits(panel, {"train": 0.7, "valid": 0.2, "test": 0.1}, seed=3)
    c = assign_splits(panel, {"train": 0.7, "valid": 0.2, "test": 0.1}, seed=4)
    assert a.persons["split"].equals(b.persons["split"]) and not a.persons["split"].equals(c.persons["split"])
    assert a.persons["split"].value_counts().to_dict() == {"train": 700, "valid": 200, "test": 100}
    members = [set(a.split(name).records["person_id"]) for name in ("train", "valid", "test")]
    assert sum(map(len, members)) == 1000 and not (
        members[0] & members[1] or members[0] & members[2] or members[1] & members[2]
    )
