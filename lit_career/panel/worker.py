"""One worker's history from a small JSON or CSV file, as a one-person panel (for a quick look at a row).

JSON: the worker's static covariates and a ``history`` of person-years::

    {"birth_year": 1960, "sex": "female", "race": "black",
     "history": [{"year": 1990, "occupation": "Registered nurses", "education": "bachelors"},
                 {"year": 1991, "occupation": 95, "education": "bachelors"}]}

CSV: one row per year with the columns ``year`` and ``occupation``, and optionally ``education``,
``birth_year``, ``sex``, ``race`` and ``location`` (a static covariate is taken from its first non-empty row).

An occupation is a vocabulary title (any case) or a code of ``code_system``; education one of
:data:`~lit_career.panel.careers.EDUCATION_LEVELS`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lit_career.errors import InputError
from lit_career.io import read_json
from lit_career.panel.careers import EDUCATION_LEVELS, STATIC_COLUMNS, CareerPanel, make_panel
from lit_career.panel.table import check_unique_person_years, parse_years, read_table
from lit_career.panel.taxonomy import CodeSystem, Vocabulary, map_codes, vocabulary

PER_YEAR = ("year", "occupation", "education")
COLUMNS = (*PER_YEAR, *STATIC_COLUMNS)
"""The fields a worker file may give."""


def read_worker(
    path: str | Path, code_system: CodeSystem | None = None, vocab: Vocabulary | None = None
) -> CareerPanel:
    """The worker of ``path`` (JSON or CSV, see the module docstring) as a panel of one person, ``worker``,
    over ``vocab`` (default: the bundled occ1990dd; ``code_system`` ``None``: the vocabulary's own codes)."""
    vocab = vocab or vocabulary()
    path = Path(path)
    file = str(path)
    table = _json_table(path) if path.suffix == ".json" else read_table(path)
    unknown = [c for c in table.columns if c not in COLUMNS]
    missing = [c for c in ("year", "occupation") if c not in table.columns]
    if unknown or missing:
        problem = f"unknown field(s) {unknown}" if unknown else f"no {' or '.join(missing)}"
        raise InputError(f"{problem}; a worker file gives {list(COLUMNS)}", file=file)
    records = pd.DataFrame(
        {
            "person_id": "worker",
            "year": parse_years(table["year"], file=file, column="year"),
            "state": _states(table["occupation"], code_system, vocab, file),
            "education": _education(table, file),
        }
    )
    check_unique_person_years(records, file=file, column="year")
    given = {c: table[c].dropna() for c in STATIC_COLUMNS if c in table}
    persons = pd.DataFrame(
        {c: values.iloc[:1].tolist() for c, values in given.items() if len(values)}, ["worker"]
    )
    if "birth_year" in persons:
        persons["birth_year"] = parse_years(persons["birth_year"], file=file, column="birth_year")
    return make_panel(records, persons, path.stem, vocab=vocab)


def _json_table(path: Path) -> pd.DataFrame:
    """The years of a JSON worker file as a table of strings, each static covariate on every row."""
    worker = read_json(path)
    history = worker.get("history") if isinstance(worker, dict) else None
    if not isinstance(history, list) or not history or not all(isinstance(y, dict) for y in history):
        raise InputError(
            'expected an object with a "history": a list of years, e.g. {"year": 1990, "occupation": 95}',
            file=str(path),
        )
    table = pd.DataFrame(history).assign(**{k: v for k, v in worker.items() if k != "history"})
    return table.astype("string").replace({"": pd.NA})


def _states(occupation: pd.Series, code_system: CodeSystem | None, vocab: Vocabulary, file: str) -> pd.Series:
    """Vocabulary indices of titles (any case) or ``code_system`` codes; every unknown one named in one error."""
    titles = {title.lower(): i for i, title in enumerate(vocab.titles)}
    by_title = occupation.astype("string").str.strip().str.lower().map(titles)
    by_code, _ = map_codes(occupation, code_system, vocab=vocab, policy="drop")
    states = by_title.fillna(by_code)
    unknown = occupation[states.isna()]
    if len(unknown):
        raise InputError(
            f"unknown occupation(s) {list(unknown)}: give {code_system or vocab.name} codes or vocabulary titles",
            file=file,
            column="occupation",
        )
    return states.astype(int)


def _education(table: pd.DataFrame, file: str) -> pd.Series:
    if "education" not in table:
        return pd.Series(pd.NA, index=table.index, dtype="string")
    values = table["education"].astype("string").str.strip()
    bad = values[values.notna() & ~values.isin(EDUCATION_LEVELS)]
    if len(bad):
        raise InputError(
            f"education {list(bad)} not one of {list(EDUCATION_LEVELS)}", file=file, column="education"
        )
    return values
