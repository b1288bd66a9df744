"""``python -m lit_career llm``: one LLM row of the comparison, from fine-tuning to predictions.

Three stages, each the LightningCLI run its config describes, with the run's own folders:

1. fine-tune the LM with ``finetune`` (a ``fit`` config of :class:`~lit_career.llm.lm.CausalLMFineTuner`),
   skipped for an off-the-shelf row (``finetune: null``);
2. fit the head of ``predictor`` (a ``fit`` config of :class:`~lit_career.llm.head.OccupationHead`)
   on the frozen LM, keeping the checkpoint with the best validation NLL;
3. predict the valid and test transitions with that checkpoint.

``data`` (arguments of :class:`~lit_career.llm.corpus.ResumeCorpus`) goes to both stages, so the head is
fitted and evaluated on the persons the LM was not fine-tuned on; with the same split settings as
``python -m lit_career baseline`` (sources, ``split_seed``, ``max_persons``) the row scores the same
transitions as the baselines. The run directory holds ``finetune/`` (logs, checkpoints, ``adapter/``),
``predictor/``, ``predictions_{valid,test}.parquet`` and ``metrics.json``, which ``compare`` reads.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lit_career.evaluation.metrics import evaluate_predictions
from lit_career.panel.predictions import Predictions


def run_llm_experiment(
    predictor: Path = Path("configs/predictor/likelihood.yaml"),
    out_dir: Path = Path("outputs/experiments/llm"),
    finetune: Path | None = None,
    base_model: str | None = None,
    data: dict[str, Any] | None = None,
    finetune_args: list[str] | None = None,
    head_args: list[str] | None = None,
    name: str | None = None,
    bound_sample_persons: int = 0,
    bound_seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune (optionally), fit the head, predict valid and test, and write ``metrics.json``.

    Args:
        predictor: ``fit`` config of the head (``configs/predictor/*.yaml``).
        out_dir: run directory.
        finetune: ``fit`` config of the LM fine-tuning (``configs/experiments/*.yaml``); null: off-the-shelf LM.
        base_model: base LM of both stages (default: the fine-tuning config's, else the predictor config's).
        data: corpus arguments given to both stages, e.g. ``{sources: [...], template: {labels: codes}}``.
        finetune_args: more command-line arguments of the fine-tuning ``fit`` (e.g. ``[--trainer.max_epochs, "3"]``).
        head_args: more command-line arguments of the head's ``fit`` and ``predict``.
        name: model name of the row (default: the predictor's, ``llm_<head>``).
        bound_sample_persons: with an embedding head, also score the full closed set on this many test persons
            (drawn with ``bound_seed``) to measure how tight the T=1 likelihood bound is (slow: every title).
        bound_seed: seed of that sample.
    """
    out_dir = Path(out_dir)
    shared = [f"--data.init_args.{key}={json.dumps(value)}" for key, value in (data or {}).items()]
    if base_model is not None:
        shared.append(f"--model.init_args.base_model={base_model}")
    info: dict[str, Any] = {
        "finetune": str(finetune) if finetune else None,
        "predictor": str(predictor),
        "data": data or {},
    }
    start = time.perf_counter()
    lm_args: list[str] = []
    if finetune is not None:
        export = out_dir / "finetune" / "adapter"
        tuner = _fit(
            finetune,
            out_dir / "finetune",
            [*shared, f"--model.init_args.export_dir={export}", *(finetune_args or [])],
        )
        _finish_wandb()  # else the head's W&B logger would write into the fine-tuning's run
        if (export / "adapter_config.json").is_file():
            lm_args = [
                f"--model.init_args.base_model={tuner.model.base_model}",
                f"--model.init_args.adapter={export}",
            ]
        else:  # mode full exports the whole model
            lm_args = [f"--model.init_args.base_model={export}"]
        total, trainable = _count(tuner.model.model)
        train_tokens = int(tuner.datamodule.resumes("train")["n_tokens"].sum())
        tokens_seen = tuner.model.tokens_seen * tuner.trainer.world_size
        info |= {
            "lm_parameters": total,
            "trainable_parameters": trainable,
            "epochs": tuner.trainer.current_epoch,
            "steps": tuner.trainer.global_step,
            "tokens_seen": tokens_seen,
            "epoch_fraction": round(tokens_seen / train_tokens, 4),
            "finetune_seconds": round(time.perf_counter() - start, 2),
        }
    head_args = [*shared, *lm_args, *(head_args or [])]
    if name is not None:
        head_args.append(f"--model.init_args.name={name}")
    head = _fit(predictor, out_dir / "predictor", head_args)
    if "lm_parameters" not in info:
        info["lm_parameters"] = _lm_parameters(head.model.base_model, head.model.adapter)
    info["head_parameters"] = _count(head.model)[1]
    info["parameters"] = info["lm_parameters"] + info["head_parameters"]
    best = head.trainer.checkpoint_callback.best_model_path or None
    info["fit_seconds"] = round(time.perf_counter() - start, 2)
    for split in ("valid", "test"):
        path = out_dir / f"predictions_{split}.parquet"
        head.datamodule.predict_split = split
        head.model.predictions_path = str(path)
        began = time.perf_counter()
        head.trainer.predict(head.model, head.datamodule, ckpt_path=best)
        info[f"predict_{split}_seconds"] = round(time.perf_counter() - began, 2)
        info[split] = evaluate_predictions(Predictions.read(path))
    if head.model.head != "likelihood":
        began = time.perf_counter()
        info["likelihood_bound"] = {
            "valid": head.model.likelihood_bound("valid"),
            "test": head.model.likelihood_bound("test", bound_sample_persons, bound_seed),
        }
        info["bound_seconds"] = round(time.perf_counter() - began, 2)
    _finish_wandb()
    (out_dir / "metrics.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(
        f"{head.model.name}: fit {info['fit_seconds']} s, test perplexity {info['test']['ppl_all']:.3f}; "
        f"wrote {out_dir}"
    )
    return info


def _fit(config: Path, root: Path, args: list[str]):
    """Run ``fit`` of ``config`` with logs and checkpoints under ``root``, continuing from ``last.ckpt`` there
    when an earlier run of the stage was stopped; the CLI object after fitting."""
    from lit_career.runs.lightning_cli import LitCareerCLI

    cli = LitCareerCLI(
        [
            "--config",
            str(config),
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            *args,
        ],
        run=False,
    )
    last = None
    if cli.trainer.checkpoint_callback is not None:
        cli.trainer.checkpoint_callback.dirpath = str(root / "checkpoints")
        last = root / "checkpoints" / "last.ckpt"
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=last if last is not None and last.is_file() else None)
    return cli


def _finish_wandb() -> None:
    """End the W&B run of the stage that just ran, if any."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def _lm_parameters(base_model: str, adapter: str | None) -> int:
    """Parameters of the frozen LM (base, counted without loading its weights, plus adapter)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from lit_career.llm.backbone import resolve_model_source

    config = AutoConfig.from_pretrained(resolve_model_source(base_model))
    with torch.device("meta"):
        total = _count(AutoModelForCausalLM.from_config(config))[0]
    for path in Path(adapter).glob("adapter_model.safetensors") if adapter else []:
        with safe_open(path, "pt") as tensors:
            total += sum(math.prod(tensors.get_slice(key).get_shape()) for key in tensors.keys())
    return total


def _count(model) -> tuple[int, int]:
    """(all, trainable) parameters of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
