"""The ``python -m lit_career`` command line.

``fit``, ``validate``, ``test`` and ``predict`` go to :class:`LitCareerCLI` (LightningCLI, model and
data in subclass mode); every other subcommand is a plain typed function named in :data:`COMMANDS`,
imported when used and parsed from its signature by jsonargparse. Without ``--config`` the
Lightning subcommands run the demo (:func:`default_configs`). A :class:`~lit_career.errors.InputError`
raised anywhere prints one line ``error: <message>`` and exits with status 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from jsonargparse import lazy_instance
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lit_career.errors import InputError

PROG = "python -m lit_career"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEMO_CONFIG, DEMO_TINY_CONFIG = CONFIGS / "demo.yaml", CONFIGS / "demo_tiny.yaml"
COMMANDS: dict[str, str] = {
    "prepare": "lit_career.data.prepare:prepare",
    "synth": "lit_career.data.synthetic:synth_command",
    "sweep": "lit_career.sweep:sweep",
    "baseline": "lit_career.experiments:run_experiment",
    "llm": "lit_career.llm_experiments:run_llm_experiment",
    "evaluate": "lit_career.evaluation.report:evaluate_command",
    "compare": "lit_career.evaluation.compare:compare",
}
"""Subcommands outside LightningCLI: name → ``module:function``."""


class SaveRunConfig(SaveConfigCallback):
    """Save the resolved config in the log dir (overwriting, as a requeued job must) and, at the end of
    fit, beside the exported adapter (the model's ``export_path``); log it to the loggers (W&B: the
    run's config)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(config)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = getattr(pl_module, "export_path", None)
        if folder is not None and trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config, folder / self.config_filename, skip_none=False, overwrite=True, multifile=False
            )


class PrintMetrics(Callback):
    """Print the validation metrics on one line after each validation (not the sanity check)."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"step {trainer.global_step}  {shown}", flush=True)


class LitCareerCLI(LightningCLI):
    """LightningCLI with the base model linked to the corpus tokenizer and W&B (offline) as default logger."""

    def __init__(
        self, args: Sequence[str] | None = None, default_config_files: Sequence[str | Path] = (), **kwargs
    ):
        defaults = {"default_config_files": [str(f) for f in default_config_files]}
        super().__init__(
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": lazy_instance(WandbLogger, project="lit_career", offline=True)},
            parser_kwargs={
                "prog": PROG,
                "description": "Fine-tune and evaluate LMs on careers. Other subcommands: "
                + ", ".join(COMMANDS)
                + f" (see {PROG} <subcommand> --help).",
                **{subcommand: defaults for subcommand in self.subcommands()},
            },
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.base_model", "data.init_args.tokenizer")


def run_command(name: str, args: Sequence[str]) -> None:
    """Parse ``args`` against the signature of the function behind ``name`` and call it."""
    from jsonargparse import CLI

    module, function = COMMANDS[name].split(":")
    CLI(getattr(importlib.import_module(module), function), args=list(args), prog=f"{PROG} {name}")


def smollm2_installed() -> bool:
    from lit_career.models.backbone import BackboneNotFoundError, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except BackboneNotFoundError:
        return False
    return True


def default_configs(args: Sequence[str]) -> list[Path]:
    """The demo config when ``args`` name no config file: ``configs/demo.yaml`` (SmolLM2-135M), or
    ``configs/demo_tiny.yaml`` (the tiny Llama) without the SmolLM2 wheel; none outside a source checkout."""
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in args) or not DEMO_CONFIG.is_file():
        return []
    return [DEMO_CONFIG if smollm2_installed() else DEMO_TINY_CONFIG]


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m lit_career`` and ``lit-career``; ``args`` default to the command line."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            run_command(argv[0], argv[1:])
        else:
            LitCareerCLI(args, default_config_files=default_configs(argv))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
