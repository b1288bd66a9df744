"""CareerPanel: person-year records plus static covariates, person sampling and splits.

A panel has two tables:

* ``records``: one row per person-year, sorted by (person_id, year), columns ``person_id`` (string),
  ``year`` (int), ``state`` (vocabulary index) and ``education`` (one of :data:`EDUCATION_LEVELS`
  or NA);
* ``persons``: one row per person, indexed by ``person_id``, columns ``birth_year`` (Int64),
  ``sex``, ``race``, ``location`` (strings, NA when unknown) and ``split`` once assigned.

A panel whose data gives a split (a CAREER directory's split files, a table's split column, a file of test
ids) carries it: ``given_splits`` names those splits and where they come from, and their persons hold them
in ``persons["split"]``. :func:`assign_splits` keeps them and draws only the other persons at random.

Readers: long CSV/Parquet tables with a column mapping (:mod:`lit_career.panel.table`), the CAREER
reference format (:mod:`lit_career.panel.career_format`) and the bundled NLSY79 panel
(:mod:`lit_career.panel.nlsy79`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from lit_career.errors import InputError
from lit_career.panel.taxonomy import Vocabulary, vocabulary

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
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}
"""Default person split."""


@dataclass
class CareerPanel:
    """Person-year career records of one population (see module docstring for the columns)."""

    records: pd.DataFrame
    persons: pd.DataFrame
    source: str = "survey"
    removed: dict[str, int] = field(default_factory=dict)  # what loading policies removed, by reason
    given_splits: dict[str, str] = field(default_factory=dict)
    """Splits the data gives → where each comes from (``{"test": "ids file heldout.txt"}``); a given split
    with no persons here is given elsewhere (a run's test source)."""
    vocab: Vocabulary = field(default_factory=vocabulary)
    """The states ``records["state"]`` indexes (default: the bundled occ1990dd vocabulary)."""

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, person_ids) -> CareerPanel:
        """The panel restricted to ``person_ids``."""
        keep = self.records["person_id"].isin(person_ids)
        return replace(
            self,
            records=self.records[keep].reset_index(drop=True),
            persons=self.persons[self.persons.index.isin(person_ids)],
            removed=dict(self.removed),
            given_splits=dict(self.given_splits),
        )

    def split(self, name: str) -> CareerPanel:
        """The persons assigned to split ``name`` by :func:`assign_splits`."""
        if "split" not in self.persons:
            raise ValueError("no splits assigned: call assign_splits(panel, ...) first")
        return self.subset(
            self.persons.index[self.persons["split"].eq(name).fillna(False).to_numpy(dtype=bool)]
        )


def make_panel(
    records: pd.DataFrame,
    persons: pd.DataFrame,
    source: str,
    removed: dict[str, int] | None = None,
    given_splits: dict[str, str] | None = None,
    vocab: Vocabulary | None = None,
):
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
        raise ValueError(
            f"{len(missing)} person(s) have records but no covariates, e.g. {sorted(missing)[0]!r}"
        )
    removed = dict(removed or {})
    has_records = persons.index.isin(records["person_id"].unique())
    if (~has_records).any():
        removed["persons left without records"] = removed.get("persons left without records", 0) + int(
            (~has_records).sum()
        )
    return CareerPanel(
        records,
        persons.loc[has_records].sort_index(),
        source,
        removed,
        dict(given_splits or {}),
        vocab or vocabulary(),
    )


def subsample_persons(panel: CareerPanel, max_persons: int | None) -> CareerPanel:
    """``max_persons`` persons drawn at random (seed 0) from the sorted ids; the whole panel when ``None``."""
    if max_persons is None or len(panel.persons) <= max_persons:
        return panel
    ids = np.sort(panel.persons.index.to_numpy(dtype=str))
    chosen = np.random.default_rng(0).choice(len(ids), max_persons, replace=False)
    return panel.subset(ids[np.sort(chosen)])


