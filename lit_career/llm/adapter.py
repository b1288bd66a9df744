"""The LM a fine-tuning run exported: its base model, an identity hash for caches, the split it was tuned on."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import yaml

from lit_career.errors import InputError
from lit_career.io import read_json
from lit_career.llm.backbone import check_safetensors, resolve_model_source
from lit_career.llm.transition_data import TransitionData

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
"""peft's weight files, one of which an adapter folder holds."""


def check_adapter(adapter: str | Path) -> Path:
    """Raise an :class:`InputError` naming what is wrong with a peft adapter folder: missing or empty, no or
    unreadable ``adapter_config.json``, no weights or a truncated ``adapter_model.safetensors``."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise InputError("adapter folder not found", file=str(folder))
    if not any(folder.iterdir()):
        raise InputError("the adapter folder is empty", file=str(folder))
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise InputError("not a peft adapter folder (no adapter_config.json)", file=str(folder))
    settings = read_json(config)
    if not isinstance(settings, dict) or "peft_type" not in settings:
        raise InputError("not a peft adapter config (a JSON object with peft_type)", file=str(config))
    weights = [folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise InputError(
            f"the adapter folder has no weights ({' or '.join(ADAPTER_WEIGHTS)})", file=str(folder)
        )
    if weights[0].suffix == ".safetensors":
        check_safetensors(weights[0])
    return folder


def fine_tuned_lm(export: Path) -> str:
    """What a fine-tuning run exported to ``export``: ``adapter`` (a peft adapter, checked) or ``model``
    (the whole model, mode full); an :class:`InputError` when it holds neither."""
    if (export / "config.json").is_file() and not (export / "adapter_config.json").is_file():
        return "model"
    if export.is_dir() and any(export.glob("adapter_*")):
        check_adapter(export)
        return "adapter"
    raise InputError(
        "holds no fine-tuned LM (no adapter_config.json or config.json); run the row that fine-tunes it first",
        file=str(export),
    )


def read_yaml(path: Path) -> Any:
    """The YAML value of ``path``; an :class:`InputError` naming it when it is not YAML."""
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"not valid YAML ({str(err).splitlines()[0]})", file=str(path)) from None


def base_model_of(adapter: str | Path) -> str:
    """The base model of an adapter folder (checked by :func:`check_adapter`): ``base_model`` of the
    fine-tuning run's ``hparams.yaml``, else peft's ``base_model_name_or_path``."""
    folder = Path(adapter)
    hparams, config = folder / "hparams.yaml", folder / "adapter_config.json"
    if hparams.is_file() and (base := _mapping(read_yaml(hparams), hparams).get("base_model")):
        return str(base)
    base = read_json(config).get("base_model_name_or_path")
    if not base:
        raise InputError("adapter_config.json names no base model; set base_model", file=str(config))
    return base


def _mapping(value: Any, path: Path) -> dict:
    """``value`` (read from ``path``) when it is a mapping or empty; else an :class:`InputError`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"expected a mapping, got {type(value).__name__}", file=str(path))
    return value


def lm_identity(base_model: str, adapter: str | None, quantization: str) -> str:
    """A hash that changes when the LM's outputs may: base files (name, size, mtime), adapter contents."""
    digest = hashlib.sha256(f"{base_model}|{quantization}".encode())
    resolved = resolve_model_source(base_model)
    if isinstance(resolved, Path):
        for path in sorted(resolved.iterdir()):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    if adapter is not None:
        for path in sorted(Path(adapter).iterdir()):
            if path.is_file() and path.name.startswith("adapter_"):
                digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


SPLIT_SETTINGS = ("sources", "template", "split_fractions", "split_seed", "max_persons")
"""Corpus settings that decide which persons are in which split."""


def split_mismatches(adapter: str | Path, data: TransitionData) -> list[str]:
    """The :data:`SPLIT_SETTINGS` on which ``data`` differs from the fine-tuning run's data (its
    ``config.yaml`` beside the adapter; none when absent): with any, valid/test persons may have been
    fine-tuned on."""
    config = Path(adapter) / "config.yaml"
    if not config.is_file():
        return []
    saved = (_mapping(read_yaml(config), config).get("data") or {}).get("init_args") or {}

    def plain(value):
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        return [plain(v) for v in value] if isinstance(value, list | tuple) else value

    return [k for k in SPLIT_SETTINGS if plain(saved.get(k)) != plain(data.hparams.get(k))]
