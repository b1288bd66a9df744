"""Vocabularies as tables: the bundled ones by name, or a user's CSV/Parquet file.

A vocabulary table has one row per occupation and these columns:

* ``code`` (required): the occupation's code, as the data (or a crosswalk) gives it; unique;
* ``title`` (required): its English title, shown in resumes and scored by the LM; unique, not empty;
* ``group``, ``group_title`` (optional): a parent grouping.

The project's special states (:data:`~lit_career.panel.taxonomy.SPECIAL_CODES`: no job reported, unemployed,
...) follow the occupations with the same titles and meaning as in occ1990dd; in the data their code is
their key (``no_job``, ``unemployed``, ``not_in_labor_force``, ``education``, ``military``, ``unmapped``).

A crosswalk (:func:`load_crosswalk`) maps the codes of the data to a vocabulary's: a CSV/Parquet table with
columns ``from`` and ``to``; several codes may map to one.

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
from lit_career.panel.table import read_table
from lit_career.panel.taxonomy import Crosswalk, Vocabulary, _resource, vocabulary

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


def load_crosswalk(path: str, vocab: Vocabulary) -> Crosswalk:
    """The crosswalk file ``path`` from the data's codes (column ``from``) to ``vocab``'s (column ``to``).

    The special states' keys (``no_job``, ...) pass through unless the file maps them. A missing column or
    empty value, a ``to`` outside ``vocab`` and a ``from`` given two different ``to`` raise
    :class:`InputError` naming the file, row and column; a repeated identical pair is harmless.
    """
    table = read_table(path)
    missing = [c for c in ("from", "to") if c not in table]
    if missing:
        raise InputError(
            f"a crosswalk needs the columns from and to; it lacks {missing} (it has {list(table.columns)})",
            file=path,
            row=1,
            column=missing[0],
        )
    pairs = pd.DataFrame({c: table[c].astype("string").str.strip() for c in ("from", "to")})
    for column in ("from", "to"):
        _refuse(pairs[column].isna() | pairs[column].eq(""), f"{column} is empty", path, column)
    own = {str(code): i for i, code in enumerate(vocab.codes)}
    _refuse(
        ~pairs["to"].isin(own),
        f"to code {{value!r}} is not in the {vocab.name} vocabulary",
        path,
        "to",
        pairs["to"],
    )
    first_to = pairs.groupby("from", sort=False)["to"].transform("first")
    _refuse(
        pairs["to"].ne(first_to),
        "from code {value}: a code of the data maps to one code of the vocabulary",
        path,
        "from",
        "'" + pairs["from"] + "' maps to '" + pairs["to"] + "' here but to '" + first_to + "' above",
    )
    specials = vocab.table[vocab.table["is_special"]]
    index = dict(zip(specials["key"], specials.index, strict=True))
    index.update((code, own[to]) for code, to in zip(pairs["from"], pairs["to"], strict=True))
    return Crosswalk(path, index)


def _refuse(bad: pd.Series, message: str, file: str, column: str, values: pd.Series | None = None) -> None:
    """Raise ``message`` (``{value}`` filled from ``values``) at the first ``bad`` row of a CSV-like file."""
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        value = None if values is None else values.iloc[first]
        raise InputError(
            f"{message.format(value=value)} ({int(bad.sum())} row(s))",
            file=file,
            row=first + 2,
            column=column,
        )
