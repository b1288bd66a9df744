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
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_career.baselines.career_data import CareerSequences, collate
from lit_career.panel.careers import CareerPanel
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
    ):
        super().__init__()
        self.save_hyperparameters()
        self.num_states = len(vocabulary())
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
    return Predictions(transition_table(panel), log_probs, model="career")
