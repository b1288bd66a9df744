"""The world's exact oracle.

:func:`oracle_log_probs` evaluates the same function the generator samples from
(:meth:`~lit_career.synthetic.world.World.probs`) for every record, and marginalizes the latent type
with an exact Bayes filter: P(s_t | observed history) = sum_k P(k | s_0..s_{t-1}, x) P(s_t | history, k).
This is the best any model that sees the panel can do; passing the true ``types`` gives the
type-conditional version.

:class:`Oracle` runs the same filter forward to sample futures (:mod:`lit_career.forecast`): each path
draws from the type mixture, then weighs every type by the probability it gave the drawn state. With its
own education (``education="world"``) the latent also covers the years of schooling, which the levels seen
only bound: a path's level grows as the world's does, by one year of schooling per year in education.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from lit_career.panel.careers import CareerPanel
from lit_career.panel.transitions import first_years
from lit_career.synthetic.world import (
    RACES,
    REGIONS,
    SCHOOL_YEARS,
    SECTORS,
    SEXES,
    World,
    WorldConfig,
    _History,
    _level,
    world_of,
)


@dataclass
class FilterState:
    """The filter after each person's last record (persons in ``panel.persons`` order)."""

    statics: dict[str, np.ndarray]
    """Birth year, sex, race, region and cohort codes per person."""
    history: _History
    """The history features' running state per person."""
    log_w: np.ndarray
    """Unnormalized log posterior of the worker type [persons, types] (one column with ``types`` given)."""
    log_probs: np.ndarray
    """log P(state of each record | everything before it) [records, V]."""


