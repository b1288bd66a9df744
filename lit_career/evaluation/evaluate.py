"""``python -m lit_career evaluate``: one table of finished runs scored on the same transitions, with plots.

Each run is a run directory (holding one ``predictions_<split>.parquet``, directly or below it) or a
prediction file; globs are expanded. A row is named by the model name stored in the file, or, when two
runs share it, by the run directory's name. Every row must score exactly the same transitions
(person, year, realized state) of the split; otherwise the first run that differs is named. Metrics
come from :func:`~lit_career.evaluation.metrics.evaluate_predictions`; a run's ``metrics.json`` (written
by ``python -m lit_career row``) adds its size and timing columns. The output folder is checked for
writing before any run is read; every table and plot is written atomically.

Each row is also set against a reference row (by default the CAREER row): ``ppl_ratio`` is its
``ppl_all`` over the reference's, ``ratio_lo``/``ratio_hi`` a 95% interval from a paired bootstrap over
persons (:func:`paired_bootstrap`), and ``vs_<reference>`` says ``win`` (interval below 1), ``loss``
(above 1) or ``tie``.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lit_career.errors import InputError
from lit_career.evaluation.metrics import evaluate_predictions, reliability_curve, select_split
from lit_career.evaluation.report import (
    comparison_table,
    log_to_wandb,
    reliability_figure,
    save_figure,
    subgroup_figure,
    subgroup_table,
    write_csv,
    write_table,
)
from lit_career.io import check_writable, read_json
from lit_career.panel.predictions import Predictions

TRANSITION_KEY = ["person_id", "year", "state"]
RUN_INFO = ("parameters", "epochs", "fit_seconds")
"""Columns taken from a run's ``metrics.json`` when present."""


