"""A callback for DDP tests run in a subprocess: each rank saves its trainable weights at the end of fit."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class SaveRankWeights(Callback):
    """Write ``<folder>/rank<global rank>.pt``: the trainable tensors, the world size and the global step."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters() if v.requires_grad}
        state = {"weights": weights, "world_size": trainer.world_size, "step": trainer.global_step}
        torch.save(state, self.folder / f"rank{trainer.global_rank}.pt")
