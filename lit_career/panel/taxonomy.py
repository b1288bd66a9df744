"""The closed set of states a worker can be in: a vocabulary's occupations plus special states.

Indices are stable: occupations first (in code order for the bundled occ1990dd vocabulary, in table order
for the others), then the special states of ``resources/occupations/special_states.csv`` in that order.
Every model emits a probability vector over its panel's vocabulary. The bundled default is the 341
occ1990dd codes (:func:`vocabulary`); others are tables (:mod:`lit_career.panel.vocabularies`). Crosswalks
map other coding systems (Census 1970-2010, O*NET-SOC 2010) to a vocabulary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.resources import files
from typing import Literal

import numpy as np
import pandas as pd

from lit_career.errors import InputError

UnknownCodePolicy = Literal["error", "unmapped", "drop"]
CodeSystem = Literal["occ1990dd", "occ1970", "occ1980", "occ1990", "occ2000", "occ2010", "onetsoc2010", "soc"]

# Numeric codes of the special states. 905, 991 and 999 are the codes Dorn's 2010 crosswalk uses for
# armed forces, long-term non-workers and Census code 0; the others sit in the unused 9xx range.
SPECIAL_CODES = {
    "no_job": 999,
    "unemployed": 992,
    "not_in_labor_force": 991,
    "education": 993,
    "military": 905,
    "unmapped": 998,
}


def _resource(name: str) -> pd.DataFrame:
    with files("lit_career.resources").joinpath("occupations", name).open("rb") as f:
        return pd.read_csv(f, dtype=str)


@dataclass(frozen=True)
class Vocabulary:
    """Occupations and special states. ``table`` is indexed by vocabulary index; its columns: code, key,
    title, is_special and the groups (occ1990dd: group12, group12_title, group17, group17_title; a table
    vocabulary: group, group_title). ``name`` says which vocabulary it is."""

    table: pd.DataFrame
    name: str = "occ1990dd"

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the table's content (codes, keys, titles, groups, in index order)."""
        return hashlib.sha256(self.table.to_csv(index=False).encode()).hexdigest()

    @property
    def identity(self) -> str:
        """Name and content hash, e.g. ``occ1990dd (sha256:3f2a…)``: what predictions record."""
        return f"{self.name} (sha256:{self.digest[:16]})"

    def __len__(self) -> int:
        return len(self.table)

    @property
    def titles(self) -> list[str]:
        return self.table["title"].tolist()

    @property
    def codes(self) -> np.ndarray:
        return self.table["code"].to_numpy()

    @property
    def num_occupations(self) -> int:
        return int((~self.table["is_special"]).sum())

    def special(self, key: str) -> int:
        """Index of a special state by key (``no_job``, ``unemployed``, ...)."""
        hits = np.flatnonzero(self.table["key"].to_numpy() == key)
        if len(hits) != 1:
            raise KeyError(f"unknown special state {key!r}; known: {sorted(SPECIAL_CODES)}")
        return int(hits[0])

    def is_employed(self) -> np.ndarray:
        """Boolean mask over indices: a job (occupation, military or an unmapped occupation), not a non-work state."""
        return (~self.table["is_special"]).to_numpy() | self.table["key"].isin(
            ["military", "unmapped"]
        ).to_numpy()

    def group_of(self, level: Literal[12, 17] = 12) -> np.ndarray:
        """Parent group id per index (-1 for non-occupation states); occ1990dd groupings only."""
        if f"group{level}" not in self.table:
            raise ValueError(f"the {self.name} vocabulary has no {level}-group level (only occ1990dd has)")
        return self.table[f"group{level}"].to_numpy()

    def index_of_code(self) -> dict:
        """Map from code (int for occ1990dd, string otherwise) to index."""
        return {c if isinstance(c, str) else int(c): i for i, c in enumerate(self.codes)}


def employed_states(size: int) -> np.ndarray:
    """:meth:`Vocabulary.is_employed` of any vocabulary of ``size`` states, from the shared special tail."""
    keys = _resource("special_states.csv")["key"]
    mask = np.ones(size, dtype=bool)
    mask[size - len(keys) :] = keys.isin(["military", "unmapped"]).to_numpy()
    return mask


@cache
def vocabulary() -> Vocabulary:
    """The project's vocabulary (341 occ1990dd occupations + special states)."""
    occ = _resource("occ1990dd_titles.csv")
    occ = pd.DataFrame(
        {
            "code": occ["occ1990dd"].astype(int),
            "key": "occ" + occ["occ1990dd"],
            "title": occ["occ1990dd_title"].str.strip(),
            "group12": occ["group12"].astype(int),
            "group12_title": occ["group12_title"],
            "group17": occ["group17"].astype(int),
            "group17_title": occ["group17_title"],
            "is_special": False,
        }
    ).sort_values("code")
    special = _resource("special_states.csv")
    special = pd.DataFrame(
        {
            "code": special["key"].map(SPECIAL_CODES),
            "key": special["key"],
            "title": special["title"],
            "group12": -1,
            "group12_title": "Not working",
            "group17": -1,
            "group17_title": "Not working",
            "is_special": True,
        }
    )
    special.loc[special["key"] == "military", "group12_title"] = "Military"
    special.loc[special["key"] == "military", "group17_title"] = "Military"
    table = pd.concat([occ, special], ignore_index=True)
    assert table["code"].is_unique and table["title"].is_unique, "vocabulary codes and titles must be unique"
    return Vocabulary(table)


