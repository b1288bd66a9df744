"""Batches of tokenized resumes: length buckets, weighted source mixtures, right padding, resumable loading.

**Batches.** Length bucketing: an epoch's resumes, in random order, are cut into chunks of
:data:`CHUNK_BATCHES` batches; each chunk is sorted by length and cut into batches; the batch order
is shuffled (seeded by ``seed`` and the epoch). Validation and test batches are the split sorted by
length. A batch is a dict of ``input_ids``, ``attention_mask`` and ``labels`` (``LongTensor[B, L]``,
right-padded with the pad id; labels unshifted, :data:`IGNORE` on padding and, with target spans,
everywhere except the target tokens ``tok_start:tok_end`` of each year).

**Processes and resuming.** With several processes (DDP) each one takes its own share of the epoch's
batches (:class:`BucketBatchSampler`). :class:`ResumableLoader` keeps the epoch, the seed and how many
of the epoch's batches were used in Lightning checkpoints, so a resumed fit continues with the next
unseen batch.

**Mixture.** With training resumes ``n_s`` and weights ``w_s``, an epoch has ``N = sum(n_s)`` draws
and source ``s`` contributes ``m_s = round(w_s / sum(w) * N)`` of them: ``m_s // n_s`` complete
passes over its resumes plus ``m_s % n_s`` distinct resumes drawn without replacement, fresh each
epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lit_career.llm.features import pad_right

CHUNK_BATCHES = 64
"""Length bucketing sorts resumes within random chunks of this many batches."""
IGNORE = -100
"""Label of a token the loss skips."""

log = logging.getLogger(__name__)


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


class BucketBatchSampler(Sampler[list[int]]):
    """One process's share of each epoch's batches of ``sampler`` (a :class:`BucketSampler`).

    With ``world_size`` processes the epoch's batches are dealt out in turn (batch ``i`` to rank
    ``i % world_size``) and every rank gets the same number, since a rank that runs out first would
    leave the others waiting: with ``drop_last`` the epoch's last ``n % world_size`` batches are left
    out (other resumes each epoch, the order being shuffled), otherwise its first ones are dealt again.
    A pass starts at this rank's batch ``start``; batches before it are not loaded.
    """

    def __init__(self, sampler: BucketSampler, rank: int = 0, world_size: int = 1, drop_last: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.sampler, self.rank, self.world_size, self.drop_last = sampler, rank, world_size, drop_last
        self.start = 0

    def batches(self) -> list[np.ndarray]:
        """This rank's batches of the epoch, in order."""
        batches = self.sampler.batches()
        dealt = [batches[i % len(batches)] for i in range(len(self) * self.world_size)]
        return dealt[self.rank :: self.world_size]

    def __iter__(self):
        for batch in self.batches()[self.start :]:
            yield batch.tolist()

    def __len__(self) -> int:
        batches = -(-len(self.sampler) // self.sampler.batch_size)
        return batches // self.world_size if self.drop_last else -(-batches // self.world_size)


class ResumableLoader:
    """A ``DataLoader`` over a :class:`BucketBatchSampler` whose position goes into Lightning checkpoints.

    Lightning's fit loop saves :meth:`state_dict` (its stateful-dataloader protocol) and gives it to
    :meth:`load_state_dict` before a resumed fit draws its first batch: the epoch, the seed and how
    many of the epoch's batches all ranks together have used. The resumed pass over that epoch starts
    at the next unseen batch (a different number of ranks starts at the nearest batch before it).
    Not a ``DataLoader`` itself, so that Lightning never swaps the batch sampler for a
    ``DistributedSampler`` of single resumes, whatever ``use_distributed_sampler`` says.
    """

    def __init__(self, dataset: Dataset, batch_sampler: BucketBatchSampler, collate_fn, num_workers: int = 0):
        self.batch_sampler = batch_sampler
        self.loader = DataLoader(
            dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=num_workers
        )
        self.epoch, self.used = batch_sampler.sampler.epoch, 0
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        resume, self._resume = self._resume, None
        self.epoch = self.batch_sampler.sampler.epoch
        self.used = self.batch_sampler.start = resume[1] if resume and resume[0] == self.epoch else 0
        for batch in self.loader:
            self.used += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        world_size = self.batch_sampler.world_size
        return {
            "epoch": self.epoch,
            "seed": self.batch_sampler.sampler.seed,
            "batches": self.used * world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler, world_size = self.batch_sampler.sampler, self.batch_sampler.world_size
        sampler.seed = state["seed"]
        sampler.set_epoch(state["epoch"])
        self.epoch, self.used = state["epoch"], state["batches"] // world_size
        self._resume = (self.epoch, self.used)
        if state["batches"] % world_size:
            log.warning(
                "resuming on %d processes after %d batches of epoch %d: %d batch(es) run again",
                world_size,
                state["batches"],
                self.epoch,
                state["batches"] % world_size,
            )


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padding among all positions of ``batches`` (each padded to its longest resume)."""
    total = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / total if total else 0.0


class ResumeDataset(Dataset):
    """Token ids and labels of each resume; ``target_spans[i]`` (``[n, 2]``) restricts labels to those tokens."""

    def __init__(self, token_ids: list[np.ndarray], target_spans: list[np.ndarray] | None = None):
        self.token_ids, self.target_spans = token_ids, target_spans

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        ids = self.token_ids[i].astype(np.int64)
        if self.target_spans is None:
            return {"input_ids": ids, "labels": ids}
        labels = np.full_like(ids, IGNORE)
        for start, end in self.target_spans[i]:
            labels[start:end] = ids[start:end]
        return {"input_ids": ids, "labels": labels}


@dataclass
class PadCollator:
    """Right-pad a list of dataset items into a batch of ``LongTensor[B, L]``."""

    pad_id: int

    def __call__(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_right([item["input_ids"] for item in items], self.pad_id)
        labels, _ = pad_right([item["labels"] for item in items], IGNORE)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
