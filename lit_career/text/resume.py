"""Render careers as resume-like texts, and parse them back.

A resume reads::

    Resume from the NLSY79 survey.
    A female worker, black, born in 1959.
    Education: high school.
    1982: Secretaries
    1983: Cashiers
    Education: some college.
    1984: Secretaries
    End of resume.

One line per person-year ``YEAR: <label>``, where the label is the occupation title (default) or its
numeric code (the paper's ablation); an education line precedes the year in which the level changes.
For every person-year (a *transition*) the prompt is the text before the label and the target is
the label plus its line terminator; both are exact character spans, so token positions can be
recovered for any tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from lit_career.panel.careers import EDUCATION_TITLES, CareerPanel
from lit_career.panel.taxonomy import Vocabulary, vocabulary
from lit_career.panel.transitions import transition_keys

END = "End of resume.\n"


@dataclass(frozen=True)
class ResumeTemplate:
    """What a resume shows.

    Args:
        labels: occupation ``titles`` (English) or numeric ``codes``.
        demographics: a sentence with sex and race/ethnicity.
        birth_year: the birth year in that sentence.
        education: a line each time the education level changes.
    """

    labels: Literal["titles", "codes"] = "titles"
    demographics: bool = True
    birth_year: bool = True
    education: bool = True

    def label_strings(self, vocab: Vocabulary | None = None) -> list[str]:
        """The label of every entry of ``vocab`` (default: the bundled occ1990dd), by index."""
        vocab = vocab or vocabulary()
        return vocab.titles if self.labels == "titles" else [str(c) for c in vocab.codes]

    def targets(self, vocab: Vocabulary | None = None) -> list[str]:
        """Target string (label + line terminator) of every entry of ``vocab``: the closed set to score."""
        return [label + "\n" for label in self.label_strings(vocab)]


@dataclass
class Resume:
    """One rendered career. ``prompt_end[i]``/``target_end[i]`` delimit the target of ``years[i]``."""

    text: str
    years: np.ndarray
    states: np.ndarray
    prompt_end: np.ndarray
    target_end: np.ndarray


def header(source: str) -> str:
    return f"Resume from the {source} survey.\n"


def person_sentence(template: ResumeTemplate, sex=None, race=None, birth_year=None) -> str:
    parts = []
    if template.demographics and not pd.isna(race):
        parts.append(str(race))
    if template.birth_year and not pd.isna(birth_year):
        parts.append(f"born in {int(birth_year)}")
    sex_word = f"{sex} " if template.demographics and not pd.isna(sex) else ""
    if not parts and not sex_word:
        return ""
    return f"A {sex_word}worker" + "".join(", " + p for p in parts) + ".\n"


def render(
    template: ResumeTemplate,
    source: str,
    years,
    states,
    education=None,
    *,
    sex=None,
    race=None,
    birth_year=None,
    labels: list[str] | None = None,
) -> Resume:
    """Render one career (years ascending, states as vocabulary indices)."""
    labels = labels or template.label_strings()
    pieces = [header(source), person_sentence(template, sex, race, birth_year)]
    length = sum(map(len, pieces))
    prompt_end, target_end = [], []
    shown_education = None
    for i, (year, state) in enumerate(zip(years, states, strict=True)):
        level = None if education is None else education[i]
        if template.education and not pd.isna(level) and level != shown_education:
            line = f"Education: {EDUCATION_TITLES[level]}.\n"
            pieces.append(line)
            length += len(line)
            shown_education = level
        prefix = f"{year}: "
        target = labels[state] + "\n"
        pieces += [prefix, target]
        prompt_end.append(length + len(prefix))
        length += len(prefix) + len(target)
        target_end.append(length)
    pieces.append(END)
    return Resume(
        "".join(pieces), np.asarray(years), np.asarray(states), np.array(prompt_end), np.array(target_end)
    )


def render_panel(
    panel: CareerPanel, template: ResumeTemplate | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Render every person of a panel.

    Returns ``(texts, transitions)``: ``texts`` has one row per person (person_id, split, text);
    ``transitions`` one row per person-year (person_id, resume row, year, state, prev_state (-1 at
    a person's first year), gap in years since the previous record, prompt_end, target_end).
    """
    template = template or ResumeTemplate()
    labels = template.label_strings(panel.vocab)
    records = panel.records
    first, prev_state, gap = transition_keys(records)
    bounds = np.r_[np.flatnonzero(first), len(records)]
    years, states = records["year"].to_numpy(), records["state"].to_numpy()
    education = records["education"].astype(object).to_numpy()
    persons = panel.persons
    ids = records["person_id"].to_numpy()[bounds[:-1]]
    cov = persons.reindex(ids)
    texts, prompt_end, target_end = [], [], []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        resume = render(
            template,
            panel.source,
            years[lo:hi],
            states[lo:hi],
            education[lo:hi],
            sex=cov["sex"].iat[k],
            race=cov["race"].iat[k],
            birth_year=cov["birth_year"].iat[k],
            labels=labels,
        )
        texts.append(resume.text)
        prompt_end.append(resume.prompt_end)
        target_end.append(resume.target_end)
    lengths = np.diff(bounds)
    split = cov["split"].to_numpy() if "split" in cov else np.full(len(ids), "all", dtype=object)
    text_table = pd.DataFrame({"person_id": ids, "split": split, "text": texts})
    transitions = pd.DataFrame(
        {
            "person_id": records["person_id"].to_numpy(),
            "resume": np.repeat(np.arange(len(ids)), lengths),
            "split": np.repeat(split, lengths),
            "year": years,
            "state": states,
            "prev_state": prev_state,
            "gap": gap,
            "prompt_end": np.concatenate(prompt_end) if prompt_end else np.array([], dtype=int),
            "target_end": np.concatenate(target_end) if target_end else np.array([], dtype=int),
        }
    )
    return text_table, transitions


_HEADER = re.compile(r"Resume from the (.+) survey\.")
_PERSON = re.compile(r"A (?:(\S+) )?worker(?:, (?!born in)([^\n]+?))?(?:, born in (\d+))?\.")
_EDUCATION = re.compile(r"Education: (.+)\.")
_YEAR = re.compile(r"(-?\d+): (.+)")


def parse(text: str, template: ResumeTemplate | None = None, vocab: Vocabulary | None = None) -> dict:
    """Parse a rendered resume over ``vocab`` back into source, covariates, years, states and education."""
    template = template or ResumeTemplate()
    to_state = {label: i for i, label in enumerate(template.label_strings(vocab))}
    to_level = {title: level for level, title in EDUCATION_TITLES.items()}
    lines = text.split("\n")
    if lines[-2:] != [END.rstrip("\n"), ""]:
        raise ValueError("resume does not end with the end marker")
    out = {"source": _HEADER.fullmatch(lines[0]).group(1), "sex": None, "race": None, "birth_year": None}
    out.update(years=[], states=[], education=[])
    level = None
    for line in lines[1:-2]:
        if m := _YEAR.fullmatch(line):
            out["years"].append(int(m.group(1)))
            out["states"].append(to_state[m.group(2)])
            out["education"].append(level)
        elif m := _EDUCATION.fullmatch(line):
            level = to_level[m.group(1)]
        elif m := _PERSON.fullmatch(line):
            out["sex"], out["race"] = m.group(1), m.group(2)
            out["birth_year"] = int(m.group(3)) if m.group(3) else None
        else:
            raise ValueError(f"unparseable resume line {line!r}")
    return out
