"""CAREER (Vafa et al., 2024): a decoder-only transformer over occupation sequences.

Position ``t`` of a person's sequence embeds the previous state (a start token in the first year), the
covariates of year ``t`` (year, education, sex, race, location, birth year) and the position. Causal
attention lets it see the states before ``t`` and the covariates up to ``t``; it predicts the state at
``t``, so the first year is predicted from covariates alone. With ``two_stage`` the output at ``t > 0`` puts
``π_t = sigmoid(stay logit)`` on the previous state and shares ``1 - π_t`` among the other states through a
softmax that excludes it; the first year gets a plain softmax.

As in the paper the model can be pretrained on a large population (resumes) and fine-tuned on a survey
(:func:`pretrain_then_finetune`); :func:`run_career` does that for panel sources and writes predictions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lit_career.data.panel import CareerPanel, assign_splits
from lit_career.data.sources import PanelSource
from lit_career.data.taxonomy import vocabulary
from lit_career.evaluation.metrics import evaluate_predictions
from lit_career.evaluation.predictions import Predictions, transition_table

Covariate = Literal["year", "education", "sex", "race", "location", "birth_year"]
COVARIATES: tuple[Covariate, ...] = ("year", "education", "sex", "race", "location", "birth_year")
PER_YEAR = ("year", "education")  # the other covariates are static per person
Size = Literal["full", "small", "tiny"]
SIZES: dict[str, dict[str, int]] = {
    "full": dict(n_layers=12, d_model=192, n_heads=3, d_ff=768),  # the CAREER paper's model
    "small": dict(n_layers=4, d_model=96, n_heads=3, d_ff=384),
    "tiny": dict(n_layers=2, d_model=32, n_heads=2, d_ff=64),
}


# ----------------------------------------------------------------------------------------------- data
def covariate_values(panel: CareerPanel, covariates: tuple[str, ...]) -> dict[str, pd.Series]:
    """Each covariate of every person-year as strings (NA when missing), in record order."""
    persons = panel.persons.reindex(panel.records["person_id"])
    return {
        name: (panel.records[name] if name in PER_YEAR else persons[name]).astype("string").reset_index(drop=True)
        for name in covariates
    }


def build_covariate_vocab(panels: list[CareerPanel], covariates: tuple[str, ...] = COVARIATES) -> dict[str, list[str]]:
    """Sorted distinct non-missing values of each covariate over ``panels`` (the training panels)."""
    values = [covariate_values(panel, covariates) for panel in panels]
    return {name: sorted(set().union(*(set(v[name].dropna()) for v in values))) for name in covariates}


class CareerSequences(Dataset):
    """A panel as windows of at most ``max_len`` consecutive person-years.

    Training (``every_position=False``) keeps each person's most recent ``max_len`` years. Prediction
    (``every_position=True``) scores every person-year once: the first window covers the first
    ``max_len`` years, and each later year is scored at the end of the window of its ``max_len`` most
    recent years. Covariate ids are 1 + the index in ``covariate_vocab``; unknown or missing values are 0.
    """

    def __init__(self, panel: CareerPanel, covariate_vocab: dict[str, list[str]], max_len: int, every_position: bool = False):
        records = panel.records
        self.states = records["state"].to_numpy().astype(np.int64)
        pid = records["person_id"].to_numpy()
        first = np.r_[True, pid[1:] != pid[:-1]] if len(pid) else np.zeros(0, bool)
        self.prev = np.where(first, -1, np.r_[-1, self.states[:-1]])
        cov = covariate_values(panel, tuple(covariate_vocab))
        ids = [pd.Index(values, dtype="string").get_indexer(cov[name]) + 1 for name, values in covariate_vocab.items()]
        self.covariates = np.stack(ids, axis=1).astype(np.int64) if ids else np.zeros((len(records), 0), np.int64)
        self.windows = _windows(np.r_[np.flatnonzero(first), len(pid)], max_len, every_position)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        start, stop, first_scored = self.windows[i]
        rows = np.arange(start, stop)
        return {
            "states": torch.from_numpy(self.states[rows]),
            "prev": torch.from_numpy(self.prev[rows]),
            "covariates": torch.from_numpy(self.covariates[rows]),
            "scored": torch.from_numpy(rows >= first_scored),
            "rows": torch.from_numpy(rows),
        }


def _windows(bounds: np.ndarray, max_len: int, every_position: bool) -> np.ndarray:
    """(start, stop, first scored row) per window, for persons whose records span ``bounds[i]:bounds[i+1]``."""
    windows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if not every_position:
            start = max(a, b - max_len)
            windows.append((start, b, start))
            continue
        head = min(b, a + max_len)
        windows.append((a, head, a))
        windows.extend((t - max_len + 1, t + 1, t) for t in range(head, b))
    return np.array(windows, dtype=np.int64).reshape(-1, 3)


def collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Right-pad windows into a batch (padding is never scored; causal attention keeps it out of real positions)."""
    pad = {"states": -1, "prev": -1, "covariates": 0, "scored": False, "rows": -1}
    return {k: nn.utils.rnn.pad_sequence([it[k] for it in items], batch_first=True, padding_value=v) for k, v in pad.items()}


