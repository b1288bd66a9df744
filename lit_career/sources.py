"""Where a panel comes from, as a config entry: bundled NLSY79, a long table, a CAREER directory or a synthetic world."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lit_career.panel.careers import CareerPanel
from lit_career.panel.table import ColumnMap, load_table
from lit_career.panel.taxonomy import CodeSystem, UnknownCodePolicy


@dataclass
class PanelSource:
    """One panel to read.

    Args:
        kind: ``nlsy79`` (bundled unless ``path``), ``table`` (long CSV/Parquet), ``career``
            (CAREER reference format directory) or ``synthetic`` (a generated world).
        path: file or directory to read (not used by ``synthetic``).
        columns: column mapping of a ``table``.
        code_system: coding of the occupation column (``table``/``career``).
        unknown_codes: policy for codes outside the crosswalk: ``error``, ``unmapped`` or ``drop``
            (default: ``error``, except ``drop`` for the bundled NLSY79, see :mod:`lit_career.panel.nlsy79`).
        name: data-source name shown in the resume header (default: from the kind or file name).
        weight: share of this source in a mixture of sources (relative; see the corpus).
        population: synthetic population (``survey``, ``survey97`` or ``resume``).
        persons: synthetic number of workers.
        seed: synthetic world seed.
    """

    kind: Literal["nlsy79", "table", "career", "synthetic"] = "nlsy79"
    path: str | None = None
    columns: ColumnMap = field(default_factory=ColumnMap)
    code_system: CodeSystem = "occ1990dd"
    unknown_codes: UnknownCodePolicy | None = None
    name: str | None = None
    weight: float = 1.0
    population: str = "survey"
    persons: int = 10_000
    seed: int = 0

    def load(self) -> CareerPanel:
        """Read (or generate) the panel."""
        policy = self.unknown_codes or "error"
        if self.kind == "nlsy79":
            from lit_career.panel.nlsy79 import load_nlsy79

            panel = load_nlsy79(self.path, unknown_codes=self.unknown_codes or "drop")
        elif self.kind == "table":
            if self.path is None:
                raise ValueError("a 'table' source needs a path")
            panel = load_table(self.path, self.columns, code_system=self.code_system, unknown_codes=policy)
        elif self.kind == "career":
            from lit_career.panel.career_format import read_career

            if self.path is None:
                raise ValueError("a 'career' source needs a path")
            panel = read_career(self.path, code_system=self.code_system, unknown_codes=policy)
        else:
            from lit_career.synthetic.world import generate_population

            panel = generate_population(self.population, persons=self.persons, seed=self.seed)
        if self.name:
            panel.source = self.name
        return panel
