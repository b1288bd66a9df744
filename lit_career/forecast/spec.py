"""The typed settings of one forecast (``configs/forecast/*.yaml``), checked before anything runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lit_career.errors import InputError
from lit_career.forecast.inputs import Education
from lit_career.runs.spec import RowSpec, load_row
from lit_career.sources import PanelSource

PATHS = {"other": 1000, "lm": 20}
"""Paths per person when not given: an LM row re-encodes every path's resume every year, so it samples fewer."""

UNSHARED = ("out_dir", "row", "root", "reference", "wandb", "part", "parts")
"""Settings a resumed run may change: where things are, what is logged, which shards a process samples."""


@dataclass(frozen=True)
class ForecastSpec:
    """The settings of one forecast: the arguments of :func:`~lit_career.forecast.command.forecast`, which
    documents them and holds their defaults."""

    row: Path | None
    cutoff: int | None
    horizon: int
    paths: int | None
    seed: int
    education: Education
    source: PanelSource | None
    root: Path | None
    max_persons: int | None
    shard_persons: int
    part: int
    parts: int
    alpha: float
    level: float
    out_dir: Path | None
    reference: Path | None
    wandb: bool

    def __post_init__(self) -> None:
        for name in ("row", "cutoff"):
            if getattr(self, name) is None:
                raise InputError(f"give the {name} (--{name})", column=name)
        for name in ("horizon", "paths", "shard_persons", "parts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, not {getattr(self, name)}", column=name)
        if not 0 <= self.part < self.parts:
            raise InputError(
                f"part must be in 0..parts - 1 = {self.parts - 1}, not {self.part}", column="part"
            )
        if self.max_persons is not None and self.max_persons < 1:
            raise InputError(f"max_persons must be at least 1, not {self.max_persons}", column="max_persons")
        if self.reference is not None and not (Path(self.reference) / "shares.csv").is_file():
            raise InputError(
                "no shares.csv: the reference is not a finished forecast",
                file=str(Path(self.reference) / "shares.csv"),
            )
        if not 0 < self.level < 1 or self.alpha <= 0:
            raise InputError(f"level must be in (0, 1) and alpha positive, not {self.level} and {self.alpha}")

    def row_spec(self) -> RowSpec:
        """The row, with this forecast's ``source`` when given; a row that cannot sample is an error."""
        root = {} if self.root is None else {"root": self.root}
        spec = load_row(self.row, **root)
        if spec.model == "lm":
            spec = load_row(self.row, **root, **_corpus_fields(spec, given=self.source is not None))
        if self.source is not None:
            spec = replace(spec, source=self.source)
        if self.education == "world" and spec.model != "oracle":
            raise InputError(
                f"education 'world' is the synthetic oracle's own schooling; row {spec.name!r} takes 'hold' or "
                "'given'",
                column="education",
            )
        return spec

    def with_paths(self, row: RowSpec) -> ForecastSpec:
        """These settings with ``paths`` set: the row's default (:data:`PATHS`) when not given."""
        return replace(self, paths=self.paths or PATHS["lm" if row.model == "lm" else "other"])

    def folder(self, row: RowSpec) -> Path:
        return Path(
            self.out_dir or Path("outputs/forecasts") / row.dataset / f"{row.name}_cutoff{self.cutoff}"
        )

    def settings(self, row: RowSpec) -> dict[str, Any]:
        """What a resumed run must share with the run that began the folder."""
        forecast = {k: v for k, v in asdict(self).items() if k not in UNSHARED}
        return {"forecast": forecast, "row": asdict(row)}


def _corpus_fields(spec: RowSpec, given: bool) -> dict[str, Any]:
    """The row fields that read an LM row's panel as its head's corpus read it (``lm.data``, with
    ``lm.head_overrides`` of ``data.init_args`` over it): its one source (several need ``given``, the forecast's
    own source), its ``max_persons`` and ``split_seed``."""
    prefix = "data.init_args."
    head = {k.removeprefix(prefix): v for k, v in spec.lm.head_overrides.items() if k.startswith(prefix)}
    data = spec.lm.data | head
    sources = data.get("sources") or []
    if len(sources) > 1 and not given:
        raise InputError(
            f"row {spec.name!r} reads {len(sources)} sources (a pooled LM): give the panel to forecast (--source)",
            column="source",
        )
    fields = {"max_persons": data.get("max_persons"), "split_seed": data.get("split_seed", spec.split_seed)}
    return fields | ({"source": sources[0]} if sources else {})
