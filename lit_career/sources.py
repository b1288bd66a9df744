"""Where a panel comes from, as a config entry: bundled NLSY79, a long table, a CAREER directory or a synthetic
world, and the split its persons are given (its data's, a file of test ids, or a role in a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from lit_career.errors import InputError
from lit_career.panel.careers import CareerPanel, give_splits, give_test_persons, without_test_persons
from lit_career.panel.table import ColumnMap, load_table, read_person_ids
from lit_career.panel.taxonomy import CodeSystem, Crosswalk, UnknownCodePolicy, Vocabulary
from lit_career.panel.vocabularies import load_crosswalk, load_vocabulary

SplitRole = Literal["auto", "test", "train_valid"]


@dataclass
class PanelSource:
    """One panel to read.

    Args:
        kind: ``nlsy79`` (bundled unless ``path``), ``table`` (long CSV/Parquet), ``career``
            (CAREER reference format directory) or ``synthetic`` (a generated world).
        path: file or directory to read (not used by ``synthetic``).
        columns: column mapping of a ``table``.
        code_system: coding of the occupation column (``table``/``career``); default: the codes of
            ``vocabulary`` itself (special states by key in a table vocabulary, see
            :mod:`lit_career.panel.vocabularies`). ``onetsoc2010``/``soc`` codes map to both bundled
            vocabularies, Census codes to occ1990dd only.
        vocabulary: the states the panel is over: ``occ1990dd`` (bundled, default), ``onet_soc_2010``
            (bundled) or the path of a vocabulary table (CSV/Parquet, columns code, title[, group,
            group_title]). ``nlsy79`` and ``synthetic`` panels are occ1990dd only.
        crosswalk: a table (CSV/Parquet, columns ``from`` and ``to``) mapping the data's codes to the
            vocabulary's, used instead of ``code_system`` (``table``/``career``); codes it lacks follow
            ``unknown_codes``. The special states' keys pass through unless it maps them.
        unknown_codes: policy for codes outside the crosswalk: ``error``, ``unmapped`` or ``drop``
            (default: ``error``, except ``drop`` for the bundled NLSY79, see :mod:`lit_career.panel.nlsy79`).
        name: data-source name shown in the resume header (default: from the kind or file name).
        weight: share of this source in a mixture of sources (relative; see the corpus); a ``test``
            source gives no training persons and has weight 0.
        population: synthetic population (``survey``, ``survey97`` or ``resume``).
        persons: synthetic number of workers.
        seed: synthetic world seed.
        test_ids: file of the persons (one id per line) that form the test split; the others are split
            into train and valid at random.
        split: ``auto``: the split the data gives (a CAREER directory's split files, the table's
            ``columns.split``, ``test_ids``), persons given none drawn at random by person (seeded);
            ``test``: every person is a test person (a run's test source); ``train_valid``: persons drawn
            into train and valid only, test persons the data gives left out (the other sources of a run
            with a test source). A row's ``test_source`` sets both; in a corpus config, set ``test`` on
            the test source and ``train_valid`` on every other.
    """

    kind: Literal["nlsy79", "table", "career", "synthetic"] = "nlsy79"
    path: str | None = None
    columns: ColumnMap = field(default_factory=ColumnMap)
    code_system: CodeSystem | None = None
    vocabulary: str = "occ1990dd"
    crosswalk: str | None = None
    unknown_codes: UnknownCodePolicy | None = None
    name: str | None = None
    weight: float = 1.0
    population: str = "survey"
    persons: int = 10_000
    seed: int = 0
    test_ids: str | None = None
    split: SplitRole = "auto"

    def __post_init__(self) -> None:
        if self.split == "test":
            self.weight = 0.0

    def load(self) -> CareerPanel:
        """Read (or generate) the panel, with the splits its data or ``split`` gives."""
        panel = self._read()
        if self.name:
            panel.source = self.name
        if self.test_ids is not None:
            panel = give_test_persons(panel, read_person_ids(self.test_ids), self.test_ids)
        if self.split == "test":
            everyone = pd.Series("test", index=panel.persons.index)
            return give_splits(panel, everyone, {"test": f"every person of {self.describe()}"})
        if self.split == "train_valid":
            return without_test_persons(panel, "another source (the run's test source)")
        return panel

    def describe(self) -> str:
        """The source in a few words: ``kind:path`` (``synthetic:population seed N``)."""
        if self.kind == "synthetic":
            return f"synthetic:{self.population} seed {self.seed}"
        return f"{self.kind}:{self.path or 'bundled'}"

    def _read(self) -> CareerPanel:
        if self.kind in ("table", "career") and self.path is None:
            raise InputError(f"a {self.kind!r} source needs a path")
        policy = self.unknown_codes or "error"
        vocab = load_vocabulary(self.vocabulary)
        if self.kind in ("nlsy79", "synthetic") and vocab.name != "occ1990dd":
            raise InputError(
                f"a {self.kind!r} source is coded in occ1990dd; vocabulary {self.vocabulary!r} needs a "
                "'table' or 'career' source"
            )
        coding = self._coding(vocab)
        if self.kind == "nlsy79":
            from lit_career.panel.nlsy79 import load_nlsy79

            return load_nlsy79(self.path, unknown_codes=self.unknown_codes or "drop")
        if self.kind == "table":
            return load_table(self.path, self.columns, code_system=coding, unknown_codes=policy, vocab=vocab)
        if self.kind == "career":
            from lit_career.panel.career_format import read_career

            return read_career(self.path, code_system=coding, unknown_codes=policy, vocab=vocab)
        from lit_career.synthetic.world import generate_population

        return generate_population(self.population, persons=self.persons, seed=self.seed)

    def _coding(self, vocab: Vocabulary) -> CodeSystem | Crosswalk | None:
        """How the data's codes map to ``vocab``: the ``crosswalk`` file, else ``code_system``."""
        if self.crosswalk is None:
            return self.code_system
        if self.kind not in ("table", "career") or self.code_system is not None:
            raise InputError(
                f"a crosswalk maps the codes of a 'table' or 'career' source and replaces code_system "
                f"(this source: kind {self.kind!r}, code_system {self.code_system!r})",
                file=self.crosswalk,
            )
        return load_crosswalk(self.crosswalk, vocab)
