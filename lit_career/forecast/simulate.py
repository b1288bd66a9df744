"""Sampling futures: what a model offers (:class:`Simulator`) and the one loop that draws from it.

Every model samples from the closed-set distribution it already scores. A fitted model offers
``simulator(history, paths)``: ``history`` is a panel cut at the forecast's cutoff, and the simulator
keeps ``paths`` futures of each of its persons (path ``i`` belongs to person ``i // paths``, persons in
panel order). :func:`simulate` then, for each forecast year in turn, asks it for the next-state
distributions given the year and each person's education, draws one state per path and appends it.
Covariates roll forward through these arguments: the year is the data's own next survey year; age follows
from it and the birth year; education is what the caller passes (held at its last value, or the data's
own). Static covariates stay what they are.

The models: Markov chains (:class:`~lit_career.baselines.markov.MarkovSimulator`), logit and bag-of-jobs
(:class:`~lit_career.baselines.neural.NeuralSimulator`), CAREER with a key/value cache
(:class:`~lit_career.baselines.career.CareerSimulator`) and the synthetic oracle's Bayes filter run
forward (:class:`~lit_career.synthetic.oracle.OracleSimulator`). An LM row fits the same protocol: its
``step`` scores every title after each path's resume text, and ``advance`` appends the drawn title, so the
text never leaves the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from lit_career.panel.careers import CareerPanel


class Simulator(Protocol):
    """Futures of the persons of a history panel, ``paths`` per person, advanced one year at a time."""

    def step(self, year: int, education: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-state distributions of every path in ``year``, with ``education`` the level code of each
        person (-1: unknown): ``(table, row)``, ``table`` [rows, V] distributions and ``row`` [paths in all]
        the row of each path (paths that share a row share the distribution)."""
        ...

    def advance(self, states: np.ndarray) -> None:
        """Append one drawn state per path to the futures, in the year of the last :meth:`step`."""
        ...


class Forecaster(Protocol):
    """A fitted model that can sample futures."""

    def simulator(self, history: CareerPanel, paths: int) -> Simulator: ...


@dataclass
class Futures:
    """Sampled futures of ``persons`` persons over the forecast years."""

    states: np.ndarray
    """Drawn states [persons, paths, years] (int16)."""
    probs: np.ndarray
    """Forecast distribution of each person and year [persons, years, V]: the mean over the paths of the
    model's distribution given the path's drawn past (a Rao-Blackwellized estimate of the marginal)."""
    mc_se: np.ndarray
    """Monte Carlo standard error of each entry of ``probs`` (sd over the paths / sqrt(paths - 1))."""


def simulate(
    simulator: Simulator, years: np.ndarray, education: np.ndarray, paths: int, rng: np.random.Generator
) -> Futures:
    """Draw ``paths`` futures of every person over ``years``; ``education`` [persons, years] holds each
    person's education code in each year (-1: unknown)."""
    persons = len(education)
    states = np.empty((persons, paths, len(years)), np.int16)
    probs, mc_se = None, None
    for h, year in enumerate(years):
        table, row = simulator.step(int(year), education[:, h])
        drawn = draw(table, row, rng)
        mean, se = path_moments(table, row, paths)
        if probs is None:
            probs = np.empty((persons, len(years), table.shape[1]), np.float32)
            mc_se = np.empty_like(probs)
        probs[:, h], mc_se[:, h] = mean, se
        states[:, :, h] = drawn.reshape(persons, paths)
        simulator.advance(drawn)
    return Futures(states, probs, mc_se)


def draw(table: np.ndarray, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One state per path from row ``row[i]`` of ``table`` (inverse CDF over all rows at once; states of
    probability zero are never drawn)."""
    cdf = torch.as_tensor(table).float().cumsum(1)
    cdf /= cdf[:, -1:].clone()
    flat = (cdf.numpy() + np.arange(len(cdf), dtype=np.float64)[:, None]).ravel()  # row r in [r, r + 1]
    target = row + (1.0 - rng.random(len(row)))
    order = np.argsort(target)  # sorted queries search faster
    position = np.empty(len(row), np.int64)
    position[order] = np.searchsorted(flat, target[order], side="left")
    return (position - row * table.shape[1]).astype(np.int16)


def path_moments(table: np.ndarray, row: np.ndarray, paths: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over each person's paths of their distributions [persons, V], and its standard error."""
    size = len(table)
    pair, count = np.unique(np.arange(len(row)) // paths * size + row, return_counts=True)
    rows = torch.as_tensor(table)
    if len(pair) != size or (pair % size != np.arange(size)).any():  # rows shared by several persons
        rows = rows[torch.as_tensor(pair % size)]
    rows = rows.double()  # sums of a thousand paths keep float32's precision
    person = torch.as_tensor(pair // size)
    weighted = rows * torch.as_tensor(count / paths)[:, None]
    persons = len(row) // paths
    mean = torch.zeros(persons, table.shape[1], dtype=torch.float64).index_add_(0, person, weighted)
    square = torch.zeros_like(mean).index_add_(0, person, weighted.mul_(rows))
    variance = (square - mean.square()).clamp(min=0) / max(paths - 1, 1)
    return mean.numpy(), variance.sqrt().numpy()
