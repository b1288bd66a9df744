"""CAREER (Vafa et al., 2024): a decoder-only transformer over occupation sequences.

Position ``t`` of a person's sequence embeds the previous state (a start token in the first year), the
covariates of year ``t`` (year, education, sex, race, location, birth year) and the position. Causal
attention lets it see the states before ``t`` and the covariates up to ``t``; it predicts the state at
``t``, so the first year is predicted from covariates alone. With ``two_stage`` the output at ``t > 0`` puts
``π_t = sigmoid(stay logit)`` on the previous state and shares ``1 - π_t`` among the other states through a
softmax that excludes it; the first year gets a plain softmax.

As in the paper the model can be pretrained on a large population (resumes) and fine-tuned on a survey
(:func:`~lit_career.baselines.career_fit.pretrain_then_finetune`).
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_career.baselines.career_data import CareerSequences, collate
from lit_career.errors import InputError
from lit_career.panel.careers import EDUCATION_LEVELS, CareerPanel
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary
from lit_career.panel.transitions import transition_table
from lit_career.two_stage import two_stage_log_probs

Size = Literal["full", "small", "tiny"]
SIZES: dict[str, dict[str, int]] = {
    "full": dict(n_layers=12, d_model=192, n_heads=3, d_ff=768),  # the CAREER paper's model
    "small": dict(n_layers=4, d_model=96, n_heads=3, d_ff=384),
    "tiny": dict(n_layers=2, d_model=32, n_heads=2, d_ff=64),
}


class CareerTransformer(L.LightningModule):
    """CAREER's decoder-only transformer with covariate embeddings and the two-stage stay/move output.

    Args:
        covariate_vocab: known values of each covariate used (see :func:`build_covariate_vocab`).
        n_layers, d_model, n_heads, d_ff: transformer size (see :data:`SIZES`).
        dropout: dropout of embeddings, attention and feed-forward layers.
        max_len: longest window of person-years (learned positions).
        lr, weight_decay: AdamW settings; ``warmup`` steps of linear warm-up, then inverse square-root decay.
        two_stage: stay/move output; otherwise a plain softmax everywhere.
        num_states: size of the panel's vocabulary (default: the bundled occ1990dd one).
    """

    def __init__(
        self,
        covariate_vocab: dict[str, list[str]],
        n_layers: int = 12,
        d_model: int = 192,
        n_heads: int = 3,
        d_ff: int = 768,
        dropout: float = 0.1,
        max_len: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup: int = 200,
        two_stage: bool = True,
        num_states: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.num_states = num_states or len(vocabulary())
        self.state_embedding = nn.Embedding(self.num_states + 1, d_model)  # last id: start of career
        self.covariate_embeddings = nn.ModuleList(
            nn.Embedding(len(v) + 1, d_model) for v in covariate_vocab.values()
        )
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.state_head = nn.Linear(d_model, self.num_states)
        self.stay_head = nn.Linear(d_model, 1)

    def forward(self, prev: Tensor, covariates: Tensor) -> tuple[Tensor, Tensor]:
        """State logits [B, T, V] and stay logits [B, T] from previous states [B, T] (-1: none) and covariate ids [B, T, C]."""
        length = prev.shape[1]
        x = self.state_embedding(torch.where(prev >= 0, prev, self.num_states))
        x = x + self.position_embedding(torch.arange(length, device=prev.device))
        for i, embedding in enumerate(self.covariate_embeddings):
            x = x + embedding(covariates[..., i])
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=prev.device)
        h = self.encoder(self.dropout(x), mask=mask, is_causal=True)
        return self.state_head(h), self.stay_head(h).squeeze(-1)

    def log_probs(self, batch: dict[str, Tensor]) -> Tensor:
        """Log distribution over states [B, T, V] at every position of a batch."""
        logits, stay = self(batch["prev"], batch["covariates"])
        if not self.hparams.two_stage:
            return logits.log_softmax(-1)
        return two_stage_log_probs(logits, stay, batch["prev"])

    def simulator(self, history: CareerPanel, paths: int) -> CareerSimulator:
        """Sampler of ``paths`` futures of each person of ``history`` (see :mod:`lit_career.forecast`)."""
        return CareerSimulator(self, history, paths)

    def _nll(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        scored = batch["scored"]
        log_probs = self.log_probs(batch)[scored]
        nll = -log_probs.gather(-1, batch["states"][scored].unsqueeze(-1)).mean()
        self.log(
            f"{stage}/nll",
            nll,
            batch_size=int(scored.sum()),
            prog_bar=True,
            on_step=stage == "train",
            on_epoch=True,
        )
        return nll

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._nll(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._nll(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(1, hp.warmup)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def predict_panel(
    model: CareerTransformer, panel: CareerPanel, batch_size: int = 256, max_len: int | None = None
) -> Predictions:
    """Full log distributions for every person-year of ``panel``, in :func:`transition_table` order."""
    max_len = max_len or model.hparams.max_len
    if max_len > model.hparams.max_len:
        raise ValueError(f"max_len {max_len} exceeds the model's {model.hparams.max_len} positions")
    data = CareerSequences(panel, model.hparams.covariate_vocab, max_len, every_position=True)
    log_probs = np.zeros((len(panel), model.num_states), dtype=np.float32)
    was_training = model.training
    model.eval()
    for batch in DataLoader(data, batch_size, collate_fn=collate):
        batch = {k: v.to(model.device) for k, v in batch.items()}
        scored = batch["scored"]
        log_probs[batch["rows"][scored].cpu().numpy()] = model.log_probs(batch)[scored].float().cpu().numpy()
    model.train(was_training)
    return Predictions(transition_table(panel), log_probs, "career", panel.vocab.identity)


class CareerSimulator:
    """CAREER futures with an incremental encoder (a key/value cache), equal to re-encoding each path.

    Each person's history is encoded once and its keys and values kept per layer; the first forecast year
    (previous state known) is one more token per person; from the second year on, each path adds one token
    per year, which attends to its person's cached tokens and to its own. Positions count on from the history,
    so history and forecast together must fit the model's ``max_len`` positions.
    """

    @torch.no_grad()
    def __init__(self, model: CareerTransformer, history: CareerPanel, paths: int):
        model.eval()
        self.model, self.paths = model, paths
        data = CareerSequences(history, model.hparams.covariate_vocab, model.hparams.max_len)
        batch = collate([data[i] for i in range(len(data))])
        self.length = (batch["rows"] >= 0).sum(1)  # history tokens per person
        last = batch["rows"][torch.arange(len(self.length)), self.length - 1]
        self.last = torch.as_tensor(data.states[last])
        self.static = batch["covariates"][torch.arange(len(self.length)), self.length - 1]
        self.keys, self.values = self._encode(batch["prev"], batch["covariates"])
        self.own_keys: list[Tensor] = []  # per layer [paths, heads, capacity, head dim], filled to steps - 1
        self.own_values: list[Tensor] = []
        self.steps = 0

    def _encode(self, prev: Tensor, covariates: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Keys and values [persons, heads, history + 1, head dim] of every layer (one free slot at the end)."""
        model = self.model
        x = self._embed(prev, covariates, torch.arange(prev.shape[1]))
        keys, values = [], []
        for layer in model.encoder.layers:
            q, k, v = (t.transpose(1, 2) for t in self._qkv(layer, x))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = self._finish(layer, x, attended.transpose(1, 2).flatten(2))
            keys.append(F.pad(k, (0, 0, 0, 1)))
            values.append(F.pad(v, (0, 0, 0, 1)))
        return keys, values

    def _embed(self, prev: Tensor, covariates: Tensor, position: Tensor) -> Tensor:
        model = self.model
        if int(position.max()) >= model.hparams.max_len:
            raise InputError(
                f"CAREER sees at most {model.hparams.max_len} years: history and forecast years exceed it"
            )
        x = model.state_embedding(torch.where(prev >= 0, prev, model.num_states)) + model.position_embedding(
            position
        )
        for i, embedding in enumerate(model.covariate_embeddings):
            x = x + embedding(covariates[..., i])
        return x

    @staticmethod
    def _qkv(layer: nn.TransformerEncoderLayer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values [..., heads, head dim] of the tokens ``x``."""
        attention = layer.self_attn
        qkv = F.linear(layer.norm1(x), attention.in_proj_weight, attention.in_proj_bias)
        return qkv.unflatten(-1, (3, attention.num_heads, -1)).unbind(-3)

    @staticmethod
    def _finish(layer: nn.TransformerEncoderLayer, x: Tensor, attended: Tensor) -> Tensor:
        """The rest of a pre-norm encoder layer after attention (heads merged in ``attended``)."""
        x = x + layer.self_attn.out_proj(attended)
        return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))

    def _covariates(self, year: int, education: np.ndarray) -> Tensor:
        """Covariate ids of each person's next token: the history's static ones, ``year`` and ``education``."""
        ids = self.static.clone()
        for i, (name, known) in enumerate(self.model.hparams.covariate_vocab.items()):
            index = pd.Index(known, dtype="string")
            if name == "year":
                ids[:, i] = int(index.get_indexer([str(year)])[0]) + 1
            elif name == "education":
                levels = np.asarray(EDUCATION_LEVELS, dtype=object)[np.maximum(education, 0)]
                ids[:, i] = torch.as_tensor(np.where(education >= 0, index.get_indexer(levels) + 1, 0))
        return ids

    @torch.no_grad()
    def step(self, year: int, education: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-state distributions in ``year``: one per person in the first year, then one per path."""
        model, persons = self.model, len(self.length)
        covariates = self._covariates(year, education)
        if self.steps == 0:
            x = self._embed(self.last, covariates, self.length)
            for i, layer in enumerate(model.encoder.layers):
                q, k, v = self._qkv(layer, x)
                everyone = torch.arange(persons)
                self.keys[i][everyone, :, self.length], self.values[i][everyone, :, self.length] = k, v
                valid = torch.arange(self.keys[i].shape[2]) <= self.length[:, None]
                mask = torch.where(valid, 0.0, float("-inf"))[:, None, None, :]
                attended = F.scaled_dot_product_attention(q[:, :, None], self.keys[i], self.values[i], mask)
                x = self._finish(layer, x, attended.flatten(1))
            prev, row = self.last, np.repeat(np.arange(persons), self.paths)
        else:
            person = torch.arange(persons).repeat_interleave(self.paths)
            x = self._embed(self.last, covariates[person], self.length[person] + self.steps)
            for i, layer in enumerate(model.encoder.layers):
                q, k, v = self._qkv(layer, x)
                self._keep(i, k, v)
                x = self._finish(layer, x, self._attend(i, q).flatten(1))
            prev, row = self.last, np.arange(persons * self.paths)
        h = model.encoder.norm(x)
        if model.hparams.two_stage:
            log_probs = two_stage_log_probs(model.state_head(h), model.stay_head(h).squeeze(-1), prev)
        else:
            log_probs = model.state_head(h).log_softmax(-1)
        self.steps += 1
        return log_probs.exp().numpy(), row

    def _attend(self, layer: int, q: Tensor) -> Tensor:
        """Attention of each path's query [paths, heads, dim] over its person's cache and its own tokens."""
        persons, scale = len(self.length), q.shape[-1] ** -0.5
        by_person = q.unflatten(0, (persons, self.paths)).transpose(1, 2)  # [persons, heads, paths, dim]
        shared = by_person @ self.keys[layer].transpose(-1, -2) * scale  # [persons, heads, paths, history]
        valid = torch.arange(shared.shape[-1]) <= self.length[:, None]
        shared = shared.masked_fill(~valid[:, None, None, :], float("-inf"))
        own_keys = self.own_keys[layer][:, :, : self.steps]
        own_values = self.own_values[layer][:, :, : self.steps]
        own = (q[:, :, None] @ own_keys.transpose(-1, -2)).squeeze(2) * scale  # [paths, heads, own tokens]
        own = own.unflatten(0, (persons, self.paths)).transpose(1, 2)
        weights = torch.cat([shared, own], -1).softmax(-1)
        out = weights[..., : shared.shape[-1]] @ self.values[layer]
        out = out.transpose(1, 2).flatten(0, 1)  # [paths, heads, dim]
        own_weights = weights[..., shared.shape[-1] :].transpose(1, 2).flatten(0, 1)
        return out + (own_weights[:, :, None] @ own_values).squeeze(2)

    def _keep(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store the paths' newest keys and values [paths, heads, head dim] of ``layer`` (room doubles when full)."""
        if len(self.own_keys) <= layer:
            self.own_keys.append(k.new_empty(k.shape[0], k.shape[1], 16, k.shape[2]))
            self.own_values.append(torch.empty_like(self.own_keys[layer]))
        if self.own_keys[layer].shape[2] < self.steps:
            self.own_keys[layer] = torch.cat(
                [self.own_keys[layer], torch.empty_like(self.own_keys[layer])], 2
            )
            self.own_values[layer] = torch.cat(
                [self.own_values[layer], torch.empty_like(self.own_values[layer])], 2
            )
        self.own_keys[layer][:, :, self.steps - 1] = k
        self.own_values[layer][:, :, self.steps - 1] = v

    def advance(self, states: np.ndarray) -> None:
        """The drawn states become the previous states of the paths' next tokens."""
        self.last = torch.as_tensor(states.astype(np.int64))
