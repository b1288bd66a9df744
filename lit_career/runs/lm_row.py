"""An LM row: fine-tune the LM (or reuse another row's), fit the head on the frozen LM, predict valid and test.

Each stage is the LightningCLI run its ``fit`` config describes, with the row's settings set over it by dotted
key (``lm.data``, ``lm.finetune_overrides``, ``lm.head_overrides``) and the row's own folders:

1. fine-tune the LM with ``lm.finetune`` (:class:`~lit_career.llm.lm.CausalLMFineTuner`) into
   ``finetune/`` (logs, checkpoints, ``adapter/``); ``lm.reuse`` takes that adapter from another row of the
   dataset instead, and with neither the LM is used off the shelf;
2. fit the head of ``lm.head`` (:class:`~lit_career.llm.head.OccupationHead`) into ``head/``, keeping
   the checkpoint with the best validation NLL;
3. predict the valid and test transitions with that checkpoint.

``lm.data`` (arguments of :class:`~lit_career.llm.corpus.ResumeCorpus`) goes to both stages, so the head is
fitted and evaluated on persons the LM was not fine-tuned on. With a ``test_source`` both stages read the
row's training sources (``lm.data.sources``, else ``source``) as train and valid only, and the test source
as the test set. A stopped stage continues from its ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from lit_career.evaluation.metrics import evaluate_predictions
from lit_career.llm.adapter import fine_tuned_lm
from lit_career.llm.backbone import load_config
from lit_career.panel.predictions import Predictions
from lit_career.runs.lightning_cli import LitCareerCLI
from lit_career.runs.record import RowRecord, count_parameters, split_origins
from lit_career.runs.spec import LMArgs, RowSpec


def run_lm_row(spec: RowSpec) -> RowRecord:
    """Run the stages of an LM row and write its predictions and ``metrics.json``."""
    lm, out_dir = spec.lm, spec.out_dir
    shared = {f"data.init_args.{key}": value for key, value in lm.data.items()} | _test_source_data(spec)
    if lm.base_model is not None:
        shared["model.init_args.base_model"] = lm.base_model
    record = RowRecord(model=spec.name, settings=asdict(spec))
    start = time.perf_counter()
    lm_overrides: dict[str, Any] = {}
    if lm.finetune is not None:
        tuner = _finetune(lm, out_dir / "finetune", shared, record)
        record.extra["finetune_seconds"] = round(time.perf_counter() - start, 2)
        lm_overrides = _lm_overrides(tuner.model.export_path, tuner.model.base_model)
    elif lm.reuse is not None:
        lm_overrides = _lm_overrides(spec.folder_of(lm.reuse) / "finetune" / "adapter", None)
    head_overrides = {**shared, **lm_overrides, **lm.head_overrides, "model.init_args.name": spec.name}
    head_overrides.setdefault("model.init_args.vocabulary", _vocabulary(spec))
    head = _fit(lm.head, out_dir / "head", head_overrides)
    if "lm_parameters" not in record.extra:
        record.extra["lm_parameters"] = _lm_parameters(head.model.base_model, head.model.adapter)
    record.extra["head_parameters"] = count_parameters(head.model)[1]
    record.parameters = record.extra["lm_parameters"] + record.extra["head_parameters"]
    record.fit_seconds = round(time.perf_counter() - start, 2)
    best = head.trainer.checkpoint_callback.best_model_path or None
    parts = {split: head.datamodule.panels(split) for split in ("train", "valid", "test")}
    record.splits = split_origins(parts, head.datamodule.split_seed)
    for split in ("valid", "test"):
        path = out_dir / f"predictions_{split}.parquet"
        head.datamodule.predict_split = split
        head.model.predictions_path = str(path)
        began = time.perf_counter()
        head.trainer.predict(head.model, head.datamodule, ckpt_path=best)
        record.extra[f"predict_{split}_seconds"] = round(time.perf_counter() - began, 2)
        setattr(record, split, evaluate_predictions(Predictions.read(path)))
    if head.model.head != "likelihood":
        began = time.perf_counter()
        record.extra["likelihood_bound"] = {
            "valid": head.model.likelihood_bound("valid"),
            "test": head.model.likelihood_bound("test", lm.bound_sample_persons, lm.bound_seed),
        }
        record.extra["bound_seconds"] = round(time.perf_counter() - began, 2)
    _finish_wandb()
    record.write(out_dir)
    print(
        f"{spec.name}: fit {record.fit_seconds} s, test perplexity {record.test['ppl_all']:.3f}; wrote {out_dir}"
    )
    return record


def _vocabulary(spec: RowSpec) -> str:
    """The vocabulary of the row's (first) training source: the head predicts over it."""
    first = spec.train_sources[0]
    return first.vocabulary if is_dataclass(first) else first.get("vocabulary", "occ1990dd")


