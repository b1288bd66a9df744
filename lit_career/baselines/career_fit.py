"""Training CAREER: early stopping on validation NLL, and pretraining on one panel before fine-tuning on another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_career.baselines.career import SIZES, CareerTransformer, Size
from lit_career.baselines.career_data import COVARIATES, CareerDataModule, Covariate, build_covariate_vocab
from lit_career.errors import InputError
from lit_career.panel.careers import CareerPanel, assign_splits


@dataclass
class CareerFit:
    """The fine-tuned model (best validation checkpoint) and the pretrained one it started from, if any,
    with the epochs each training ran."""

    model: CareerTransformer
    pretrained: CareerTransformer | None
    epochs: int
    pretrain_epochs: int | None = None


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
) -> tuple[CareerTransformer, int]:
    """Train with early stopping on validation NLL; return the best checkpoint's model and the epochs run
    (checkpoints and CSV logs in ``out_dir``)."""
    L.seed_everything(seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="best", monitor="val/nll", mode="min"
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=max_epochs,
        deterministic=True,
        gradient_clip_val=1.0,
        callbacks=[checkpoint, EarlyStopping("val/nll", patience=patience)],
        logger=CSVLogger(out_dir, name="logs"),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    data = CareerDataModule(
        train, valid, model.hparams.covariate_vocab, batch_size, model.hparams.max_len, seed
    )
    trainer.fit(model, datamodule=data)
    best = CareerTransformer.load_from_checkpoint(checkpoint.best_model_path, map_location=model.device)
    return best, trainer.current_epoch


def held_out(panel: CareerPanel, seed: int = 0) -> tuple[CareerPanel, CareerPanel]:
    """(train, valid) of a pretraining panel: its own splits where assigned or given, else 95/5 by person."""
    if "split" not in panel.persons or panel.persons["split"].isna().any():
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
    train_args = dict(
        batch_size=batch_size, patience=patience, seed=seed, accelerator=accelerator, progress=progress
    )
    pre_train, pre_valid = held_out(pretrain, seed) if pretrain is not None else (None, None)
    if pretrain is not None and pretrain.vocab.identity != finetune_train.vocab.identity:
        raise InputError(
            f"the pretraining panel is over {pretrain.vocab.identity}, the fine-tuning panel over "
            f"{finetune_train.vocab.identity}"
        )
    vocab = build_covariate_vocab([p for p in (pre_train, finetune_train) if p is not None], covariates)
    model_args = {"num_states": len(finetune_train.vocab), **model_args}
    L.seed_everything(seed, verbose=False)
    model = CareerTransformer(vocab, **{**SIZES[size], **model_args})
    pretrained, pretrain_epochs = None, None
    if pre_train is not None:
        epochs = pretrain_max_epochs if pretrain_max_epochs is not None else max_epochs
        pretrained, pretrain_epochs = fit_career(
            model, pre_train, pre_valid, out_dir / "pretrain", max_epochs=epochs, **train_args
        )
        model = CareerTransformer(vocab, **{**SIZES[size], **model_args})
        model.load_state_dict(pretrained.state_dict())
    finetuned, epochs = fit_career(
        model, finetune_train, finetune_valid, out_dir / "finetune", max_epochs=max_epochs, **train_args
    )
    return CareerFit(finetuned, pretrained, epochs, pretrain_epochs)