def evaluate(
    runs: list[Path],
    out_dir: Path = Path("outputs/evaluation"),
    split: str | None = "test",
    wandb: bool = False,
    wandb_project: str = "lit_career",
    reference: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Score finished runs on one split and write, under ``out_dir``, the table ``metrics.md``/``.csv``,
    ``subgroups.csv`` and the plots ``perplexity.png``, ``reliability.png``, ``perplexity_by_subgroup.png``.

    Args:
        runs: run directories or prediction files (globs allowed).
        out_dir: folder for the tables and plots.
        split: split whose transitions are scored (``test`` or ``valid``; ``None``: every transition of
            prediction files).
        wandb: also log the tables and plots to a W&B run (``WANDB_MODE=offline`` is honored).
        wandb_project: W&B project of that run.
        reference: row the perplexity ratios are taken to; ``None``: the CAREER row (``career``, else
            the first row whose name starts with ``career``), and no ratio columns when there is none.
        bootstrap: number of paired bootstrap resamples over persons for the ratio intervals.
        seed: seed of the bootstrap resampling.
    """
    if not runs:
        raise InputError("no runs given")
    if bootstrap < 1:
        raise InputError(f"bootstrap must be at least 1, not {bootstrap}")
    out_dir = check_writable(out_dir)
    found = prediction_files(runs, split)
    loaded = [(path, _read(path, split)) for _, path in found]
    check_same_vocabulary(loaded)
    orders = check_same_transitions(loaded)
    names = _row_names([run for run, _ in found], [pred.model for _, pred in loaded])
    models = {name: pred for name, (_, pred) in zip(names, loaded, strict=True)}
    table = _metrics_table(found, models)
    ref = reference_row(names, reference)
    if ref is not None:
        table = _with_ratios(table, loaded, orders, ref, bootstrap, seed)
    note = ""
    if ref is not None:
        note = (
            f"ppl_ratio: ppl_all over {names[ref]}'s; 95% interval from {bootstrap} paired bootstrap "
            f"resamples of persons (seed {seed})."
        )
    markdown, _ = write_table(table, out_dir, "metrics", note)
    print(markdown.read_text(), end="")
    subgroups = subgroup_table(models, None)
    write_csv(subgroups, out_dir / "subgroups.csv")
    images = _plots(table, models, subgroups, split, out_dir)
    if wandb:
        log_to_wandb({"metrics": table.reset_index(), "subgroups": subgroups}, images, wandb_project)
    return table


def _metrics_table(found: list[tuple[Path, Path]], models: dict[str, Predictions]) -> pd.DataFrame:
    """One row per model: its metrics, the run's size and timing from ``metrics.json``, and the run."""
    rows = {
        name: {**evaluate_predictions(pred), **run_info(run / "metrics.json")}
        for (run, _), (name, pred) in zip(found, models.items(), strict=True)
    }
    table = comparison_table(rows)
    for column in ("parameters", "epochs"):
        if column in table:
            table[column] = pd.Series(
                [v if np.isnan(v) else int(v) for v in table[column]], table.index, object
            )
    table.insert(0, "run", [str(run) for run, _ in found])
    return table


def run_info(path: Path) -> dict[str, float]:
    """The :data:`RUN_INFO` numbers a run's ``metrics.json`` holds (none when there is no such file); an
    :class:`InputError` naming the file, and the key, when it is not a JSON object of numbers there."""
    if not path.is_file():
        return {}
    info = read_json(path)
    if not isinstance(info, dict):
        raise InputError(
            f"expected a JSON object (a row's record), got {type(info).__name__}", file=str(path)
        )
    for key in RUN_INFO:
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InputError(f"{key!r} must be a number or null, not {value!r}", file=str(path))
    return {k: info[k] for k in RUN_INFO if info.get(k) is not None}


def _plots(
    table: pd.DataFrame,
    models: dict[str, Predictions],
    subgroups: pd.DataFrame,
    split: str | None,
    out_dir: Path,
) -> dict[str, Path]:
    """Perplexity bars, reliability diagrams and perplexity by subgroup, saved as PNGs under ``out_dir``."""
    curves = {
        (name, task): reliability_curve(pred, task=task)
        for name, pred in models.items()
        for task in ("top_label", "switch")
    }
    return {
        "perplexity": save_figure(perplexity_figure(table, split), out_dir / "perplexity.png"),
        "reliability": save_figure(reliability_figure(curves), out_dir / "reliability.png"),
        "perplexity_by_subgroup": save_figure(
            subgroup_figure(subgroups), out_dir / "perplexity_by_subgroup.png"
        ),
    }


def prediction_files(runs: list[Path], split: str | None) -> list[tuple[Path, Path]]:
    """(run directory, prediction file) of each run: a file (its folder is the run directory), or a run
    directory and its ``predictions_<split>.parquet`` (a split is needed to find it)."""
    files = []
    for pattern in map(str, runs):
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError("no run matches this pattern", file=pattern)
        for path in map(Path, matches):
            if path.is_file():
                files.append((path.parent, path))
            elif path.is_dir() and split is None:
                raise InputError("a run directory needs a split to find its predictions", file=str(path))
            elif path.is_dir():
                found = [path / f"predictions_{split}.parquet"]
                found = found if found[0].is_file() else sorted(path.rglob(f"predictions_{split}.parquet"))
                if len(found) != 1:
                    what = "no" if not found else f"{len(found)}"
                    raise InputError(
                        f"{what} predictions_{split}.parquet in this run directory", file=str(path)
                    )
                files.append((path, found[0]))
            else:
                raise InputError("run not found", file=str(path))
    return files


def check_same_vocabulary(loaded: list[tuple[Path, Predictions]]) -> None:
    """Raise :class:`InputError` naming the first run whose predictions are over another vocabulary than the
    first run's, and both vocabularies."""
    first_path, first = loaded[0]
    for path, pred in loaded[1:]:
        if pred.vocabulary_identity != first.vocabulary_identity:
            raise InputError(
                f"predictions over the vocabulary {pred.vocabulary_identity}, but {first_path} is over "
                f"{first.vocabulary_identity}; compare rows over one vocabulary",
                file=str(path),
            )


def check_same_transitions(loaded: list[tuple[Path, Predictions]]) -> list[np.ndarray]:
    """Raise :class:`InputError` naming the first run whose transitions differ from the first run's; else
    each run's row positions in key order (the same transition at the same place in every run)."""
    first_path, first = loaded[0]
    first_keys = _keys(first)
    reference = first_keys.reset_index(drop=True)
    orders = [first_keys.index.to_numpy()]
    for path, pred in loaded[1:]:
        sorted_keys = _keys(pred)
        orders.append(sorted_keys.index.to_numpy())
        keys = sorted_keys.reset_index(drop=True)
        if not keys.equals(reference):
            merged = reference.merge(keys, how="outer", indicator=True)
            missing, extra = (int((merged["_merge"] == side).sum()) for side in ("left_only", "right_only"))
            raise InputError(
                f"scores other transitions than {first_path} ({len(keys)} vs {len(reference)}: "
                f"{missing} of those missing, {extra} not among them); compare runs on the same panel and split",
                file=str(path),
            )
    return orders


def reference_row(names: list[str], reference: str | None) -> int | None:
    """Position of the row named ``reference``; for ``None`` the CAREER row (``career``, else the first
    name starting with ``career``) or ``None`` when there is none."""
    if reference is None:
        career = [n for n in names if n == "career"] or [n for n in names if n.startswith("career")]
        return names.index(career[0]) if career else None
    if reference not in names:
        raise InputError(f"no row named {reference!r} to compare against; rows: {', '.join(names)}")
    return names.index(reference)


def paired_bootstrap(
    nll: np.ndarray, persons: np.ndarray, reference: int, resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Perplexity ratio of each row of ``nll`` (rows x transitions) to row ``reference``, with a 95%
    percentile interval from a paired bootstrap over persons.

    ``persons`` labels each transition's person. A resample draws persons with replacement and weights
    each transition by how often its person was drawn; its ratio is exp(weighted mean NLL difference).
    Returns one row per ``nll`` row: ``ppl_ratio`` (exp of the mean difference), ``ratio_lo``, ``ratio_hi``.
    """
    diff = nll - nll[reference]
    _, person = np.unique(persons, return_inverse=True)
    n = person.max() + 1
    sums = np.stack([np.bincount(person, d, n) for d in diff])  # rows x persons
    counts = np.bincount(person, minlength=n)
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), resamples)  # resamples x persons
    ratios = np.exp((draws @ sums.T) / (draws @ counts)[:, None])
    lo, hi = np.percentile(ratios, [2.5, 97.5], axis=0)
    return pd.DataFrame({"ppl_ratio": np.exp(diff.mean(axis=1)), "ratio_lo": lo, "ratio_hi": hi})


def perplexity_figure(table: pd.DataFrame, split: str | None) -> Figure:
    """Grouped bars: perplexity over all transitions, movers and stayers, one group per model (log scale)."""
    columns = {"ppl_all": "all", "ppl_movers": "movers", "ppl_stayers": "stayers"}
    fig = Figure(figsize=(max(6.0, 1.2 * len(table) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(columns)
    x = np.arange(len(table))
    for i, (column, label) in enumerate(columns.items()):
        bars = ax.bar(x + (i - 1) * width, table[column], width, label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize="x-small")
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set(
        yscale="log",
        ylabel="perplexity (log scale)",
        title=f"Perplexity on the {split} split" if split else "Perplexity",
    )
    ax.legend(fontsize="small")
    return fig


def _read(path: Path, split: str | None) -> Predictions:
    try:
        return select_split(Predictions.read(path), split)
    except InputError:
        raise
    except (ValueError, OSError) as err:
        raise InputError(str(err).splitlines()[0], file=str(path)) from err


def _with_ratios(
    table: pd.DataFrame,
    loaded: list[tuple[Path, Predictions]],
    orders: list[np.ndarray],
    ref: int,
    resamples: int,
    seed: int,
) -> pd.DataFrame:
    """``table`` with :func:`paired_bootstrap`'s columns and ``vs_<reference>`` after ``ppl_all``; ``orders``
    aligns the runs' transitions (:func:`check_same_transitions`)."""
    nll = -np.stack(
        [pred.realized_log_prob()[order] for (_, pred), order in zip(loaded, orders, strict=True)]
    )
    nll = nll.astype(np.float64)
    ratios = paired_bootstrap(nll, _persons(loaded, orders), ref, resamples, seed).set_index(table.index)
    verdict = np.select([ratios["ratio_hi"] < 1, ratios["ratio_lo"] > 1], ["win", "loss"], "tie")
    ratios[f"vs_{table.index[ref]}"] = np.where(np.arange(len(table)) == ref, "reference", verdict)
    at = table.columns.get_loc("ppl_all") + 1
    return pd.concat([table.iloc[:, :at], ratios, table.iloc[:, at:]], axis=1)


def _persons(loaded: list[tuple[Path, Predictions]], orders: list[np.ndarray]) -> np.ndarray:
    """Person of each aligned transition: (source, person_id) when a run records sources, else person_id."""
    i = next((i for i, (_, pred) in enumerate(loaded) if "source" in pred.table), 0)
    table = loaded[i][1].table.iloc[orders[i]]
    key = ["source", "person_id"] if "source" in table else ["person_id"]
    return table.groupby(key, sort=False, dropna=False).ngroup().to_numpy()


def _keys(pred: Predictions) -> pd.DataFrame:
    """The transition keys, sorted; the index holds each key's row position in ``pred``."""
    keys = pred.table[TRANSITION_KEY].astype({"person_id": str, "year": np.int64, "state": np.int64})
    return keys.reset_index(drop=True).sort_values(TRANSITION_KEY)


def _row_names(run_dirs: list[Path], models: list[str]) -> list[str]:
    """Model names, replaced by run directory names where models share a name; all must differ."""
    names = [
        m if models.count(m) == 1 else run.resolve().name for run, m in zip(run_dirs, models, strict=True)
    ]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"two runs are both called {repeated[0]!r}: give each its own run directory name")
    return names
