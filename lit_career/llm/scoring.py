"""Closed-set scoring: the LM's log-probability of every vocabulary title at every year of a resume.

For a resume's token ids and the token index where each year's target starts, ``ClosedSetScorer``
returns log P(candidate_k | tokens[:boundary]) for each boundary and each candidate string (a title
with its leading space and line terminator). The fast path runs the resume once, keeps its KV cache,
then feeds every year's candidates as a token trie packed after the cache: a 4D attention mask lets
each trie node see the resume up to its year's boundary and its own ancestors, and its position id
restarts at that boundary. Only trie nodes that predict a further token are fed; a candidate's first
token is scored from the resume pass itself. ``naive_scores`` is the reference: one forward per
(boundary, candidate).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterator, Sequence

import pandas as pd
import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedTokenizerBase

from lit_career.panel.taxonomy import Vocabulary
from lit_career.text.resume import ResumeTemplate

Segment = tuple[int, int, int]
"""(year row, first trie row, end trie row) of one packed piece: whole subtrees of one year."""


def normalize(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Renormalize log-probabilities over the closed set (last dim).

    Returns the log-distribution over the set and the probability mass the LM put outside it,
    ``1 - sum(exp(logp))`` clamped at 0.
    """
    total = torch.logsumexp(logp, dim=-1)
    return logp - total.unsqueeze(-1), (-torch.expm1(total)).clamp_min(0.0)


