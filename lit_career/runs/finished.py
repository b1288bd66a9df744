"""A finished row, loaded to score careers it never saw::

    from lit_career.panel.worker import read_worker
    from lit_career.runs.finished import Row

    row = Row.load("outputs/experiments/nlsy79/logit")
    predictions = row.predict(panel)  # Predictions, like the row's predictions_test.parquet
    row.top_k(read_worker("worker.json"), 5)  # the worker's five likeliest states the next year

What the row folder must hold besides ``metrics.json``: a baseline or CAREER row its fitted model
(``model.safetensors``, :mod:`lit_career.baselines.saved`); an LM row its fine-tuned LM (``finetune/adapter``,
or that of the row it reuses; none off the shelf), its head's resolved config ``head/config.yaml`` and best
checkpoint ``head/checkpoints/best.ckpt``. Every person of a scored panel is a test person, so ``evaluate``
reads the predictions like a row's. A panel is refused when a state lies outside the row's vocabulary or a
covariate the row embeds by value (CAREER: all six; logit and bag-of-jobs: sex, race, location) holds values
it never trained with.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lit_career.baselines.career import CareerTransformer, predict_panel
from lit_career.baselines.career_data import covariate_values
from lit_career.baselines.saved import MODEL_FILE, Fitted, covariate_levels, load_model
from lit_career.errors import InputError
from lit_career.io import read_json
from lit_career.llm.adapter import fine_tuned_lm, read_yaml
from lit_career.llm.head import OccupationHead
from lit_career.llm.transition_data import TransitionData
from lit_career.panel.careers import CareerPanel, give_splits, make_panel
from lit_career.panel.predictions import Predictions
from lit_career.panel.table import ColumnMap
from lit_career.panel.taxonomy import Vocabulary, vocabulary
from lit_career.panel.vocabularies import load_vocabulary
from lit_career.runs.preemption import RequeueAtStepEnd
from lit_career.sources import PanelSource
from lit_career.text.resume import ResumeTemplate

HEAD_CONFIG, HEAD_CHECKPOINT = Path("head/config.yaml"), Path("head/checkpoints/best.ckpt")
RUN_ONLY = ("optimizer", "predictions_path", "top_k")
"""Head arguments that do not define the head (how it trains, where it writes)."""
READING = ("template", "max_length", "batch_size", "transition_batch_size")
"""Corpus arguments of the head that decide how a panel is read into features."""
CONFIG_CLASSES = [ResumeTemplate, PanelSource, ColumnMap]
"""Plain config dataclasses a head checkpoint's data hyperparameters may hold (allowed when it is loaded)."""