class CareerDataModule(L.LightningDataModule):
    """Train/valid panels as shuffled (train) and ordered (valid) batches of windows."""

    def __init__(
        self,
        train: CareerPanel,
        valid: CareerPanel,
        covariate_vocab: dict[str, list[str]],
        batch_size: int = 64,
        max_len: int = 64,
        seed: int = 0,
    ):
        super().__init__()
        self.train_panel, self.valid_panel, self.covariate_vocab = train, valid, covariate_vocab
        self.batch_size, self.max_len, self.seed = batch_size, max_len, seed

    def setup(self, stage: str) -> None:
        self.train_data = CareerSequences(self.train_panel, self.covariate_vocab, self.max_len)
        self.valid_data = CareerSequences(self.valid_panel, self.covariate_vocab, self.max_len, every_position=True)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_data, self.batch_size, shuffle=True, collate_fn=collate, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.valid_data, self.batch_size, collate_fn=collate)


# ---------------------------------------------------------------------------------------------- model
def two_stage_log_probs(logits: Tensor, stay_logit: Tensor, prev: Tensor) -> Tensor:
    """Log distribution over states: ``log π`` on ``prev`` and ``log(1-π) + log softmax`` over the other
    states where ``prev >= 0``; a plain log softmax where ``prev < 0``. Shapes [..., V], [...], [...]."""
    index = prev.clamp(min=0).unsqueeze(-1)
    move = logits.scatter(-1, index, float("-inf")).log_softmax(-1) + F.logsigmoid(-stay_logit).unsqueeze(-1)
    move = move.scatter(-1, index, F.logsigmoid(stay_logit).unsqueeze(-1))
    return torch.where((prev >= 0).unsqueeze(-1), move, logits.log_softmax(-1))


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
        self.covariate_embeddings = nn.ModuleList(nn.Embedding(len(v) + 1, d_model) for v in covariate_vocab.values())
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
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
        self.log(f"{stage}_nll", nll, batch_size=int(scored.sum()), prog_bar=True, on_step=stage == "train", on_epoch=True)
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
def predict_panel(model: CareerTransformer, panel: CareerPanel, batch_size: int = 256, max_len: int | None = None) -> Predictions:
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


# ------------------------------------------------------------------------------------------- training
@dataclass
class CareerFit:
    """The fine-tuned model (best validation checkpoint) and the pretrained one it started from, if any."""

    model: CareerTransformer
    pretrained: CareerTransformer | None


def fit_career(
    model: CareerTransformer,
    train: CareerPanel,
    valid: CareerPanel,
    out_dir: Path,
    *,
    max_epochs: int = 30,
    batch_size: int = 64,
    patience: int = 3,
    seed: int = 0,
    accelerator: str = "auto",
    progress: bool = False,
) -> CareerTransformer:
    """Train with early stopping on validation NLL; return the best checkpoint's model (checkpoints and CSV logs in ``out_dir``)."""
    L.seed_everything(seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor="val_nll", mode="min")
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=max_epochs,
        deterministic=True,
        gradient_clip_val=1.0,
        callbacks=[checkpoint, EarlyStopping("val_nll", patience=patience)],
        logger=CSVLogger(out_dir, name="logs"),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    data = CareerDataModule(train, valid, model.hparams.covariate_vocab, batch_size, model.hparams.max_len, seed)
    trainer.fit(model, datamodule=data)
    return CareerTransformer.load_from_checkpoint(checkpoint.best_model_path, map_location=model.device)


