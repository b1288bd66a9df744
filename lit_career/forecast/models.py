"""The model of a row as a :class:`Forecaster`: the fit a finished row saved (:mod:`lit_career.runs.finished`),
else fitted as ``python -m lit_career row`` fits it. Either is saved in the forecast folder
(:mod:`lit_career.baselines.saved`, no pickle) with where it came from, so a resumed forecast samples from the
same fit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from lit_career.baselines.registry import make_baseline
from lit_career.baselines.saved import MODEL_FILE, Fitted, load_model, save_model
from lit_career.errors import InputError
from lit_career.forecast.inputs import Education
from lit_career.forecast.simulate import Forecaster
from lit_career.io import write_file_atomic
from lit_career.panel.careers import CareerPanel
from lit_career.runs.finished import Row
from lit_career.runs.row import fit_row_career, pretraining_panel
from lit_career.runs.spec import RowSpec
from lit_career.synthetic.oracle import Oracle
from lit_career.synthetic.world import WorldConfig, world_of

ORIGIN_FILE = "model_origin.json"
"""Beside the saved fit: where it came from (a finished row's folder, or fitted by the forecast)."""


def forecaster(
    spec: RowSpec,
    train: CareerPanel,
    valid: CareerPanel,
    folder: Path,
    education: Education,
    fit: bool = True,
) -> tuple[Forecaster, str]:
    """The row's model and where it comes from: the fit a previous run of this forecast saved in ``folder``,
    else the finished row's (its folder ``root/dataset/name``), else fitted on ``train`` (``valid`` for
    tuning and early stopping) when ``fit`` allows; the oracle fits nothing."""
    if spec.model == "oracle":  # the world PanelSource.load sampled from
        world = world_of(replace(WorldConfig(), seed=spec.source.seed))
        oracle = Oracle(world, spec.source.population, "world" if education == "world" else "given")
        return oracle, f"the synthetic world of seed {spec.source.seed}"
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file():
        said = folder / ORIGIN_FILE
        origin = (
            json.loads(said.read_text())["origin"] if said.is_file() else "a fit saved in the forecast folder"
        )
        return load_model(folder / MODEL_FILE, train.vocab), origin
    if (spec.out_dir / "metrics.json").is_file():
        row = Row.load(spec.out_dir)
        if row.vocab.identity != train.vocab.identity:
            raise InputError(
                f"row {spec.out_dir} predicts over {row.vocab.identity}, the panel is over {train.vocab.identity}"
            )
        model, origin = row.model, f"finished row {spec.out_dir}"
    elif not fit:
        raise InputError(
            f"row {spec.name!r} is not finished in {spec.out_dir} and parallel parts would each fit it: run the "
            "row first, or one forecast without --parts"
        )
    else:
        model, origin = _fit(spec, train, valid, folder), "fitted on the train split by this forecast"
    text = json.dumps({"origin": origin}) + "\n"
    write_file_atomic(folder / ORIGIN_FILE, lambda tmp: tmp.write_text(text))
    save_model(model, folder, train.vocab)  # last: its file marks the fit saved
    return model, origin


def _fit(spec: RowSpec, train: CareerPanel, valid: CareerPanel, folder: Path) -> Fitted:
    """The row's model fitted as the row runner fits it (CAREER's logs and checkpoints in ``folder/fit``)."""
    if spec.model in ("career", "career_pretrained"):
        return fit_row_career(spec, pretraining_panel(spec), train, valid, folder / "fit").model.cpu()
    return make_baseline(spec.model, spec.seed).fit(train, valid)
