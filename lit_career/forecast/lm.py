"""Futures of a finished LM row: each path's resume grows by the drawn title, one line a year.

Every path is a person of its own (the history, then its drawn records). A :meth:`LMSimulator.step` appends
a record in the forecast year with the person's education to every path and asks the row's head for that
record's distribution: the renderer (:mod:`lit_career.text.resume`) writes the line's prefix and the head
scores the closed vocabulary after it, so a drawn title is always one of the vocabulary's. The appended
record's own state is a placeholder: a causal LM never reads the text after the prefix it is asked about.
Each year re-renders and re-encodes every path's whole resume (the head's own predict run, as
:meth:`Row.predict <lit_career.runs.finished.Row.predict>` does, over all paths at once) and scores only
its last record, so an LM row samples far fewer paths in the same time than the baselines do. Tokens and
features are cached in a temporary folder, not in the row's caches. A resume longer than the row's
``max_length`` loses its earliest years as the row's own resumes do.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pandas as pd

from lit_career.errors import InputError
from lit_career.panel.careers import EDUCATION_LEVELS, CareerPanel, give_splits, make_panel
from lit_career.runs.finished import FinishedHead, PanelTransitions, Row
from lit_career.runs.spec import RowSpec


class LMForecaster:
    """A finished LM row as a :class:`~lit_career.forecast.simulate.Forecaster`."""

    def __init__(self, row: Row, folder: Path):
        self.row, self.folder = row, folder

    @classmethod
    def load(cls, spec: RowSpec) -> LMForecaster:
        """The finished row of ``spec`` (its folder ``root/dataset/name``); an incomplete folder is an error."""
        return cls(Row.load(spec.out_dir), spec.out_dir)

    def check_test_persons(self, test: CareerPanel) -> None:
        """Refuse a test split other than the persons the row was tested on: the row's own panel must be read
        as its corpus read it."""
        path = self.folder / "predictions_test.parquet"
        tested = set(pd.read_parquet(path, columns=["person_id"])["person_id"].astype(str))
        ours = set(test.persons.index.astype(str))
        if tested != ours:
            raise InputError(
                f"row {self.row.name} was tested on {len(tested)} persons, {len(tested & ours)} of them among the "
                f"forecast's {len(ours)} test persons of {test.source}: give the row file it ran with",
                file=str(path),
            )

    def simulator(self, history: CareerPanel, paths: int) -> LMSimulator:
        if history.vocab.identity != self.row.vocab.identity:
            raise InputError(
                f"{history.source} is over the vocabulary {history.vocab.identity}, row {self.row.name} over "
                f"{self.row.vocab.identity}"
            )
        return LMSimulator(self.row.model, history, paths)


class LastTransitions(PanelTransitions):
    """The last transition of each person of one panel: the record a step asks about."""

    def transitions(self, split: str) -> pd.DataFrame:
        table = super().transitions(split)
        last = ~table.duplicated(["source", "person_id"], keep="last")  # a person's rows run in year order
        return table[last.to_numpy()].reset_index(drop=True)


class LMSimulator:
    """The paths of an LM row's futures as the records of a panel, one person per path (``<person>#<path>``)."""

    def __init__(self, head: FinishedHead, history: CareerPanel, paths: int):
        self._tmp = TemporaryDirectory(prefix="lm-forecast-")
        self.head = replace(
            head,
            args=head.args | {"feature_cache_dir": self._tmp.name},
            reading=head.reading | {"cache_dir": self._tmp.name},
        )
        person = history.persons.index.astype(str)
        self.ids = np.array([f"{p}#{k:05d}" for p in person for k in range(paths)])
        records = history.records.astype({"person_id": str, "education": "string"})
        position = pd.Series(np.arange(len(person)), index=person)[records["person_id"]].to_numpy()
        copies = np.repeat(np.arange(len(records)), paths)
        self.records = records.iloc[copies].reset_index(drop=True)
        self.records["person_id"] = self.ids[
            position[copies] * paths + np.tile(np.arange(paths), len(records))
        ]
        persons = history.persons.drop(columns="split", errors="ignore")
        self.persons = persons.iloc[np.repeat(np.arange(len(person)), paths)].set_axis(self.ids)
        self.source, self.vocab, self.paths = history.source, history.vocab, paths
        self.last = self.records.groupby("person_id", sort=False)["state"].last().reindex(self.ids).to_numpy()
        self.ahead: pd.DataFrame | None = None

    def step(self, year: int, education: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-state distributions of every path in ``year``: the head's, after the path's resume."""
        level = np.asarray(EDUCATION_LEVELS, dtype=object)[education]
        level[education < 0] = None
        self.ahead = pd.DataFrame(
            {
                "person_id": self.ids,
                "year": year,
                "state": self.last,
                "education": np.repeat(level, self.paths),
            }
        ).astype({"education": "string"})
        panel = make_panel(pd.concat([self.records, self.ahead]), self.persons, self.source, vocab=self.vocab)
        panel = give_splits(panel, pd.Series("test", panel.persons.index), {"test": "forecast paths"})
        predictions = self.head.predict(panel, LastTransitions)  # the last record of each path only
        person = predictions.table["person_id"].to_numpy(str)
        order = pd.Series(np.arange(len(person)), index=person).reindex(self.ids).to_numpy()
        return np.exp(predictions.log_probs[order]), np.arange(len(self.ids))

    def advance(self, states: np.ndarray) -> None:
        """Append the drawn state of every path in the year of the last :meth:`step`."""
        self.records = pd.concat([self.records, self.ahead.assign(state=states)], ignore_index=True)
        self.last = np.asarray(states)
