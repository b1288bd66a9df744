"""Resume corpus: panels rendered as resumes, tokenized once, cached and batched by length.

For each :class:`~lit_career.data.sources.PanelSource` the corpus loads the panel, renders every
person's resume, tokenizes each whole resume with the base model's (fast) tokenizer, prepending BOS
when the tokenizer has one, and maps each transition's target (title plus line terminator) to token
indices: ``tok_start`` is the token holding the space before the target (byte-level BPE may merge
that space into the label's first token or keep it alone, label by label), so every target's tokens
start at its space; ``tok_end`` is one past the last token overlapping the target.

**Truncation.** A resume longer than ``max_length`` tokens keeps its header, its person sentence and
the most recent years that fit; it is re-rendered from that suffix of the career (education shown
from the first kept year) so text, spans and tokens stay exact. The dropped years leave the
transitions table and are counted in :attr:`ResumeCorpus.stats` (and logged).

**Cache.** Per source, ``cache_dir/<sha>/`` holds ``resumes.parquet`` (person_id, text, input_ids as
list<int32>, dropped_years), ``transitions.parquet`` and ``meta.json``; the sha hashes the panel's
content, the source config (its mixture weight excepted), the template and its labels, the
tokenizer's serialized content and BOS id, and ``max_length``. Splits are assigned after loading,
so changing them does not retokenize.

**Batches.** Length bucketing: an epoch's resumes, in random order, are cut into chunks of
:data:`CHUNK_BATCHES` batches; each chunk is sorted by length and cut into batches; the batch order
is shuffled (seeded by ``seed`` and the epoch). Validation and test batches are the split sorted by
length. A batch is a dict of ``input_ids``, ``attention_mask`` and ``labels`` (``LongTensor[B, L]``,
right-padded with the pad id; labels unshifted, -100 on padding and, with ``loss_on="titles"``,
everywhere except the target tokens ``tok_start:tok_end`` of each year).

**Mixture.** With training resumes ``n_s`` and weights ``w_s``, an epoch has ``N = sum(n_s)`` draws
and source ``s`` contributes ``m_s = round(w_s / sum(w) * N)`` of them: ``m_s // n_s`` complete
passes over its resumes plus ``m_s % n_s`` distinct resumes drawn without replacement, fresh each
epoch. Validation and test use every source's own split, unweighted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from lit_career.data.panel import CareerPanel, assign_splits, subsample_persons
from lit_career.data.resume import ResumeTemplate, render, render_panel
from lit_career.data.sources import PanelSource

log = logging.getLogger(__name__)

CACHE_VERSION = 2
CHUNK_BATCHES = 64
"""Length bucketing sorts resumes within random chunks of this many batches."""
IGNORE = -100


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
    records, labels = panel.records, template.label_strings()
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


# ---------------------------------------------------------------- cache


def _sha(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def panel_fingerprint(panel: CareerPanel) -> str:
    """Hash of a panel's records, covariates and source name (splits excluded)."""
    persons = panel.persons.drop(columns="split", errors="ignore")
    return _sha(
        pd.util.hash_pandas_object(panel.records, index=False).to_numpy().tobytes(),
        pd.util.hash_pandas_object(persons, index=True).to_numpy().tobytes(),
        ",".join(map(str, panel.records.columns)) + "|" + ",".join(map(str, persons.columns)),
        panel.source,
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything the tokenizer does to a text: its serialized content and the BOS it gets."""
    return _sha(tokenizer.backend_tokenizer.to_str(), str(tokenizer.bos_token_id))


def cache_key(
    panel: CareerPanel,
    source: PanelSource,
    template: ResumeTemplate,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> str:
    """Cache folder name of one source's tokenized resumes."""
    config = {k: v for k, v in dataclasses.asdict(source).items() if k != "weight"}
    return _sha(
        str(CACHE_VERSION),
        panel_fingerprint(panel),
        json.dumps(config, sort_keys=True, default=str),
        json.dumps(dataclasses.asdict(template), sort_keys=True),
        "\n".join(template.label_strings()),
        tokenizer_fingerprint(tokenizer),
        str(max_length),
    )[:32]


def write_cache(data: TokenizedPanel, folder: Path, meta: dict) -> None:
    """Write ``data`` to ``folder`` atomically (a concurrent writer of the same key may win)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        resumes = pa.Table.from_pandas(data.resumes, preserve_index=False).append_column(
            "input_ids", pa.array(data.token_ids, type=pa.list_(pa.int32()))
        )
        pq.write_table(resumes, tmp / "resumes.parquet")
        data.transitions.to_parquet(tmp / "transitions.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_cache(folder: Path) -> TokenizedPanel:
    table = pq.read_table(folder / "resumes.parquet")
    column = table.column("input_ids").combine_chunks()
    values, offsets = column.values.to_numpy(), column.offsets.to_numpy()
    token_ids = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    resumes = table.drop_columns(["input_ids"]).to_pandas()
    return TokenizedPanel(resumes, token_ids, pd.read_parquet(folder / "transitions.parquet"))


# ---------------------------------------------------------------- batching


def mixture_quota(sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Resumes each source contributes to an epoch: ``round(w_s / sum(w) * N)``, ``N`` the number of resumes."""
    return np.round(weights / weights.sum() * len(sources)).astype(int)


def mixture_draw(rng: np.random.Generator, sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One epoch's resume indices for a weighted mixture (see module docstring), in random order."""
    drawn = [np.zeros(0, dtype=int)]
    for s, quota in enumerate(mixture_quota(sources, weights)):
        members = np.flatnonzero(sources == s)
        if len(members):
            drawn += [rng.permutation(members) for _ in range(quota // len(members))]
            drawn.append(rng.choice(members, quota % len(members), replace=False))
    return rng.permutation(np.concatenate(drawn))


class BucketSampler(Sampler[int]):
    """Resume indices of one epoch, ordered so that consecutive runs of ``batch_size`` are length buckets.

    Wrap it in ``BatchSampler(sampler, batch_size, drop_last=False)``; only the epoch's last batch
    can be short. ``shuffle=False`` gives every resume once, sorted by length.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        *,
        sources: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.sources = np.zeros(len(self.lengths), int) if sources is None else np.asarray(sources)
        self.weights = (
            np.ones(self.sources.max(initial=0) + 1) if weights is None else np.asarray(weights, float)
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches, in order."""
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = mixture_draw(rng, self.sources, self.weights)
        chunk = CHUNK_BATCHES * self.batch_size
        batches = []
        for c in range(0, len(drawn), chunk):
            part = drawn[c : c + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        # chunks hold whole batches, so only the last chunk can leave a short batch: it goes last
        full, short = batches[: len(drawn) // self.batch_size], batches[len(drawn) // self.batch_size :]
        return [full[i] for i in rng.permutation(len(full))] + short

    def __iter__(self):
        for batch in self.batches():
            yield from batch.tolist()

    def __len__(self) -> int:
        return int(mixture_quota(self.sources, self.weights).sum()) if self.shuffle else len(self.lengths)


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padding among all positions of ``batches`` (each padded to its longest resume)."""
    total = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / total if total else 0.0


class ResumeDataset(Dataset):
    """Token ids and labels of each resume; ``title_spans[i]`` (``[n, 2]``) restricts labels to those tokens."""

    def __init__(self, token_ids: list[np.ndarray], title_spans: list[np.ndarray] | None = None):
        self.token_ids, self.title_spans = token_ids, title_spans

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        ids = self.token_ids[i].astype(np.int64)
        if self.title_spans is None:
            return {"input_ids": ids, "labels": ids}
        labels = np.full_like(ids, IGNORE)
        for start, end in self.title_spans[i]:
            labels[start:end] = ids[start:end]
        return {"input_ids": ids, "labels": labels}


@dataclass
class PadCollator:
    """Right-pad a list of dataset items into a batch of ``LongTensor[B, L]``."""

    pad_id: int

    def __call__(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        batch = {
            "input_ids": torch.full((len(items), length), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), length), dtype=torch.long),
            "labels": torch.full((len(items), length), IGNORE, dtype=torch.long),
        }
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][row, :n] = torch.from_numpy(item["input_ids"])
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = torch.from_numpy(item["labels"])
        return batch


# ---------------------------------------------------------------- data module


@dataclass
class SplitData:
    """One split across sources: ``resumes`` (source, person_id, text, dropped_years, n_tokens) aligned
    with ``token_ids``; ``transitions`` whose ``resume`` column indexes them."""

    resumes: pd.DataFrame
    token_ids: list[np.ndarray]
    transitions: pd.DataFrame


class ResumeCorpus(LightningDataModule):
    """Token batches of rendered resumes from one or several panel sources (see module docstring).

    Args:
        sources: panels to read (default: the bundled NLSY79); names must differ.
        template: what a resume shows.
        tokenizer: base model whose tokenizer to use (see :func:`lit_career.models.backbone.load_tokenizer`).
        max_length: longest resume in tokens; longer ones lose their earliest years.
        batch_size: resumes per batch.
        loss_on: ``all`` tokens, or only the target ``titles`` (each title plus its line terminator).
        split_fractions: person split fractions (default train/valid/test 0.8/0.1/0.1).
        split_seed: seed of the split assignment.
        max_persons: keep this many persons of each source, for demos and tests: a random sample that
            depends on nothing but the panel (so seeds can change without retokenizing).
        max_train_persons: keep this many training persons of each source (a random sample drawn with
            ``split_seed`` after the split), leaving the valid and test persons as they are.
        cache_dir: where tokenized resumes are cached (default: ``backbone.cache_dir()/corpus``).
        num_workers: dataloader worker processes.
        seed: seed of the training order and mixture draws (combined with the epoch).
    """

    def __init__(
        self,
        sources: list[PanelSource] | None = None,
        template: ResumeTemplate | None = None,
        tokenizer: str = "tiny",
        max_length: int = 1024,
        batch_size: int = 8,
        loss_on: Literal["all", "titles"] = "all",
        split_fractions: dict[str, float] | None = None,
        split_seed: int = 0,
        max_persons: int | None = None,
        max_train_persons: int | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.sources = list(sources) if sources is not None else [PanelSource()]
        self.template = template or ResumeTemplate()
        self.tokenizer_source = tokenizer
        self.max_length, self.batch_size, self.loss_on = max_length, batch_size, loss_on
        self.split_fractions = split_fractions or {"train": 0.8, "valid": 0.1, "test": 0.1}
        self.split_seed, self.max_persons, self.num_workers, self.seed = (
            split_seed,
            max_persons,
            num_workers,
            seed,
        )
        self.cache_dir, self.max_train_persons = cache_dir, max_train_persons
        if max_train_persons is not None and max_train_persons < 1:
            raise ValueError(f"max_train_persons must be positive or None, got {max_train_persons}")
        if loss_on not in ("all", "titles"):
            raise ValueError(f"loss_on must be 'all' or 'titles', not {loss_on!r}")
        weights = self._weights()
        if not self.sources or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"need at least one source and non-negative weights with a positive sum, got {weights}"
            )
        self.stats: dict = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._panels: dict[int, CareerPanel] = {}
        self._splits: dict[str, SplitData] = {}
        self._samplers: dict[str, BucketSampler] = {}

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            from lit_career.models.backbone import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_source)
        return self._tokenizer

    def _cache_root(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        from lit_career.models.backbone import cache_dir

        return cache_dir() / "corpus"

    def _panel(self, i: int) -> CareerPanel:
        """Source ``i``'s panel, subsampled to ``max_persons`` when set."""
        if i not in self._panels:
            self._panels[i] = subsample_persons(self.sources[i].load(), self.max_persons)
        return self._panels[i]

    def _cached(self, i: int) -> Path:
        """Cache folder of source ``i``, tokenizing the source first when it is missing."""
        panel = self._panel(i)
        folder = self._cache_root() / cache_key(
            panel, self.sources[i], self.template, self.tokenizer, self.max_length
        )
        if not (folder / "meta.json").is_file():
            began = time.perf_counter()
            data = tokenize_panel(panel, self.template, self.tokenizer, self.max_length)
            meta = {
                "source": panel.source,
                "tokenizer": self.tokenizer.name_or_path,
                "template": dataclasses.asdict(self.template),
                "max_length": self.max_length,
                "tokenize_seconds": time.perf_counter() - began,
            }
            write_cache(data, folder, meta)
            log.info("tokenized %s into %s in %.1f s", panel.source, folder, meta["tokenize_seconds"])
        return folder

    def prepare_data(self) -> None:
        for i in range(len(self.sources)):
            self._cached(i)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        names = [self._panel(i).source for i in range(len(self.sources))]
        if len(set(names)) < len(names):
            raise ValueError(f"sources need distinct names (set PanelSource.name), got {names}")
        parts: dict[str, list] = {split: [] for split in self.split_fractions}
        per_source = {}
        for i, name in enumerate(names):
            folder = self._cached(i)
            data, meta = read_cache(folder), json.loads((folder / "meta.json").read_text())
            split_of = assign_splits(self._panel(i), self.split_fractions, self.split_seed).persons["split"]
            labels = self._keep_train(split_of.reindex(data.resumes["person_id"]).to_numpy())
            lengths = np.array([len(t) for t in data.token_ids])
            per_source[name] = {
                "persons": len(data.resumes),
                "resumes": {split: int((labels == split).sum()) for split in parts},
                "unused_train_resumes": int((labels == "unused").sum()),
                "tokens": int(lengths.sum()),
                "truncated_resumes": int((data.resumes["dropped_years"] > 0).sum()),
                "dropped_years": int(data.resumes["dropped_years"].sum()),
                "tokenize_seconds": meta["tokenize_seconds"],
            }
            for split in parts:
                rows = np.flatnonzero(labels == split)
                parts[split].append((i, name, data, rows))
        for split, pieces in parts.items():
            self._splits[split] = self._join(split, pieces)
        if "train" in self._splits:
            quota = mixture_quota(self._splits["train"].resumes["source_index"].to_numpy(), self._weights())
            for name, source in zip(names, per_source.values(), strict=True):
                source["train_epoch_draws"] = int(quota[names.index(name)])
                if source["train_epoch_draws"] and not source["resumes"]["train"]:
                    raise ValueError(f"source {name!r} has a positive weight but no training resumes")
        self._make_stats(per_source)

    def _keep_train(self, labels: np.ndarray) -> np.ndarray:
        """Split labels with all but ``max_train_persons`` training resumes relabelled ``unused``."""
        train = np.flatnonzero(labels == "train")
        if self.max_train_persons is None or len(train) <= self.max_train_persons:
            return labels
        drop = np.random.default_rng(self.split_seed).choice(
            train, len(train) - self.max_train_persons, replace=False
        )
        labels = labels.copy()
        labels[drop] = "unused"
        return labels

    def _join(self, split: str, pieces: list) -> SplitData:
        resumes, token_ids, transitions, offset = [], [], [], 0
        for i, name, data, rows in pieces:
            resumes.append(data.resumes.iloc[rows].assign(source=name, source_index=i))
            token_ids += [data.token_ids[r] for r in rows]
            new_row = np.full(len(data.resumes), -1)
            new_row[rows] = offset + np.arange(len(rows))
            part = data.transitions[np.isin(data.transitions["resume"].to_numpy(), rows)]
            transitions.append(
                part.assign(resume=new_row[part["resume"].to_numpy()], split=split, source=name)
            )
            offset += len(rows)
        resumes = pd.concat(resumes, ignore_index=True)
        resumes["n_tokens"] = [len(t) for t in token_ids]
        front = ["source", "person_id", "resume", "split"]
        transitions = pd.concat(transitions, ignore_index=True)
        transitions = transitions[front + [c for c in transitions.columns if c not in front]]
        return SplitData(
            resumes[["source", "source_index", "person_id", "text", "n_tokens", "dropped_years"]],
            token_ids,
            transitions,
        )

    def _make_stats(self, per_source: dict) -> None:
        lengths = np.concatenate([s.resumes["n_tokens"].to_numpy() for s in self._splits.values()])
        padding = {}
        for split in self._splits:
            sampler = self._sampler(split)
            padding[split] = padding_fraction(sampler.lengths, sampler.batches())
        self.stats = {
            "sources": per_source,
            "persons": int(sum(s["persons"] for s in per_source.values())),
            "resumes": {split: len(data.token_ids) for split, data in self._splits.items()},
            "tokens": int(lengths.sum()),
            "tokens_per_resume": float(lengths.mean()),
            "max_tokens": int(lengths.max()),
            "truncated_resumes": int(sum(s["truncated_resumes"] for s in per_source.values())),
            "dropped_years": int(sum(s["dropped_years"] for s in per_source.values())),
            "padding_fraction": padding,
        }
        log.info(
            "corpus: %d persons, %d tokens (%.1f per resume), padding %s",
            self.stats["persons"],
            self.stats["tokens"],
            self.stats["tokens_per_resume"],
            {k: round(v, 4) for k, v in padding.items()},
        )
        if self.stats["truncated_resumes"]:
            log.warning(
                "%d resume(s) longer than max_length=%d lost their earliest %d year(s) in all",
                self.stats["truncated_resumes"],
                self.max_length,
                self.stats["dropped_years"],
            )

    def _sampler(self, split: str) -> BucketSampler:
        if split not in self._samplers:
            data = self._split(split)
            train = split == "train"
            self._samplers[split] = BucketSampler(
                data.resumes["n_tokens"].to_numpy(),
                self.batch_size,
                sources=data.resumes["source_index"].to_numpy() if train else None,
                weights=self._weights() if train else None,
                shuffle=train,
                seed=self.seed,
            )
        return self._samplers[split]

    def _weights(self) -> np.ndarray:
        return np.array([s.weight for s in self.sources], dtype=float)

    def _split(self, split: str) -> SplitData:
        if not self._splits:
            raise RuntimeError("call setup() first")
        if split not in self._splits:
            raise KeyError(f"no split {split!r}; splits are {list(self._splits)}")
        return self._splits[split]

    def _loader(self, split: str) -> DataLoader:
        data = self._split(split)
        spans = None
        if self.loss_on == "titles":
            rows = data.transitions["resume"].to_numpy()
            pairs = data.transitions[["tok_start", "tok_end"]].to_numpy()
            bounds = np.searchsorted(rows, np.arange(len(data.token_ids) + 1))
            spans = [pairs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        if pad is None:
            raise ValueError(f"tokenizer {self.tokenizer.name_or_path!r} has neither a pad nor an EOS token")
        return DataLoader(
            ResumeDataset(data.token_ids, spans),
            batch_sampler=BatchSampler(self._sampler(split), self.batch_size, drop_last=False),
            collate_fn=PadCollator(pad),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # -------------------------------------------------------- accessors for the predictor stage

    def transitions(self, split: str) -> pd.DataFrame:
        """Transitions of ``split``: render_panel's columns, ``source``, ``tok_start``/``tok_end``;
        ``resume`` indexes :meth:`token_ids` and :meth:`texts` of the split."""
        return self._split(split).transitions

    def token_ids(self, split: str) -> list[list[int]]:
        return [t.tolist() for t in self._split(split).token_ids]

    def texts(self, split: str) -> list[str]:
        return self._split(split).resumes["text"].tolist()

    def resumes(self, split: str) -> pd.DataFrame:
        """One row per resume of ``split``: source, person_id, text, n_tokens, dropped_years."""
        return self._split(split).resumes

    def panels(self, split: str) -> dict[str, CareerPanel]:
        """Each source's panel restricted to ``split`` (all years, truncated or not), by source name."""
        self._split(split)
        return {
            panel.source: assign_splits(panel, self.split_fractions, self.split_seed).split(split)
            for panel in map(self._panel, range(len(self.sources)))
        }
