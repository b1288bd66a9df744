"""``python -m lit_career prepare``: read a panel, write its resume corpus, print a summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lit_career.data.panel import CareerPanel, assign_splits
from lit_career.data.resume import ResumeTemplate, render_panel
from lit_career.data.sources import PanelSource


def summarize(panel: CareerPanel, transitions: pd.DataFrame) -> dict:
    """Persons, person-years, transitions, switch rate, special-state shares and vocabulary coverage."""
    vocab = panel.vocab
    states = panel.records["state"].to_numpy()
    both_jobs = (transitions["prev_state"] >= 0) & (transitions["prev_state"] < vocab.num_occupations)
    both_jobs &= transitions["state"] < vocab.num_occupations
    switch = (transitions["state"] != transitions["prev_state"])[both_jobs]
    special = vocab.table[vocab.table["is_special"]]
    return {
        "source": panel.source,
        "persons": len(panel.persons),
        "person_years": len(panel.records),
        "transitions": int((transitions["prev_state"] >= 0).sum()),
        "first_years": int((transitions["prev_state"] < 0).sum()),
        "occupation_switch_rate": float(switch.mean()) if len(switch) else float("nan"),
        "special_state_shares": {
            row.key: float(np.mean(states == idx)) for idx, row in zip(special.index, special.itertuples(), strict=True)
        },
        "occupations_seen": f"{len(np.unique(states[states < vocab.num_occupations]))} of {vocab.num_occupations}",
        "splits": panel.persons["split"].value_counts().to_dict() if "split" in panel.persons else {},
        "removed_by_policy": dict(panel.removed),
    }


def format_summary(summary: dict) -> str:
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return "\n".join(lines)


def prepare(
    source: PanelSource | None = None,
    template: ResumeTemplate | None = None,
    out_dir: Path = Path("data_cache/prepared"),
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
) -> dict:
    """Read a panel, split it by person, render resumes and write them.

    Writes ``texts.parquet`` (person_id, split, text), ``transitions.parquet`` (one row per
    person-year with prompt/target character spans) and ``summary.txt`` into ``out_dir``.

    Args:
        source: the panel to read (default: the bundled NLSY79).
        template: how resumes are rendered.
        out_dir: output directory.
        split_fractions: fractions of persons per split (default train/valid/test 0.8/0.1/0.1).
        split_seed: seed of the person-level split.
    """
    source = source or PanelSource()
    template = template or ResumeTemplate()
    with tqdm(total=3, desc="prepare", unit="step") as bar:
        panel = assign_splits(source.load(), split_fractions, split_seed)
        bar.update()
        texts, transitions = render_panel(panel, template)
        bar.update()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        texts.to_parquet(out_dir / "texts.parquet", index=False)
        transitions.to_parquet(out_dir / "transitions.parquet", index=False)
        bar.update()
    summary = summarize(panel, transitions)
    text = format_summary(summary)
    (out_dir / "summary.txt").write_text(text + "\n")
    print(text)
    print(f"wrote {out_dir}/texts.parquet, transitions.parquet, summary.txt")
    return summary