class _TokenTrie:
    """Candidate token sequences as a trie, laid out for packed forwards.

    Nodes are the distinct token prefixes; node ``n`` holds its last token. "Rows" are the internal
    nodes (those with children), the only ones fed to the model, in depth-first order so that each
    root subtree is one contiguous block of rows.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]):
        parent: list[int] = []
        token: list[int] = []
        index: dict[tuple[int, int], int] = {}
        paths: list[list[int]] = []
        for seq in sequences:
            node, path = -1, []
            for tok in seq:
                node = index.setdefault((node, tok), len(token))
                if node == len(token):
                    parent.append(path[-1] if path else -1)
                    token.append(tok)
                path.append(node)
            paths.append(path)
        children: list[list[int]] = [[] for _ in token]
        for node, up in enumerate(parent):
            if up >= 0:
                children[up].append(node)
        roots = [n for n, up in enumerate(parent) if up < 0]

        rows: list[int] = []  # trie node of each row, depth-first
        subtree_starts: list[int] = []
        for root in roots:
            subtree_starts.append(len(rows))
            stack = [root]
            while stack:
                node = stack.pop()
                if children[node]:
                    rows.append(node)
                    stack.extend(reversed(children[node]))
        subtree_starts.append(len(rows))
        row_of = {node: r for r, node in enumerate(rows)}

        depth = [0] * len(token)
        for node in range(len(token)):  # parents are created before their children
            depth[node] = depth[parent[node]] + 1 if parent[node] >= 0 else 0
        visible = torch.eye(len(rows), dtype=torch.bool)
        for r, node in enumerate(rows):
            up = parent[node]
            while up >= 0:
                visible[r, row_of[up]] = True
                up = parent[up]

        edges = [(r, child) for r, node in enumerate(rows) for child in children[node]]
        self.num_nodes = len(token)
        self.root_nodes = torch.tensor(roots)
        self.root_tokens = torch.tensor([token[n] for n in roots])
        self.row_tokens = torch.tensor([token[n] for n in rows], dtype=torch.long)
        self.row_depths = torch.tensor([depth[n] for n in rows], dtype=torch.long)
        self.visible = visible
        self.subtree_starts = subtree_starts
        self.edge_rows = torch.tensor([r for r, _ in edges], dtype=torch.long)
        self.edge_tokens = torch.tensor([token[c] for _, c in edges], dtype=torch.long)
        self.edge_nodes = torch.tensor([c for _, c in edges], dtype=torch.long)
        # edges are grouped by row, so the edges of rows [a, b) are edge_start[a]:edge_start[b]
        self.edge_start = torch.searchsorted(self.edge_rows, torch.arange(len(rows) + 1)).tolist()
        width = max(len(p) for p in paths)
        self.paths = torch.tensor([p + [self.num_nodes] * (width - len(p)) for p in paths], dtype=torch.long)

    @property
    def num_rows(self) -> int:
        return len(self.row_tokens)


class ClosedSetScorer:
    """Log-probabilities of a closed set of candidate strings after each prompt boundary of a resume.

    ``candidates`` are the target strings (e.g. ``" Cashiers\\n"``), tokenized standalone without
    special tokens. ``chunk_size`` bounds the number of trie tokens fed per forward (whole subtrees,
    so a chunk exceeds it only when one subtree does). The model is put in eval mode. Scores come
    back as float32 on the CPU; ``tokens_processed`` counts tokens fed to the model per method.
    The packed forwards pass a 4D float mask: fine for eager and sdpa attention, not flash-attention-2.
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer, candidates: Sequence[str], *, chunk_size: int = 256
    ):
        if not candidates:
            raise ValueError("no candidates to score")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.model = model.eval()
        self.candidates = list(candidates)
        self.candidate_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in self.candidates]
        empty = [c for c, ids in zip(self.candidates, self.candidate_ids, strict=True) if not ids]
        if empty:
            raise ValueError(f"candidates tokenize to nothing: {empty!r}")
        self.chunk_size = chunk_size
        self.trie = _TokenTrie(self.candidate_ids)
        self.tokens_processed: Counter[str] = Counter()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers 5.2x renamed `past_key_values` to `cache`
        self._cache_kwarg = (
            "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        )

    @property
    def _device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @torch.inference_mode()
    def score_resume(self, input_ids: torch.Tensor | list[int], boundaries: Sequence[int]) -> torch.Tensor:
        """[len(boundaries), K] log P(candidate_k | input_ids[:boundary]), one pass over the resume."""
        ids, bounds = self._check(input_ids, boundaries)
        trie, device = self.trie, self._device
        prompt_len = int(bounds.max())
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids[None, :prompt_len].to(device),
            logits_to_keep=(bounds - 1).to(device),
            use_cache=True,
            **{self._cache_kwarg: cache},
        )
        self.tokens_processed["score_resume"] += prompt_len
        # edge[i, n]: log P(token of node n | resume[:bounds[i]], ancestors of n); last column is padding
        edge = torch.zeros(len(bounds), trie.num_nodes + 1)
        logits = out.logits[0].float()
        root_logp = logits[:, trie.root_tokens.to(device)] - logits.logsumexp(-1, keepdim=True)
        edge[:, trie.root_nodes] = root_logp.cpu()
        # latest years first, so the cache can shrink to what the remaining years see
        for chunk in self._chunks(bounds.argsort(descending=True, stable=True).tolist()):
            keep = max(int(bounds[i]) for i, _, _ in chunk)
            if cache.get_seq_length() > keep:
                cache.crop(keep - cache.get_seq_length())
            self._score_chunk(chunk, bounds, cache, edge)
        return edge[:, trie.paths].sum(-1)

    def _score_chunk(
        self,
        chunk: list[Segment],
        bounds: torch.Tensor,
        cache: DynamicCache,
        edge: torch.Tensor,
    ) -> None:
        """Feed one packed chunk of trie rows after the cached resume and fill its edges' log-probs."""
        trie, device, prompt_len = self.trie, self._device, cache.get_seq_length()
        tokens = torch.cat([trie.row_tokens[a:b] for _, a, b in chunk])
        positions = torch.cat([bounds[i] + trie.row_depths[a:b] for i, a, b in chunk])
        row_bounds = torch.cat([bounds[i].expand(b - a) for i, a, b in chunk])
        sees_prompt = torch.arange(prompt_len) < row_bounds[:, None]
        sees_tree = torch.block_diag(*[trie.visible[a:b, a:b] for _, a, b in chunk])
        allowed = torch.cat([sees_prompt, sees_tree], dim=1)
        mask = torch.zeros(allowed.shape, dtype=self._dtype).masked_fill_(
            ~allowed, torch.finfo(self._dtype).min
        )
        out = self.model(
            input_ids=tokens[None].to(device),
            position_ids=positions[None].to(device),
            attention_mask=mask[None, None].to(device),
            use_cache=True,
            **{self._cache_kwarg: cache},
        )
        cache.crop(-len(tokens))
        self.tokens_processed["score_resume"] += len(tokens)
        # each fed row predicts its children: gather those log-probs (edges of rows [a, b) are contiguous)
        where: list[tuple[torch.Tensor, ...]] = []  # (chunk row, child token, year, child node) per edge
        first = 0
        for i, a, b in chunk:
            e = slice(trie.edge_start[a], trie.edge_start[b])
            where.append(
                (
                    trie.edge_rows[e] - a + first,
                    trie.edge_tokens[e],
                    bounds.new_full((e.stop - e.start,), i),
                    trie.edge_nodes[e],
                )
            )
            first += b - a
        rows, children, years, nodes = (torch.cat(column) for column in zip(*where, strict=True))
        logits = out.logits[0].float()
        rows = rows.to(device)
        edge[years, nodes] = (logits[rows, children.to(device)] - logits.logsumexp(-1)[rows]).cpu()

    def _chunks(self, years: list[int]) -> Iterator[list[Segment]]:
        """Pack (year, whole subtrees) segments greedily, in the order of ``years``, into chunks of at
        most chunk_size rows."""
        starts = self.trie.subtree_starts
        chunk: list[Segment] = []
        room = self.chunk_size
        for i in years:
            s = 0
            while s < len(starts) - 1:
                e = s
                while e + 1 < len(starts) and starts[e + 1] - starts[s] <= room:
                    e += 1
                if e == s and chunk:  # the next subtree does not fit: flush
                    yield chunk
                    chunk, room = [], self.chunk_size
                    continue
                e = max(e, s + 1)  # a lone subtree larger than chunk_size still goes through
                if starts[e] > starts[s]:
                    chunk.append((i, starts[s], starts[e]))
                    room -= starts[e] - starts[s]
                s = e
        if chunk:
            yield chunk

    @torch.inference_mode()
    def naive_scores(self, input_ids: torch.Tensor | list[int], boundaries: Sequence[int]) -> torch.Tensor:
        """The reference for ``score_resume``: one forward of prompt + candidate per (boundary, candidate)."""
        ids, bounds = self._check(input_ids, boundaries)
        scores = torch.empty(len(bounds), len(self.candidate_ids))
        for i, bound in enumerate(bounds.tolist()):
            for k, cand in enumerate(self.candidate_ids):
                target = torch.tensor(cand)
                seq = torch.cat([ids[:bound], target[:-1]])  # the last token is predicted, never fed
                logits = self.model(
                    input_ids=seq[None].to(self._device), logits_to_keep=len(cand), use_cache=False
                )
                logp = logits.logits[0].float().log_softmax(-1)
                scores[i, k] = logp.gather(1, target[:, None].to(self._device)).sum().cpu()
                self.tokens_processed["naive_scores"] += len(seq)
        return scores

    @staticmethod
    def _check(
        input_ids: torch.Tensor | list[int], boundaries: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(input_ids, dtype=torch.long).flatten().cpu()
        bounds = torch.as_tensor(list(boundaries), dtype=torch.long)
        if len(bounds) == 0:
            raise ValueError("no boundaries to score")
        if int(bounds.min()) < 1 or int(bounds.max()) > len(ids):
            raise ValueError(f"boundaries must lie in [1, {len(ids)}], got {bounds.tolist()}")
        return ids, bounds


def candidate_strings(
    template: ResumeTemplate,
    tokenizer: PreTrainedTokenizerBase,
    token_ids: list[list[int]],
    transitions: pd.DataFrame,
    vocab: Vocabulary | None = None,
) -> list[str]:
    """The closed set as the LM sees it from ``tok_start``: each target after the space that precedes it
    in the resume. Raises if a realized target's tokens in its resume differ
    from its candidate's standalone tokens (then the scores would not be the LM's)."""
    targets = template.targets(vocab)
    first = transitions.iloc[0]
    span = tokenizer.decode(
        token_ids[first.resume][first.tok_start : first.tok_end], clean_up_tokenization_spaces=False
    )
    target = targets[first.state]
    if not span.endswith(target):
        raise ValueError(f"target tokens decode to {span!r}, which does not end with the target {target!r}")
    candidates = [span[: len(span) - len(target)] + t for t in targets]
    candidate_ids = tokenizer(candidates, add_special_tokens=False)["input_ids"]
    for row in transitions.itertuples():
        if token_ids[row.resume][row.tok_start : row.tok_end] != candidate_ids[row.state]:
            raise ValueError(
                f"person {row.person_id!r}, year {row.year}: the target tokenizes differently in the resume "
                f"than the candidate {candidates[row.state]!r} alone"
            )
    return candidates


def closed_set_scores(
    scorer: ClosedSetScorer, token_ids: list[list[int]], transitions: pd.DataFrame
) -> Tensor:
    """``[N, V]`` LM log-probabilities of every candidate at each transition, one scorer pass per resume."""
    scores = torch.empty(len(transitions), len(scorer.candidates))
    for resume, rows in transitions.groupby("resume", sort=True).indices.items():
        bounds = transitions["tok_start"].to_numpy()[rows]
        scores[rows] = scorer.score_resume(token_ids[resume], bounds.tolist()).clone()
    return scores
