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

from lit_career.io import check_writable
from lit_career.runs.run_folder import dump, place_run, resolve_ckpt_path, run_name

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
        self.overrides, self.default_config_files = dict(overrides or {}), list(default_config_files)
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
        if self.config.get("subcommand"):  # not with run=False: the caller places such a run
            self._place(self.config.subcommand)

    def _place(self, subcommand: str) -> None:
        """Put the run in its stable folder, check that it is writable and the checkpoint it starts from
        (before Lightning reads that checkpoint's hyperparameters)."""
        config = self.config[subcommand]
        files = config.get("config") or self.default_config_files
        name = config.run_name or run_name(dump(self._parser(subcommand), config), files)
        folder = place_run(config, name)
        check_writable(folder)
        config.ckpt_path = resolve_ckpt_path(config.ckpt_path, folder, subcommand)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.base_model", "data.init_args.tokenizer")
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Folder of the run under trainer.default_root_dir, and its W&B id (default: "
            "<config stem>-<hash of the settings>, the same for the same command).",
        )


def fit_parser() -> LightningArgumentParser:
    """The parser of ``python -m lit_career`` as :class:`LitCareerCLI` builds it (no default config files, as
    when ``--config`` is given), parsing nothing and instantiating nothing, and raising jsonargparse's
    ``ArgumentError`` instead of exiting: ``fit_parser().parse_args(["fit", *args])`` checks ``fit`` arguments."""

    class Built(Exception):
        pass

    class ParserOnly(LitCareerCLI):
        def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
            return super().init_parser(**kwargs, exit_on_error=False)

        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            raise Built(parser)  # stop LightningCLI.__init__ here: before parsing, seeding, instantiating

    try:
        ParserOnly()
    except Built as built:
        return built.args[0]
