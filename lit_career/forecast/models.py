"""The model of a row, fitted as ``python -m lit_career row`` fits it, as a :class:`Forecaster`; saved in the
forecast folder (:mod:`lit_career.baselines.saved`, no pickle) so a resumed forecast samples from the same fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lit_career.baselines.registry import make_baseline
from lit_career.baselines.saved import MODEL_FILE, load_model, save_model
from lit_career.forecast.inputs import Education
from lit_career.forecast.simulate import Forecaster
from lit_career.panel.careers import CareerPanel
from lit_career.runs.row import fit_career
from lit_career.runs.spec import RowSpec
from lit_career.synthetic.oracle import Oracle
from lit_career.synthetic.world import WorldConfig, world_of


def forecaster(
    spec: RowSpec, train: CareerPanel, valid: CareerPanel, folder: Path, education: Education
) -> Forecaster:
    """The row's model fitted on ``train`` (``valid`` for tuning and early stopping), or the one a previous run
    saved in ``folder``; the oracle fits nothing."""
    if spec.model == "oracle":  # the world PanelSource.load sampled from
        world = world_of(replace(WorldConfig(), seed=spec.source.seed))
        return Oracle(world, spec.source.population, "world" if education == "world" else "given")
    saved = Path(folder) / MODEL_FILE
    if saved.is_file():
        return load_model(saved)
    if spec.model in ("career", "career_pretrained"):
        source = spec.career.pretrain_source
        pretrain = source.load() if source is not None else None
        model = fit_career(spec, pretrain, train, valid, Path(folder) / "fit").model.cpu()
    else:
        model = make_baseline(spec.model, spec.seed).fit(train, valid)
    save_model(model, folder)
    return model
