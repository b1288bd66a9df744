import shutil
from pathlib import Path

import pandas as pd
import pytest

from lit_career.errors import InputError
from lit_career.panel.career_format import read_career, write_career
from lit_career.panel.careers import make_panel
from lit_career.panel.taxonomy import vocabulary

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = FIXTURES / "career_format_example"
BAD = FIXTURES / "career_bad"


def _panel(split: dict[str, str] | None = None):
    vocab = vocabulary()
    occ = vocab.index_of_code()
    records = pd.DataFrame(
        {
            "person_id": ["a", "a", "a", "b", "b", "c"],
            "year": [2001, 2002, 2004, 1990, 1991, 2010],
            "state": [
                occ[4],
                vocab.special("no_job"),
                vocab.special("military"),
                occ[22],
                vocab.special("unemployed"),
                vocab.special("education"),
            ],
            "education": ["high_school", None, "graduate", "less_than_high_school", "some_college", None],
        }
    )
    persons = pd.DataFrame(
        {
            "birth_year": [1960, None, 1985],
            "sex": ["female", "male", None],
            "race": ["white", "black", None],
            "location": ["CA", None, "TX"],
        },
        index=["a", "b", "c"],
    )
    if split is not None:
        persons["split"] = pd.Series(split).astype("string")
    return make_panel(records, persons, "test")


