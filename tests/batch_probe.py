"""A callback for fits run in a subprocess: what each rank trained on at every step, written as it goes."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class RecordBatches(Callback):
    """Write ``<folder>/rank<global rank>.json``: per step, the loss, the training resumes of the batch
    (indices into the corpus' ``train`` split, found by their tokens) and its token and position counts."""

    def __init__(self, folder: str):
        self.folder, self.steps = Path(folder), {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.index = {tuple(t): i for i, t in enumerate(trainer.datamodule.token_ids("train"))}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx
    ) -> None:
        mask = batch["attention_mask"].bool()
        rows = [tuple(ids[keep].tolist()) for ids, keep in zip(batch["input_ids"], mask, strict=True)]
        self.steps[trainer.global_step] = {
            "epoch": trainer.current_epoch,
            "loss": float(outputs["loss"]),
            "resumes": [self.index[row] for row in rows],
            "tokens": int(mask.sum()),
            "positions": mask.numel(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))