@dataclass(frozen=True)
class Crosswalk:
    """A user's crosswalk (:func:`~lit_career.panel.vocabularies.load_crosswalk`): ``index`` maps a code of
    the data (a string) to an index of the vocabulary; ``name`` (the file) names it in messages."""

    name: str
    index: dict[str, int]


def code_map(vocab: Vocabulary, system: str | Crosswalk | None) -> dict[str, int]:
    """Map from a code of ``system`` (as a string) to an index of ``vocab``; ``None``: the vocabulary's own
    codes (special states by their key in a table vocabulary); a :class:`Crosswalk`: its own map."""
    if isinstance(system, Crosswalk):
        return system.index
    if vocab.name == "occ1990dd":
        return crosswalk(system or "occ1990dd")
    own = {str(code): i for i, code in enumerate(vocab.codes)}
    if system is None or system == vocab.name or (system == "onetsoc2010" and vocab.name == "onet_soc_2010"):
        return own
    if system == "soc" and vocab.name == "onet_soc_2010":
        out: dict[str, int] = {}
        for code, i in own.items():
            out.setdefault(code[:7], i)  # several O*NET codes share a SOC: the first (``.00``) wins
        return out
    raise InputError(f"no crosswalk from {system} codes to the {vocab.name} vocabulary")


@cache
def crosswalk(system: CodeSystem) -> dict[str, int]:
    """Map from a code in ``system`` (as a string) to an index of the bundled occ1990dd vocabulary."""
    vocab = vocabulary()
    to_index = vocab.index_of_code()
    if system == "occ1990dd":
        return {str(c): i for c, i in to_index.items()}
    if system in ("onetsoc2010", "soc"):
        table = _resource("onetsoc2010_to_occ1990dd.csv")
        source = table["onetsoc2010"] if system == "onetsoc2010" else table["onetsoc2010"].str[:7]
        pairs = zip(source, table["occ1990dd"].astype(int), strict=True)
    else:
        table = _resource(f"crosswalk_{system}_to_occ1990dd.csv")
        pairs = zip(table[system], table["occ1990dd"].astype(int), strict=True)
    out: dict[str, int] = {}
    for code, target in pairs:
        out.setdefault(str(code).strip(), to_index[target])  # several O*NET codes share a SOC: first wins
    return out


@dataclass
class MappingReport:
    """What an unknown-code policy did: counts of codes sent to ``unmapped`` or dropped."""

    unmapped: int = 0
    dropped: int = 0


def map_codes(
    codes: pd.Series,
    system: CodeSystem | Crosswalk | None,
    *,
    vocab: Vocabulary | None = None,
    policy: UnknownCodePolicy = "error",
    file: str | None = None,
    column: str | None = None,
    rows: pd.Series | np.ndarray | None = None,
) -> tuple[pd.Series, MappingReport]:
    """Map raw codes of ``system`` (``None``: the vocabulary's own) to indices of ``vocab`` (default occ1990dd).

    Unknown codes raise :class:`InputError` naming file, row and column, unless ``policy`` is
    ``"unmapped"`` (map to the unmapped state) or ``"drop"`` (return NA; the caller drops the rows).
    ``rows`` gives the 1-based file rows used in messages (default: position + 2, a CSV with header).
    """
    vocab = vocab or vocabulary()
    table = code_map(vocab, system)
    unknown_what = (
        f"code not in the crosswalk {system.name}"
        if isinstance(system, Crosswalk)
        else f"unknown {system or vocab.name} code"
    )
    keys = codes.astype("string").str.strip()
    if (system or vocab.name) in ("occ1990dd", "occ1970", "occ1980", "occ1990", "occ2000", "occ2010"):
        keys = keys.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True).str.lstrip("0").replace("", "0")
    mapped = keys.map(table).astype("Int64")
    unknown = mapped.isna() & keys.notna()
    report = MappingReport()
    if unknown.any():
        if policy == "error":
            pos = int(np.flatnonzero(unknown.to_numpy())[0])
            row = int(rows[pos]) if rows is not None else pos + 2
            raise InputError(
                f"{unknown_what} {codes.iloc[pos]!r} ({int(unknown.sum())} row(s) with unknown codes; "
                "choose unknown_codes='unmapped' or 'drop' to accept them)",
                file=file,
                row=row,
                column=column,
            )
        if policy == "unmapped":
            mapped[unknown] = vocab.special("unmapped")
            report.unmapped = int(unknown.sum())
        else:
            report.dropped = int(unknown.sum())
    return mapped, report
