"""``python -m lit_career forecast``: sample K futures of every test person after a cutoff and score them.

The recipe, top to bottom: read the row and its panel, split by person as the row runner does, cut the test
persons' careers at the cutoff, take the row's model (a finished row's fit, else fitted on the train split;
see :mod:`lit_career.forecast.models`), then sample shard after shard of persons and write each shard
atomically (a rerun continues with the first missing shard and draws what an uninterrupted run would have),
and finally score the futures against what happened. The folder holds:

* ``paths/part-*.parquet``: one row per person and path, ``state_<year>`` the drawn state of each forecast
  year (vocabulary indices);
* ``distributions/part-*.parquet``: per person and year, ``probs`` (the forecast distribution over the
  vocabulary, the paths' mean of the model's distribution given each path's past) and ``mc_se`` (its Monte
  Carlo standard error);
* ``groups/part-*.parquet``: the same forecasts summed into the groups of each grouping of the vocabulary
  (occ1990dd: ``group12`` and ``group17``, see :func:`~lit_career.forecast.metrics.groupings`) and the
  non-work states (``grouping``, ``category``, ``prob``);
* ``metrics.json``, ``by_year.csv``, ``shares.csv`` and the plots ``shares.png`` and ``by_year.png``
  (:mod:`lit_career.forecast.metrics`); ``forecast.json`` (the settings); but for LM rows and the oracle,
  ``model.safetensors`` (the fit) and ``model_origin.json`` (where it came from, also in ``metrics.json``).
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lit_career.errors import InputError
from lit_career.evaluation.report import log_to_wandb, save_figure
from lit_career.forecast.inputs import Education, cut, education_codes, forecast_years, realized_states
from lit_career.forecast.lm import LMForecaster
from lit_career.forecast.metrics import against_reference, by_year, categories, groupings, shares
from lit_career.forecast.models import forecaster
from lit_career.forecast.plots import horizon_figure, shares_figure
from lit_career.forecast.simulate import Futures, simulate
from lit_career.forecast.spec import ForecastSpec
from lit_career.io import write_file_atomic
from lit_career.panel.careers import CareerPanel, subsample_persons
from lit_career.panel.taxonomy import Vocabulary
from lit_career.runs.row import split_panels
from lit_career.sources import PanelSource


def forecast(
    row: Path | None = None,
    cutoff: int | None = None,
    horizon: int = 10,
    paths: int | None = None,
    seed: int = 0,
    education: Education = "hold",
    source: PanelSource | None = None,
    root: Path | None = None,
    max_persons: int | None = None,
    shard_persons: int = 20,
    part: int = 0,
    parts: int = 1,
    alpha: float = 0.01,
    level: float = 0.9,
    out_dir: Path | None = None,
    reference: Path | None = None,
    wandb: bool = False,
) -> dict:
    """Sample futures of each test person after the cutoff from the row's model, write them, score them.

    ``paths`` futures per person, with their forecast distributions (the files: see
    :mod:`lit_career.forecast.command`).

    Args:
        row: row file (``configs/rows/<dataset>/<row>.yaml``, required): the model, its settings, its panel and
            person split. Every row samples; an LM row must have run (its folder ``root/dataset/name``
            finished, see :mod:`lit_career.runs.finished`) and samples from that fit.
        cutoff: last year the forecast sees (required): each test person's records up to it are the history.
        horizon: forecast the panel's own survey years in (cutoff, cutoff + horizon].
        paths: sampled futures per person (K; default 1000, an LM row 20, see :data:`~lit_career.forecast.spec.PATHS`).
        seed: seed of the draws (each shard of persons has its own stream: a resumed run draws the same).
        education: in the forecast years: ``hold`` the last value before the cutoff, ``given`` the data's
            own, ``world`` the synthetic oracle's own schooling (the oracle only).
        source: panel to fit on and forecast (default: the row's; an LM row's: its corpus' one source).
        root: folder of the finished rows (default: the row's ``root``): a finished row's saved fit is used,
            an LM row must be finished there.
        max_persons: forecast this many of the test persons (a fixed sample), e.g. for a quick look.
        shard_persons: persons per shard: the unit written (atomically) and resumed.
        part: with ``parts``, sample only the shards ``k`` with ``k % parts == part``: run ``parts`` processes
            (one per core, or a SLURM array) on one folder; the last to finish scores. The model must need no
            fit (a finished row, an LM row, the oracle, or a fit a previous run saved in the folder).
        parts: the number of such processes.
        alpha: add-alpha smoothing of the count estimate of the log score, (count + alpha) / (paths + alpha V).
        level: level of the share intervals and of the groups' forecast sets.
        out_dir: output folder (default: ``outputs/forecasts/<dataset>/<row>_cutoff<cutoff>``).
        reference: folder of another forecast of the same persons and years (e.g. the synthetic oracle's): each
            share is also checked against its interval (``shares.csv``: ``inside_reference``; the plot: its band).
        wandb: also log the tables and plots to a W&B run (``WANDB_MODE=offline`` is honored).
    """
    config = ForecastSpec(**locals())
    row = config.row_spec()
    config = config.with_paths(row)
    finished = LMForecaster.load(row) if row.model == "lm" else None  # an incomplete row fails here
    panels, _ = split_panels(row)
    if finished is not None and config.source is None:
        finished.check_test_persons(panels["test"])
    years = forecast_years(panels["test"], config.cutoff, config.horizon)
    if config.reference is not None:
        _check_reference(Path(config.reference) / "shares.csv", years)
    test = subsample_persons(panels["test"], config.max_persons)
    history = cut(test, config.cutoff)
    if history.persons.empty:
        raise InputError(f"no test person has a record in or before {config.cutoff}", column="cutoff")
    folder = config.folder(row)
    _claim(folder / "forecast.json", config.settings(row))
    if finished is not None:
        model, origin = finished, f"finished row {finished.folder}"
    else:
        fit = config.parts == 1  # parallel processes would each fit it
        model, origin = forecaster(row, panels["train"], panels["valid"], folder, config.education, fit)
    print(f"forecast {row.dataset}/{row.name}: the model of {origin}")
    education = education_codes(test, history, years, "hold" if config.education == "hold" else "given")
    ids = history.persons.index
    shards = [ids[start : start + config.shard_persons] for start in range(0, len(ids), config.shard_persons)]
    mine = range(config.part, len(shards), config.parts)
    with tqdm(
        total=sum(len(shards[k]) for k in mine), unit="person", desc=f"{row.dataset}/{row.name}"
    ) as bar:
        for shard in mine:
            part, persons = _part(shard), shards[shard]
            if not (folder / "paths" / part).is_file():
                began = time.perf_counter()
                futures = simulate(
                    model.simulator(history.subset(persons), config.paths),
                    years,
                    education[ids.get_indexer(persons)],
                    config.paths,
                    np.random.default_rng([config.seed, shard]),
                )
                seconds = time.perf_counter() - began
                _write_shard(folder, part, persons, years, config.cutoff, futures, history.vocab, seconds)
            bar.update(len(persons))
    missing = [k for k in range(len(shards)) if not (folder / "paths" / _part(k)).is_file()]
    if missing:  # other parts still sampling: the last to finish scores
        print(
            f"{len(missing)} of {len(shards)} shards are another part's and not written yet; scored when they are"
        )
        return {"missing_shards": len(missing)}
    return score(folder, test, history, years, config, row.name, origin)


def _part(shard: int) -> str:
    """The file name of a shard's parts (in ``paths/``, ``distributions/``, ``groups/``)."""
    return f"part-{shard:05d}.parquet"


def _check_reference(file: Path, years: np.ndarray) -> None:
    """Refuse, before sampling, a reference forecast of other years."""
    theirs = sorted(int(y) for y in pd.read_csv(file, usecols=["year"])["year"].unique())
    if theirs != [int(y) for y in years]:
        raise InputError(
            f"the reference forecasts the years {theirs}, this forecast {[int(y) for y in years]}",
            file=str(file),
        )


def _claim(path: Path, settings: dict) -> None:
    """Record the settings of the folder's forecast; a folder begun with other settings is an error."""
    text = json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n"
    if path.is_file() and path.read_text() != text:
        raise InputError(
            "this folder holds a forecast with other settings: remove it or choose another out_dir",
            file=str(path),
        )
    write_file_atomic(path, lambda tmp: tmp.write_text(text))


def _write_shard(
    folder: Path,
    part: str,
    ids: pd.Index,
    years: np.ndarray,
    cutoff: int,
    futures: Futures,
    vocab: Vocabulary,
    seconds: float,
) -> None:
    """Write one shard's groups, distributions and paths (paths last: their file marks the shard done)."""
    persons, paths, horizon = futures.states.shape
    keys = {"person_id": np.repeat(ids.to_numpy(str), horizon), "year": np.tile(years, persons)}
    keys["horizon"] = keys["year"] - cutoff
    flat = futures.probs.reshape(persons * horizon, -1)
    frames = []
    for grouping in groupings(vocab) or [None]:
        groups = categories(vocab, grouping)
        probs = groups.of_probs(flat)
        frames.append(
            pd.DataFrame({k: np.repeat(v, len(groups.names)) for k, v in keys.items()}).assign(
                grouping=grouping or "none", category=np.tile(groups.names, len(flat)), prob=probs.ravel()
            )
        )
    _write(folder / "groups" / part, pa.Table.from_pandas(pd.concat(frames), preserve_index=False))
    distributions = pa.Table.from_pydict(keys)
    for name, values in (("probs", flat), ("mc_se", futures.mc_se.reshape(persons * horizon, -1))):
        column = pa.FixedSizeListArray.from_arrays(values.astype(np.float32).ravel(), values.shape[1])
        distributions = distributions.append_column(name, column)
    _write(folder / "distributions" / part, distributions)
    table = {"person_id": np.repeat(ids.to_numpy(str), paths), "path": np.tile(np.arange(paths), persons)}
    table |= {f"state_{year}": futures.states[:, :, h].ravel() for h, year in enumerate(years)}
    paths_table = pa.Table.from_pydict(table).replace_schema_metadata({"seconds": f"{seconds:.3f}"})
    _write(folder / "paths" / part, paths_table)


def _write(path: Path, table: pa.Table) -> None:
    write_file_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_futures(folder: Path, years: np.ndarray, paths: int) -> tuple[Futures, float]:
    """The futures of every shard of ``folder``, and the seconds their sampling took."""
    parts = sorted((Path(folder) / "paths").glob("part-*.parquet"))
    tables = [pq.read_table(path) for path in parts]
    states = np.concatenate(
        [np.stack([t[f"state_{year}"].to_numpy() for year in years], -1) for t in tables]
    ).reshape(-1, paths, len(years))
    seconds = sum(float(t.schema.metadata[b"seconds"]) for t in tables)
    arrays = []
    for name in ("probs", "mc_se"):
        column = pa.concat_arrays(
            [
                pq.read_table(Path(folder) / "distributions" / p.name, columns=[name])[name].combine_chunks()
                for p in parts
            ]
        )
        arrays.append(column.flatten().to_numpy().reshape(len(states), len(years), column.type.list_size))
    return Futures(states, *arrays), seconds


def score(
    folder: Path,
    test: CareerPanel,
    history: CareerPanel,
    years: np.ndarray,
    config: ForecastSpec,
    name: str,
    origin: str,
) -> dict:
    """Score the futures in ``folder`` against ``test``'s records; write the tables, plots and ``metrics.json``."""
    futures, seconds = read_futures(folder, years, config.paths)
    realized = realized_states(test, history, years)
    last = history.records.groupby("person_id", sort=False)["state"].last().to_numpy(np.int64)
    table = by_year(
        futures.states,
        futures.probs,
        futures.mc_se,
        realized,
        last,
        years,
        config.cutoff,
        test.vocab,
        alpha=config.alpha,
        level=config.level,
    )
    share = shares(futures.states, futures.probs, realized, years, test.vocab, level=config.level)
    if config.reference is not None:
        file = Path(config.reference) / "shares.csv"
        share = against_reference(share, pd.read_csv(file), str(file))
    for file, frame in (("by_year.csv", table), ("shares.csv", share)):
        write_file_atomic(folder / file, partial(frame.to_csv, index=False))
    title = f"{name}: cut after {config.cutoff}, {futures.states.shape[1]} paths per person"
    images = {"shares": folder / "shares.png", "by_year": folder / "by_year.png"}
    save_figure(shares_figure(share, title, config.level), images["shares"])
    save_figure(horizon_figure(table, title, config.level), images["by_year"])
    if config.wandb:
        plots = {f"{name}_plot": path for name, path in images.items()}  # a table and a plot: two keys
        log_to_wandb({"by_year": table, "shares": share}, plots, "lit_career", section="forecast")
    vocab = test.vocab
    no_job = share[share["category"] == vocab.titles[vocab.special("no_job")]]
    metrics = {
        "row": name,
        "model": origin,
        "cutoff": config.cutoff,
        "years": [int(y) for y in years],
        "persons": int(futures.states.shape[0]),
        "paths": int(futures.states.shape[1]),
        "education": config.education,
        "alpha": config.alpha,
        "level": config.level,
        "sample_seconds": round(seconds, 1),
        "shares_inside": float(share["inside"].mean()),
        "no_job_inside": bool(no_job["inside"].all()),
    }
    if config.reference is not None:
        metrics |= {
            "reference": str(config.reference),
            "shares_inside_reference": float(share["inside_reference"].mean()),
            "no_job_inside_reference": bool(no_job["inside_reference"].all()),
        }
    metrics |= {
        "by_year": table.to_dict(orient="records"),
    }
    text = json.dumps(metrics, indent=2, default=float) + "\n"
    write_file_atomic(folder / "metrics.json", lambda tmp: tmp.write_text(text))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"shares inside their {config.level:.0%} intervals: {metrics['shares_inside']:.3f}")
    if config.reference is not None:
        inside = no_job.loc[no_job["inside_reference"], "year"].tolist()
        print(
            f"no-job share inside the reference's interval in {len(inside)} of {len(no_job)} years: {inside}"
        )
    print(f"wrote {folder}")
    return metrics
