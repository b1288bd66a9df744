"""Forecast plots (matplotlib's object API, PNG): aggregate shares with their intervals, and metrics by horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def shares_figure(shares: pd.DataFrame, title: str, level: float) -> Figure:
    """One panel per category the data realize or the forecast gives 0.5% in some year: the forecast share,
    its interval over the paths, the realized share, and a reference forecast's interval when ``shares`` has it."""
    seen = shares.groupby("category", sort=False)[["forecast", "realized"]].max()
    names = list(seen.index[(seen["realized"] > 0) | (seen["forecast"] >= 0.005)])
    columns = 6
    fig = Figure(figsize=(3.2 * columns, 2.6 * -(-len(names) // columns)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(-(-len(names) // columns), columns, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        rows = shares[shares["category"] == name]
        ax.fill_between(rows["year"], rows["low"], rows["high"], alpha=0.3, label=f"{level:.0%} interval")
        if "low_reference" in rows:
            band = (rows["year"], rows["low_reference"], rows["high_reference"])
            ax.fill_between(
                *band, facecolor="none", edgecolor="grey", hatch="///", label="reference's interval"
            )
        ax.plot(rows["year"], rows["forecast"], label="forecast")
        ax.plot(rows["year"], rows["realized"], "o", color="black", markersize=3, label="realized")
        ax.set_title(name, fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    fig.suptitle(title)
    return fig


def horizon_figure(by_year: pd.DataFrame, title: str, level: float) -> Figure:
    """Log score (with twice its Monte Carlo error), the AUCs and the coverage of the group sets, by year."""
    rows = by_year[by_year["year"] != "all"]
    years = rows["year"].astype(int)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    score, aucs, coverage = fig.subplots(1, 3)
    score.errorbar(years, rows["log_score"], yerr=2 * rows["log_score_se"], marker="o", label="path average")
    score.plot(years, rows["log_score_counts"], marker="x", linestyle=":", label="path counts (add-alpha)")
    score.set(title="Log score of the realized state", xlabel="year")
    score.legend(fontsize="small")
    aucs.plot(years, rows["no_job_auc"], marker="o", label="no job reported")
    aucs.plot(years, rows["switch_auc"], marker="o", label="switch from the last state")
    aucs.set(title="AUC", xlabel="year")
    aucs.legend(fontsize="small")
    coverage.plot(years, rows["coverage"], marker="o")
    coverage.axhline(level, color="grey", linestyle="--")
    coverage.set(title=f"Realized group in the {level:.0%} forecast set", xlabel="year", ylim=(0, 1))
    fig.suptitle(title)
    return fig
