"""The pieces of the evaluation report (:mod:`lit_career.evaluation.evaluate`): one table row per model,
Markdown/CSV files and PNG plots (each written atomically), and W&B logging. Plots use matplotlib's object
API (``Figure``, rendered by Agg), so no GUI backend or pyplot state is involved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lit_career.evaluation.metrics import (
    SUBGROUPS,
    subgroup_perplexity,
)
from lit_career.io import write_file_atomic, write_text_atomic
from lit_career.panel.predictions import Predictions

# Headline metrics first; any other metric follows in the order the rows give it.
COLUMN_ORDER = (
    "n_transitions",
    "ppl_all",
    "ppl_all_excl_first",
    "ppl_movers",
    "ppl_stayers",
    "top1",
    "top5",
    "switch_auc",
    "switch_nll",
    "employed_auc",
    "employed_nll",
    "ece",
    "switch_ece",
)


def subgroup_table(models: Mapping[str, Predictions], split: str | None) -> pd.DataFrame:
    """Long table of :func:`subgroup_perplexity` for every model and every variable its table has."""
    frames = [
        subgroup_perplexity(pred, by, split=split)
        .rename_axis("group")
        .reset_index()
        .assign(model=name, variable=by)
        for name, pred in models.items()
        for by, column in SUBGROUPS.items()
        if column in pred.table
    ]
    columns = ["model", "variable", "group", "n", "ppl", "n_excl_first", "ppl_excl_first"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def comparison_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per model (index ``model``), headline metric columns first."""
    table = pd.DataFrame.from_dict({name: dict(row) for name, row in rows.items()}, orient="index")
    known = [c for c in COLUMN_ORDER if c in table]
    table = table[known + [c for c in table.columns if c not in known]]
    return table.rename_axis("model")


def write_table(df: pd.DataFrame, out_dir: Path, name: str, note: str = "") -> tuple[Path, Path]:
    """Write ``df`` (index included) as ``name.md`` (then ``note``) and ``name.csv``, each atomically; return
    both paths."""
    frame = df.reset_index() if df.index.name else df
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    lines += ["", note] if note else []
    markdown = write_text_atomic(Path(out_dir) / f"{name}.md", "\n".join(lines) + "\n")
    return markdown, write_csv(df, Path(out_dir) / f"{name}.csv", index=bool(df.index.name))


def write_csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    """Write ``df`` as CSV to ``path`` atomically."""
    return write_file_atomic(path, lambda tmp: df.to_csv(tmp, index=index))


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def reliability_figure(curves: Mapping[tuple[str, str], pd.DataFrame]) -> Figure:
    """Reliability diagrams (top-label and switch), every model overlaid on the diagonal."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    titles = {"top_label": "Top-label calibration", "switch": "P(switch occupation) calibration"}
    for ax, (task, title) in zip(fig.subplots(1, 2), titles.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
        for (model, curve_task), curve in curves.items():
            if curve_task == task:
                filled = curve[curve["count"] > 0]
                ax.plot(filled["confidence"], filled["accuracy"], marker="o", label=model)
        ax.set(
            title=title, xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1)
        )
        ax.legend(fontsize="small")
    return fig


def subgroup_figure(subgroups: pd.DataFrame) -> Figure:
    """One panel per subgroup variable: grouped bars of perplexity per group, one bar per model."""
    variables = list(dict.fromkeys(subgroups["variable"]))
    fig = Figure(figsize=(5 * max(len(variables), 1), 4.5), layout="constrained")
    for ax, variable in zip(np.atleast_1d(fig.subplots(1, max(len(variables), 1))), variables, strict=False):
        rows = subgroups[subgroups["variable"] == variable]
        groups = list(dict.fromkeys(rows["group"]))
        models = list(dict.fromkeys(rows["model"]))
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            values = rows[rows["model"] == model].set_index("group")["ppl"].reindex(groups)
            ax.bar(np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width, values, width, label=model)
        ax.set_xticks(np.arange(len(groups)), groups, rotation=45, ha="right")
        ax.set(title=f"Perplexity by {variable}", ylabel="perplexity")
        ax.legend(fontsize="small")
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` to ``path`` atomically, in the format its suffix names."""
    return write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix[1:]))


def log_to_wandb(
    tables: Mapping[str, pd.DataFrame], images: Mapping[str, Path], project: str, section: str = "evaluation"
) -> None:
    """Log tables (``wandb.Table``) and images (``wandb.Image``) under ``<section>/`` to a new run (job type
    ``section``)."""
    import wandb

    # WANDB_DIR is read now, not when wandb was first set up in this process; a run still open in this
    # process (a fit's logger) is left alone instead of being returned and written into
    with wandb.init(
        project=project, job_type=section, dir=os.environ.get("WANDB_DIR"), reinit="create_new"
    ) as run:
        payload = {f"{section}/{name}": wandb.Table(dataframe=df) for name, df in tables.items()}
        payload |= {f"{section}/{name}": wandb.Image(str(path)) for name, path in images.items()}
        run.log(payload)
