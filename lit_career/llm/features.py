"""Per-transition features of a frozen LM: one forward per resume, in worker processes over disjoint persons.

For every transition, one pass over its resume gives

* the hidden state of ``layer`` at the token before the target (what the embedding heads read), and
* the LM's teacher-forced log-probability of the realized target (tokens ``tok_start:tok_end``). The T=1
  likelihood head renormalizes these probabilities over the closed set, which can only raise them, so
  ``exp(-mean)`` of them is an upper bound on that head's perplexity (:func:`likelihood_bound`).

The resumes of a split are cut into fixed shards of ``shard_size`` consecutive resumes (a person's
resume is never cut). Each shard is one file under the cache folder, written atomically, so a stopped
extraction restarts at its first missing shard, and the result does not depend on how many workers
computed it. ``workers > 1`` starts that many single-thread processes, worker ``w`` taking shards
``w, w + workers, ...``: on a CPU this is how both cores are used.

Cache files are loaded with ``weights_only=True`` (:func:`load_tensors`): a file holding pickled objects
other than tensors is refused without running them, and a cut or damaged file is an
:class:`~lit_career.errors.InputError` naming it; deleting it makes the next run recompute it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformers import PreTrainedModel

from lit_career.errors import InputError
from lit_career.io import check_writable, write_file_atomic
from lit_career.llm.backbone import load_frozen_lm

log = logging.getLogger(__name__)
SHARD_KEYS = ("rows", "hidden", "target")


def save_tensors(path: Path, value: Any) -> None:
    """Write ``value`` (tensors in plain containers) to ``path`` atomically; serialized in memory first, so
    that a full disk is an ``OSError`` naming ``path`` (torch's file writer hides the errno)."""
    buffer = BytesIO()
    torch.save(value, buffer)
    write_file_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def load_tensors(path: Path) -> Any:
    """What :func:`save_tensors` wrote, unpickling only tensors and plain containers (``weights_only``); any
    other file is an :class:`InputError` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "refused: it holds pickled objects other than tensors, or is not a tensor file"
    except (RuntimeError, EOFError, OSError) as err:  # torch's zip reader: RuntimeError or EINVAL when cut
        reason = "cut or damaged" + (f": {err.strerror}" if isinstance(err, OSError) else "")
    raise InputError(f"unreadable cache file ({reason}); delete it to recompute", file=str(path))


@dataclass(frozen=True)
class FrozenLM:
    """What to load in each worker: base model, adapter folder (merged into the weights), quantization."""

    base_model: str
    adapter: str | None = None
    quantization: str = "none"

    def load(self) -> PreTrainedModel:
        """The LM on the CPU (workers compute on the CPU)."""
        return load_frozen_lm(self.base_model, self.adapter, self.quantization, torch.device("cpu"))


def pad_right(token_ids: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ``[B, L]`` ids and their attention mask."""
    length = max(map(len, token_ids))
    ids = torch.full((len(token_ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), length), dtype=torch.long)
    for i, tokens in enumerate(token_ids):
        ids[i, : len(tokens)] = torch.as_tensor(tokens)
        mask[i, : len(tokens)] = 1
    return ids, mask


@torch.no_grad()
def resume_pass(
    lm: PreTrainedModel,
    token_ids: list[list[int]],
    transitions: pd.DataFrame,
    *,
    layer: int,
    batch_size: int,
    pad_id: int,
) -> tuple[Tensor, Tensor]:
    """``([N, H] hidden, [N] target log-prob)`` float32 of each transition (``resume`` indexes ``token_ids``),
    one forward per batch of resumes sorted by length; the vocabulary logits are computed only at target tokens."""
    device = lm.get_input_embeddings().weight.device
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    resume = transitions["resume"].to_numpy()
    start, end = (transitions[c].to_numpy(np.int64) for c in ("tok_start", "tok_end"))
    hidden = torch.empty(len(transitions), lm.config.hidden_size)
    target = torch.zeros(len(transitions), dtype=torch.float64)
    order = np.argsort([len(t) for t in token_ids], kind="stable")
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        ids, mask = pad_right([token_ids[k] for k in chunk], pad_id)
        out = decoder(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            output_hidden_states=layer != -1,
            use_cache=False,
        )
        final = out.last_hidden_state
        states = final if layer == -1 else out.hidden_states[layer]
        slot = np.full(len(token_ids), -1)
        slot[chunk] = np.arange(len(chunk))
        rows = np.flatnonzero(slot[resume] >= 0)
        batch_row = torch.as_tensor(slot[resume[rows]])
        hidden[rows] = states[batch_row, torch.as_tensor(start[rows] - 1)].float().cpu()
        # every target token, predicted from the final hidden state before it
        lengths = end[rows] - start[rows]
        owner = np.repeat(np.arange(len(rows)), lengths)
        offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        position = torch.as_tensor(start[rows][owner] + offset)
        where = torch.as_tensor(slot[resume[rows]][owner])
        logp = head(final[where, position - 1]).float().log_softmax(-1)
        token = ids[where, position].to(logp.device)
        picked = logp.gather(1, token[:, None]).squeeze(1).double().cpu()
        target.index_add_(0, torch.as_tensor(rows[owner]), picked)
    return hidden, target.float()


def data_fingerprint(token_ids: list[list[int]], transitions: pd.DataFrame) -> str:
    """Hash of a split's token ids and of each transition's resume and target start."""
    digest = hashlib.sha256()
    for ids in token_ids:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
    digest.update(transitions[["resume", "tok_start"]].to_numpy(np.int64).tobytes())
    return digest.hexdigest()


def shard_bounds(resumes: int, shard_size: int) -> list[tuple[int, int]]:
    """``(first, end)`` resume ranges of the shards of a split with ``resumes`` resumes."""
    return [(a, min(a + shard_size, resumes)) for a in range(0, resumes, shard_size)]


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.pt"


def _run_shards(
    lm: PreTrainedModel,
    token_ids: list[list[int]],
    transitions: pd.DataFrame,
    shards: list[tuple[int, tuple[int, int]]],
    folder: Path,
    settings: dict,
) -> None:
    """Compute and write the missing ``(index, (first, end))`` shards."""
    resume = transitions["resume"].to_numpy()
    for index, (first, end) in shards:
        path = _shard_path(folder, index)
        if path.is_file():
            continue
        rows = np.flatnonzero((resume >= first) & (resume < end))
        part = transitions.iloc[rows].assign(resume=resume[rows] - first)
        hidden, target = resume_pass(lm, token_ids[first:end], part, **settings)
        save_tensors(path, {"rows": torch.as_tensor(rows), "hidden": hidden, "target": target})


def _worker(
    lm: FrozenLM,
    token_ids: list[list[int]],
    transitions: pd.DataFrame,
    shards: list[tuple[int, tuple[int, int]]],
    folder: Path,
    settings: dict,
) -> None:
    torch.set_num_threads(1)
    _run_shards(lm.load(), token_ids, transitions, shards, folder, settings)


def extract(
    lm: FrozenLM | Callable[[], PreTrainedModel],
    token_ids: list[list[int]],
    transitions: pd.DataFrame,
    folder: Path,
    *,
    layer: int = -1,
    batch_size: int = 4,
    pad_id: int,
    workers: int = 1,
    shard_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """``([N, H] hidden, [N] target log-prob)`` of every transition of a split, from the shards in ``folder``,
    computing the missing ones first: in ``workers`` processes that each load the :class:`FrozenLM`, or in this
    process (``lm`` may then also be a function returning a loaded model; it is called only when a shard is missing)."""
    bounds = shard_bounds(len(token_ids), shard_size)
    missing = [(i, b) for i, b in enumerate(bounds) if not _shard_path(folder, i).is_file()]
    settings = {"layer": layer, "batch_size": batch_size, "pad_id": pad_id}
    if missing:
        check_writable(folder)  # before the LM runs, not at the first shard it wrote
        began = time.perf_counter()
        tokens = sum(len(token_ids[k]) for _, (a, b) in missing for k in range(a, b))
        if workers <= 1:
            _run_shards(
                lm.load() if isinstance(lm, FrozenLM) else lm(),
                token_ids,
                transitions,
                missing,
                folder,
                settings,
            )
        else:
            if not isinstance(lm, FrozenLM):
                raise TypeError("workers > 1 needs a FrozenLM (each process loads its own copy)")
            context = multiprocessing.get_context("spawn")
            procs = [
                context.Process(
                    target=_worker, args=(lm, token_ids, transitions, missing[w::workers], folder, settings)
                )
                for w in range(workers)
            ]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            if failed := [p.exitcode for p in procs if p.exitcode != 0]:
                raise RuntimeError(f"feature worker(s) exited with {failed}; rerun to continue from {folder}")
        seconds = time.perf_counter() - began
        log.info(
            "features of %d resumes (%d tokens) in %.1f s with %d worker(s): %.1f tokens/s",
            sum(b - a for _, (a, b) in missing),
            tokens,
            seconds,
            workers,
            tokens / seconds,
        )
    hidden, target = None, torch.empty(len(transitions))
    for index in range(len(bounds)):
        shard = _read_shard(_shard_path(folder, index))
        if hidden is None:
            hidden = torch.empty(len(transitions), shard["hidden"].shape[1])
        hidden[shard["rows"]], target[shard["rows"]] = shard["hidden"], shard["target"]
    return hidden, target


def _read_shard(path: Path) -> dict[str, Tensor]:
    shard = load_tensors(path)
    if not (isinstance(shard, dict) and all(isinstance(shard.get(k), Tensor) for k in SHARD_KEYS)):
        raise InputError(
            f"not a feature shard (tensors {', '.join(SHARD_KEYS)}); delete it to recompute", file=str(path)
        )
    return shard


def likelihood_bound(target_log_prob: Tensor, state: np.ndarray, prev_state: np.ndarray) -> dict[str, float]:
    """Upper bounds on the T=1 likelihood head's perplexities (all, all but first years, movers, stayers):
    ``exp(-mean log P_LM(realized target))``, since that head gives each realized target at least ``P_LM``."""
    nll = -target_log_prob.double().numpy()
    has_prev, stay = prev_state >= 0, state == prev_state
    subsets = {
        "all": np.ones(len(nll), dtype=bool),
        "all_excl_first": has_prev,
        "movers": has_prev & ~stay,
        "stayers": stay,
    }
    return {
        f"ppl_{name}_bound": math.exp(nll[keep].mean()) if keep.any() else math.nan
        for name, keep in subsets.items()
    }
