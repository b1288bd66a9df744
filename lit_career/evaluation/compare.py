"""``python -m lit_career compare``: one table of finished runs, scored on the same transitions.

Each run is a run directory (holding one ``predictions_<split>.parquet``, directly or below it) or a
prediction file; globs are expanded. A row is named by the model name stored in the file, or, when two
runs share it, by the run directory's name. Every row must score exactly the same transitions
(person, year, realized state) of the split; otherwise the first run that differs is named. Metrics
come from :func:`~lit_career.evaluation.metrics.evaluate_predictions`; a run's ``metrics.json`` (written
by ``python -m lit_career baseline``) adds its size and timing columns.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lit_career.errors import InputError
from lit_career.evaluation.metrics import evaluate_predictions, select_split
from lit_career.evaluation.predictions import Predictions
from lit_career.evaluation.report import comparison_table, log_to_wandb, save_figure, write_table

TRANSITION_KEY = ["person_id", "year", "state"]
RUN_INFO = ("parameters", "epochs", "fit_seconds")
"""Columns taken from a run's ``metrics.json`` when present."""


def compare(
    runs: list[Path],
    out_dir: Path = Path("outputs/compare"),
    split: str = "test",
    wandb: bool = False,
    wandb_project: str = "lit_career",
) -> pd.DataFrame:
    """Score finished runs on one split and write ``compare.md``, ``compare.csv`` and ``perplexity.png``.

    Args:
        runs: run directories or prediction files (globs allowed).
        out_dir: folder for the table and the plot.
        split: split whose transitions are scored (``test`` or ``valid``).
        wandb: also log the table and the plot to a W&B run (``WANDB_MODE=offline`` is honored).
        wandb_project: W&B project of that run.
    """
    if not runs:
        raise InputError("no runs given")
    found = prediction_files(runs, split)
    loaded = [(path, _read(path, split)) for _, path in found]
    check_same_transitions(loaded)
    names = _row_names([run for run, _ in found], [pred.model for _, pred in loaded])
    rows = {}
    for (run, _), (_, pred), name in zip(found, loaded, names, strict=True):
        info = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        rows[name] = {**evaluate_predictions(pred), **{k: info[k] for k in RUN_INFO if info.get(k) is not None}}
    table = comparison_table(rows)
    for column in ("parameters", "epochs"):
        if column in table:
            table[column] = pd.Series([v if np.isnan(v) else int(v) for v in table[column]], table.index, object)
    table.insert(0, "run", [str(run) for run, _ in found])
    out_dir = Path(out_dir)
    markdown, _ = write_table(table, out_dir, "compare")
    print(markdown.read_text(), end="")
    image = save_figure(perplexity_figure(table, split), out_dir / "perplexity.png")
    if wandb:
        log_to_wandb({"compare": table.reset_index()}, {"perplexity": image}, wandb_project)
    return table


def prediction_files(runs: list[Path], split: str) -> list[tuple[Path, Path]]:
    """(run directory, prediction file) of each run: a file (its folder is the run directory), or a run
    directory and its ``predictions_<split>.parquet``."""
    files = []
    for pattern in map(str, runs):
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError("no run matches this pattern", file=pattern)
        for path in map(Path, matches):
            if path.is_file():
                files.append((path.parent, path))
            elif path.is_dir():
                found = [path / f"predictions_{split}.parquet"]
                found = found if found[0].is_file() else sorted(path.rglob(f"predictions_{split}.parquet"))
                if len(found) != 1:
                    what = "no" if not found else f"{len(found)}"
                    raise InputError(f"{what} predictions_{split}.parquet in this run directory", file=str(path))
                files.append((path, found[0]))
            else:
                raise InputError("run not found", file=str(path))
    return files


def check_same_transitions(loaded: list[tuple[Path, Predictions]]) -> None:
    """Raise :class:`InputError` naming the first run whose transitions differ from the first run's."""
    first_path, first = loaded[0]
    reference = _keys(first)
    for path, pred in loaded[1:]:
        keys = _keys(pred)
        if not keys.equals(reference):
            merged = reference.merge(keys, how="outer", indicator=True)
            missing, extra = (int((merged["_merge"] == side).sum()) for side in ("left_only", "right_only"))
            raise InputError(
                f"scores other transitions than {first_path} ({len(keys)} vs {len(reference)}: "
                f"{missing} of those missing, {extra} not among them); compare runs on the same panel and split",
                file=str(path),
            )


def perplexity_figure(table: pd.DataFrame, split: str) -> Figure:
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
    ax.set(yscale="log", ylabel="perplexity (log scale)", title=f"Perplexity on the {split} split")
    ax.legend(fontsize="small")
    return fig


def _read(path: Path, split: str) -> Predictions:
    try:
        return select_split(Predictions.read(path), split)
    except (ValueError, OSError) as err:
        raise InputError(str(err).splitlines()[0], file=str(path)) from err


def _keys(pred: Predictions) -> pd.DataFrame:
    keys = pred.table[TRANSITION_KEY].astype({"person_id": str, "year": np.int64, "state": np.int64})
    return keys.sort_values(TRANSITION_KEY, ignore_index=True)


def _row_names(run_dirs: list[Path], models: list[str]) -> list[str]:
    """Model names, replaced by run directory names where models share a name; all must differ."""
    names = [m if models.count(m) == 1 else run.resolve().name for run, m in zip(run_dirs, models, strict=True)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"two runs are both called {repeated[0]!r}: give each its own run directory name")
    return names