def held_out(panel: CareerPanel, seed: int = 0) -> tuple[CareerPanel, CareerPanel]:
    """(train, valid) of a pretraining panel: its own splits if assigned, else 95/5 by person."""
    if "split" not in panel.persons:
        panel = assign_splits(panel, {"train": 0.95, "valid": 0.05}, seed=seed)
    return panel.split("train"), panel.split("valid")


def pretrain_then_finetune(
    pretrain: CareerPanel | None,
    finetune_train: CareerPanel,
    finetune_valid: CareerPanel,
    size: Size = "small",
    *,
    out_dir: Path,
    max_epochs: int = 30,
    pretrain_max_epochs: int | None = None,
    batch_size: int = 64,
    patience: int = 3,
    seed: int = 0,
    covariates: tuple[Covariate, ...] = COVARIATES,
    accelerator: str = "auto",
    progress: bool = False,
    **model_args: Any,
) -> CareerFit:
    """Pretrain on ``pretrain`` (if given; validation on its held-out persons), then fine-tune on the survey.

    Covariate vocabularies come from both training panels so the fine-tuned model keeps every pretrained
    embedding. ``model_args`` override :class:`CareerTransformer` arguments (``lr``, ``dropout``, ...).
    """
    out_dir = Path(out_dir)
    train_args = dict(batch_size=batch_size, patience=patience, seed=seed, accelerator=accelerator, progress=progress)
    pre_train, pre_valid = held_out(pretrain, seed) if pretrain is not None else (None, None)
    vocab = build_covariate_vocab([p for p in (pre_train, finetune_train) if p is not None], covariates)
    L.seed_everything(seed, verbose=False)
    model = CareerTransformer(vocab, **{**SIZES[size], **model_args})
    pretrained = None
    if pre_train is not None:
        epochs = pretrain_max_epochs if pretrain_max_epochs is not None else max_epochs
        pretrained = fit_career(model, pre_train, pre_valid, out_dir / "pretrain", max_epochs=epochs, **train_args)
        model = CareerTransformer(vocab, **{**SIZES[size], **model_args})
        model.load_state_dict(pretrained.state_dict())
    finetuned = fit_career(model, finetune_train, finetune_valid, out_dir / "finetune", max_epochs=max_epochs, **train_args)
    return CareerFit(finetuned, pretrained)


def run_career(
    source: PanelSource,
    out_dir: Path,
    pretrain_source: PanelSource | None = None,
    size: Size = "small",
    split_seed: int = 0,
    **fit_args: Any,
) -> dict[str, Any]:
    """Split ``source`` by person (seed ``split_seed``), pretrain on ``pretrain_source`` if given, fine-tune,
    write ``predictions_{valid,test}.parquet`` and ``summary.json`` (metrics of
    :func:`~lit_career.evaluation.metrics.evaluate_predictions` per split) to ``out_dir``; return the summary.

    ``fit_args`` go to :func:`pretrain_then_finetune`.
    """
    out_dir = Path(out_dir)
    panel = assign_splits(source.load(), seed=split_seed)
    pretrain = pretrain_source.load() if pretrain_source is not None else None
    fit = pretrain_then_finetune(pretrain, panel.split("train"), panel.split("valid"), size, out_dir=out_dir, **fit_args)
    summary: dict[str, Any] = {"model": "career", "size": size, "pretrained": pretrain is not None}
    for name in ("valid", "test"):
        predictions = predict_panel(fit.model, panel.split(name))
        predictions.check_normalized()
        predictions.write(out_dir / f"predictions_{name}.parquet")
        summary[name] = evaluate_predictions(predictions)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
