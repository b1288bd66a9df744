"""The bundled NLSY79 occupation panel (see resources/PROVENANCE.md) and its coding policy.

Policy for the NLS occupation codes (``occ1980``):

* ``-5`` (not interviewed that round): no record for that year;
* ``-4`` (valid skip, no job to report): the special state ``no_job``;
* ``-3/-2/-1`` (invalid skip, don't know, refused): occupation missing, the record is removed;
* ``905`` (1980 Census armed forces, outside Dorn's crosswalk): the special state ``military``;
* other positive codes use the ``occ1990dd`` column; the few codes the crosswalk leaves blank
  follow ``unknown_codes`` (default: removed).

Every removal is counted in ``panel.removed``. Education comes from the highest grade completed
(``hgc``, carried forward within a person when a round lacks it). Rounds after 1994 are two years
apart and the years stay as they are.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from lit_career.errors import InputError
from lit_career.panel.careers import CareerPanel, make_panel
from lit_career.panel.table import check_unique_person_years, parse_years, read_table
from lit_career.panel.taxonomy import UnknownCodePolicy, map_codes, vocabulary

REQUIRED = ("person_id", "year", "birth_year", "sex", "race", "sample", "hgc", "occ1980", "occ1990dd")


def bundled_path() -> Path:
    """Path of the vendored (gzipped) NLSY79 person-year CSV."""
    return Path(str(files("lit_career.resources").joinpath("nlsy79", "nlsy79_person_year.csv.gz")))


def education_from_grade(hgc: pd.Series) -> pd.Series:
    """Highest grade completed (0-20) → education level."""
    bins = [-1, 11, 12, 15, 16, 99]
    labels = ["less_than_high_school", "high_school", "some_college", "bachelors", "graduate"]
    return pd.cut(hgc, bins=bins, labels=labels).astype("string")


def load_nlsy79(path: str | Path | None = None, *, unknown_codes: UnknownCodePolicy = "drop") -> CareerPanel:
    """Load the NLSY79 panel (the bundled one by default) with the policy of the module docstring."""
    path = Path(path) if path is not None else bundled_path()
    file = str(path)
    table = read_table(path)
    absent = [c for c in REQUIRED if c not in table.columns]
    if absent:
        raise InputError(f"missing required column(s) {absent}", file=file, row=1, column=absent[0])
    rows = np.arange(len(table)) + 2
    occ1980 = pd.to_numeric(table["occ1980"], errors="coerce")
    if occ1980.isna().any():
        pos = int(np.flatnonzero(occ1980.isna().to_numpy())[0])
        raise InputError(
            f"occ1980 {table['occ1980'].iloc[pos]!r} is not a code",
            file=file,
            row=int(rows[pos]),
            column="occ1980",
        )
    vocab = vocabulary()
    removed: dict[str, int] = {}

    interviewed = occ1980 != -5
    removed["not interviewed (occ1980 = -5)"] = int((~interviewed).sum())
    missing = occ1980.isin([-3, -2, -1])
    removed["occupation missing (occ1980 = -3/-2/-1)"] = int(missing.sum())

    state = pd.Series(pd.NA, index=table.index, dtype="Int64")
    state[occ1980 == -4] = vocab.special("no_job")
    state[occ1980 == 905] = vocab.special("military")
    coded = (occ1980 > 0) & (occ1980 != 905)
    has_dd = coded & table["occ1990dd"].notna()
    mapped, _ = map_codes(
        table.loc[has_dd, "occ1990dd"], "occ1990dd", file=file, column="occ1990dd", rows=rows[has_dd]
    )
    state[has_dd] = mapped
    blank = coded & table["occ1990dd"].isna()
    if blank.any():
        fallback, report = map_codes(
            table.loc[blank, "occ1980"],
            "occ1980",
            policy=unknown_codes,
            file=file,
            column="occ1980",
            rows=rows[blank],
        )
        state[blank] = fallback
        if report.dropped:
            removed["occ1980 code outside the occ1990dd crosswalk"] = report.dropped
        if report.unmapped:
            removed["occ1980 code outside the crosswalk mapped to 'unmapped' (kept)"] = report.unmapped
    bad = ~(interviewed & ~missing) | state.isna()
    unexplained = (occ1980 < 0) & ~occ1980.isin([-5, -4, -3, -2, -1])
    if unexplained.any():
        pos = int(np.flatnonzero(unexplained.to_numpy())[0])
        raise InputError(
            f"unknown NLS code {int(occ1980.iloc[pos])}", file=file, row=int(rows[pos]), column="occ1980"
        )

    keep = ~bad
    hgc = pd.to_numeric(table["hgc"], errors="coerce")
    education = education_from_grade(hgc.groupby(table["person_id"]).ffill())
    records = pd.DataFrame(
        {
            "person_id": table["person_id"],
            "year": parse_years(table["year"], file=file, column="year", rows=rows),
            "state": state,
            "education": education,
        }
    )
    check_unique_person_years(records, file=file, column="year", rows=rows)
    records = records[keep]
    persons = (
        table.assign(birth_year=pd.to_numeric(table["birth_year"]), location=pd.NA)
        .groupby("person_id")[["birth_year", "sex", "race", "location", "sample"]]
        .first()
    )
    return make_panel(records, persons, "NLSY79", {k: v for k, v in removed.items() if v})