def oracle_log_probs(
    world: World | WorldConfig,
    panel: CareerPanel,
    *,
    types: np.ndarray | None = None,
    population: str | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """log P(state of each record | everything before it) under the world, shape [len(panel.records), V].

    The latent type is marginalized by an exact Bayes filter over the worker types, starting from the
    prior of ``population`` (default: ``panel.source``). With ``types`` (one per row of
    ``panel.persons``) the probabilities are conditional on the true types instead.
    """
    return run_filter(world, panel, types=types, population=population, chunk=chunk).log_probs


def run_filter(
    world: World | WorldConfig,
    panel: CareerPanel,
    *,
    types: np.ndarray | None = None,
    population: str | None = None,
    chunk: int = 2048,
) -> FilterState:
    """Run the Bayes filter over every record of ``panel`` (see :func:`oracle_log_probs`)."""
    world = world_of(world)
    name = _population(world, panel, population)
    r = panel.records
    code, ids = pd.factorize(r["person_id"])
    pos = r.groupby(code).cumcount().to_numpy()
    statics = _statics(panel.persons.loc[ids])
    shape = (len(ids), int(pos.max()) + 1)
    years, states, levels = (np.full(shape, -1, dtype=np.int64) for _ in range(3))
    years[code, pos], states[code, pos] = r["year"].to_numpy(), r["state"].to_numpy()
    levels[code, pos] = r["education"].cat.codes.to_numpy()
    record = np.full(shape, -1, dtype=np.int64)
    record[code, pos] = np.arange(len(r))
    k = len(world.type_names) if types is None else 1
    if types is not None:
        fixed = pd.Series(np.asarray(types), index=panel.persons.index).loc[ids].to_numpy()
    out = np.empty((len(r), world.V))
    history = _History.empty(len(ids))
    log_w = (
        np.tile(np.log(world.type_prior(name)), (len(ids), 1)) if types is None else np.zeros((len(ids), 1))
    )
    for block in np.array_split(np.arange(len(ids)), max(1, len(ids) // chunk)):
        for t in range(shape[1]):
            g = block[years[block, t] >= 0]  # records start at position 0: none left means done
            if len(g) == 0:
                break
            f = history.features(g, years[g, t], levels[g, t], statics).take(np.repeat(np.arange(len(g)), k))
            p = world.probs(f, np.tile(np.arange(k), len(g)) if types is None else fixed[g])
            p = p.reshape(len(g), k, world.V)
            w = np.exp(log_w[g] - log_w[g].max(1, keepdims=True))
            with np.errstate(divide="ignore"):
                out[record[g, t]] = np.log(np.einsum("nk,nkv->nv", w / w.sum(1, keepdims=True), p))
            log_w[g] += np.log(p[np.arange(len(g)), :, states[g, t]])
            history.advance(g, states[g, t], years[g, t], world.n_occ)
    return FilterState(statics, history, log_w, out)


def _population(world: World, panel: CareerPanel, population: str | None) -> str:
    """The population whose type prior starts the filter; the panel must be one the world could draw."""
    name = population or panel.source
    if name not in world.config.populations:
        raise ValueError(f"panel source {name!r} is not a population of this world: pass population=")
    r = panel.records
    unmapped = (r["state"].to_numpy() == panel.vocab.special("unmapped")).any()
    if unmapped or r["education"].isna().any() or panel.persons["birth_year"].isna().any():
        raise ValueError(
            "the oracle needs a synthetic panel: education on every record, birth years, no unmapped state"
        )
    return name


def _statics(persons: pd.DataFrame) -> dict[str, np.ndarray]:
    statics = {
        "birth_year": persons["birth_year"].to_numpy(dtype=np.int64),
        "sex": _codes(persons["sex"], SEXES),
        "race": _codes(persons["race"], RACES),
        "region": _codes(persons["location"], REGIONS),
    }
    statics["cohort"] = (statics["birth_year"] - 1960) / 10
    return statics


def _codes(values: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    """Covariate codes (-1 unknown); ``_`` reads as a space, as after a round trip through the CAREER format."""
    return pd.Categorical(values.str.replace("_", " "), categories=names).codes.astype(np.int64)


@dataclass
class Oracle:
    """The world's exact forecaster for one population (nothing to fit).

    ``education``: ``world`` grows each path's schooling as the world does (the truth); ``given`` uses the
    education levels the sampler passes (held or taken from the data).
    """

    world: World
    population: str
    education: Literal["world", "given"] = "world"

    def simulator(self, history: CareerPanel, paths: int) -> OracleSimulator:
        return OracleSimulator(self, history, paths)


class OracleSimulator:
    """The filter run forward over ``paths`` copies of each person: one latent weight vector per path.

    The latent of a path is (worker type, candidate years of schooling); with ``education="given"`` there is
    one candidate, whose level the sampler gives. Paths whose features agree share the world's
    type-conditional distributions; each path mixes them with its own weights.
    """

    def __init__(self, oracle: Oracle, history: CareerPanel, paths: int):
        world = self.world = oracle.world
        start = run_filter(world, history, population=oracle.population)
        person = np.repeat(np.arange(len(start.log_w)), paths)
        self.paths, self.person = paths, person
        self.statics = {key: value[person] for key, value in start.statics.items()}
        self.history = _History(*(getattr(start.history, f)[person] for f in _History.__dataclass_fields__))
        if oracle.education == "world":
            schooling, log_prior = schooling_candidates(world, history, oracle.population)
            self.schooling = schooling[person]
        else:
            self.schooling, log_prior = None, np.zeros((len(start.log_w), 1))
        log_w = start.log_w[:, :, None] + log_prior[:, None, :]  # [persons, types, candidates]
        self.log_w = (log_w - log_w.max((1, 2), keepdims=True))[person]

    def step(self, year: int, education: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each path's mixture over its latent of the world's next-state distributions in ``year``."""
        n, k, c = self.log_w.shape
        active = np.isfinite(self.log_w).any(1)  # candidates the path still holds possible
        path, cand = np.nonzero(active)
        if self.schooling is not None:
            level = _level(self.schooling[path, cand]).astype(np.int64)
        elif (education < 0).any():
            raise ValueError("the oracle needs every person's education level")
        else:
            level = education[path // self.paths]
        f = self.history.features(path, np.full(len(path), year), level, self.statics)
        key = np.stack([self.person[path], f.state, f.duration, f.last_occupation, f.level], 1)
        _, first, unique = np.unique(key, axis=0, return_index=True, return_inverse=True)
        rows = f.take(np.repeat(first, k))
        self.table = self.world.probs(rows, np.tile(np.arange(k), len(first))).reshape(len(first), k, -1)
        self.pairs = (path, cand, unique.ravel())
        w = np.exp(self.log_w - self.log_w.max((1, 2), keepdims=True))
        w /= w.sum((1, 2), keepdims=True)
        mixing = torch.sparse_coo_tensor(
            torch.as_tensor(
                np.stack([np.repeat(path, k), (unique.ravel()[:, None] * k + np.arange(k)).ravel()])
            ),
            torch.as_tensor(w[path, :, cand].ravel()),
            (n, len(first) * k),
            check_invariants=False,
        )
        self.year = year
        return (mixing @ torch.as_tensor(self.table.reshape(len(first) * k, -1))).numpy(), np.arange(n)

    def advance(self, states: np.ndarray) -> None:
        """Weigh each path's latent by the probability it gave the drawn state, then append the state."""
        path, cand, unique = self.pairs
        with np.errstate(divide="ignore"):
            self.log_w[path, :, cand] += np.log(self.table[unique, :, states[path]])
        self.log_w -= self.log_w.max((1, 2), keepdims=True)
        states = states.astype(np.int64)
        everyone = np.arange(len(states))
        self.history.advance(everyone, states, np.full(len(states), self.year), self.world.n_occ)
        if self.schooling is not None:
            self.schooling += (states == self.world.special[SECTORS.index("education") - 1])[:, None]


def schooling_candidates(world: World, panel: CareerPanel, population: str) -> tuple[np.ndarray, np.ndarray]:
    """Years of schooling at each person's next record for each attainment the world could have drawn, and
    their log prior given the levels seen (-inf: ruled out or the same years as an earlier candidate), [persons, 5].

    The world draws schooling ``min(draw, age at the first record - 6)`` and adds a year for every record in
    education; the record's level is known, the years are not."""
    r = panel.records
    person, _ = pd.factorize(r["person_id"])
    first = first_years(r["person_id"].to_numpy())
    age = r["year"].to_numpy()[first] - panel.persons["birth_year"].to_numpy(dtype=np.int64)
    start = np.minimum(SCHOOL_YEARS[None, :], np.maximum(age - 6, 0)[:, None])
    school = (r["state"].to_numpy() == world.special[SECTORS.index("education") - 1]).astype(np.int64)
    spent = np.cumsum(school) - school  # years in education before each record, within its person
    spent -= spent[first][person]
    seen = _level(start[person] + spent[:, None]) == r["education"].cat.codes.to_numpy()[:, None]
    consistent = pd.DataFrame(seen).groupby(person).all().to_numpy()
    same = start[:, :, None] == start[:, None, :]
    shares = np.asarray(world.config.populations[population].education_shares, dtype=float)
    prior = (same * shares).sum(2) * ~np.tril(same, -1).any(2)  # equal years count once, at the first
    with np.errstate(divide="ignore"):
        log_prior = np.log(prior * consistent)
    if not np.isfinite(log_prior).any(1).all():
        raise ValueError("education levels that no schooling of this world explains: not a panel of its own")
    return start + np.bincount(person, school).astype(np.int64)[:, None], log_prior