@dataclass
class Row:
    """A finished row: its name and its fitted model (a baseline, CAREER or an LM row's head)."""

    name: str
    model: Fitted | FinishedHead
    vocab: Vocabulary = field(default_factory=vocabulary)
    """The states the row predicts over (its source's ``vocabulary``)."""

    @classmethod
    def load(cls, folder: str | Path) -> Row:
        """The row in ``folder``; an :class:`InputError` naming the file a scoring row lacks."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError("no such row folder", file=str(folder))
        record = read_json(_required(folder / "metrics.json"))
        if not isinstance(record, dict):
            raise InputError("not a row record (a JSON object)", file=str(folder / "metrics.json"))
        settings = record.get("settings") or {}
        vocab = load_vocabulary((settings.get("source") or {}).get("vocabulary") or "occ1990dd")
        if settings.get("model") == "lm":
            head = FinishedHead.load(folder, settings["lm"])
            return cls(record["model"], head, load_vocabulary(head.args.get("vocabulary", "occ1990dd")))
        if settings.get("model") == "oracle":
            raise InputError(
                "the oracle fits no model: it scores only its own world's panel", file=str(folder)
            )
        if "saved_model" not in record:
            raise InputError(
                "written before rows saved their fitted model: run the row again to score with it",
                file=str(folder / "metrics.json"),
            )
        return cls(record["model"], load_model(_required(folder / MODEL_FILE), vocab), vocab)

    def predict(self, panel: CareerPanel) -> Predictions:
        """Distributions for every transition of ``panel``, each of its persons a test person."""
        panel = give_splits(panel, pd.Series("test", panel.persons.index), {"test": f"scored by {self.name}"})
        self._check(panel)
        if isinstance(self.model, CareerTransformer):
            predictions = predict_panel(self.model, panel)
        else:
            predictions = self.model.predict(panel)
        predictions.model = self.name
        return predictions

    def top_k(self, history: CareerPanel, k: int = 5) -> pd.DataFrame:
        """The ``k`` likeliest states of the one worker of ``history`` in the year after the last, with their
        probabilities (education as in the last year)."""
        if len(history.persons) != 1:
            raise InputError(f"top_k takes one worker's history, not {len(history.persons)} persons")
        records = history.records
        ahead = pd.concat([records, records.tail(1).assign(year=records["year"].iloc[-1] + 1)])
        predictions = self.predict(make_panel(ahead, history.persons, history.source, vocab=history.vocab))
        log_probs = predictions.log_probs[np.argmax(predictions.table["year"].to_numpy())]
        top = np.argsort(-log_probs)[:k]
        vocab = self.vocab
        return pd.DataFrame(
            {
                "code": vocab.codes[top],
                "title": np.array(vocab.titles)[top],
                "probability": np.exp(log_probs[top]),
            },
            index=pd.RangeIndex(1, len(top) + 1, name="rank"),
        )

    def _check(self, panel: CareerPanel) -> None:
        """Refuse a panel over another vocabulary, states outside it and covariate values the model cannot embed."""
        if panel.vocab.identity != self.vocab.identity:
            raise InputError(
                f"{panel.source} is over the vocabulary {panel.vocab.identity}, row {self.name} over "
                f"{self.vocab.identity}: read the panel with the row's vocabulary"
            )
        states = panel.records["state"].to_numpy()
        outside = np.unique(states[(states < 0) | (states >= len(self.vocab))])
        if len(outside):
            raise InputError(
                f"states {outside[:5].tolist()} of {panel.source} are outside the vocabulary of row "
                f"{self.name} ({len(self.vocab)} states)"
            )
        levels = {} if isinstance(self.model, FinishedHead) else covariate_levels(self.model)
        values = covariate_values(panel, tuple(levels))
        for column, known in levels.items():
            unseen = sorted(set(values[column].dropna()) - set(known))
            if unseen:
                raise InputError(
                    f"row {self.name} never trained with the {column} values {_few(unseen)} of {panel.source} "
                    f"(it knows {_few(known)}): recode them to known values, or leave them empty (missing)",
                    column=column,
                )


@dataclass
class FinishedHead:
    """An LM row's head: its arguments and weights, the corpus settings it reads panels with, its precision."""

    args: dict[str, Any]
    state: dict[str, Tensor]
    reading: dict[str, Any]
    precision: str | None = None

    @classmethod
    def load(cls, folder: Path, lm: dict[str, Any]) -> FinishedHead:
        """The head of the LM row in ``folder`` (``lm``: the row's LM settings), on its fine-tuned LM."""
        config = read_yaml(_required(folder / HEAD_CONFIG))
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        args = {k: v for k, v in model.items() if k not in RUN_ONLY} | _fine_tuned_lm(folder, lm)
        reading = {k: data[k] for k in READING if k in data}
        if reading.get("template") is not None:
            reading["template"] = ResumeTemplate(**reading["template"])
        precision = (config.get("trainer") or {}).get("precision")
        head = cls(args, _head_weights(_required(folder / HEAD_CHECKPOINT)), reading, precision)
        head.build()  # fails now, not at the first panel, when the LM or the weights do not fit
        return head

    def build(self) -> OccupationHead:
        """A fresh head with the row's weights (its features are computed, or read from the cache, anew)."""
        head = OccupationHead(**self.args)
        head.load_state_dict(self.state)
        return head.eval()

    def predict(self, panel: CareerPanel, data_class: type[PanelTransitions] | None = None) -> Predictions:
        """The head's predict path over ``panel`` (rendered, tokenized and featurized as the row's test split);
        ``data_class`` chooses its transitions (default: :class:`PanelTransitions`, all of them)."""
        head = self.build()
        data = (data_class or PanelTransitions)(panel, tokenizer=head.base_model, **self.reading)
        trainer = L.Trainer(
            devices=1,
            precision=self.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[RequeueAtStepEnd()],  # SIGTERM stops the process at a batch end
        )
        with TemporaryDirectory() as tmp, warnings.catch_warnings():
            # the head's check that it is trained on the fine-tuning run's splits; scoring trains nothing
            warnings.filterwarnings("ignore", "data settings .* differ from the fine-tuning run")
            head.predictions_path = str(Path(tmp) / "predictions.parquet")
            trainer.predict(head, data, return_predictions=False)
            return Predictions.read(head.predictions_path)


class PanelTransitions(TransitionData):
    """The transitions of one given panel, all in the test split (what a finished head scores)."""

    def __init__(self, panel: CareerPanel, **kwargs: Any):
        source = PanelSource(name=panel.source)
        super().__init__(sources=[source], split_fractions={"test": 1.0}, predict_split="test", **kwargs)
        self.panel = panel

    def _panel(self, i: int) -> CareerPanel:
        return self.panel


def _fine_tuned_lm(folder: Path, lm: dict[str, Any]) -> dict[str, str | None]:
    """Head arguments that load the row's fine-tuned LM from where it lies now: its ``finetune/adapter`` or
    that of the row it reuses (an adapter, or the whole model fine-tuned in full); none off the shelf."""
    if lm.get("finetune"):
        export = folder / "finetune" / "adapter"
    elif lm.get("reuse"):
        export = folder.parent / lm["reuse"] / "finetune" / "adapter"
    else:
        return {}
    if fine_tuned_lm(export) == "model":
        return {"base_model": str(export), "adapter": None}
    return {"adapter": str(export)}


def _head_weights(path: Path) -> dict[str, Tensor]:
    """The state dict of a head checkpoint, loaded with ``weights_only`` (plain config dataclasses allowed)."""
    try:
        with torch.serialization.safe_globals(CONFIG_CLASSES):
            return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as err:
        raise InputError(
            f"not a readable head checkpoint ({str(err).splitlines()[0]})", file=str(path)
        ) from None


def _required(path: Path) -> Path:
    if not path.exists():
        raise InputError(
            "missing: the row folder is incomplete (run the row again to score with it)", file=str(path)
        )
    return path


def _few(values: list) -> str:
    """Up to five values, and how many more."""
    more = f" and {len(values) - 5} more" if len(values) > 5 else ""
    return ", ".join(map(str, values[:5])) + more
