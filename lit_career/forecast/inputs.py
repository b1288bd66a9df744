"""What a forecast starts from and is scored against: the history cut at the cutoff, the forecast years,
each person's education in those years, and the realized states."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from lit_career.errors import InputError
from lit_career.panel.careers import CareerPanel

Education = Literal["hold", "given", "world"]
"""How education rolls forward: ``hold`` its last value before the cutoff, ``given`` the data's own
(the last value recorded at or before each forecast year), ``world`` the synthetic oracle's own schooling."""


def forecast_years(panel: CareerPanel, cutoff: int, horizon: int) -> np.ndarray:
    """The survey years of ``panel`` in (cutoff, cutoff + horizon]: the data's own rounds."""
    years = np.unique(panel.records["year"].to_numpy())
    if horizon < 1:
        raise InputError(f"horizon must be at least 1 year, not {horizon}", column="horizon")
    if cutoff >= years.max():
        raise InputError(
            f"cutoff {cutoff} is not before the panel's last year {years.max()}: nothing to forecast",
            column="cutoff",
        )
    chosen = years[(years > cutoff) & (years <= cutoff + horizon)]
    if len(chosen) == 0:
        raise InputError(f"no survey year in {cutoff + 1}-{cutoff + horizon}", column="horizon")
    return chosen


def cut(panel: CareerPanel, cutoff: int) -> CareerPanel:
    """The records up to ``cutoff`` of the persons who have one."""
    keep = (panel.records["year"] <= cutoff).to_numpy()
    ids = panel.records.loc[keep, "person_id"].unique()
    persons = panel.persons[panel.persons.index.isin(ids)]
    return replace(panel, records=panel.records[keep].reset_index(drop=True), persons=persons)


def education_codes(
    panel: CareerPanel, history: CareerPanel, years: np.ndarray, mode: Education
) -> np.ndarray:
    """Each history person's education code in each forecast year [persons, years] (-1: unknown):
    ``hold`` the last known before the cutoff; ``given`` (and ``world``, for the models that take it) the
    last known at or before the year in ``panel``."""
    source = history if mode == "hold" else panel
    records = source.records[source.records["education"].notna()]
    ids = history.persons.index
    out = np.full((len(ids), len(years)), -1, dtype=np.int64)
    for h, year in enumerate(years):
        known = records[records["year"] <= year].groupby("person_id")["education"].last()
        out[:, h] = known.reindex(ids).cat.codes.to_numpy()
    return out


def realized_states(panel: CareerPanel, history: CareerPanel, years: np.ndarray) -> np.ndarray:
    """The state each history person was in, in each forecast year [persons, years] (-1: no record)."""
    records = panel.records[panel.records["year"].isin(years)]
    table = records.pivot(index="person_id", columns="year", values="state")
    table = table.reindex(index=history.persons.index, columns=years)
    return table.fillna(-1).to_numpy(np.int64)
