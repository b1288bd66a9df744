"""Long CSV/Parquet tables read into a CareerPanel through a column mapping."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lit_career.errors import InputError
from lit_career.panel.careers import EDUCATION_LEVELS, STATIC_COLUMNS, YEAR_RANGE, CareerPanel, make_panel
from lit_career.panel.taxonomy import CodeSystem, Crosswalk, UnknownCodePolicy, Vocabulary, map_codes


@dataclass
class ColumnMap:
    """Which column of a long table holds each field. ``None`` means the table has no such column.

    ``split`` names a column giving each person's split (``train``, ``valid`` or ``test``, the same on
    all of the person's rows): a run keeps them.
    """

    person_id: str = "person_id"
    year: str = "year"
    occupation: str = "occupation"
    education: str | None = None
    birth_year: str | None = None
    sex: str | None = None
    race: str | None = None
    location: str | None = None
    split: str | None = None


SPLIT_NAMES = ("train", "valid", "test")
"""Split names a table's split column may hold."""


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


def read_person_ids(path: str | Path) -> list[str]:
    """Person ids listed one per line (blank lines skipped); a missing or empty file is an error."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("file is not UTF-8 text", file=str(path)) from None
    ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        raise InputError("file lists no person ids", file=str(path))
    return ids


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
        what = (
            "is missing"
            if pd.isna(value)
            else f"{value!r} is not an integer year in {YEAR_RANGE[0]}-{YEAR_RANGE[1]}"
        )
        raise InputError(f"year {what}", file=file, row=row, column=column)
    return numbers.astype("int32")


def check_unique_person_years(
    records: pd.DataFrame, *, file: str, column: str, rows: np.ndarray | None = None
):
    """Duplicate (person, year) records are an error naming the second occurrence."""
    dup = records.duplicated(["person_id", "year"]).to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        row = int(rows[pos]) if rows is not None else pos + 2
        person, year = records["person_id"].iloc[pos], records["year"].iloc[pos]
        raise InputError(
            f"duplicate record for person {person!r} in year {year}", file=file, row=row, column=column
        )


def load_table(
    path: str | Path,
    columns: ColumnMap | None = None,
    *,
    code_system: CodeSystem | Crosswalk | None = None,
    unknown_codes: UnknownCodePolicy = "error",
    source: str | None = None,
    vocab: Vocabulary | None = None,
) -> CareerPanel:
    """Load a long person-year CSV/Parquet table into a panel.

    Occupation codes are mapped to ``vocab`` (default occ1990dd) with the ``code_system`` crosswalk (``None``:
    codes of the vocabulary itself; a user's :class:`Crosswalk`); covariates that vary within a
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
            f"missing required column(s) {absent}; the file has {list(table.columns)}",
            file=file,
            row=1,
            column=absent[0],
        )
    rows = np.arange(len(table)) + 2
    ids = table[columns.person_id].astype("string").str.strip()
    if ids.isna().any():
        pos = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError("person id is missing", file=file, row=int(rows[pos]), column=columns.person_id)
    occupation = table[columns.occupation]
    if occupation.isna().any():
        pos = int(np.flatnonzero(occupation.isna().to_numpy())[0])
        raise InputError(
            "occupation code is missing", file=file, row=int(rows[pos]), column=columns.occupation
        )
    state, report = map_codes(
        occupation,
        code_system,
        vocab=vocab,
        policy=unknown_codes,
        file=file,
        column=columns.occupation,
        rows=rows,
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
    given = {}
    if columns.split is not None:
        persons["split"] = _parse_split(table[columns.split], ids, file, columns.split, rows)
        present = set(persons["split"])
        given = {name: f"column {columns.split!r} of {file}" for name in SPLIT_NAMES if name in present}
    return make_panel(records, persons, source or Path(path).stem, removed, given, vocab)


def _parse_split(values: pd.Series, ids: pd.Series, file: str, column: str, rows: np.ndarray) -> pd.Series:
    """Each person's split from a split column: present, one of :data:`SPLIT_NAMES`, one per person."""
    values = values.astype("string").str.strip()
    bad = values.isna() | ~values.isin(SPLIT_NAMES)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        value = values.iloc[pos]
        what = "is missing: every row needs" if pd.isna(value) else f"{value!r} is not"
        raise InputError(
            f"split {what} one of {list(SPLIT_NAMES)}", file=file, row=int(rows[pos]), column=column
        )
    first = values.groupby(ids.to_numpy(), sort=False).transform("first")
    if (changed := values != first).any():
        pos = int(np.flatnonzero(changed.to_numpy())[0])
        raise InputError(
            f"person {ids.iloc[pos]!r} is in split {values.iloc[pos]!r} here but {first.iloc[pos]!r} on an "
            "earlier row: a person has one split",
            file=file,
            row=int(rows[pos]),
            column=column,
        )
    return values.groupby(ids.to_numpy(), sort=False).first()


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
