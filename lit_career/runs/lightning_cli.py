"""LightningCLI as this project uses it: model and data in subclass mode, the base model linked to the
corpus tokenizer, W&B (offline) as default logger, the resolved config saved beside the exported adapter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import lazy_instance
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

PROG = "python -m lit_career"


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
    """LightningCLI with the base model linked to the corpus tokenizer and W&B (offline) as default logger.

    ``overrides`` (dotted config keys → Python values, e.g. ``{"trainer.max_steps": 2}``) are set over the
    config that ``args`` give, and parsed and validated like it: a key the config has no place for is an error.
    """

    def __init__(
        self,
        args: Sequence[str] | dict | None = None,
        default_config_files: Sequence[str | Path] = (),
        description: str = "Fine-tune and evaluate LMs on careers.",
        overrides: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        self.overrides = dict(overrides or {})
        defaults = {"default_config_files": [str(f) for f in default_config_files]}
        super().__init__(
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": lazy_instance(WandbLogger, project="lit_career", offline=True)},
            parser_kwargs={
                "prog": PROG,
                "description": description,
                **{subcommand: defaults for subcommand in self.subcommands()},
            },
            args=args,
            **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        if self.overrides:
            self.config = parser.parse_object(self.overrides, namespace=self.config)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.base_model", "data.init_args.tokenizer")
