"""Load, validate and render the whole bundled NLSY79 panel on one core (target: under 10 s).

Run: OMP_NUM_THREADS=1 python benchmarks/bench_prepare.py
"""

import time

from lit_career.benchmarks_io import write_section
from lit_career.panel.careers import assign_splits
from lit_career.panel.nlsy79 import load_nlsy79
from lit_career.text.resume import render_panel


def main(repeats: int = 3) -> None:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        panel = assign_splits(load_nlsy79())
        loaded = time.perf_counter()
        texts, transitions = render_panel(panel)
        timings.append((loaded - start, time.perf_counter() - loaded))
    load, render = min(timings, key=sum)
    raw_rows = len(panel.records) + sum(
        v for k, v in panel.removed.items() if k != "persons left without records"
    )
    body = (
        f"Bundled NLSY79: {raw_rows:,} raw person-year rows → {len(panel.records):,} records, "
        f"{len(texts):,} resumes, {len(transitions):,} transitions.\n\n"
        "| step | seconds (best of {n}) |\n|---|---|\n"
        f"| load + validate + split | {load:.2f} |\n| render resumes | {render:.2f} |\n| **total** | **{load + render:.2f}** |\n\n"
        f"Target < 10 s: {'met' if load + render < 10 else 'NOT met'}. Command: `OMP_NUM_THREADS=1 python benchmarks/bench_prepare.py`"
    ).replace("{n}", str(repeats))
    print(body)
    write_section("Prepare: load, validate and render NLSY79", body)


if __name__ == "__main__":
    main()