def assign_splits(
    panel: CareerPanel, fractions: dict[str, float] | None = None, seed: int = 0
) -> CareerPanel:
    """Assign each person to one split, deterministic in ``seed``.

    Persons keep the split the data gives them (``panel.given_splits``); the others are drawn at random by
    person into the splits the data does not give, in ``fractions`` (default train/valid/test 0.8/0.1/0.1)
    renormalized over those splits.
    """
    fractions = fractions or SPLIT_FRACTIONS
    if any(f < 0 for f in fractions.values()) or not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    persons = panel.persons.copy()
    if not panel.given_splits:
        persons["split"] = _draw(persons.index, fractions, seed)
    else:
        if "split" not in persons:  # the data gives a split but none of these persons
            persons["split"] = pd.Series(pd.NA, index=persons.index, dtype="string")
        given = persons["split"].isin(list(panel.given_splits))
        open_splits = {name: f for name, f in fractions.items() if name not in panel.given_splits}
        total = sum(open_splits.values())
        if not given.all() and total <= 0:
            raise InputError(
                f"{int((~given).sum())} person(s) of {panel.source} have no given split, and split fractions "
                f"{fractions} leave no split besides the given {sorted(panel.given_splits)} to draw them into"
            )
        shares = {name: f / total for name, f in open_splits.items()} if total > 0 else {}
        persons["split"] = persons["split"].where(given, _draw(persons.index[~given], shares, seed))
    return replace(panel, persons=persons, removed=dict(panel.removed), given_splits=dict(panel.given_splits))


def _draw(person_ids: pd.Index, fractions: dict[str, float], seed: int) -> pd.Series:
    """Split names for ``person_ids`` drawn at random in ``fractions`` (by sorted id, seeded)."""
    ids = np.array(sorted(person_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    bounds = np.round(np.cumsum(list(fractions.values())) * len(ids)).astype(int)
    labels = np.empty(len(ids), dtype=object)
    start = 0
    for name, stop in zip(fractions, bounds, strict=True):
        labels[order[start:stop]] = name
        start = stop
    return pd.Series(labels, index=ids).reindex(person_ids).astype("string")


def give_splits(panel: CareerPanel, split: pd.Series, origins: dict[str, str]) -> CareerPanel:
    """``panel`` with the splits its data gives: ``split`` maps person ids to split names (the rest get
    none), ``origins`` says where each split comes from (replacing any given before)."""
    persons = panel.persons.copy()
    persons["split"] = split.reindex(persons.index).astype("string")
    return replace(panel, persons=persons, removed=dict(panel.removed), given_splits=dict(origins))


def give_test_persons(panel: CareerPanel, person_ids: list[str], file: str) -> CareerPanel:
    """``panel`` whose test split is ``person_ids`` (read from ``file``); every id must be in the panel."""
    if panel.given_splits:
        raise InputError(
            f"the data of {panel.source} already gives its splits ({', '.join(panel.given_splits)}): "
            "a file of test ids would override them",
            file=file,
        )
    ids = pd.Index(person_ids, dtype="string").unique()
    unknown = ids[~ids.isin(panel.persons.index)]
    if len(unknown):
        raise InputError(
            f"{len(unknown)} of {len(ids)} test person id(s) are not in {panel.source} "
            f"({len(panel.persons)} persons), e.g. {', '.join(map(repr, unknown[:3]))}",
            file=file,
        )
    return give_splits(panel, pd.Series("test", index=ids), {"test": f"ids file {file}"})


def without_test_persons(panel: CareerPanel, origin: str) -> CareerPanel:
    """``panel`` as a training source of a run whose test set is elsewhere (``origin``): persons its data
    puts in test are left out (counted in ``removed``), the others are drawn into train and valid only."""
    in_test = panel.persons["split"].eq("test").fillna(False) if "test" in panel.given_splits else None
    given_test = [] if in_test is None else panel.persons.index[in_test.to_numpy(dtype=bool)]
    kept = panel.subset(panel.persons.index.difference(given_test))
    if len(given_test):
        kept.removed["test persons of a training source"] = len(given_test)
    kept.given_splits["test"] = origin
    return kept


def split_origin(panel: CareerPanel, name: str, seed: int) -> str:
    """Where split ``name`` of ``panel`` comes from: what the data gives, else the seeded random draw."""
    return panel.given_splits.get(name, f"random seed {seed}")
