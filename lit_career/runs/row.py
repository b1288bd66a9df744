"""``python -m lit_career row``: run one comparison row (or a plan of rows) and write its predictions.

Every non-LM row reads the panel the same way: load ``source``, keep ``max_persons`` persons if asked (the
same sample as :class:`~lit_career.llm.corpus.ResumeCorpus`'s ``max_persons``), split by person with
:func:`~lit_career.panel.careers.assign_splits` (a split the data gives is kept, the rest drawn with
``split_seed`` in the default fractions; with a ``test_source`` the test set is all of that panel and
``source`` gives train and valid), fit on train (valid for tuning and early stopping), and predict every
person-year of valid and test. LM rows (:mod:`lit_career.runs.lm_row`) split their corpus with the same
settings, so all rows of a dataset score the same transitions. The oracle (synthetic sources only) gives
the world's exact probabilities and fits nothing.

A row folder holds ``predictions_valid.parquet``, ``predictions_test.parquet`` and ``metrics.json``
(:class:`~lit_career.runs.record.RowRecord`); ``python -m lit_career evaluate`` collects them. A fitted model
is saved there too (``model.safetensors``, :mod:`lit_career.baselines.saved`), so the finished row can score
new careers (:mod:`lit_career.runs.finished`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lit_career.baselines.career import predict_panel
from lit_career.baselines.career_fit import CareerFit, pretrain_then_finetune
from lit_career.baselines.registry import make_baseline
from lit_career.baselines.saved import MODEL_FILE, Fitted, save_model
from lit_career.errors import InputError
from lit_career.evaluation.metrics import evaluate_predictions
from lit_career.io import check_writable
from lit_career.panel.careers import CareerPanel, assign_splits, subsample_persons
from lit_career.panel.predictions import Predictions
from lit_career.panel.transitions import transition_table
from lit_career.panel.vocabularies import load_vocabulary
from lit_career.runs.lm_row import run_lm_row
from lit_career.runs.record import RowRecord, count_parameters, split_origins
from lit_career.runs.spec import RowSpec, load_plan, load_row
from lit_career.sources import PanelSource
from lit_career.synthetic.oracle import oracle_log_probs
from lit_career.synthetic.world import WorldConfig, world_of

Predictor = Callable[[CareerPanel], Predictions]
SPLITS = ("train", "valid", "test")


def row(spec: Path | None = None, plan: Path | None = None, root: Path | None = None) -> list[RowRecord]:
    """Run the row of ``spec``, or every row of ``plan`` in order.

    Args:
        spec: a row file (``configs/rows/<dataset>/<name>.yaml``, :class:`~lit_career.runs.spec.RowSpec`).
        plan: a plan file (``configs/rows/plans/*.yaml``) listing rows.
        root: folder of all rows (default: each row's ``root``, ``outputs/experiments``).
    """
    if (spec is None) == (plan is None):
        raise InputError("give either a row file (--spec) or a plan (--plan)")
    paths = [Path(spec)] if spec is not None else load_plan(Path(plan))
    overrides = {"root": str(root)} if root is not None else {}
    specs = [load_row(path, **overrides) for path in paths]  # all validated before the first runs
    for each in specs:
        check_writable(each.out_dir)
    return [run_row(each) for each in specs]


def run_row(spec: RowSpec) -> RowRecord:
    """Fit the row's model, write its valid and test predictions and ``metrics.json``."""
    if spec.model == "lm":
        return run_lm_row(spec)
    panels, origins = split_panels(spec)
    record = RowRecord(model=spec.name, settings=asdict(spec), splits=origins)
    record.extra["train_persons"] = len(panels["train"].persons)
    start = time.perf_counter()
    predict = _fit(spec, panels["train"], panels["valid"], record)
    record.fit_seconds = round(time.perf_counter() - start, 2)
    for split in ("valid", "test"):
        began = time.perf_counter()
        predictions = predict(panels[split])
        predictions.model = spec.name
        predictions.check_normalized()
        predictions.write(spec.out_dir / f"predictions_{split}.parquet")
        record.extra[f"predict_{split}_seconds"] = round(time.perf_counter() - began, 2)
        setattr(record, split, evaluate_predictions(predictions))
    record.write(spec.out_dir)
    print(
        f"{spec.name}: fit {record.fit_seconds} s, test perplexity {record.test['ppl_all']:.3f}; wrote {spec.out_dir}"
    )
    return record


def split_panels(spec: RowSpec) -> tuple[dict[str, CareerPanel], dict[str, str]]:
    """The train, valid and test persons of a non-LM row, and where each split comes from."""
    if spec.test_source is None:
        panel = _load(spec.source, spec)
        parts = {split: panel.split(split) for split in SPLITS}
    else:
        train = _load(replace(spec.source, split="train_valid"), spec)
        test = _load(replace(spec.test_source, split="test"), spec)
        if test.vocab.identity != train.vocab.identity:
            raise InputError(
                f"the test source is over the vocabulary {test.vocab.identity}, the source over "
                f"{train.vocab.identity}: give both the same vocabulary"
            )
        parts = {"train": train.split("train"), "valid": train.split("valid"), "test": test.split("test")}
    for split, part in parts.items():
        if not len(part.persons):
            given = f": its data gives {', '.join(part.given_splits)}" if part.given_splits else ""
            raise InputError(f"the {split} split of {part.source} has no persons{given}")
    return parts, split_origins(
        {split: {part.source: part} for split, part in parts.items()}, spec.split_seed
    )


def _load(source: PanelSource, spec: RowSpec) -> CareerPanel:
    """``source`` read, subsampled to the row's ``max_persons`` and split with its ``split_seed``."""
    return assign_splits(subsample_persons(source.load(), spec.max_persons), seed=spec.split_seed)


def _fit(spec: RowSpec, train: CareerPanel, valid: CareerPanel, record: RowRecord) -> Predictor:
    """Fit the model of a non-LM row on ``train`` (``valid`` for tuning); record its size and epochs."""
    if spec.model == "oracle":
        return _oracle(spec.source)
    if spec.model in ("career", "career_pretrained"):
        return _career(spec, train, valid, record)
    fitted = make_baseline(spec.model, spec.seed).fit(train, valid)
    _save(fitted, spec, record)
    net = getattr(fitted, "net", None)
    if net is not None:
        record.parameters, record.epochs = count_parameters(net)[0], len(fitted.valid_nll)
    return fitted.predict


def _save(model: Fitted, spec: RowSpec, record: RowRecord) -> None:
    """Save the fitted model into the row folder; the record names its file."""
    save_model(model, spec.out_dir, load_vocabulary(spec.source.vocabulary))
    record.extra["saved_model"] = MODEL_FILE


def _oracle(source: PanelSource) -> Predictor:
    """The exact distributions of the world behind a synthetic ``source`` (type marginalized)."""
    world = world_of(replace(WorldConfig(), seed=source.seed))  # the world PanelSource.load sampled from

    def predict(panel: CareerPanel) -> Predictions:
        log_probs = oracle_log_probs(world, panel, population=source.population)
        return Predictions(
            transition_table(panel), log_probs.astype(np.float32), "oracle", panel.vocab.identity
        )

    return predict


def pretraining_panel(spec: RowSpec) -> CareerPanel | None:
    """The panel a CAREER row pretrains on (``career.pretrain_source``), or None."""
    source = spec.career.pretrain_source
    return source.load() if source is not None else None


def fit_row_career(
    spec: RowSpec, pretrain: CareerPanel | None, train: CareerPanel, valid: CareerPanel, out_dir: Path
) -> CareerFit:
    """Pretrain CAREER on ``pretrain`` (when given) and fine-tune it on ``train`` with the row's settings."""
    args = spec.career
    return pretrain_then_finetune(
        pretrain,
        train,
        valid,
        args.size,
        out_dir=out_dir,
        max_epochs=args.max_epochs,
        pretrain_max_epochs=args.pretrain_max_epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=spec.seed,
        accelerator=args.accelerator,
    )


def _career(spec: RowSpec, train: CareerPanel, valid: CareerPanel, record: RowRecord) -> Predictor:
    """Pretrain (if the row has a pretraining source) and fine-tune CAREER; record sizes and epochs."""
    args = spec.career
    pretrain = pretraining_panel(spec)
    fit = fit_row_career(spec, pretrain, train, valid, spec.out_dir)
    _save(fit.model, spec, record)
    record.parameters, record.epochs = count_parameters(fit.model)[0], fit.epochs
    record.extra["size"] = args.size
    if pretrain is not None:
        record.extra |= {"pretrain_persons": len(pretrain.persons), "pretrain_epochs": fit.pretrain_epochs}
    return lambda panel: predict_panel(fit.model, panel)