def _test_source_data(spec: RowSpec) -> dict[str, Any]:
    """With a ``test_source``, the corpus sources of both stages: the row's training sources drawn into train
    and valid only, and the test source."""
    if spec.test_source is None:
        return {}
    train = [asdict(s) if is_dataclass(s) else dict(s) for s in spec.train_sources]
    sources = [{**s, "split": "train_valid"} for s in train] + [{**asdict(spec.test_source), "split": "test"}]
    return {"data.init_args.sources": sources}


def _finetune(lm: LMArgs, root: Path, shared: dict[str, Any], record: RowRecord) -> LitCareerCLI:
    """Fine-tune the LM into ``root`` (exporting ``root/adapter``); record its size, epochs and tokens."""
    export = {"model.init_args.export_dir": str(root / "adapter")}
    tuner = _fit(lm.finetune, root, {**shared, **export, **lm.finetune_overrides})
    _finish_wandb()  # else the head's W&B logger would write into the fine-tuning's run
    total, trainable = count_parameters(tuner.model.model)
    train_tokens = int(tuner.datamodule.resumes("train")["n_tokens"].sum())
    tokens_seen = tuner.model.tokens_seen * tuner.trainer.world_size
    record.epochs = tuner.trainer.current_epoch
    record.extra |= {
        "lm_parameters": total,
        "trainable_parameters": trainable,
        "steps": tuner.trainer.global_step,
        "tokens_seen": tokens_seen,
        "epoch_fraction": round(tokens_seen / train_tokens, 4),
    }
    return tuner


def _lm_overrides(export: Path, base_model: str | None) -> dict[str, str]:
    """Head settings that load the fine-tuned LM exported to ``export``: an adapter on its base (default:
    the adapter's own base), or, when the whole model was exported (mode full), that model."""
    if fine_tuned_lm(export) == "model":
        return {"model.init_args.base_model": str(export)}
    base = {"model.init_args.base_model": base_model} if base_model is not None else {}
    return {**base, "model.init_args.adapter": str(export)}


def _fit(config: Path, root: Path, overrides: dict[str, Any]) -> LitCareerCLI:
    """Run ``fit`` of ``config`` with ``overrides`` and logs and checkpoints under ``root``, continuing from
    ``last.ckpt`` there when an earlier run of the stage was stopped; the CLI object after fitting."""
    folders = {"trainer.default_root_dir": str(root), "trainer.logger.init_args.save_dir": str(root)}
    cli = LitCareerCLI(["--config", str(config)], overrides={**folders, **overrides}, run=False)
    last = None
    if cli.trainer.checkpoint_callback is not None:
        cli.trainer.checkpoint_callback.dirpath = str(root / "checkpoints")
        last = root / "checkpoints" / "last.ckpt"
    cli.trainer.fit(
        cli.model, cli.datamodule, ckpt_path=last if last is not None and last.is_file() else None
    )
    return cli


def _finish_wandb() -> None:
    """End the W&B run of the stage that just ran, if any."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _lm_parameters(base_model: str, adapter: str | None) -> int:
    """Parameters of the frozen LM (base, counted without loading its weights, plus adapter)."""
    config = load_config(base_model)
    with torch.device("meta"):
        total = count_parameters(AutoModelForCausalLM.from_config(config))[0]
    for path in Path(adapter).glob("adapter_model.safetensors") if adapter else []:
        with safe_open(path, "pt") as tensors:
            total += sum(math.prod(tensors.get_slice(key).get_shape()) for key in tensors.keys())
    return total
