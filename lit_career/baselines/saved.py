"""Fitted baselines and CAREER saved beside their row, and loaded back, without pickle.

One file, :data:`MODEL_FILE`: the arrays and weights as safetensors tensors, and in its metadata the model's
``kind``, the number of ``states`` it predicts over and its ``settings`` as JSON (the smoothing of a Markov
chain, the covariate encoding of a softmax baseline, the hyperparameters of CAREER).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lit_career.baselines.career import CareerTransformer
from lit_career.baselines.markov import MarkovBaseline
from lit_career.baselines.neural import BagOfJobsBaseline, LogitBaseline, _Encoder
from lit_career.errors import InputError
from lit_career.io import write_file_atomic
from lit_career.panel.taxonomy import Vocabulary, vocabulary

MODEL_FILE = "model.safetensors"
Fitted = MarkovBaseline | LogitBaseline | BagOfJobsBaseline | CareerTransformer
MARKOV_ARRAYS = ("_first", "_bigram", "_trigram_keys", "_trigram_counts")
"""The counts a fitted :class:`MarkovBaseline` predicts from."""


def save_model(model: Fitted, folder: Path, vocab: Vocabulary | None = None) -> Path:
    """Write ``model``, fitted over ``vocab`` (default: the bundled occ1990dd), to ``folder/model.safetensors``
    (atomically); the metadata records the vocabulary's identity."""
    vocab = vocab or vocabulary()
    kind, settings, tensors = _parts(model)
    metadata = {
        "kind": kind,
        "states": str(len(vocab)),
        "vocabulary": vocab.identity,
        "settings": json.dumps(settings),
    }
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    return write_file_atomic(Path(folder) / MODEL_FILE, lambda tmp: save_file(tensors, tmp, metadata))


def load_model(path: Path, vocab: Vocabulary | None = None) -> Fitted:
    """The model :func:`save_model` wrote to ``path``, fitted over ``vocab`` (default: the bundled occ1990dd);
    an :class:`InputError` naming the file if it cannot be, or it was fitted over another vocabulary."""
    vocab = vocab or vocabulary()
    try:
        with safe_open(path, "pt") as opened:
            metadata = opened.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise InputError(f"not a readable saved model ({err})", file=str(path)) from None
    if metadata.get("kind") not in BUILDERS:
        raise InputError(f"not a saved model of this project (kind {metadata.get('kind')!r})", file=str(path))
    if metadata.get("vocabulary", vocabulary().identity) != vocab.identity or int(metadata["states"]) != len(
        vocab
    ):
        raise InputError(
            f"the model predicts over {metadata.get('vocabulary', 'occ1990dd')} ({metadata['states']} states), "
            f"not over {vocab.identity} ({len(vocab)} states)",
            file=str(path),
        )
    return BUILDERS[metadata["kind"]](json.loads(metadata["settings"]), tensors, len(vocab))


def covariate_levels(model: Fitted) -> dict[str, list[str]]:
    """The values of each categorical covariate the model was trained with (others it cannot embed);
    Markov chains use no covariates."""
    if isinstance(model, CareerTransformer):
        return dict(model.hparams.covariate_vocab)
    if isinstance(model, MarkovBaseline):
        return {}
    return {name: [str(v) for v in values] for name, values in model.encoder.levels.items()}


def _parts(model: Fitted) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """(kind, settings, tensors) of a fitted model."""
    if isinstance(model, MarkovBaseline):
        settings = {"order": model.order, "smoothing": model.smoothing, "backoff": model.backoff}
        return "markov", settings, {name: torch.from_numpy(getattr(model, name)) for name in MARKOV_ARRAYS}
    if isinstance(model, CareerTransformer):
        return "career", dict(model.hparams), model.state_dict()
    encoder = model.encoder
    settings = {"levels": {name: [str(v) for v in values] for name, values in encoder.levels.items()}}
    if isinstance(model, BagOfJobsBaseline):
        settings |= {"dim": model.dim, "hidden": model.hidden}
    tensors = {f"net.{name}": t for name, t in model.net.state_dict().items()}
    tensors |= {"encoder.mean": torch.from_numpy(encoder.mean), "encoder.std": torch.from_numpy(encoder.std)}
    return model.name, settings, tensors


def _markov(settings: dict[str, Any], tensors: dict[str, torch.Tensor], states: int) -> MarkovBaseline:
    model = MarkovBaseline(**settings, tune=False)
    for name in MARKOV_ARRAYS:
        setattr(model, name, tensors[name].numpy())
    return model


def _neural(
    model: LogitBaseline | BagOfJobsBaseline,
    settings: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    states: int,
) -> LogitBaseline | BagOfJobsBaseline:
    """``model`` (unfitted) given the saved covariate encoding and network weights."""
    model.encoder = _Encoder(
        tensors["encoder.mean"].numpy(), tensors["encoder.std"].numpy(), settings["levels"]
    )
    model.net = model._build(states, model.encoder.width)
    _load_state(model.net, {k.removeprefix("net."): t for k, t in tensors.items() if k.startswith("net.")})
    model.net.eval()
    return model


def _career(settings: dict[str, Any], tensors: dict[str, torch.Tensor], states: int) -> CareerTransformer:
    model = CareerTransformer(**{"num_states": states, **settings})
    _load_state(model, tensors)
    return model.eval()


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``tensors`` into ``module``; every weight must be there and fit."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:
        raise InputError(f"the saved weights do not fit the model ({str(err).splitlines()[0]})") from None


BUILDERS = {
    "markov": _markov,
    "logit": lambda settings, tensors, states: _neural(LogitBaseline(), settings, tensors, states),
    "bag_of_jobs": lambda settings, tensors, states: _neural(
        BagOfJobsBaseline(settings["dim"], settings["hidden"]), settings, tensors, states
    ),
    "career": _career,
}
"""How each kind of saved model is rebuilt from its settings and tensors."""
