"""Transitions of a resume corpus as batches of row indices, for heads over per-transition features.

:class:`TransitionData` is a :class:`~lit_career.llm.corpus.ResumeCorpus` (same arguments, same
tokenization, cache and person splits as the fine-tuning run) whose loaders yield transitions instead
of token batches: each batch is ``row`` (index into :meth:`transitions` of the loader's split),
``state`` and ``prev_state`` (``LongTensor[B]``). The model looks features up by row, so the frozen
LM runs once per split, not once per epoch. ``batch_size`` keeps its meaning (resumes per LM forward
when features are computed); ``transition_batch_size`` is the number of transitions per batch (None:
the whole split, for full-batch optimizers such as LBFGS).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from lit_career.llm.corpus import ResumeCorpus
from lit_career.panel.transitions import COVARIATES, transition_table


class TransitionData(ResumeCorpus):
    """Per-transition batches of a resume corpus (see module docstring).

    Args:
        transition_batch_size: transitions per batch; None puts a whole split in one batch.
        fit_split: the split ``fit`` trains on (``valid`` to calibrate a likelihood head on held-out data).
        predict_split: the split ``predict`` writes distributions for.
        **kwargs: the :class:`~lit_career.llm.corpus.ResumeCorpus` arguments.
    """

    def __init__(
        self,
        *,
        transition_batch_size: int | None = 1024,
        fit_split: str = "train",
        predict_split: str = "test",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if transition_batch_size is not None and transition_batch_size < 1:
            raise ValueError(f"transition_batch_size must be positive or None, got {transition_batch_size}")
        self.transition_batch_size = transition_batch_size
        self.fit_split, self.predict_split = fit_split, predict_split

    def split_for(self, stage: str) -> str:
        """The split whose transitions the loader of ``stage`` (train, valid, test, predict) yields."""
        return {"train": self.fit_split, "valid": "valid", "test": "test", "predict": self.predict_split}[
            stage
        ]

    def _transition_loader(self, stage: str) -> DataLoader:
        table = self.transitions(self.split_for(stage))
        dataset = TensorDataset(
            torch.arange(len(table)),
            torch.as_tensor(table["state"].to_numpy(np.int64)),
            torch.as_tensor(table["prev_state"].to_numpy(np.int64)),
        )
        order = (
            RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
            if stage == "train"
            else SequentialSampler(dataset)
        )
        size = self.transition_batch_size or max(len(table), 1)
        return DataLoader(
            dataset,
            batch_size=None,  # the sampler yields whole batches of rows
            sampler=BatchSampler(order, size, drop_last=False),
            collate_fn=_as_dict,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._transition_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._transition_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._transition_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._transition_loader("predict")

    def prediction_table(self, split: str) -> pd.DataFrame:
        """Key columns, ``split``, ``source`` and covariates of every transition of ``split``, in row order."""
        table = self.transitions(split)[
            ["source", "person_id", "year", "state", "prev_state", "gap", "split"]
        ]
        covariates = pd.concat(
            [
                transition_table(panel)[["person_id", "year", *COVARIATES]].assign(source=name)
                for name, panel in self.panels(split).items()
            ],
            ignore_index=True,
        )
        covariates["person_id"] = covariates["person_id"].astype(table["person_id"].dtype)
        joined = table.merge(
            covariates, on=["source", "person_id", "year"], how="left", validate="one_to_one"
        )
        return joined[["person_id", "year", "state", "prev_state", "gap", "split", "source", *COVARIATES]]


def _as_dict(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    row, state, prev_state = batch
    return {"row": row, "state": state, "prev_state": prev_state}
