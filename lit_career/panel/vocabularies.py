"""Vocabularies as tables: the bundled ones by name, or a user's CSV/Parquet file.

A vocabulary table has one row per occupation and these columns:

* ``code`` (required): the occupation's code, as the data (or a crosswalk) gives it; unique;
* ``title`` (required): its English title, shown in resumes and scored by the LM; unique, not empty;
* ``group``, ``group_title`` (optional): a parent grouping.

The project's special states (:data:`~lit_career.panel.taxonomy.SPECIAL_CODES`: no job reported, unemployed,
...) follow the occupations with the same titles and meaning as in occ1990dd; in the data their code is
their key (``no_job``, ``unemployed``, ``not_in_labor_force``, ``education``, ``military``, ``unmapped``).

Bundled: ``occ1990dd`` (the default, :func:`~lit_career.panel.taxonomy.vocabulary`) and ``onet_soc_2010``
(963 O*NET-SOC 2010 codes with their official titles, grouped by SOC major group; see
``resources/PROVENANCE.md``).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

import pandas as pd

from lit_career.errors import InputError
from lit_career.panel.taxonomy import Vocabulary, _resource, vocabulary

BUNDLED = {"onet_soc_2010": "onet_soc_2010.csv"}
"""Bundled table vocabularies (besides occ1990dd), by name: file under ``resources/occupations/``."""
COLUMNS = ("code", "title", "group", "group_title")


@cache
def load_vocabulary(spec: str = "occ1990dd") -> Vocabulary:
    """The vocabulary ``spec`` names: ``occ1990dd``, a bundled name (:data:`BUNDLED`) or a table's path."""
    if spec == "occ1990dd":
        return vocabulary()
    if spec in BUNDLED:
        with files("lit_career.resources").joinpath("occupations", BUNDLED[spec]).open("rb") as f:
            return from_table(pd.read_csv(f, dtype=str, keep_default_na=False), spec, spec)
    path = Path(spec)
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(
            f"unknown vocabulary {spec!r}: give occ1990dd, {', '.join(BUNDLED)} or a .csv/.parquet table"
        )
    if not path.is_file():
        raise InputError("vocabulary file not found", file=spec)
    table = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, dtype=str, keep_default_na=False)
    )
    return from_table(table, path.stem, spec)


def from_table(table: pd.DataFrame, name: str, file: str) -> Vocabulary:
    """A vocabulary from a table with the module's columns, followed by the special states; bad tables
    raise :class:`InputError` naming ``file``, the row and the column."""
    missing = [c for c in ("code", "title") if c not in table]
    if missing:
        raise InputError(
            f"a vocabulary table needs the columns code and title; it lacks {missing}", file=file
        )
    occ = pd.DataFrame({c: table[c].astype("string").str.strip() if c in table else pd.NA for c in COLUMNS})
    special = _resource("special_states.csv")
    _check_values(occ, "code", file, reserved=set(special["key"]))
    _check_values(occ, "title", file, reserved=set(special["title"]))
    occ = occ.assign(key="occ" + occ["code"], is_special=False)
    special = special.assign(code=special["key"], group=pd.NA, group_title="Not working", is_special=True)
    special.loc[special["key"] == "military", "group_title"] = "Military"
    columns = ["code", "key", "title", "group", "group_title", "is_special"]
    both = pd.concat([occ[columns], special[columns]], ignore_index=True)
    return Vocabulary(both.astype({c: object for c in columns[:-1]}), name)


def _check_values(occ: pd.DataFrame, column: str, file: str, reserved: set[str]) -> None:
    """Refuse empty, duplicated or reserved (special-state) values of ``column``, naming the first row."""
    values = occ[column]
    problems = {
        "is empty": values.isna() | values.eq(""),
        "is duplicated": values.duplicated(keep="first") & values.notna(),
        "is a special state's": values.isin(reserved),
    }
    for what, bad in problems.items():
        if bad.any():
            first = int(bad.to_numpy().nonzero()[0][0])
            shown = "" if what == "is empty" else f" {values.iloc[first]!r}"
            raise InputError(
                f"{column}{shown} {what} ({int(bad.sum())} row(s)); a vocabulary's codes and titles must be "
                "unique, non-empty and differ from the special states'",
                file=file,
                row=first + 2,
                column=column,
            )
