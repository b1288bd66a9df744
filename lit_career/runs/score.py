"""``python -m lit_career score``: a finished row scores careers it never saw.

    python -m lit_career score --row outputs/experiments/nlsy79/logit \\
        --source.kind table --source.path new.csv --out new_logit.parquet
    python -m lit_career evaluate '[new_logit.parquet]'
    python -m lit_career score --row outputs/experiments/nlsy79/logit --worker worker.json --top_k 5
"""

from __future__ import annotations

import time
from pathlib import Path

from lit_career.errors import InputError
from lit_career.io import check_writable
from lit_career.panel.taxonomy import CodeSystem
from lit_career.panel.worker import read_worker
from lit_career.runs.finished import Row
from lit_career.sources import PanelSource


def score(
    row: Path | None = None,
    source: PanelSource | None = None,
    out: Path | None = None,
    worker: Path | None = None,
    top_k: int = 5,
    code_system: CodeSystem | None = None,
) -> None:
    """Write the distributions of every transition of ``source`` to ``out``, or print the ``top_k`` likeliest
    next states of ``worker``.

    Args:
        row: folder of a finished row (``outputs/experiments/<dataset>/<name>``).
        source: panel to score (every person a test person), with ``out``.
        out: Parquet file of the predictions (as the row's ``predictions_test.parquet``; ``evaluate`` reads it).
        worker: JSON or CSV file of one worker's history (see :mod:`lit_career.panel.worker`).
        top_k: how many states to print for ``worker``.
        code_system: coding of the worker's occupation codes (default: those of the row's vocabulary;
            vocabulary titles are always accepted).
    """
    if row is None or (source is None) == (worker is None) or (source is None) != (out is None):
        raise InputError("give --row, and --source with --out, or --worker")
    if out is not None:
        check_writable(Path(out).parent)
    began = time.perf_counter()
    finished = Row.load(row)
    if worker is not None:
        history = read_worker(worker, code_system, finished.vocab)
        table = finished.top_k(history, top_k)
        year = history.records["year"].iloc[-1] + 1
        print(
            f"{finished.name}: likeliest states of {history.source} in {year} ({time.perf_counter() - began:.1f} s)"
        )
        print(table.to_string(formatters={"probability": "{:.4f}".format}))
        return
    panel = source.load()
    predictions = finished.predict(panel)
    predictions.write(out)
    print(
        f"{finished.name}: scored {len(predictions.table)} transitions of {len(panel.persons)} persons "
        f"in {time.perf_counter() - began:.1f} s; wrote {out}"
    )
