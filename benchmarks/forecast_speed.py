"""Benchmark: simulate 1,000 paths x 10 years for 2,600 persons on one core (targets: Markov-1 and the logit
under 2 min, CAREER under 30 min).

Run: ``OMP_NUM_THREADS=1 python benchmarks/forecast_speed.py [--persons 2600] [--career-persons 650]
[--lm-row DIR ...] [--lm-persons 40] [--lm-paths 100]``.
The persons are bundled NLSY79 persons (a fixed sample) cut after 1984 and forecast over the ten yearly
rounds 1985-1994, in shards of 20 persons as ``python -m lit_career forecast`` samples them (drawing,
the forecast distributions and their Monte Carlo errors included). Markov-1 and the logit are fitted on the
other persons first (not timed). CAREER small (4 layers, d_model 96) is timed with its initial weights,
since sampling costs the same whatever the weights, on ``--career-persons`` persons; its time is scaled
to ``--persons`` (the table says so). Finished LM rows (``--lm-row``, e.g. the tiny LM's two-stage and
likelihood rows) sample fewer paths (``--lm-paths``) on ``--lm-persons`` persons, scaled likewise; no target.
Prints the figures and writes the "Forecast sampling" section of benchmarks/RESULTS.md; wall and CPU (process)
seconds are both reported.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lit_career.baselines.career import SIZES, CareerTransformer  # noqa: E402
from lit_career.baselines.career_data import build_covariate_vocab  # noqa: E402
from lit_career.baselines.registry import make_baseline  # noqa: E402
from lit_career.benchmarks_io import write_section  # noqa: E402
from lit_career.forecast.inputs import cut, education_codes, forecast_years  # noqa: E402
from lit_career.forecast.lm import LMForecaster  # noqa: E402
from lit_career.forecast.simulate import simulate  # noqa: E402
from lit_career.panel.careers import assign_splits  # noqa: E402
from lit_career.panel.nlsy79 import load_nlsy79  # noqa: E402
from lit_career.runs.finished import Row  # noqa: E402

CUTOFF, SHARD = 1984, 20
TARGETS = {"markov1": 120, "logit": 120, "career": 1800}


def sample_all(model, history, years, education, paths: int) -> tuple[float, float]:
    """Wall and CPU seconds to sample every shard of ``history``."""
    wall, cpu = time.perf_counter(), time.process_time()
    ids = history.persons.index
    for shard, start in enumerate(range(0, len(ids), SHARD)):
        part = history.subset(ids[start : start + SHARD])
        rng = np.random.default_rng([0, shard])
        simulate(model.simulator(part, paths), years, education[start : start + SHARD], paths, rng)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=2600)
    parser.add_argument("--career-persons", type=int, default=650)
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--lm-row", type=Path, nargs="*", default=[], help="finished LM row folders")
    parser.add_argument("--lm-persons", type=int, default=40)
    parser.add_argument("--lm-paths", type=int, default=100)
    args = parser.parse_args()
    panel = load_nlsy79(unknown_codes="drop")
    years = forecast_years(panel, CUTOFF, 10)
    labelled = assign_splits(cut(panel, CUTOFF), {"forecast": 0.27, "train": 0.63, "valid": 0.10})
    chosen = labelled.persons.index[labelled.persons["split"] == "forecast"][: args.persons]
    history = cut(panel.subset(chosen), CUTOFF)
    education = education_codes(panel.subset(chosen), history, years, "hold")
    train, valid = labelled.split("train"), labelled.split("valid")
    torch.manual_seed(0)
    models = {
        "markov1": make_baseline("markov1").fit(train, valid),
        "logit": make_baseline("logit").fit(train, valid),
        "career": CareerTransformer(build_covariate_vocab([train]), **SIZES["small"]).eval(),
    }
    models |= {f"{folder.name} (LM row)": LMForecaster(Row.load(folder), folder) for folder in args.lm_row}
    rows = []
    for name, model in models.items():
        lm = isinstance(model, LMForecaster)
        timed = args.lm_persons if lm else args.career_persons if name == "career" else args.persons
        persons = min(len(history.persons), timed)
        paths = args.lm_paths if lm else args.paths
        part = history.subset(history.persons.index[:persons])
        wall, cpu = sample_all(model, part, years, education[:persons], paths)
        scale = len(history.persons) / persons
        target = TARGETS.get(name)
        verdict = "–" if target is None else "met" if cpu * scale < target else "NOT met"
        rows.append((name, persons, paths, wall, cpu, scale, target, verdict))
        print(
            f"{name}: {persons} persons x {paths} paths in {wall:.1f} s wall, {cpu:.1f} s CPU (x{scale:.2f} for all)"
        )
    table = [
        f"| model | paths per person | persons timed | path-years timed | wall s | CPU s | {len(history.persons):,} "
        "persons, wall s (CPU s) | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, persons, paths, wall, cpu, scale, target, verdict in rows:
        scaled = f"{wall * scale:.0f} ({cpu * scale:.0f})" + (" scaled" if scale > 1 else "")
        table.append(
            f"| {name} | {paths:,} | {persons:,} | {persons * paths * len(years):,} | {wall:.1f} | {cpu:.1f} | "
            f"{scaled} | {'–' if target is None else f'< {target // 60} min'} | {verdict} |"
        )
    body = "\n".join(
        [
            f"Simulating {args.paths:,} paths (LM rows: fewer, as the table says) x {len(years)} years "
            f"({years[0]}-{years[-1]}) for {len(history.persons):,} NLSY79 persons cut after {CUTOFF}, one core, shards of {SHARD} persons "
            "(drawing, forecast distributions and their Monte Carlo errors included; fitting not timed). CAREER "
            "small samples with its initial weights (the cost does not depend on them) on the persons timed, "
            "scaled linearly to all; Markov-1 and the logit are fitted on other persons first. A target is met "
            "when the CPU seconds are under it; on a shared machine wall time also counts waiting for the core.",
            "",
            *table,
            "",
            f"Command: `OMP_NUM_THREADS=1 python benchmarks/forecast_speed.py{_lm_arguments(args)}`",
        ]
    )
    print(body)
    write_section("Forecast sampling", body)


def _lm_arguments(args: argparse.Namespace) -> str:
    if not args.lm_row:
        return ""
    rows = " ".join(str(folder) for folder in args.lm_row)
    return f" --lm-row {rows} --lm-persons {args.lm_persons} --lm-paths {args.lm_paths}"


if __name__ == "__main__":
    main()
