"""``python -m lit_career prepare``: read a panel, write its resume corpus, print a summary."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tqdm import tqdm

from lit_career.io import check_writable, write_file_atomic, write_text_atomic
from lit_career.panel.careers import assign_splits
from lit_career.panel.summary import format_summary, summarize
from lit_career.sources import PanelSource
from lit_career.text.resume import ResumeTemplate, render_panel


def prepare(
    source: PanelSource | None = None,
    template: ResumeTemplate | None = None,
    out_dir: Path = Path("data_cache/prepared"),
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
) -> dict:
    """Read a panel, split it by person, render resumes and write them.

    Writes ``texts.parquet`` (person_id, split, text), ``transitions.parquet`` (one row per
    person-year with prompt/target character spans) and ``summary.txt`` into ``out_dir``, each
    atomically, after checking that ``out_dir`` is writable.

    Args:
        source: the panel to read (default: the bundled NLSY79).
        template: how resumes are rendered.
        out_dir: output directory.
        split_fractions: fractions of persons per split (default train/valid/test 0.8/0.1/0.1).
        split_seed: seed of the person-level split.
    """
    source = source or PanelSource()
    template = template or ResumeTemplate()
    out_dir = check_writable(out_dir)
    with tqdm(total=3, desc="prepare", unit="step") as bar:
        panel = assign_splits(source.load(), split_fractions, split_seed)
        bar.update()
        texts, transitions = render_panel(panel, template)
        bar.update()
        for name, frame in (("texts", texts), ("transitions", transitions)):
            write_file_atomic(out_dir / f"{name}.parquet", partial(frame.to_parquet, index=False))
        bar.update()
    summary = summarize(panel, transitions)
    text = format_summary(summary)
    write_text_atomic(out_dir / "summary.txt", text + "\n")
    print(text)
    print(f"wrote {out_dir}/texts.parquet, transitions.parquet, summary.txt")
    return summary
