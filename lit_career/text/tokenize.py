"""Tokenizing rendered resumes: token ids with character offsets, target token spans, truncation.

Each whole resume is tokenized with the base model's (fast) tokenizer, prepending BOS when the
tokenizer has one, and each transition's target (label plus line terminator) is mapped to token
indices: ``tok_start`` is the token holding the space before the target (byte-level BPE may merge
that space into the label's first token or keep it alone, label by label), so every target's tokens
start at its space; ``tok_end`` is one past the last token overlapping the target.

**Truncation.** A resume longer than ``max_length`` tokens keeps its header, its person sentence and
the most recent years that fit; it is re-rendered from that suffix of the career (education shown
from the first kept year) so text, spans and tokens stay exact. The dropped years leave the
transitions table and are counted per resume (``dropped_years``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from lit_career.panel.careers import CareerPanel
from lit_career.text.resume import ResumeTemplate, render, render_panel


@dataclass
class TokenizedPanel:
    """One source's resumes as tokens: what the cache holds."""

    resumes: pd.DataFrame  # person_id, text, dropped_years; row = resume index
    token_ids: list[np.ndarray]
    transitions: pd.DataFrame  # render_panel's columns (no split) + tok_start, tok_end


# ---------------------------------------------------------------- tokenization


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids (BOS first when the tokenizer has one) and ``[n, 2]`` character offsets of each text."""
    if not tokenizer.is_fast:
        raise ValueError(
            f"the corpus needs a fast tokenizer (offsets); {tokenizer.name_or_path!r} is not one"
        )
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    bos = tokenizer.bos_token_id
    ids, offsets = [], []
    for tokens, spans in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        tokens, spans = np.asarray(tokens, dtype=np.int32), np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        if bos is not None:
            tokens, spans = np.r_[np.int32(bos), tokens], np.vstack([[0, 0], spans])
        ids.append(tokens)
        offsets.append(spans)
    return ids, offsets


def token_spans(
    offsets: np.ndarray, prompt_end: np.ndarray, target_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``tok_start`` (the token holding the space before the target: the first ending after the prompt's
    last character) and ``tok_end`` (one past the last token starting before the target's end) of each
    target, from one resume's token offsets. Starting at the space makes the span the same for every label
    whether the tokenizer merges the space into the label's first token or not (``" 195"`` but ``" "``,
    ``"4"`` for codes, with some merges)."""
    return (
        np.searchsorted(offsets[:, 1], prompt_end - 1, side="right"),
        np.searchsorted(offsets[:, 0], target_end, side="left"),
    )


def latest_years_that_fit(
    panel: CareerPanel,
    template: ResumeTemplate,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    bounds: list[tuple[int, int]],
) -> tuple[np.ndarray, list]:
    """For careers ``panel.records[lo:hi]`` too long as a whole, the smallest start (years dropped) whose
    re-rendered resume fits in ``max_length`` tokens, and that resume.

    A binary search per career, batched across careers; token counts shrink as the start grows.
    """
    records, labels = panel.records, template.label_strings(panel.vocab)
    years, states = records["year"].to_numpy(), records["state"].to_numpy()
    education = records["education"].astype(object).to_numpy()
    persons = panel.persons.reindex(records["person_id"].to_numpy()[[lo for lo, _ in bounds]])
    sex, race, birth_year = (persons[c].astype(object).to_numpy() for c in ("sex", "race", "birth_year"))

    def rendered(which: np.ndarray, starts: np.ndarray) -> list:
        return [
            render(
                template,
                panel.source,
                years[bounds[j][0] + start : bounds[j][1]],
                states[bounds[j][0] + start : bounds[j][1]],
                education[bounds[j][0] + start : bounds[j][1]],
                sex=sex[j],
                race=race[j],
                birth_year=birth_year[j],
                labels=labels,
            )
            for j, start in zip(which, starts, strict=True)
        ]

    def fits(which: np.ndarray, starts: np.ndarray) -> np.ndarray:
        ids, _ = tokenize_texts(tokenizer, [r.text for r in rendered(which, starts)])
        return np.array([len(t) <= max_length for t in ids], dtype=bool)

    everyone = np.arange(len(bounds))
    low, high = np.ones(len(bounds), int), np.array([hi - lo - 1 for lo, hi in bounds])
    if not (ok := fits(everyone, high)).all():
        person = persons.index[np.flatnonzero(~ok)[0]]
        raise ValueError(
            f"max_length={max_length} tokens cannot hold even the last year of person {person!r} of {panel.source}"
        )
    while (active := np.flatnonzero(low < high)).size:
        middle = (low[active] + high[active]) // 2
        ok = fits(active, middle)
        high[active[ok]], low[active[~ok]] = middle[ok], middle[~ok] + 1
    return low, rendered(everyone, low)


def tokenize_panel(
    panel: CareerPanel, template: ResumeTemplate, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> TokenizedPanel:
    """Render, tokenize and truncate (see module docstring) every resume of ``panel``."""
    texts_table, transitions = render_panel(panel, template)
    transitions = transitions.drop(columns="split")
    texts = texts_table["text"].tolist()
    ids, offsets = tokenize_texts(tokenizer, texts)
    bounds = np.searchsorted(transitions["resume"].to_numpy(), np.arange(len(texts) + 1))
    prompt_end = transitions["prompt_end"].to_numpy().copy()
    target_end = transitions["target_end"].to_numpy().copy()
    keep = np.ones(len(transitions), dtype=bool)
    dropped = np.zeros(len(texts), dtype=np.int32)
    too_long = [k for k, tokens in enumerate(ids) if len(tokens) > max_length]
    if too_long:
        careers = [(bounds[k], bounds[k + 1]) for k in too_long]
        starts, resumes = latest_years_that_fit(panel, template, tokenizer, max_length, careers)
        new_ids, new_offsets = tokenize_texts(tokenizer, [r.text for r in resumes])
        for k, (lo, hi), start, resume, *tokens in zip(
            too_long, careers, starts, resumes, new_ids, new_offsets, strict=True
        ):
            ids[k], offsets[k] = tokens
            keep[lo : lo + start] = False
            prompt_end[lo + start : hi], target_end[lo + start : hi] = resume.prompt_end, resume.target_end
            texts[k], dropped[k] = resume.text, start
    tok_start, tok_end = np.zeros(len(transitions), np.int32), np.zeros(len(transitions), np.int32)
    for k in range(len(texts)):
        rows = np.arange(bounds[k], bounds[k + 1])[keep[bounds[k] : bounds[k + 1]]]
        tok_start[rows], tok_end[rows] = token_spans(offsets[k], prompt_end[rows], target_end[rows])
    transitions = transitions.assign(
        prompt_end=prompt_end, target_end=target_end, tok_start=tok_start, tok_end=tok_end
    )
    transitions = transitions[keep].reset_index(drop=True)
    empty = transitions["tok_end"] <= transitions["tok_start"]
    if empty.any():
        row = transitions[empty].iloc[0]
        raise ValueError(f"target of person {row['person_id']!r}, year {row['year']} maps to no token")
    resumes = pd.DataFrame(
        {"person_id": texts_table["person_id"].to_numpy(), "text": texts, "dropped_years": dropped}
    )
    return TokenizedPanel(resumes, ids, transitions)
