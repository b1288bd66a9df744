import pandas as pd
import pytest

from lit_career.errors import InputError
from lit_career.panel.taxonomy import SPECIAL_CODES, crosswalk, map_codes, vocabulary


def test_vocabulary_has_all_occ1990dd_codes_and_special_states():
    vocab = vocabulary()
    source = pd.read_csv(vocab_source())
    assert vocab.num_occupations == len(source) == 341
    assert len(vocab) == 341 + len(SPECIAL_CODES)
    assert sorted(vocab.codes[:341]) == sorted(source["occ1990dd"])
    assert vocab.table.loc[:340, "group12"].between(1, 12).all()
    assert vocab.table.loc[:340, "group17"].between(1, 17).all()
    assert vocab.titles[vocab.special("no_job")] == "No job reported"
    assert (
        vocab.is_employed()[vocab.special("military")]
        and not vocab.is_employed()[vocab.special("unemployed")]
    )


def vocab_source():
    from importlib.resources import files

    return files("lit_career.resources").joinpath("occupations", "occ1990dd_titles.csv").open("rb")


@pytest.mark.parametrize(
    ("system", "code", "title"),
    [
        ("occ1970", "1", "Accountants and auditors"),
        ("occ1980", "337", "Bookkeepers and accounting and auditing clerks"),
        ("occ2000", "1", "Chief executives, public administrators, and legislators"),
        ("occ2010", "9800", "Military service"),
        ("occ2010", "0", "No job reported"),
        ("onetsoc2010", "11-1011.00", "Chief executives, public administrators, and legislators"),
        ("soc", "11-1021", "Managers and administrators, n.e.c."),
    ],
)
def test_crosswalks_map_codes_to_titles(system, code, title):
    index = crosswalk(system)[code]
    assert vocabulary().titles[index] == title


def test_codes_with_leading_zeros_or_float_format_map():
    mapped, _ = map_codes(pd.Series(["004", "4.0", "4"]), "occ1990dd")
    assert mapped.nunique() == 1


def test_unknown_code_error_names_code_file_row_and_column():
    with pytest.raises(InputError) as err:
        map_codes(pd.Series(["4", "12345"]), "occ1980", file="panel.csv", column="occ")
    assert str(err.value).startswith("panel.csv, row 3, column 'occ': unknown occ1980 code '12345'")


def test_unknown_code_policies_report_counts():
    codes = pd.Series(["4", "12345", "67890"])
    mapped, report = map_codes(codes, "occ1990dd", policy="unmapped")
    assert report.unmapped == 2 and (mapped[1:] == vocabulary().special("unmapped")).all()
    mapped, report = map_codes(codes, "occ1990dd", policy="drop")
    assert report.dropped == 2 and mapped.isna().sum() == 2
