"""Write benchmark figures into benchmarks/RESULTS.md, one section per benchmark."""

from __future__ import annotations

import platform
import re
from datetime import date
from pathlib import Path

import torch

from lit_career.io import write_text_atomic

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"


def machine() -> str:
    """A one-line description of the machine and library versions."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, python {platform.python_version()}, {date.today().isoformat()}"
    )


def write_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``## title`` of the results file with ``body`` (atomically)."""
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nWritten by the scripts in benchmarks/.\n"
    )
    section = f"## {title}\n\n{body.strip()}\n\n_Machine: {machine()}_\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    write_text_atomic(path, text)
