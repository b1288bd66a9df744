"""Resume corpus: panels rendered as resumes, tokenized once, cached and batched by length.

For each :class:`~lit_career.sources.PanelSource` the corpus loads the panel, renders and tokenizes
every person's resume (:mod:`lit_career.text.tokenize`), caches the tokens by content
(:mod:`lit_career.text.cache`), splits by person and batches by length, mixing the sources by weight
(:mod:`lit_career.llm.batching`). With ``loss_on="targets"`` the labels keep only each year's target
tokens (the title or code plus its line terminator). Validation and test use every source's own split,
unweighted. Under DDP each process loads its own share of the batches, and the training loader's
position (epoch, seed, batches used) goes into Lightning checkpoints, so a resumed fit continues with
the next unseen batch (:class:`~lit_career.llm.batching.ResumableLoader`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch import LightningDataModule
from transformers import PreTrainedTokenizerBase

from lit_career.errors import InputError
from lit_career.io import read_json
from lit_career.llm.backbone import cache_dir
from lit_career.llm.batching import (
    BucketBatchSampler,
    BucketSampler,
    PadCollator,
    ResumableLoader,
    ResumeDataset,
    mixture_quota,
    padding_fraction,
)
from lit_career.panel.careers import CareerPanel, assign_splits, subsample_persons
from lit_career.panel.taxonomy import Vocabulary
from lit_career.sources import PanelSource
from lit_career.text.cache import cache_key, read_cache, write_cache
from lit_career.text.resume import ResumeTemplate
from lit_career.text.tokenize import tokenize_panel

log = logging.getLogger(__name__)


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
        tokenizer: base model whose tokenizer to use (see :func:`lit_career.llm.backbone.load_tokenizer`).
        max_length: longest resume in tokens; longer ones lose their earliest years.
        batch_size: resumes per batch.
        loss_on: ``all`` tokens, or only the ``targets`` (each year's title or code plus its line terminator).
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
        loss_on: Literal["all", "targets"] = "all",
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
        if loss_on not in ("all", "targets"):
            raise ValueError(f"loss_on must be 'all' or 'targets', not {loss_on!r}")
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
            from lit_career.llm.backbone import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_source)
        return self._tokenizer

    def _cache_root(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)

        return cache_dir() / "corpus"

    def _panel(self, i: int) -> CareerPanel:
        """Source ``i``'s panel, subsampled to ``max_persons`` when set."""
        if i not in self._panels:
            self._panels[i] = subsample_persons(self.sources[i].load(), self.max_persons)
        return self._panels[i]

    @property
    def vocab(self) -> Vocabulary:
        """The vocabulary of the sources' panels (one for all: resumes of every source show its titles)."""
        vocabs = {self._panel(i).vocab.identity: self._panel(i).vocab for i in range(len(self.sources))}
        if len(vocabs) > 1:
            raise InputError(f"the corpus' sources are over different vocabularies: {', '.join(vocabs)}")
        return next(iter(vocabs.values()))

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
            data, meta = read_cache(folder), read_json(folder / "meta.json")
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

    def _loader(self, split: str) -> ResumableLoader:
        """This process's batches of ``split``: under DDP a share of the training batches, and of the
        evaluation batches with the first ones dealt again so that every rank has as many."""
        data = self._split(split)
        spans = None
        if self.loss_on == "targets":
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
        rank, world_size = (
            (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        )
        return ResumableLoader(
            ResumeDataset(data.token_ids, spans),
            BucketBatchSampler(self._sampler(split), rank, world_size, drop_last=split == "train"),
            PadCollator(pad),
            self.num_workers,
        )

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train")

    def val_dataloader(self) -> ResumableLoader:
        return self._loader("valid")

    def test_dataloader(self) -> ResumableLoader:
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
