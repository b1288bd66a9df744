"""CareerPanel: person-year records plus static covariates, and its loaders.

A panel has two tables:

* ``records``: one row per person-year, sorted by (person_id, year), columns ``person_id`` (string),
  ``year`` (int), ``state`` (vocabulary index) and ``education`` (one of :data:`EDUCATION_LEVELS`
  or NA);
* ``persons``: one row per person, indexed by ``person_id``, columns ``birth_year`` (Int64),
  ``sex``, ``race``, ``location`` (strings, NA when unknown) and ``split`` once assigned.

Loaders: long CSV/Parquet tables with a column mapping (:func:`load_table`), the CAREER reference
format (:mod:`lit_career.data.career_format`) and the bundled NLSY79 panel (:mod:`lit_career.data.nlsy79`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lit_career.data.taxonomy import CodeSystem, UnknownCodePolicy, Vocabulary, map_codes, vocabulary
from lit_career.errors import InputError

EDUCATION_LEVELS = ("less_than_high_school", "high_school", "some_college", "bachelors", "graduate")
EDUCATION_TITLES = {
    "less_than_high_school": "less than high school",
    "high_school": "high school",
    "some_college": "some college",
    "bachelors": "bachelor's degree",
    "graduate": "graduate degree",
}
STATIC_COLUMNS = ("birth_year", "sex", "race", "location")
YEAR_RANGE = (1900, 2100)


@dataclass
class CareerPanel:
    """Person-year career records of one population (see module docstring for the columns)."""

    records: pd.DataFrame
    persons: pd.DataFrame
    source: str = "survey"
    removed: dict[str, int] = field(default_factory=dict)  # what loading policies removed, by reason

    @property
    def vocab(self) -> Vocabulary:
        return vocabulary()

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, person_ids) -> CareerPanel:
        """The panel restricted to ``person_ids``."""
        keep = self.records["person_id"].isin(person_ids)
        return CareerPanel(
            self.records[keep].reset_index(drop=True),
            self.persons[self.persons.index.isin(person_ids)],
            self.source,
            dict(self.removed),
        )

    def split(self, name: str) -> CareerPanel:
        """The persons assigned to split ``name`` by :func:`assign_splits`."""
        if "split" not in self.persons:
            raise ValueError("no splits assigned: call assign_splits(panel, ...) first")
        return self.subset(self.persons.index[self.persons["split"] == name])


def make_panel(records: pd.DataFrame, persons: pd.DataFrame, source: str, removed: dict[str, int] | None = None):
    """Normalize dtypes and order of the two tables and build a :class:`CareerPanel`."""
    records = records[["person_id", "year", "state", "education"]].copy()
    records["person_id"] = records["person_id"].astype("string")
    records["year"] = records["year"].astype("int32")
    records["state"] = records["state"].astype("int16")
    records["education"] = pd.Categorical(records["education"], categories=EDUCATION_LEVELS, ordered=True)
    records = records.sort_values(["person_id", "year"], kind="stable").reset_index(drop=True)
    persons = persons.copy()
    persons.index = persons.index.astype("string").rename("person_id")
    for col in STATIC_COLUMNS:
        if col not in persons:
            persons[col] = pd.NA
    persons["birth_year"] = persons["birth_year"].astype("Int64")
    for col in ("sex", "race", "location"):
        persons[col] = persons[col].astype("string")
    missing = set(records["person_id"].unique()) - set(persons.index)
    if missing:
        raise ValueError(f"{len(missing)} person(s) have records but no covariates, e.g. {sorted(missing)[0]!r}")
    removed = dict(removed or {})
    has_records = persons.index.isin(records["person_id"].unique())
    if (~has_records).any():
        removed["persons left without records"] = removed.get("persons left without records", 0) + int((~has_records).sum())
    return CareerPanel(records, persons.loc[has_records].sort_index(), source, removed)


def subsample_persons(panel: CareerPanel, max_persons: int | None) -> CareerPanel:
    """``max_persons`` persons drawn at random (seed 0) from the sorted ids; the whole panel when ``None``."""
    if max_persons is None or len(panel.persons) <= max_persons:
        return panel
    ids = np.sort(panel.persons.index.to_numpy(dtype=str))
    chosen = np.random.default_rng(0).choice(len(ids), max_persons, replace=False)
    return panel.subset(ids[np.sort(chosen)])


def assign_splits(panel: CareerPanel, fractions: dict[str, float] | None = None, seed: int = 0) -> CareerPanel:
    """Assign each person to one split (default train/valid/test 0.8/0.1/0.1), deterministic in ``seed``."""
    fractions = fractions or {"train": 0.8, "valid": 0.1, "test": 0.1}
    if any(f < 0 for f in fractions.values()) or not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    ids = np.array(sorted(panel.persons.index))
    order = np.random.default_rng(seed).permutation(len(ids))
    bounds = np.round(np.cumsum(list(fractions.values())) * len(ids)).astype(int)
    labels = np.empty(len(ids), dtype=object)
    start = 0
    for name, stop in zip(fractions, bounds, strict=True):
        labels[order[start:stop]] = name
        start = stop
    persons = panel.persons.copy()
    persons["split"] = pd.Series(labels, index=ids).reindex(persons.index).astype("string")
    return CareerPanel(panel.records, persons, panel.source, dict(panel.removed))


@dataclass
class ColumnMap:
    """Which column of a long table holds each field. ``None`` means the table has no such column."""

    person_id: str = "person_id"
    year: str = "year"
    occupation: str = "occupation"
    education: str | None = None
    birth_year: str | None = None
    sex: str | None = None
    race: str | None = None
    location: str | None = None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file as strings; empty or unreadable files are errors."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=str(path))
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", file=str(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise InputError(f"cannot parse file ({str(err).splitlines()[0]})", file=str(path)) from None
    if table.empty:
        raise InputError("file has a header but no rows", file=str(path))
    if path.suffix == ".csv":
        _check_last_line(path, list(table.columns), len(table) + 1)
    return table


def _check_last_line(path: Path, header: list[str], row: int) -> None:
    """A CSV whose last line has fewer fields than the header was cut off mid-row."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 65536))
        tail = f.read().decode("utf-8", errors="replace")
    if tail.endswith("\n"):
        return
    fields = next(csv.reader([tail.rsplit("\n", 1)[-1]]))
    if len(fields) < len(header):
        raise InputError(
            f"last row has {len(fields)} of {len(header)} fields: the file looks truncated",
            file=str(path),
            row=row,
            column=header[len(fields)],
        )


