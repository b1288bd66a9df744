"""Synthetic career worlds whose next-state probabilities are known exactly (the oracle).

A *world* is a set of parameters drawn once from ``WorldConfig.seed``; its *populations* (a large
``resume`` one, small ``survey`` ones) are ordinary :class:`CareerPanel` objects over the project
vocabulary (341 occ1990dd occupations and the special states; ``unmapped`` never occurs).

Generative model (one person, records at years y_0 < y_1 < ... ; vectorized over persons)
-----------------------------------------------------------------------------------------
* Static covariates x: birth year b, sex, race, region (a population without demographics leaves
  sex, race and region unknown, and an unknown value shifts nothing). A latent worker type k is drawn
  from the population's prior over :data:`WORKER_TYPES` (the resume population leans white-collar).
* Record years: every year from a start age (survey: yearly rounds), or, for resumes, the first and
  last year of a career window and each year between with probability ``observe_prob``. Years are
  drawn independently of careers, so the model is defined directly on observed years, with the gap
  g = y_t - y_{t-1} as a feature: transitions over gaps are exact by construction.
* Education: years of schooling h start at min(attainment draw, age - 6) and grow by one for each
  record spent in the ``education`` state. A record's education is the level of h at the *start* of
  that year (<=11 less than high school, 12 high school, 13-15 some college, 16 bachelor's, 17+
  graduate), so it is known before the year's state.
* History features at record t: previous state s = s_{t-1}, its duration d (years since the spell
  started, inclusive), the last occupation left r (updated to s_{t-1} whenever a spell in an
  occupation ends; "return" is possible when r exists and r != s), gap g, age a = y_t - b, level z.
* Next state, a nested choice:
  1. Sector c in (occupation, no_job, unemployed, not_in_labor_force, education, military):
     P(c) = softmax_c[base_c + age_c(a) + type_c(k) + z*edu_c + sex_c + race_c + region_c
     + 1{c = sector(s)} * (persist_c + persist_dur_c*log d - gap_effect*log g
     + school_c(z))], z the level index 0-4; school_c(z) (education only) makes students leave at
     degrees. A special state is its own sector, so P(special j) = P(c = j).
  2. Within the occupation sector, if s is an occupation: stay (j = s), return (j = r) or move with
     probabilities softmax(u, rho, 0), u = stay(a) + duration_effect*log d + education_stay*(z-1.5)
     - gap_effect*log g, rho = return_logit (minus infinity when no return is possible); if s is not an
     occupation: recall (j = r) with probability sigmoid(recall_logit) when r exists, else move.
     A move draws j != s from Q(j) = softmax_j[pop_j + type_occ(k, j) + G(group12(j))
     + same_group12*1{group12(j) = group12(s)} + same_group17*1{group17(j) = group17(s)}],
     G(g) = type_strength*1{g home group of k} + education_effect*(z-1.5)*skill_g + sex, race,
     region, cohort and age effects on g (the 17 groups nest in the 12).
  The first record uses the same formulas with no previous state (no persistence, no stay, no return).
  So the world rewards learning beyond first-order Markov: worker types (persistent, latent), returns
  A->B->A, duration and age dependence, covariates and grouped moves.
* Calibration: the stay intercept stay(a) is piecewise linear at the centres of the age bands of
  :data:`NLSY79_SWITCH_BY_AGE` and is fitted (a few rounds on a calibration sample, common random
  numbers) so that the annual occ1990dd switch rate between consecutive yearly records both in an
  occupation follows the raw NLSY79 figures by age (``mobility="raw"``) or the same curve scaled to
  ``true_mobility_rate`` (``mobility="true"``, 16-20% in the PSID corrected for coding error).

The oracle is in :mod:`lit_career.synthetic.oracle`, the ``synth`` command in :mod:`lit_career.synthetic.command`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from lit_career.errors import InputError
from lit_career.panel.careers import EDUCATION_LEVELS, SPLIT_FRACTIONS, CareerPanel, make_panel
from lit_career.panel.taxonomy import vocabulary

# Raw NLSY79 annual occ1990dd switch rates by age band, (low, high], pairs, rate; from
# resources/facts/nlsy79_cpsocc_annual_switch_rates_by_age.csv (consecutive yearly rounds, both coded).
NLSY79_SWITCH_BY_AGE = (
    (15, 20, 5481, 0.7482),
    (20, 23, 15838, 0.7116),
    (23, 26, 24626, 0.6637),
    (26, 29, 23780, 0.6253),
    (29, 32, 17014, 0.5682),
    (32, 40, 7890, 0.4915),
)
BAND_CENTRES = np.array([18.0, 21.5, 24.5, 27.5, 30.5, 36.0])

SECTORS = ("occupation", "no_job", "unemployed", "not_in_labor_force", "education", "military")
SEXES, RACES = ("male", "female"), ("hispanic", "black", "non-black non-hispanic")
REGIONS = ("northeast", "midwest", "south", "west")
RACE_SHARES, REGION_SHARES = (0.07, 0.13, 0.80), (0.20, 0.26, 0.34, 0.20)
SCHOOL_YEARS = np.array([10, 12, 14, 16, 18])  # years of schooling drawn for each attainment level

# name: (home group12 ids, sector tilts in SECTORS order)
WORKER_TYPES = {
    "professional": ((1, 2, 3), (0, 0, -0.3, 0, 1.0, 0)),
    "clerical_sales": ((4, 5), (0, 0, 0, 0.3, 0.3, 0)),
    "service": ((6,), (0, 0.2, 0.4, 0.3, 0, 0)),
    "craft": ((8, 10), (0, 0, 0.2, -0.3, -0.3, 0)),
    "operative": ((11, 12), (0, 0.2, 0.4, 0, -0.5, 0)),
    "rural": ((7, 9), (0, 0.3, 0.2, 0, -0.5, 0)),
    "military": ((3, 8), (0, 0, 0, -0.5, 0, 3.0)),
    "marginal": ((5, 6, 11), (-0.5, 1.0, 1.0, 1.0, -0.5, -1.0)),
}

# Age profiles at AGE_KNOTS (piecewise linear, flat outside): sector logits and group12 logits.
AGE_KNOTS = np.array([15.0, 18, 22, 25, 28, 31, 36, 50, 65])
SECTOR_BASE = np.array([0.0, -1.3, -1.3, -1.0, -2.0, -3.0])
SECTOR_AGE = np.array(
    [  # occupation, no_job, unemployed, nilf, education, military
        [0, 1.2, 0.3, 0.5, 4.5, -4.0],
        [0, 0.6, 0.4, 0.2, 2.5, 0.5],
        [0, 0.2, 0.3, 0.0, 0.3, 0.3],
        [0, 0.0, 0.1, 0.0, -0.8, 0.0],
        [0, 0.0, 0.0, 0.0, -1.5, -0.5],
        [0, 0.0, 0.0, 0.0, -2.0, -1.0],
        [0, 0.0, 0.0, 0.1, -2.5, -1.5],
        [0, 0.2, 0.0, 0.4, -3.5, -4.0],
        [0, 0.5, 0.3, 1.2, -4.5, -6.0],
    ]
)
SECTOR_PERSIST = np.array([3.0, 1.0, 0.0, 1.5, 3.0, 2.5])  # bonus for staying in the sector
SECTOR_PERSIST_DURATION = np.array([0.3, 0.3, 0.3, 0.3, -0.3, 0.3])  # per log-year of the spell
SECTOR_EDUCATION = np.array([0.0, -0.2, -0.25, -0.15, 0.0, -0.2])  # per education level
SCHOOL_PERSIST_BY_LEVEL = np.array([0.5, -1.0, 1.0, -1.5, 0.0])  # students leave at degrees, finish college
GROUP_AGE = np.zeros((len(AGE_KNOTS), 12))
GROUP_AGE[:, 0] = [-3.0, -2.0, -1.0, -0.3, 0.0, 0.2, 0.4, 0.5, 0.5]  # managers
GROUP_AGE[:, 1] = [-2.0, -1.5, -0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # professionals
# Skill of each group12 (education shifts logits by education_effect * (z - 1.5) * skill).
GROUP_SKILL = np.array([1.0, 1.5, 1.0, 0.3, 0.3, -0.5, -0.7, -0.3, -0.5, -0.2, -0.6, -0.6])
# Female minus male logit shifts (applied as +/- half): group12 1..12, then SECTORS.
FEMALE_GROUPS = np.array([0.0, 0.3, 0.0, 0.3, 1.2, 0.6, -1.0, -2.0, -2.0, -0.7, -0.2, -1.2])
FEMALE_SECTORS = np.array([0.0, 0.3, 0.0, 1.0, 0.0, -2.5])


@dataclass
class PopulationConfig:
    """One population of a world.

    Args:
        persons: number of workers.
        birth_years: range of birth years (inclusive), drawn uniformly.
        years: calendar window of the records (inclusive).
        start_age: range of ages at the first record (drawn uniformly; clipped to the window).
        span: range of the number of years from first to last record (uniform; clipped to the window).
        observe_prob: probability that a year between the first and last record has a record
            (1 = yearly rounds).
        demographics: draw and report sex, race and region (``False``: unknown, no effect).
        type_weights: relative prior weight of each worker type (missing types weigh 0).
        education_shares: shares of the five attainment levels drawn at the first record.
    """

    persons: int = 10_000
    birth_years: tuple[int, int] = (1957, 1964)
    years: tuple[int, int] = (1979, 2000)
    start_age: tuple[int, int] = (14, 14)
    span: tuple[int, int] = (100, 100)
    observe_prob: float = 1.0
    demographics: bool = True
    type_weights: dict[str, float] = field(
        default_factory=lambda: {
            "professional": 1.2,
            "clerical_sales": 1.5,
            "service": 1.2,
            "craft": 1.0,
            "operative": 1.3,
            "rural": 0.4,
            "military": 0.3,
            "marginal": 0.8,
        }
    )
    education_shares: tuple[float, float, float, float, float] = (0.15, 0.40, 0.22, 0.15, 0.08)


def _default_populations() -> dict[str, PopulationConfig]:
    """A 200k-worker resume population and two NLSY-like surveys (1979 and 1997 cohorts, yearly rounds)."""
    resume = PopulationConfig(
        persons=200_000,
        birth_years=(1950, 1995),
        years=(1990, 2022),
        start_age=(18, 26),
        span=(1, 30),
        observe_prob=0.75,
        demographics=False,
        type_weights={
            "professional": 4.0,
            "clerical_sales": 2.5,
            "service": 0.8,
            "craft": 0.6,
            "operative": 0.6,
            "rural": 0.2,
            "military": 0.2,
            "marginal": 0.3,
        },
        education_shares=(0.03, 0.20, 0.27, 0.32, 0.18),
    )
    survey97 = PopulationConfig(
        persons=9_000, birth_years=(1980, 1984), years=(1997, 2019), start_age=(12, 12)
    )
    return {"resume": resume, "survey": PopulationConfig(), "survey97": survey97}


@dataclass
class WorldConfig:
    """Parameters of a synthetic world (logit-scale effects unless said otherwise).

    Args:
        seed: seed of the world's random parameters and of every population drawn from it.
        populations: populations by name (default: ``resume`` 200k workers, ``survey`` 10k born 1957-64
            observed 1979-2000, ``survey97`` 9k born 1980-84 observed 1997-2019).
        mobility: ``raw`` (NLSY79 switch rates by age) or ``true`` (scaled to ``true_mobility_rate``).
        true_mobility_rate: mean annual occupation switch rate with ``mobility="true"``.
        stay_by_age: occupation stay intercepts at :data:`BAND_CENTRES`; ``None`` calibrates them.
        calibrate_on: population whose shape (with ``calibration_persons``) is used to calibrate.
        calibration_persons: persons simulated per calibration round.
        calibration_rounds: calibration rounds.
        duration_effect: occupation stay logit per log-year in the job.
        return_logit: logit (against moving) of returning to the last occupation left (A->B->A).
        recall_logit: logit of going back to the last occupation after a non-occupation spell.
        gap_effect: stay and persistence logits fall by this per log-year of gap between records.
        education_stay: occupation stay logit per education level.
        education_effect: scale of the education x group-skill effect on which occupations are chosen.
        same_group12: bonus for moving within the current occupation's 12-group.
        same_group17: bonus for moving within the current occupation's 17-group.
        type_strength: bonus of a worker type's home groups.
        type_occupation_sd: sd of type x occupation random effects (latent skills within groups).
        popularity_sd: sd of the occupations' random popularity within their group.
        covariate_sd: sd of the random race and region effects (groups and sectors) and of the cohort
            trends (per decade of birth, groups only).
        split_fractions: person split written by :func:`~lit_career.synthetic.command.synth_command`.
    """

    seed: int = 0
    populations: dict[str, PopulationConfig] = field(default_factory=_default_populations)
    mobility: Literal["raw", "true"] = "raw"
    true_mobility_rate: float = 0.18
    stay_by_age: list[float] | None = None
    calibrate_on: str = "survey"
    calibration_persons: int = 3000
    calibration_rounds: int = 4
    duration_effect: float = 0.6
    return_logit: float = -0.5
    recall_logit: float = 0.5
    gap_effect: float = 1.0
    education_stay: float = 0.15
    education_effect: float = 0.8
    same_group12: float = 2.0
    same_group17: float = 0.7
    type_strength: float = 2.0
    type_occupation_sd: float = 1.0
    popularity_sd: float = 0.8
    covariate_sd: float = 0.3
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(SPLIT_FRACTIONS))


def switch_targets(config: WorldConfig) -> np.ndarray:
    """Target annual occupation switch rate per band of :data:`NLSY79_SWITCH_BY_AGE`."""
    pairs, raw = (np.array([b[i] for b in NLSY79_SWITCH_BY_AGE]) for i in (2, 3))
    if config.mobility == "raw":
        return raw
    return raw * config.true_mobility_rate / np.average(raw, weights=pairs)


@dataclass
class Features:
    """History features of one record per row (see the module docstring); -1 means none/unknown."""

    state: np.ndarray
    duration: np.ndarray
    last_occupation: np.ndarray
    gap: np.ndarray
    age: np.ndarray
    level: np.ndarray
    sex: np.ndarray
    race: np.ndarray
    region: np.ndarray
    cohort: np.ndarray

    def take(self, index: np.ndarray) -> Features:
        return Features(**{k: v[index] for k, v in vars(self).items()})


@dataclass
class _History:
    """Running history of every person of a population: what :class:`Features` is computed from."""

    state: np.ndarray
    spell_start: np.ndarray
    year: np.ndarray
    last_occupation: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _History:
        return cls(*(np.full(n, -1, dtype=np.int64) for _ in range(4)))

    def features(self, rows: np.ndarray, year: np.ndarray, level: np.ndarray, statics: dict) -> Features:
        prev = self.year[rows]
        return Features(
            state=self.state[rows],
            duration=np.maximum(prev - self.spell_start[rows] + 1, 1),
            last_occupation=self.last_occupation[rows],
            gap=np.where(prev >= 0, year - prev, 1),
            age=year - statics["birth_year"][rows],
            level=level,
            **{k: statics[k][rows] for k in ("sex", "race", "region", "cohort")},
        )

    def advance(self, rows: np.ndarray, state: np.ndarray, year: np.ndarray, n_occupations: int) -> None:
        old = self.state[rows]
        changed = state != old
        left = changed & (old >= 0) & (old < n_occupations)
        self.last_occupation[rows[left]] = old[left]
        self.spell_start[rows[changed]] = year[changed]
        self.state[rows], self.year[rows] = state, year


@dataclass
class Population:
    """A generated panel and the latent worker type of each of its persons (aligned with ``panel.persons``)."""

    name: str
    panel: CareerPanel
    types: np.ndarray


class World:
    """The drawn parameters of a world; :meth:`probs` is the one transition function."""

    def __init__(self, config: WorldConfig):
        vocab = vocabulary()
        self.config, self.V, self.n_occ = config, len(vocab), vocab.num_occupations
        self.type_names = list(WORKER_TYPES)
        self.special = np.array([vocab.special(s) for s in SECTORS[1:]])
        self.sector_of = np.zeros(self.V, dtype=np.int64)
        self.sector_of[self.special] = np.arange(1, len(SECTORS))
        g12, g17 = (vocab.group_of(level)[: self.n_occ].astype(int) - 1 for level in (12, 17))
        self.group12, self.group17 = g12, g17
        self.g12_of_g17 = np.zeros(17, dtype=np.int64)
        self.g12_of_g17[g17] = g12  # the 17 groups refine the 12 groups
        assert (self.g12_of_g17[g17] == g12).all(), "17 groups must nest in the 12 groups"
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
        sizes = np.bincount(g12, minlength=12)
        # exp(occupation logit): popularity within the group and the type x occupation effects.
        self.occ_weight = np.exp(
            -np.log(sizes)[g12]
            + rng.normal(0, config.popularity_sd, self.n_occ)
            + rng.normal(0, config.type_occupation_sd, (len(WORKER_TYPES), self.n_occ))
        )
        n_eff = 12 + len(SECTORS)  # group and sector effects share the covariate tables
        self.race_eff = np.vstack([rng.normal(0, config.covariate_sd, (len(RACES), n_eff)), np.zeros(n_eff)])
        self.region_eff = np.vstack(
            [rng.normal(0, config.covariate_sd, (len(REGIONS), n_eff)), np.zeros(n_eff)]
        )
        self.cohort_eff = np.r_[
            rng.normal(0, config.covariate_sd, 12), np.zeros(len(SECTORS))
        ]  # trends in groups
        female = np.concatenate([FEMALE_GROUPS, FEMALE_SECTORS]) / 2
        self.sex_eff = np.vstack([-female, female, np.zeros(n_eff)])
        home = np.zeros((len(WORKER_TYPES), 12))
        for k, (groups, _) in enumerate(WORKER_TYPES.values()):
            home[k, np.array(groups) - 1] = config.type_strength
        self.type_eff = np.hstack([home, np.array([tilt for _, tilt in WORKER_TYPES.values()])])
        self.stay_by_age = (
            np.array(config.stay_by_age) if config.stay_by_age is not None else self._calibrate()
        )
        self.config = replace(config, stay_by_age=[round(float(v), 6) for v in self.stay_by_age])
        self.stay_by_age = np.array(self.config.stay_by_age)

    def type_prior(self, population: str) -> np.ndarray:
        """Prior probability of each worker type in ``population``."""
        weights = self.config.populations[population].type_weights
        unknown = set(weights) - set(WORKER_TYPES)
        if unknown:
            raise ValueError(f"unknown worker type(s) {sorted(unknown)}; known: {self.type_names}")
        prior = np.array([weights.get(name, 0.0) for name in self.type_names], dtype=float)
        return prior / prior.sum()

    def probs(self, f: Features, types: np.ndarray) -> np.ndarray:
        """P(next state | history features, type) as an [n, V] matrix: the generator and the oracle both use it."""
        c = self.config
        n, rows = len(types), np.arange(len(types))
        interp = np.stack(
            [np.interp(f.age, AGE_KNOTS, col) for col in np.hstack([GROUP_AGE, SECTOR_AGE]).T], 1
        )
        z = f.level - 1.5
        effects = (
            self.type_eff[types]
            + self.sex_eff[f.sex]
            + self.race_eff[f.race]
            + self.region_eff[f.region]
            + np.outer(f.cohort, self.cohort_eff)
            + interp
        )
        has_prev = f.state >= 0
        prev_occ = has_prev & (f.state < self.n_occ)
        log_d, log_g = np.log(f.duration), np.log(f.gap)
        # 1. sector
        sector = effects[:, 12:] + SECTOR_BASE + np.outer(z + 1.5, SECTOR_EDUCATION)
        prev_sector = self.sector_of[f.state]
        persist = (
            SECTOR_PERSIST[prev_sector] + SECTOR_PERSIST_DURATION[prev_sector] * log_d - c.gap_effect * log_g
        )
        persist += np.where(prev_sector == SECTORS.index("education"), SCHOOL_PERSIST_BY_LEVEL[f.level], 0.0)
        sector[rows[has_prev], prev_sector[has_prev]] += persist[has_prev]
        p_sector = _softmax(sector)
        # 2. occupation: stay / return / move, the move computed in exp space over the 17 groups
        g12 = effects[:, :12] + c.education_effect * np.outer(z, GROUP_SKILL)
        g17 = g12[:, self.g12_of_g17]
        occ_rows, prev = rows[prev_occ], f.state[prev_occ]
        g17[occ_rows] += c.same_group12 * (self.g12_of_g17 == self.group12[prev][:, None])
        g17[occ_rows, self.group17[prev]] += c.same_group17
        out = np.empty((n, self.V))
        q = out[:, : self.n_occ]
        np.multiply(self.occ_weight[types], np.exp(g17 - g17.max(1, keepdims=True))[:, self.group17], out=q)
        q[occ_rows, prev] = 0.0
        can_return = (f.last_occupation >= 0) & (f.last_occupation != f.state)
        stay = (
            np.interp(f.age, BAND_CENTRES, self.stay_by_age)
            + c.duration_effect * log_d
            + c.education_stay * z
            - c.gap_effect * log_g
        )
        mix = (
            _softmax(
                np.stack(
                    [
                        np.where(prev_occ, stay, -np.inf),
                        np.where(can_return, np.where(prev_occ, c.return_logit, c.recall_logit), -np.inf),
                        np.zeros(n),
                    ],
                    1,
                )
            )
            * p_sector[:, :1]
        )
        q *= (mix[:, 2] / q.sum(1))[:, None]
        q[occ_rows, prev] += mix[prev_occ, 0]
        q[rows[can_return], f.last_occupation[can_return]] += mix[can_return, 1]
        out[:, self.n_occ :] = 0.0
        out[:, self.special] = p_sector[:, 1:]
        return out

    def sample(self, population: str, persons: int | None = None, *, seed: int | None = None) -> Population:
        """Generate ``population``; ``persons`` overrides its size, ``seed`` its random stream (default: by name)."""
        pop = self.config.populations[population]
        persons = pop.persons if persons is None else persons
        key = zlib.crc32(population.encode()) if seed is None else seed
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, 1, key]))
        types = rng.choice(len(self.type_names), size=persons, p=self.type_prior(population))
        statics, years = _draw_persons(pop, persons, rng)
        lengths = (years >= 0).sum(1)
        history = _History.empty(persons)
        age0 = years[:, 0] - statics["birth_year"]
        schooling = np.minimum(
            SCHOOL_YEARS[rng.choice(5, size=persons, p=_normalized(pop.education_shares))],
            np.maximum(age0 - 6, 0),
        )
        states = np.full(years.shape, -1, dtype=np.int16)
        levels = np.zeros(years.shape, dtype=np.int8)
        school = self.special[SECTORS.index("education") - 1]
        for t in range(years.shape[1]):
            rows = np.flatnonzero(lengths > t)
            for chunk in np.array_split(rows, max(1, len(rows) // 16384)):
                level = _level(schooling[chunk])
                f = history.features(chunk, years[chunk, t], level, statics)
                p = self.probs(f, types[chunk])
                state = _sample_rows(p, rng)
                states[chunk, t], levels[chunk, t] = state, level
                schooling[chunk] += state == school
                history.advance(chunk, state, years[chunk, t], self.n_occ)
        panel = _to_panel(population, statics, years, states, levels)
        return Population(population, panel, types)

    def _calibrate(self) -> np.ndarray:
        """Fit the occupation stay intercepts to :func:`switch_targets` by simulation."""
        c = self.config
        targets = switch_targets(c)
        self.stay_by_age = np.log((1 - targets) * (np.exp(c.return_logit) + 1) / targets)
        calibration = replace(c, populations={c.calibrate_on: c.populations[c.calibrate_on]})
        for _ in range(c.calibration_rounds):
            self.config = replace(calibration, stay_by_age=list(self.stay_by_age))
            sample = self.sample(c.calibrate_on, c.calibration_persons, seed=2**31)
            rates = np.clip(switch_rates_by_age(sample.panel)["switch_rate"].to_numpy(), 1e-3, 1 - 1e-3)
            self.stay_by_age = self.stay_by_age + np.nan_to_num(
                _logit(rates) - _logit(targets)
            )  # empty band: keep
        return self.stay_by_age


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _normalized(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def _level(schooling: np.ndarray) -> np.ndarray:
    """Years of schooling -> index into EDUCATION_LEVELS."""
    return np.searchsorted([12, 13, 16, 17], schooling, side="right").astype(np.int8)


def _sample_rows(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of a probability matrix (inverse CDF; zero-probability states are never drawn)."""
    cdf = np.cumsum(p, axis=1)
    u = (1.0 - rng.random(len(p))) * cdf[:, -1]
    return (cdf < u[:, None]).sum(1).astype(np.int16)


