"""``python -m lit_career synth``: generate every population of a world, write it, summarize it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lit_career.errors import InputError
from lit_career.io import check_writable, write_file_atomic, write_text_atomic
from lit_career.panel.career_format import write_career
from lit_career.panel.careers import assign_splits
from lit_career.panel.summary import format_summary
from lit_career.synthetic.oracle import oracle_log_probs
from lit_career.synthetic.world import (
    Population,
    World,
    WorldConfig,
    load_world_config,
    switch_rates_by_age,
    world_of,
)


def summarize_population(world: World, population: Population) -> dict:
    """Counts, switch rates by age, state shares and the oracle's perplexity on the test split (or all)."""
    panel, vocab = population.panel, population.panel.vocab
    states = panel.records["state"].to_numpy()
    rates = switch_rates_by_age(panel)
    special = vocab.table[vocab.table["is_special"] & (vocab.table["key"] != "unmapped")]
    has_test = "split" in panel.persons and (panel.persons["split"] == "test").any()
    test = panel.split("test") if has_test else panel
    test_types = pd.Series(population.types, index=panel.persons.index).loc[test.persons.index].to_numpy()
    target = test.records["state"].to_numpy()
    perplexity = {}
    for name, kw in (("marginal", {}), ("type_conditional", {"types": test_types})):
        log_p = oracle_log_probs(world, test, population=population.name, **kw)[
            np.arange(len(target)), target
        ]
        perplexity[name] = float(np.exp(-log_p.mean()))
    return {
        "source": panel.source,
        "persons": len(panel.persons),
        "person_years": len(panel.records),
        "occupation_switch_rate_by_age": dict(
            zip(rates["age_band"], rates["switch_rate"].round(4), strict=True)
        ),
        "special_state_shares": {row.key: float(np.mean(states == i)) for i, row in special.iterrows()},
        "occupations_seen": f"{len(np.unique(states[states < vocab.num_occupations]))} of {vocab.num_occupations}",
        "splits": panel.persons["split"].value_counts().to_dict() if "split" in panel.persons else {},
        "oracle_test_perplexity": perplexity,
    }


def synth_command(
    world: str | None = None,
    out_dir: str = "outputs/synthetic",
    formats: Sequence[str] = ("parquet", "career"),
) -> dict:
    """Generate every population of the world ``world`` (a YAML file of :class:`WorldConfig` fields such as
    ``configs/synth/default.yaml``; default: the default world) and write it to ``out_dir/<population>/``.

    ``parquet`` writes ``records.parquet``, ``persons.parquet`` (with ``split``) and
    ``latent_types.parquet``; ``career`` writes the CAREER format under ``career/``. ``world.yaml``
    holds the config with its calibrated ``stay_by_age``, so the oracle can be rebuilt exactly
    (:func:`load_world_config`). Prints and returns a summary per population (also ``summary.txt``).
    ``out_dir`` is checked for writing first; every file is written atomically.
    """

    unknown = set(formats) - {"parquet", "career"}
    if unknown:
        raise InputError(f"unknown format(s) {sorted(unknown)}; choose from ['career', 'parquet']")
    out_dir = check_writable(Path(out_dir))
    config = WorldConfig() if world is None else load_world_config(world)
    world = world_of(config)
    write_text_atomic(
        out_dir / "world.yaml", yaml.safe_dump(json.loads(json.dumps(asdict(world.config))), sort_keys=False)
    )
    summary: dict = {"stay_by_age": world.config.stay_by_age}
    lines = [f"world seed {config.seed}, mobility {config.mobility}, stay_by_age {world.config.stay_by_age}"]
    for name in config.populations:
        population = world.sample(name)
        population.panel = assign_splits(population.panel, config.split_fractions, config.seed)
        directory = out_dir / name
        if "parquet" in formats:
            types = np.array(world.type_names)[population.types]
            latent = pd.DataFrame({"person_id": population.panel.persons.index, "type": types})
            for file, write in (
                ("records", partial(population.panel.records.to_parquet, index=False)),
                ("persons", population.panel.persons.to_parquet),
                ("latent_types", partial(latent.to_parquet, index=False)),
            ):
                write_file_atomic(directory / f"{file}.parquet", write)
        if "career" in formats:
            write_career(population.panel, directory / "career")
        summary[name] = summarize_population(world, population)
        lines += [f"== {name} ==", format_summary(summary[name])]
    text = "\n".join(lines)
    write_text_atomic(out_dir / "summary.txt", text + "\n")
    print(text)
    print(
        f"wrote {out_dir}/world.yaml, summary.txt and {', '.join(config.populations)}/ ({', '.join(formats)})"
    )
    return summary