def parse_years(values: pd.Series, *, file: str, column: str, rows: np.ndarray | None = None) -> pd.Series:
    """Parse integer years in :data:`YEAR_RANGE`; the first bad value is an error naming its row."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers)) | ~numbers.between(*YEAR_RANGE)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        row = int(rows[pos]) if rows is not None else pos + 2
        value = values.iloc[pos]
        what = "is missing" if pd.isna(value) else f"{value!r} is not an integer year in {YEAR_RANGE[0]}-{YEAR_RANGE[1]}"
        raise InputError(f"year {what}", file=file, row=row, column=column)
    return numbers.astype("int32")


def check_unique_person_years(records: pd.DataFrame, *, file: str, column: str, rows: np.ndarray | None = None):
    """Duplicate (person, year) records are an error naming the second occurrence."""
    dup = records.duplicated(["person_id", "year"]).to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        row = int(rows[pos]) if rows is not None else pos + 2
        person, year = records["person_id"].iloc[pos], records["year"].iloc[pos]
        raise InputError(f"duplicate record for person {person!r} in year {year}", file=file, row=row, column=column)


def load_table(
    path: str | Path,
    columns: ColumnMap | None = None,
    *,
    code_system: CodeSystem = "occ1990dd",
    unknown_codes: UnknownCodePolicy = "error",
    source: str | None = None,
) -> CareerPanel:
    """Load a long person-year CSV/Parquet table into a panel.

    Occupation codes are mapped with the ``code_system`` crosswalk; covariates that vary within a
    person take the person's first non-missing value. Education values must be one of
    :data:`EDUCATION_LEVELS` (or empty).
    """
    columns = columns or ColumnMap()
    file = str(path)
    table = read_table(path)
    wanted = {k: v for k, v in vars(columns).items() if v is not None}
    absent = [v for v in wanted.values() if v not in table.columns]
    if absent:
        raise InputError(
            f"missing required column(s) {absent}; the file has {list(table.columns)}", file=file, row=1, column=absent[0]
        )
    rows = np.arange(len(table)) + 2
    ids = table[columns.person_id].astype("string").str.strip()
    if ids.isna().any():
        pos = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError("person id is missing", file=file, row=int(rows[pos]), column=columns.person_id)
    occupation = table[columns.occupation]
    if occupation.isna().any():
        pos = int(np.flatnonzero(occupation.isna().to_numpy())[0])
        raise InputError("occupation code is missing", file=file, row=int(rows[pos]), column=columns.occupation)
    state, report = map_codes(
        occupation, code_system, policy=unknown_codes, file=file, column=columns.occupation, rows=rows
    )
    records = pd.DataFrame(
        {
            "person_id": ids,
            "year": parse_years(table[columns.year], file=file, column=columns.year, rows=rows),
            "state": state,
            "education": _parse_education(table, columns.education, file, rows),
        }
    )
    check_unique_person_years(records, file=file, column=columns.year, rows=rows)
    removed = {}
    if report.dropped:
        removed["unknown occupation code"] = report.dropped
        records = records[records["state"].notna()]
    if report.unmapped:
        removed["unknown occupation code mapped to 'unmapped' (kept)"] = report.unmapped
    statics = {name: table[col] for name in STATIC_COLUMNS if (col := getattr(columns, name)) is not None}
    persons = pd.DataFrame(statics).assign(person_id=ids)
    if "birth_year" in persons:
        persons["birth_year"] = parse_years(
            persons["birth_year"].fillna("1900"), file=file, column=columns.birth_year, rows=rows
        ).where(persons["birth_year"].notna())
    persons = persons.groupby("person_id", sort=False).first()
    return make_panel(records, persons, source or Path(path).stem, removed)


def _parse_education(table: pd.DataFrame, column: str | None, file: str, rows: np.ndarray) -> pd.Series:
    if column is None:
        return pd.Series(pd.NA, index=table.index, dtype="string")
    values = table[column].astype("string").str.strip()
    bad = values.notna() & ~values.isin(EDUCATION_LEVELS)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"education {values.iloc[pos]!r} is not one of {list(EDUCATION_LEVELS)}",
            file=file,
            row=int(rows[pos]),
            column=column,
        )
    return values
