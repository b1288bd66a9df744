import pandas as pd
import pytest

from lit_career.errors import InputError
from lit_career.panel.nlsy79 import bundled_path, education_from_grade, load_nlsy79
from lit_career.panel.taxonomy import vocabulary


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(bundled_path())


@pytest.fixture(scope="module")
def panel():
    return load_nlsy79()


def test_nls_code_policy(raw, panel):
    vocab = vocabulary()
    assert panel.removed["not interviewed (occ1980 = -5)"] == int((raw["occ1980"] == -5).sum())
    assert panel.removed["occupation missing (occ1980 = -3/-2/-1)"] == int(
        raw["occ1980"].isin([-3, -2, -1]).sum()
    )
    merged = raw.merge(
        panel.records, left_on=[raw["person_id"].astype(str), "year"], right_on=["person_id", "year"]
    )
    assert (merged.loc[merged["occ1980"] == -4, "state"] == vocab.special("no_job")).all()
    coded = merged[merged["occ1990dd"].notna()]
    assert (vocab.codes[coded["state"].to_numpy()] == coded["occ1990dd"].astype(int).to_numpy()).all()
    kept_or_removed = len(panel.records) + sum(
        v for k, v in panel.removed.items() if k != "persons left without records"
    )
    assert kept_or_removed == len(raw)


def test_rounds_after_1994_stay_two_years_apart(panel):
    assert sorted(panel.records["year"].unique()) == [*range(1982, 1995), 1996, 1998, 2000]


def test_education_levels_from_highest_grade():
    levels = education_from_grade(pd.Series([8, 11, 12, 13, 15, 16, 17, 20, None]))
    assert levels.tolist()[:8] == [
        "less_than_high_school",
        "less_than_high_school",
        "high_school",
        "some_college",
        "some_college",
        "bachelors",
        "graduate",
        "graduate",
    ]
    assert pd.isna(levels.iloc[8])


def test_static_covariates(panel):
    persons = panel.persons
    assert persons["birth_year"].between(1957, 1964).all()
    assert set(persons["sex"]) == {"male", "female"}
    assert set(persons["race"]) == {"hispanic", "black", "non-black non-hispanic"}


def test_unknown_nls_code_is_an_error(tmp_path, raw):
    bad = raw.head(5).copy()
    bad.loc[3, "occ1980"] = -7
    bad.to_csv(tmp_path / "nlsy.csv", index=False)
    with pytest.raises(InputError, match=r"nlsy.csv, row 5, column 'occ1980': unknown NLS code -7"):
        load_nlsy79(tmp_path / "nlsy.csv")
