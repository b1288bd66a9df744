"""The world's exact oracle.

:func:`oracle_log_probs` evaluates the same function the generator samples from
(:meth:`~lit_career.synthetic.world.World.probs`) for every record, and marginalizes the latent type
with an exact Bayes filter: P(s_t | observed history) = sum_k P(k | s_0..s_{t-1}, x) P(s_t | history, k).
This is the best any model that sees the panel can do; passing the true ``types`` gives the
type-conditional version.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lit_career.panel.careers import CareerPanel
from lit_career.synthetic.world import RACES, REGIONS, SEXES, World, WorldConfig, _History, world_of


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
    world = world_of(world)
    name = population or panel.source
    if name not in world.config.populations:
        raise ValueError(f"panel source {name!r} is not a population of this world: pass population=")
    r = panel.records
    unmapped = (r["state"].to_numpy() == panel.vocab.special("unmapped")).any()
    if unmapped or r["education"].isna().any() or panel.persons["birth_year"].isna().any():
        raise ValueError(
            "the oracle needs a synthetic panel: education on every record, birth years, no unmapped state"
        )
    code, ids = pd.factorize(r["person_id"])
    pos = r.groupby(code).cumcount().to_numpy()
    persons = panel.persons.loc[ids]
    statics = {
        "birth_year": persons["birth_year"].to_numpy(dtype=np.int64),
        "sex": _codes(persons["sex"], SEXES),
        "race": _codes(persons["race"], RACES),
        "region": _codes(persons["location"], REGIONS),
    }
    statics["cohort"] = (statics["birth_year"] - 1960) / 10
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
    for block in np.array_split(np.arange(len(ids)), max(1, len(ids) // chunk)):
        local = {key: values[block] for key, values in statics.items()}
        history = _History.empty(len(block))
        log_w = (
            np.tile(np.log(world.type_prior(name)), (len(block), 1))
            if types is None
            else np.zeros((len(block), 1))
        )
        for t in range(shape[1]):
            rows = np.flatnonzero(years[block, t] >= 0)  # records start at position 0: none left means done
            if len(rows) == 0:
                break
            g = block[rows]
            f = history.features(rows, years[g, t], levels[g, t], local).take(
                np.repeat(np.arange(len(rows)), k)
            )
            p = world.probs(f, np.tile(np.arange(k), len(rows)) if types is None else fixed[g])
            p = p.reshape(len(rows), k, world.V)
            w = np.exp(log_w[rows] - log_w[rows].max(1, keepdims=True))
            with np.errstate(divide="ignore"):
                out[record[g, t]] = np.log(np.einsum("nk,nkv->nv", w / w.sum(1, keepdims=True), p))
            log_w[rows] += np.log(p[np.arange(len(rows)), :, states[g, t]])
            history.advance(rows, states[g, t], years[g, t], world.n_occ)
    return out


def _codes(values: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    """Covariate codes (-1 unknown); ``_`` reads as a space, as after a round trip through the CAREER format."""
    return pd.Categorical(values.str.replace("_", " "), categories=names).codes.astype(np.int64)
