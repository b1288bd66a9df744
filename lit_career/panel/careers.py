"""CareerPanel: person-year records plus static covariates, person sampling and splits.

A panel has two tables:

* ``records``: one row per person-year, sorted by (person_id, year), columns ``person_id`` (string),
  ``year`` (int), ``state`` (vocabulary index) and ``education`` (one of :data:`EDUCATION_LEVELS`
  or NA);
* ``persons``: one row per person, indexed by ``person_id``, columns ``birth_year`` (Int64),
  ``sex``, ``race``, ``location`` (strings, NA when unknown) and ``split`` once assigned.

Readers: long CSV/Parquet tables with a column mapping (:mod:`lit_career.panel.table`), the CAREER
reference format (:mod:`lit_career.panel.career_format`) and the bundled NLSY79 panel
(:mod:`lit_career.panel.nlsy79`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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


def make_panel(
    records: pd.DataFrame, persons: pd.DataFrame, source: str, removed: dict[str, int] | None = None
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
    return CareerPanel(records, persons.loc[has_records].sort_index(), source, removed)


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
    """Assign each person to one split (default train/valid/test 0.8/0.1/0.1), deterministic in ``seed``."""
    fractions = fractions or SPLIT_FRACTIONS
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
