"""Where a ``fit``/``validate``/``test``/``predict`` run writes: one stable folder per run, and its checkpoints.

A run's folder is ``<trainer.default_root_dir>/<run name>``: the name given with ``--run_name``, else
``<config file stem>-<8 hex digits>`` hashed from the resolved model, data, trainer and seed, so the same
command always finds the same folder. Everything goes there: ``checkpoints/``, the logger's files (the W&B run
id is the run name, resumed on restart), ``config.yaml``, the exported ``adapter/`` and predictions. Hence
``--ckpt_path last`` continues the run the same command started, and asking for ``last`` when the run saved no
checkpoint is an error rather than a silent restart.

Checkpoints are opened with ``torch.load(weights_only=True)`` before Lightning reads them: a file that is not a
checkpoint, or that carries pickled Python objects, is refused with one line and its payload never runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
from pathlib import Path

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lit_career.errors import InputError

HASHED_KEYS = ("seed_everything", "trainer", "model", "data")
"""Parts of a subcommand's config that define a run (not ``ckpt_path``, ``run_name`` or per-command flags)."""


def run_name(config: dict, config_files: list | None) -> str:
    """``<stem of the last config file>-<hash of the run-defining settings of config>`` (``run-...`` without
    a config file); ``config`` is the subcommand's config as plain data."""
    stem = Path(str(config_files[-1])).stem if config_files else "run"
    settings = json.dumps({key: config.get(key) for key in HASHED_KEYS}, sort_keys=True, default=str)
    return f"{stem}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


def place_run(config: Namespace, name: str) -> Path:
    """Point the trainer, its logger and checkpoint callbacks of ``config`` at the folder of run ``name``."""
    folder = Path(config.trainer.default_root_dir or "runs") / name
    config.trainer.default_root_dir = str(folder)
    loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
    for logger in loggers:
        if isinstance(logger, Namespace) and "class_path" in logger:
            _place_logger(_class(logger.class_path), logger.init_args, folder)
    for callback in config.trainer.callbacks or []:
        if isinstance(callback, Namespace) and issubclass(_class(callback.class_path), ModelCheckpoint):
            callback.init_args.dirpath = callback.init_args.dirpath or str(folder / "checkpoints")
    return folder


def _class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _place_logger(cls: type, args: Namespace, folder: Path) -> None:
    """Write the logger's files into ``folder``; W&B continues the run named after the folder."""
    if issubclass(cls, WandbLogger):
        args.save_dir = str(folder)
        if args.id is None and args.version is None:
            args.id, args.resume = folder.name, args.resume or "allow"
    elif issubclass(cls, (CSVLogger, TensorBoardLogger)):
        args.save_dir, args.name, args.version = str(folder), "", ""


def checkpoints(folder: Path) -> list[Path]:
    """The run's checkpoints: those of ``checkpoints/`` and SLURM's ``hpc_ckpt_<n>.ckpt``, oldest first."""
    found = [*(folder / "checkpoints").glob("*.ckpt"), *folder.glob("hpc_ckpt_*.ckpt")]
    return sorted(found, key=lambda path: path.stat().st_mtime)


def resolve_ckpt_path(ckpt_path: str | None, folder: Path, subcommand: str) -> str | None:
    """Check the checkpoint a run starts from (``last``: the newest ``last*.ckpt`` of the run) and refuse to
    start a fresh ``fit`` over a run that has checkpoints (a SLURM requeue resumes from ``hpc_ckpt``)."""
    if ckpt_path is None:
        saved = checkpoints(folder)
        requeued = SLURMEnvironment.detect() and any(p.name.startswith("hpc_ckpt_") for p in saved)
        if subcommand == "fit" and saved and not requeued:
            raise InputError(
                "this run already saved checkpoints: continue it with --ckpt_path last, "
                "or start another with --run_name NAME",
                file=str(folder),
            )
        return None
    if ckpt_path == "last":
        last = [
            p for p in checkpoints(folder) if p.parent.name == "checkpoints" and p.name.startswith("last")
        ]
        if not last:
            raise InputError(
                "--ckpt_path last: this run saved no checkpoint (same command and --run_name as the run "
                "to continue?)",
                file=str(folder / "checkpoints"),
            )
        ckpt_path = str(last[-1])
    if ckpt_path not in ("best", "hpc", "registry"):
        check_checkpoint(Path(ckpt_path))
    return ckpt_path


def check_checkpoint(path: Path) -> None:
    """Open ``path`` as a Lightning checkpoint with ``weights_only=True``; an :class:`InputError` if it isn't."""
    if not path.is_file():
        raise InputError("checkpoint not found", file=str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise InputError(
            "refused: the checkpoint holds Python objects beyond tensors and plain data (loaded with "
            "weights_only=True; load it only if you trust it and know what it holds)",
            file=str(path),
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError):
        reason = "an empty file" if path.stat().st_size == 0 else "truncated, or not written by torch.save"
        raise InputError(f"not a readable checkpoint: {reason}", file=str(path)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError("not a Lightning checkpoint (no state_dict)", file=str(path))


def dump(parser, config: Namespace) -> dict:
    """``config`` as plain data, through ``parser`` (paths and classes as strings)."""
    return yaml.safe_load(parser.dump(config, skip_none=False, skip_validation=True))