def _draw_persons(pop: PopulationConfig, n: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Covariates (codes; -1 unknown) and record years ([n, T], -1 padded, increasing per row)."""
    birth = rng.integers(pop.birth_years[0], pop.birth_years[1] + 1, n)
    if pop.demographics:
        sex, race = rng.integers(0, 2, n), rng.choice(3, n, p=RACE_SHARES)
        region = rng.choice(4, n, p=REGION_SHARES)
    else:
        sex = race = region = np.full(n, -1)
    first = np.clip(birth + rng.integers(pop.start_age[0], pop.start_age[1] + 1, n), *pop.years)
    last = np.minimum(first + rng.integers(pop.span[0], pop.span[1] + 1, n), pop.years[1])
    width = int((last - first).max()) + 1
    offsets = np.arange(width)
    keep = (rng.random((n, width)) < pop.observe_prob) & (offsets <= (last - first)[:, None])
    keep[:, 0] = True
    keep[np.arange(n), last - first] = True
    order = np.argsort(~keep, axis=1, kind="stable")  # kept offsets first, in increasing order
    years = np.where(np.take_along_axis(keep, order, 1), first[:, None] + order, -1)
    years = years[:, : int(keep.sum(1).max())]
    statics = {"birth_year": birth, "sex": sex, "race": race, "region": region, "cohort": (birth - 1960) / 10}
    return statics, years


def _to_panel(
    name: str, statics: dict, years: np.ndarray, states: np.ndarray, levels: np.ndarray
) -> CareerPanel:
    """Padded [n, T] arrays -> a CareerPanel with ids ``<name>-<0000000>`` (sorted like generation order)."""
    n = len(years)
    ids = np.array([f"{name}-{i:07d}" for i in range(n)], dtype=object)
    mask = years >= 0
    records = pd.DataFrame(
        {
            "person_id": np.repeat(ids, mask.sum(1)),
            "year": years[mask],
            "state": states[mask],
            "education": pd.Categorical.from_codes(levels[mask], categories=EDUCATION_LEVELS, ordered=True),
        }
    )

    def label(codes, names):
        return pd.array(np.where(codes >= 0, np.array(names, dtype=object)[codes], None), dtype="string")

    persons = pd.DataFrame(
        {
            "birth_year": statics["birth_year"],
            "sex": label(statics["sex"], SEXES),
            "race": label(statics["race"], RACES),
            "location": label(statics["region"], REGIONS),
        },
        index=pd.Index(ids, name="person_id"),
    )
    return make_panel(records, persons, name)


def switch_rates_by_age(panel: CareerPanel) -> pd.DataFrame:
    """Annual occupation switch rate by age band: consecutive-year record pairs both in an occupation."""
    r = panel.records
    n_occ = panel.vocab.num_occupations
    same_person = r["person_id"].to_numpy()[1:] == r["person_id"].to_numpy()[:-1]
    state, year = r["state"].to_numpy(), r["year"].to_numpy()
    pair = same_person & (year[1:] == year[:-1] + 1) & (state[1:] < n_occ) & (state[:-1] < n_occ)
    age = year[:-1] - panel.persons["birth_year"].reindex(r["person_id"]).to_numpy(dtype=float)[:-1]
    switched = state[1:] != state[:-1]
    rows = []
    for low, high, _, target in NLSY79_SWITCH_BY_AGE:
        in_band = pair & (age > low) & (age <= high)
        rate = switched[in_band].mean() if in_band.any() else np.nan
        rows.append(
            {
                "age_band": f"({low}, {high}]",
                "n_pairs": int(in_band.sum()),
                "switch_rate": rate,
                "nlsy79_raw": target,
            }
        )
    return pd.DataFrame(rows)


_WORLDS: dict[str, World] = {}  # built worlds by config (building one calibrates it)


def world_of(config: World | WorldConfig) -> World:
    """The world of ``config`` (built once per distinct config in this process)."""
    if isinstance(config, World):
        return config
    key = repr(config)
    if key not in _WORLDS:
        _WORLDS[key] = World(config)
    return _WORLDS[key]


def generate_population(
    population: str = "survey",
    persons: int | None = None,
    seed: int | None = None,
    config: WorldConfig | None = None,
) -> CareerPanel:
    """The panel of one population of the world ``config`` (default world; ``seed`` overrides its seed)."""
    config = config or WorldConfig()
    if population not in config.populations:
        raise ValueError(f"unknown population {population!r}; this world has {sorted(config.populations)}")
    if seed is not None:
        config = replace(config, seed=seed)
    return world_of(config).sample(population, persons).panel


def load_world_config(path: str | Path) -> WorldConfig:
    """Read a YAML file of :class:`WorldConfig` fields (such as ``world.yaml`` written by
    :func:`~lit_career.synthetic.command.synth_command`)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--world", type=WorldConfig)
    try:
        return parser.instantiate(
            parser.parse_object({"world": yaml.safe_load(Path(path).read_text())})
        ).world
    except Exception as err:  # jsonargparse reports type errors with several exception types
        raise InputError(
            f"not a synthetic world config ({str(err).splitlines()[0]})", file=str(path)
        ) from None
