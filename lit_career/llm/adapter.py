"""The LM a fine-tuning run exported: its base model, an identity hash for caches, the split it was tuned on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import yaml

from lit_career.errors import InputError
from lit_career.llm.backbone import resolve_model_source
from lit_career.llm.transition_data import TransitionData


def base_model_of(adapter: str | Path) -> str:
    """The base model of an adapter folder: ``base_model`` of the fine-tuning run's ``hparams.yaml``,
    else peft's ``base_model_name_or_path``."""
    folder = Path(adapter)
    hparams, config = folder / "hparams.yaml", folder / "adapter_config.json"
    if hparams.is_file() and (base := (yaml.safe_load(hparams.read_text()) or {}).get("base_model")):
        return str(base)
    if not config.is_file():
        raise InputError("not a peft adapter folder (no adapter_config.json)", file=str(folder))
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise InputError("adapter_config.json names no base model; set base_model", file=str(config))
    return base


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
    saved = ((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("init_args") or {}

    def plain(value):
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        return [plain(v) for v in value] if isinstance(value, list | tuple) else value

    return [k for k in SPLIT_SETTINGS if plain(saved.get(k)) != plain(data.hparams.get(k))]
