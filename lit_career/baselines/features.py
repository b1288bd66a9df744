"""CAREER's hand-crafted features of each person-year, shared by the Markov and softmax baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lit_career.panel.careers import CareerPanel
from lit_career.panel.transitions import first_years


def feature_table(panel: CareerPanel) -> pd.DataFrame:
    """CAREER's hand-crafted features for predicting each person-year's state (rows as ``panel.records``).

    Columns: ``current_state`` (state the year before, -1 in the first year), ``two_back_state``
    (two records back, -1 if none), ``tenure`` (calendar years in the current state's spell up to
    the previous record, 0 in the first year), ``years_in_panel`` (years since the person's first
    record), ``year``, ``education`` and ``education_change`` (level difference from the previous
    record, 0 when either is unknown), ``gap`` (years since the previous record, 0 in the first year),
    ``sex``, ``race``, ``location``, ``birth_year``.
    """
    records = panel.records
    n = len(records)
    rows = np.arange(n)
    pid = records["person_id"].to_numpy()
    years = records["year"].to_numpy(np.int64)
    states = records["state"].to_numpy(np.int64)
    first = first_years(pid)
    position = rows - np.maximum.accumulate(np.where(first, rows, 0))
    start = rows - position

    def back(values: np.ndarray, k: int, fill: int) -> np.ndarray:
        shifted = np.r_[np.full(k, fill), values[: n - k]] if n else values
        return np.where(position >= k, shifted, fill)

    new_spell = first | (states != np.r_[-1, states[:-1]])
    spell_start = np.maximum.accumulate(np.where(new_spell, rows, 0))
    education = records["education"].cat.codes.to_numpy(np.int64)  # -1 when unknown
    prev_education = back(education, 1, -1)
    persons = panel.persons.reindex(records["person_id"])
    return pd.DataFrame(
        {
            "person_id": records["person_id"].to_numpy(),
            "current_state": back(states, 1, -1),
            "two_back_state": back(states, 2, -1),
            "tenure": back(years - years[spell_start] + 1, 1, 0),
            "years_in_panel": years - years[start],
            "year": years,
            "education": records["education"].astype("string").to_numpy(),
            "education_change": np.where(
                (education >= 0) & (prev_education >= 0), education - prev_education, 0
            ),
            "gap": np.where(position >= 1, years - back(years, 1, 0), 0),
            "sex": persons["sex"].to_numpy(),
            "race": persons["race"].to_numpy(),
            "location": persons["location"].to_numpy(),
            "birth_year": persons["birth_year"].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
        }
    )
