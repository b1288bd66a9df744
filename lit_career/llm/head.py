"""OccupationHead: a frozen (fine-tuned) LM plus a small head that predicts each transition's state.

The LM (``base_model`` plus the peft ``adapter`` of a fine-tuning run) never trains. It turns each
transition of a :class:`~lit_career.llm.transition_data.TransitionData` split into features once; the
head maps features to a log-distribution over the closed vocabulary.

Heads (``head``):

* ``likelihood``: the features are the LM's log-probabilities of every vocabulary title after the
  transition's prompt (:class:`~lit_career.llm.scoring.ClosedSetScorer`); the distribution is
  ``softmax(logp / T + b)``, i.e. :func:`~lit_career.llm.scoring.normalize` at ``T = 1, b = 0``.
  ``fit`` fits ``T`` (and ``b`` with ``fit_bias``) by NLL, by default with LBFGS (full batches with
  ``TransitionData.transition_batch_size: null``); point ``TransitionData.fit_split`` at ``valid`` so the
  calibration data is held out from fine-tuning.
* ``embedding``: the features are the hidden state (``layer``) at the token before the title, the one
  that predicts the title's first token; a linear layer (or an MLP with ``hidden_size``) gives V logits,
  trained with cross-entropy.
* ``two_stage`` (as in CAREER): the same network gives V "which" logits and a stay logit ``s``; with
  previous state ``p``: ``P(p) = sigmoid(s)``, ``P(j != p) = sigmoid(-s) * softmax_{j != p}``; a first
  year (``prev_state = -1``) gets the plain softmax.

Features are cached under ``feature_cache_dir`` (loaded with ``weights_only``; an unreadable file is an
error naming it, recomputed once deleted): closed-set scores as ``scores-<split>-<key>.pt``, hidden
states (with each realized target's LM log-probability, see :mod:`~lit_career.llm.features`) as shards
in ``hidden-<split>-<key>/``, computed by ``feature_workers`` processes and resumable shard by shard. The
key hashes the LM (base files' names, sizes and times, adapter files' contents, quantization), the
split's token ids and target positions, and the layer or candidate strings. With a cached split the LM
is not even loaded. An adapter is merged into the base weights when the base is not quantized.

``test`` logs :func:`~lit_career.evaluation.metrics.evaluate_predictions` of the test split as
``test/<metric>``; ``predict`` writes the :class:`~lit_career.panel.predictions.Predictions` of the
data's ``predict_split`` (full vectors, or ``top_k``) to ``predictions_path`` (default
``<log dir>/predictions_<split>.parquet``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_career.errors import InputError
from lit_career.io import check_writable
from lit_career.llm.adapter import base_model_of, check_adapter, lm_identity, split_mismatches
from lit_career.llm.backbone import cache_dir, load_config, load_frozen_lm, load_tokenizer
from lit_career.llm.features import (
    FrozenLM,
    data_fingerprint,
    extract,
    likelihood_bound,
    load_tensors,
    save_tensors,
)
from lit_career.llm.scoring import ClosedSetScorer, candidate_strings, closed_set_scores
from lit_career.llm.transition_data import TransitionData
from lit_career.panel.predictions import Predictions
from lit_career.panel.vocabularies import load_vocabulary
from lit_career.text.cache import tokenizer_fingerprint
from lit_career.two_stage import two_stage_log_probs

log = logging.getLogger(__name__)

Head = Literal["likelihood", "embedding", "two_stage"]
FEATURE_VERSION = "2"  # 2: adapters merged into the weights; hidden features in shards


# ---------------------------------------------------------------- heads


def feature_network(width: int, outputs: int, hidden_size: int | None, dropout: float) -> nn.Sequential:
    """Layer-normalized features to ``outputs`` logits: linear, or a one-hidden-layer GELU MLP."""
    norm = nn.LayerNorm(width, elementwise_affine=False)
    if hidden_size is None:
        return nn.Sequential(norm, nn.Linear(width, outputs))
    return nn.Sequential(
        norm, nn.Linear(width, hidden_size), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_size, outputs)
    )


# ---------------------------------------------------------------- the LightningModule


class OccupationHead(L.LightningModule):
    """A frozen LM's features plus a trained head, emitting a distribution over the vocabulary per transition.

    Args:
        head: ``likelihood``, ``embedding`` or ``two_stage`` (see module docstring).
        adapter: peft adapter folder exported by the fine-tuning run; None uses the base model alone.
        base_model: base LM (see :func:`~lit_career.llm.backbone.resolve_model_source`); default: the
            adapter's base.
        quantization: load the base in 4-bit NF4 (``nf4``) or as stored (``none``).
        layer: hidden-state layer of the embedding heads (``-1``: the last, after the final norm).
        hidden_size: width of the embedding heads' MLP; None for a linear head.
        dropout: dropout in the MLP.
        fit_bias: the likelihood head also fits a per-state bias, not just the temperature.
        optimizer: optimizer of the head's parameters (default: LBFGS for ``likelihood``, AdamW lr 1e-3 else).
        feature_cache_dir: feature cache (default ``backbone.cache_dir()/features``).
        score_chunk_size: trie tokens per scorer forward (``likelihood``).
        feature_workers: single-thread processes that compute the hidden states over disjoint persons (CPU).
        feature_shard_size: resumes per cached feature shard (the unit a stopped extraction resumes from).
        predictions_path: Parquet file ``predict`` writes (default under the trainer's log dir).
        top_k: write only the ``top_k`` most probable states of each transition instead of full vectors.
        name: model name stored in the predictions (default ``llm_<head>``).
        vocabulary: the states predicted over (see :class:`~lit_career.sources.PanelSource`); the data's
            panels must be over the same.
    """

    def __init__(
        self,
        head: Head = "embedding",
        adapter: str | None = None,
        base_model: str | None = None,
        quantization: Literal["none", "nf4"] = "none",
        layer: int = -1,
        hidden_size: int | None = None,
        dropout: float = 0.0,
        fit_bias: bool = False,
        optimizer: OptimizerCallable | None = None,
        feature_cache_dir: str | None = None,
        score_chunk_size: int = 256,
        feature_workers: int = 1,
        feature_shard_size: int = 64,
        predictions_path: str | None = None,
        top_k: int | None = None,
        name: str | None = None,
        vocabulary: str = "occ1990dd",
    ):
        super().__init__()
        # What defines the head is saved (and restored from a checkpoint by the CLI); where to cache, write or
        # how fast to score are run settings a later predict may change.
        self.save_hyperparameters(
            ignore=[
                "optimizer",
                "feature_cache_dir",
                "score_chunk_size",
                "feature_workers",
                "feature_shard_size",
                "predictions_path",
                "top_k",
            ]
        )
        if head not in ("likelihood", "embedding", "two_stage"):
            raise ValueError(f"head must be likelihood, embedding or two_stage, not {head!r}")
        if adapter is None and base_model is None:
            raise ValueError("set base_model, adapter or both")
        if adapter is not None:
            check_adapter(adapter)
        self.head, self.adapter, self.quantization, self.layer = head, adapter, quantization, layer
        self.base_model = base_model or base_model_of(adapter)
        self.optimizer, self.name = optimizer, name or f"llm_{head}"
        self.feature_cache_dir = Path(feature_cache_dir) if feature_cache_dir else cache_dir() / "features"
        self.score_chunk_size, self.predictions_path, self.top_k = score_chunk_size, predictions_path, top_k
        if feature_workers < 1 or feature_shard_size < 1:
            raise ValueError(
                f"feature_workers and feature_shard_size must be positive, got {feature_workers}, {feature_shard_size}"
            )
        self.feature_workers, self.feature_shard_size = feature_workers, feature_shard_size
        self.vocab = load_vocabulary(vocabulary)
        self.num_states = len(self.vocab)
        if head == "likelihood":
            self.log_temperature = nn.Parameter(torch.zeros(()))
            self.bias = nn.Parameter(torch.zeros(self.num_states), requires_grad=fit_bias)
        else:
            width = load_config(self.base_model).hidden_size
            outputs = self.num_states + (head == "two_stage")
            self.net = feature_network(width, outputs, hidden_size, dropout)
        # Kept outside the module tree: never trained or checkpointed, loaded only when features are missing.
        self._frozen: dict[str, PreTrainedModel | PreTrainedTokenizerBase] = {}
        self._features: dict[str, Tensor] = {}
        self._targets: dict[str, Tensor] = {}
        self._collected: list[tuple[Tensor, Tensor]] = []  # (rows, log-probs) of the running test or predict
        self._val_nll: list[Tensor] = []

    # ------------------------------------------------------------ head

    def forward(self, features: Tensor, prev_state: Tensor) -> Tensor:
        """``[B, V]`` log-probabilities over the vocabulary."""
        if self.head == "likelihood":
            return (features / self.log_temperature.exp() + self.bias).log_softmax(-1)
        logits = self.net(features)
        if self.head == "embedding":
            return logits.log_softmax(-1)
        return two_stage_log_probs(logits[:, :-1], logits[:, -1], prev_state)

    # ------------------------------------------------------------ frozen LM and features

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The LM's tokenizer: the adapter folder's when it has one, else the base model's."""
        if "tokenizer" not in self._frozen:
            has_own = self.adapter is not None and (Path(self.adapter) / "tokenizer_config.json").is_file()
            self._frozen["tokenizer"] = load_tokenizer(self.adapter if has_own else self.base_model)
        return self._frozen["tokenizer"]

    @property
    def lm(self) -> PreTrainedModel:
        if "lm" not in self._frozen:
            self._frozen["lm"] = load_frozen_lm(self.base_model, self.adapter, self.quantization, self.device)
        return self._frozen["lm"]

    def _data(self) -> TransitionData:
        data = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(data, TransitionData):
            raise TypeError(f"OccupationHead needs a TransitionData datamodule, got {type(data).__name__}")
        return data

    def setup(self, stage: str) -> None:
        data = self._data()
        if data.vocab.identity != self.vocab.identity:
            raise InputError(
                f"the data's panels are over the vocabulary {data.vocab.identity}, the head over "
                f"{self.vocab.identity}; set model.init_args.vocabulary to the sources' vocabulary",
                column="vocabulary",
            )
        if tokenizer_fingerprint(data.tokenizer) != tokenizer_fingerprint(self.tokenizer):
            raise InputError(
                f"the data is tokenized with {data.tokenizer_source!r}, not with the model's tokenizer "
                f"({self.adapter or self.base_model}); set data.tokenizer to the model's base or adapter folder",
                column="tokenizer",
            )
        if self.head == "likelihood" and stage == "fit" and data.fit_split == "train":
            rank_zero_warn(
                "calibrating the likelihood head on the fine-tuning split; set data.fit_split: valid"
            )
        if self.adapter is not None and (differ := split_mismatches(self.adapter, data)):
            rank_zero_warn(
                f"data settings {differ} differ from the fine-tuning run's ({self.adapter}/config.yaml): "
                "its training persons may now be in valid or test"
            )

    def features(self, split: str) -> Tensor:
        """``[N, F]`` features of every transition of ``split`` (CPU), from memory, disk or the LM."""
        if split not in self._features:
            with torch.inference_mode(False):  # validation runs in inference mode; fit may train on these
                if self.head == "likelihood":
                    self._features[split] = self._scores(split, self._data().transitions(split))
                else:
                    self._features[split], self._targets[split] = self._resume_pass(split)
        return self._features[split]

    def target_log_probs(self, split: str) -> Tensor:
        """``[N]`` the LM's own log-probability of each realized target of ``split`` (embedding heads: from
        the same pass as the hidden states), whose ``exp(-mean)`` bounds the T=1 likelihood head's perplexity."""
        if self.head == "likelihood":
            raise ValueError("target_log_probs comes with the hidden-state features of the embedding heads")
        self.features(split)
        return self._targets[split]

    def likelihood_bound(self, split: str, sample_persons: int = 0, seed: int = 0) -> dict[str, float]:
        """Upper bounds on the T=1 likelihood head's perplexities over ``split`` (:func:`~lit_career.llm.features.likelihood_bound`)
        and, on ``sample_persons`` persons drawn with ``seed``, the exact head: the closed-set mass ``Z`` of
        every transition (``mean_log_z``; the exact perplexity is the bound times ``exp(mean_log_z)``)."""
        table, target = self._data().transitions(split), self.target_log_probs(split)
        states, prev = table["state"].to_numpy(np.int64), table["prev_state"].to_numpy(np.int64)
        report: dict[str, float] = likelihood_bound(target, states, prev)
        if sample_persons <= 0:
            return report
        person = table["person_id"].astype(str)
        persons = np.sort(person.unique())
        chosen = np.random.default_rng(seed).choice(persons, min(sample_persons, len(persons)), replace=False)
        rows = np.flatnonzero(person.isin(chosen).to_numpy())
        scores = self._scores(split, table.iloc[rows].reset_index(drop=True))
        log_z = scores.double().logsumexp(-1)
        realized = scores.double().gather(1, torch.as_tensor(states[rows])[:, None]).squeeze(1)
        bound = math.exp(-float(target[rows].double().mean()))
        return report | {
            "sample_persons": len(chosen),
            "sample_transitions": len(rows),
            "sample_mean_log_z": float(log_z.mean()),
            "sample_min_log_z": float(log_z.min()),
            "sample_ppl_exact": math.exp(-float((realized - log_z).mean())),
            "sample_ppl_bound": bound,
            "sample_max_abs_diff_target": float((realized - target[rows].double()).abs().max()),
        }

    def _scores(self, split: str, part: pd.DataFrame) -> Tensor:
        """``[len(part), V]`` closed-set scores of the transitions ``part`` of ``split`` (cached)."""
        data = self._data()
        token_ids = data.token_ids(split)
        candidates = candidate_strings(data.template, self.tokenizer, token_ids, part, data.vocab)
        key = self._feature_key(token_ids, part, "\n".join(candidates))
        path = self.feature_cache_dir / f"scores-{split}-{key}.pt"
        if path.is_file():
            scores = load_tensors(path)
            if not isinstance(scores, Tensor) or scores.shape != (len(part), self.num_states):
                raise InputError(
                    "not closed-set scores of this split; delete it to recompute", file=str(path)
                )
            return scores
        check_writable(self.feature_cache_dir)  # before the LM runs, not once it is done
        began = time.perf_counter()
        scorer = ClosedSetScorer(self.lm, self.tokenizer, candidates, chunk_size=self.score_chunk_size)
        scores = closed_set_scores(scorer, token_ids, part)
        log.info("closed-set scores of %d transitions in %.1f s", len(part), time.perf_counter() - began)
        save_tensors(path, scores)
        return scores

    def _feature_key(self, token_ids: list[list[int]], table: pd.DataFrame, detail: str) -> str:
        lm = lm_identity(self.base_model, self.adapter, self.quantization)
        parts = [FEATURE_VERSION, lm, data_fingerprint(token_ids, table), detail]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def _resume_pass(self, split: str) -> tuple[Tensor, Tensor]:
        data = self._data()
        table, token_ids = data.transitions(split), data.token_ids(split)
        folder = (
            self.feature_cache_dir
            / f"hidden-{split}-{self._feature_key(token_ids, table, f'layer={self.layer}')}"
        )
        lm = FrozenLM(self.base_model, self.adapter, self.quantization)
        return extract(
            lm if self.feature_workers > 1 else lambda: self.lm,
            token_ids,
            table,
            folder,
            layer=self.layer,
            batch_size=data.batch_size,
            pad_id=self.tokenizer.pad_token_id,
            workers=self.feature_workers,
            shard_size=self.feature_shard_size,
        )

    # ------------------------------------------------------------ steps

    def _log_probs(self, stage: str, batch: dict[str, Tensor]) -> Tensor:
        features = self.features(self._data().split_for(stage))[batch["row"].cpu()].to(self.device)
        return self(features, batch["prev_state"])

    @staticmethod
    def _nll(log_probs: Tensor, state: Tensor) -> Tensor:
        return -log_probs.gather(1, state[:, None]).squeeze(1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._nll(self._log_probs("train", batch), batch["state"]).mean()
        self.log("train/nll", loss, prog_bar=True, batch_size=len(batch["row"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._val_nll.append(self._nll(self._log_probs("valid", batch), batch["state"]))

    def on_validation_epoch_end(self) -> None:
        nll = torch.cat(self._val_nll).mean()
        self._val_nll = []
        self.log_dict({"val/nll": nll, "val/ppl": nll.exp()}, prog_bar=True)
        if self.head == "likelihood":
            self.log("temperature", self.log_temperature.exp())

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collected.append((batch["row"].cpu(), self._log_probs("test", batch).float().cpu()))

    def on_test_epoch_end(self) -> None:
        self.test_predictions = self._predictions("test")
        nll = -float(self.test_predictions.realized_log_prob().astype(np.float64).mean())
        self.log_dict({"test/nll": nll, "test/ppl": math.exp(nll)})

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        log_probs = self._log_probs("predict", batch).float().cpu()
        self._collected.append((batch["row"].cpu(), log_probs))
        return log_probs

    def on_predict_epoch_end(self) -> None:
        split = self._data().split_for("predict")
        path = Path(
            self.predictions_path or Path(self.trainer.log_dir or ".") / f"predictions_{split}.parquet"
        )
        self._predictions("predict").write(path, top_k=self.top_k)
        log.info("wrote %s predictions to %s", split, path)

    def _predictions(self, stage: str) -> Predictions:
        """The collected log-probabilities of ``stage``'s split as Predictions (every row once, in table order)."""
        rows, log_probs = (torch.cat(x) for x in zip(*self._collected, strict=True))
        self._collected = []
        data = self._data()
        table = data.prediction_table(data.split_for(stage))
        if sorted(rows.tolist()) != list(range(len(table))):
            raise RuntimeError(f"{stage}: got {len(rows)} rows for {len(table)} transitions")
        ordered = torch.empty_like(log_probs)
        ordered[rows] = log_probs
        return Predictions(table, ordered.numpy(), self.name, self.vocab.identity)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer is not None:
            return self.optimizer(params)
        if self.head == "likelihood":
            return torch.optim.LBFGS(params, lr=1.0, max_iter=100, line_search_fn="strong_wolfe")
        return torch.optim.AdamW(params, lr=1e-3)
