"""A panel's summary (persons, transitions, switch rate, special states, coverage) and its text form."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lit_career.panel.careers import CareerPanel


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
            row.key: float(np.mean(states == idx))
            for idx, row in zip(special.index, special.itertuples(), strict=True)
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
