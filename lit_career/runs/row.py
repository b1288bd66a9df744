"""``python -m lit_career baseline``: run one non-LLM model of the comparison and write its predictions.

Every model reads the panel the same way: load the source, keep ``max_persons`` persons if asked (the
same sample as :class:`~lit_career.llm.corpus.ResumeCorpus`'s ``max_persons``), split by person with
:func:`~lit_career.panel.careers.assign_splits` (``split_seed``, default fractions), fit on train (valid for
tuning and early stopping), and predict every person-year of valid and test. So the Markov, logit,
bag-of-jobs, CAREER and oracle rows, and the LLM rows fine-tuned with the same split settings, score the
same transitions. The oracle (synthetic sources only) gives the world's exact probabilities
(:func:`~lit_career.synthetic.oracle.oracle_log_probs`) and fits nothing.

A run directory holds ``predictions_valid.parquet``, ``predictions_test.parquet`` and ``metrics.json``
(settings, sizes, times and :func:`~lit_career.evaluation.metrics.evaluate_predictions` per split);
``python -m lit_career compare`` collects them. One YAML per run lives in ``configs/experiments/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from torch import nn

from lit_career.errors import InputError
from lit_career.evaluation.metrics import evaluate_predictions
from lit_career.panel.careers import CareerPanel, assign_splits, subsample_persons
from lit_career.panel.predictions import Predictions
from lit_career.panel.transitions import transition_table
from lit_career.sources import PanelSource

ExperimentModel = Literal["markov1", "markov2", "logit", "bag_of_jobs", "career", "career_pretrained", "oracle"]
Predictor = Callable[[CareerPanel], Predictions]


def run_experiment(
    model: ExperimentModel,
    source: PanelSource | None = None,
    out_dir: Path | None = None,
    pretrain_source: PanelSource | None = None,
    size: Literal["full", "small", "tiny"] = "small",
    split_seed: int = 0,
    seed: int = 0,
    max_persons: int | None = None,
    max_epochs: int = 30,
    pretrain_max_epochs: int | None = None,
    batch_size: int = 64,
    patience: int = 3,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Fit one model on the train split of ``source`` and write its valid/test predictions and metrics.

    Args:
        model: ``markov1``, ``markov2``, ``logit``, ``bag_of_jobs`` (:mod:`lit_career.baselines`),
            ``career`` or ``career_pretrained`` (:mod:`lit_career.baselines.career`), or ``oracle`` (synthetic
            sources only).
        source: the survey panel: split by person, trained on and evaluated (default: bundled NLSY79).
        out_dir: run directory for ``predictions_{valid,test}.parquet``, ``metrics.json`` (and CAREER's
            checkpoints and logs); default ``outputs/experiments/<model>``.
        pretrain_source: panel CAREER is pretrained on (``career_pretrained`` only, required there).
        size: CAREER size (``full`` is the paper's model).
        split_seed: seed of the person split.
        seed: seed of training (initialization, batch order).
        max_persons: keep this many persons of ``source`` before splitting (smoke tests, demos).
        max_epochs: CAREER fine-tuning epochs at most (early stopping on valid NLL).
        pretrain_max_epochs: CAREER pretraining epochs at most (default: ``max_epochs``).
        batch_size: CAREER batch size (sequences).
        patience: CAREER early-stopping patience (epochs).
        accelerator: Lightning accelerator for CAREER (``auto``, ``cpu``, ``gpu``).
    """
    if (model == "career_pretrained") != (pretrain_source is not None):
        raise InputError("pretrain_source is required by model career_pretrained and only used by it")
    source = source or PanelSource()
    if model == "oracle" and source.kind != "synthetic":
        raise InputError(f"the oracle needs a synthetic source, not {source.kind!r}")
    out_dir = Path(out_dir or f"outputs/experiments/{model}")
    panel = assign_splits(subsample_persons(source.load(), max_persons), seed=split_seed)
    train, valid = panel.split("train"), panel.split("valid")
    info: dict[str, Any] = {"model": model, "source": asdict(source), "split_seed": split_seed, "seed": seed,
                            "max_persons": max_persons, "train_persons": len(train.persons)}
    start = time.perf_counter()
    if model == "oracle":
        predict = _oracle(source)
    elif model in ("career", "career_pretrained"):
        predict = _career(train, valid, pretrain_source, size, out_dir, info, max_epochs=max_epochs,
                          pretrain_max_epochs=pretrain_max_epochs, batch_size=batch_size, patience=patience,
                          seed=seed, accelerator=accelerator)
    else:
        from lit_career.baselines.registry import make_baseline

        fitted = make_baseline(model, seed).fit(train, valid)
        net = getattr(fitted, "net", None)
        info["parameters"] = _parameters(net) if net is not None else None
        info["epochs"] = len(fitted.valid_nll) if net is not None else None
        predict = fitted.predict
    info["fit_seconds"] = round(time.perf_counter() - start, 2)
    for split in ("valid", "test"):
        began = time.perf_counter()
        predictions = predict(panel.split(split))
        predictions.model = model
        predictions.check_normalized()
        predictions.write(out_dir / f"predictions_{split}.parquet")
        info[f"predict_{split}_seconds"] = round(time.perf_counter() - began, 2)
        info[split] = evaluate_predictions(predictions)
    (out_dir / "metrics.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(f"{model}: fit {info['fit_seconds']} s, test perplexity {info['test']['ppl_all']:.3f}; wrote {out_dir}")
    return info


def _oracle(source: PanelSource) -> Predictor:
    """The exact distributions of the world behind a synthetic ``source`` (type marginalized)."""
    from lit_career.synthetic.oracle import oracle_log_probs
    from lit_career.synthetic.world import WorldConfig, world_of

    world = world_of(replace(WorldConfig(), seed=source.seed))  # the world PanelSource.load sampled from

    def predict(panel: CareerPanel) -> Predictions:
        log_probs = oracle_log_probs(world, panel, population=source.population)
        return Predictions(transition_table(panel), log_probs.astype(np.float32), "oracle")

    return predict


def _career(
    train: CareerPanel,
    valid: CareerPanel,
    pretrain_source: PanelSource | None,
    size: str,
    out_dir: Path,
    info: dict[str, Any],
    **fit_args: Any,
) -> Predictor:
    """Pretrain (if a source is given), fine-tune, and record sizes and epochs run in ``info``."""
    from lit_career.baselines.career import predict_panel
    from lit_career.baselines.career_fit import pretrain_then_finetune

    pretrain = pretrain_source.load() if pretrain_source is not None else None
    fit = pretrain_then_finetune(pretrain, train, valid, size, out_dir=out_dir, **fit_args)
    info |= {"size": size, "parameters": _parameters(fit.model), "epochs": _epochs_run(out_dir / "finetune")}
    if pretrain is not None:
        info |= {"pretrain_persons": len(pretrain.persons), "pretrain_epochs": _epochs_run(out_dir / "pretrain")}
    return lambda panel: predict_panel(fit.model, panel)


def _parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _epochs_run(folder: Path) -> int:
    """Epochs of the latest training logged under ``folder/logs`` (Lightning's CSV logger)."""
    latest = max((folder / "logs").glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    return int(pd.read_csv(latest)["epoch"].max()) + 1
