"""The transition table: one row per person-year with its previous state and the gap since it.

This is the one place the transition keys are computed: a person's first year has ``prev_state = -1``
and ``gap = 0``; later years have the state and the years since the person's previous record.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lit_career.panel.careers import CareerPanel

KEY_COLUMNS = ("person_id", "year", "state", "prev_state", "gap")
"""Columns that identify a transition and its target."""
COVARIATES = ("sex", "race", "birth_year", "education")
"""Covariates the evaluation slices transitions by."""


def first_years(person_ids: np.ndarray) -> np.ndarray:
    """True at each person's first record (records sorted by person)."""
    return np.r_[True, person_ids[1:] != person_ids[:-1]] if len(person_ids) else np.zeros(0, bool)


def transition_keys(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``first`` (bool), ``prev_state`` (-1 at first years) and ``gap`` (years since the previous record,
    0 at first years) of records sorted by (person_id, year)."""
    first = first_years(records["person_id"].to_numpy())
    states, years = records["state"].to_numpy(), records["year"].to_numpy()
    if not len(first):
        return first, np.zeros(0, np.int16), np.zeros(0, np.int16)
    prev_state = np.where(first, -1, np.r_[-1, states[:-1]]).astype(np.int16)
    gap = np.where(first, 0, np.r_[0, np.diff(years)]).astype(np.int16)
    return first, prev_state, gap


def transition_table(panel: CareerPanel) -> pd.DataFrame:
    """Key columns and covariates for every person-year of a panel (first years have prev_state -1)."""
    records = panel.records
    _, prev_state, gap = transition_keys(records)
    table = pd.DataFrame(
        {
            "person_id": records["person_id"],
            "year": records["year"].to_numpy(),
            "state": records["state"].to_numpy(),
            "prev_state": prev_state,
            "gap": gap,
            "education": records["education"].astype("string"),
        }
    )
    persons = panel.persons.reindex(records["person_id"])
    for col in ("sex", "race", "birth_year", "split"):
        if col in persons:
            table[col] = persons[col].to_numpy()
    return table