def test_round_trip_keeps_records_covariates_special_states_and_missing_values(tmp_path):
    panel = _panel({"a": "train", "b": "test", "c": "train"})
    write_career(panel, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{s}.{ext}"
        for s in ("train", "test")
        for ext in ("job", "year", "education", "gender", "ethnicity", "location", "year_of_birth")
    )
    # CAREER conventions: one worker per line, occ1990dd codes (special states as 9xx), newline-terminated.
    assert (tmp_path / "train.job").read_text() == "4 999 905\n993\n"
    assert (tmp_path / "train.education").read_text() == "high_school unknown graduate\nunknown\n"

    back = read_career(tmp_path, code_system="occ1990dd")
    new_id = {"a": "train-1", "c": "train-2", "b": "test-1"}  # "<split>-<line>", persons in id order
    expected = panel.records.assign(person_id=panel.records["person_id"].map(new_id).astype("string"))
    expected = expected.sort_values(["person_id", "year"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back.records, expected)
    columns = ["birth_year", "sex", "race", "location", "split"]
    expected_persons = panel.persons.rename(index=new_id).sort_index()[columns]
    pd.testing.assert_frame_equal(back.persons[columns], expected_persons, check_index_type=False)
    assert back.source == "CAREER"


def test_write_without_splits_uses_train_and_makes_values_single_tokens(tmp_path):
    panel = _panel()
    panel.persons.loc["c", "location"] = "New York"
    write_career(panel, tmp_path)
    assert not (tmp_path / "test.job").exists()
    assert (tmp_path / "train.location").read_text() == "CA\nunknown\nNew_York\n"
    back = read_career(tmp_path)
    assert back.persons["location"].tolist() == ["CA", pd.NA, "New_York"]
    assert len(back) == len(panel)


def test_write_rejects_non_career_split_names_unless_chosen(tmp_path):
    panel = _panel({"a": "train", "b": "calibration", "c": "train"})
    with pytest.raises(ValueError, match="CAREER splits"):
        write_career(panel, tmp_path)
    write_career(panel, tmp_path, split_names=["train"])
    assert read_career(tmp_path).persons["split"].tolist() == ["train", "train"]


def test_reads_reference_example_as_soc_with_unmapped_codes(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "career")
    panel = read_career(tmp_path / "career", code_system="soc", unknown_codes="unmapped")
    assert (len(panel), len(panel.persons)) == (27, 3)
    # 25-9044, 11-1030 (x2) and 43-3099 (x5) are not O*NET-SOC 2010 codes.
    assert panel.removed == {"unknown occupation code mapped to 'unmapped' (kept)": 8}
    titles = panel.records.assign(title=[panel.vocab.titles[s] for s in panel.records["state"]])
    second = titles[titles["person_id"] == "train-2"]
    assert second["year"].tolist() == [2005, 2006, 2010, 2011, 2012]
    assert second["title"].tolist() == [
        "Unmapped occupation",
        *["Lawyers and judges"] * 2,
        *["Unmapped occupation"] * 2,
    ]
    assert set(second["education"]) == {"graduate"}  # masters, doctorate
    first = titles[titles["person_id"] == "train-1"]["title"].tolist()
    assert first[:3] == ["Health and nursing aides", "Health and nursing aides", "Bartenders"]
    third = titles[titles["person_id"] == "train-3"]["education"].tolist()
    assert third == ["high_school"] * 3 + ["some_college"] * 11  # high_school_diploma, associates
    persons = panel.persons
    assert persons["sex"].tolist() == ["female", "female", "male"]
    assert persons["race"].tolist() == ["white", "black_or_african_american", "asian"]
    assert persons["location"].tolist() == ["MO", "AL", "CA"]
    assert set(persons["split"]) == {"train"} and persons["birth_year"].isna().all()


def test_reference_example_unknown_code_policies(tmp_path):
    with pytest.raises(InputError) as err:
        read_career(EXAMPLE, code_system="soc")
    assert (Path(err.value.file).name, err.value.row, err.value.column) == ("train.job", 2, "token 1")
    dropped = read_career(EXAMPLE, code_system="soc", unknown_codes="drop")
    assert len(dropped) == 27 - 8 and dropped.removed == {"unknown occupation code": 8}


def test_custom_education_map(tmp_path):
    (tmp_path / "train.job").write_text("4 7\n")
    (tmp_path / "train.year").write_text("2001 2002\n")
    (tmp_path / "train.education").write_text("hs unknown\n")
    with pytest.raises(InputError, match="education 'hs'"):
        read_career(tmp_path)
    panel = read_career(tmp_path, education_map={"hs": "high_school"})
    assert panel.records["education"].astype("string").tolist() == ["high_school", pd.NA]
    with pytest.raises(ValueError, match="education_map values"):
        read_career(tmp_path, education_map={"hs": "diploma"})


def test_missing_year_file_is_an_input_error(tmp_path):
    (tmp_path / "valid.job").write_text("4 7\n")
    with pytest.raises(InputError, match="missing valid.year"):
        read_career(tmp_path)


@pytest.mark.parametrize(
    "case, file, row, column, message",
    [
        ("year_lines", "train.year", 3, "token 1", "2 line(s) but train.job has 3"),
        ("gender_lines", "train.gender", 3, "token 1", "3 line(s) but train.job has 2"),
        ("year_tokens", "train.year", 2, "token 3", "2 token(s) but train.job has 3 on this line"),
        ("education_tokens", "train.education", 2, "token 2", "1 token(s) but train.job has 2 on this line"),
        ("bad_year", "train.year", 2, "token 2", "year '20o2' is not an integer year"),
        ("unknown_code", "valid.job", 1, "token 2", "unknown occ1990dd code '7777'"),
        ("empty_job", "train.job", 1, "token 1", "file is empty"),
        ("duplicate_year", "train.year", 1, "token 3", "duplicate record for person 'train-1' in year 2002"),
        ("unknown_education", "train.education", 1, "token 3", "education 'phd' is not one of"),
    ],
)
def test_bad_input_names_file_row_and_token(case, file, row, column, message):
    with pytest.raises(InputError) as err:
        read_career(BAD / case)
    path = str(BAD / case / file)
    assert (err.value.file, err.value.row, err.value.column) == (path, row, column)
    assert str(err.value).startswith(f"{path}, row {row}, column '{column}': ")
    assert message in err.value.message and "\n" not in str(err.value)


def test_directory_without_split_files_is_an_input_error():
    with pytest.raises(InputError) as err:
        read_career(BAD / "no_split_files")
    assert err.value.file == str(BAD / "no_split_files")
    assert "train.job" in err.value.message and "\n" not in str(err.value)
