"""The typed spec of a comparison row, and the plan that orders rows.

A row is one model fitted and scored on one dataset: it writes ``predictions_{valid,test}.parquet`` and
``metrics.json`` into ``<root>/<dataset>/<name>/``. Every row reads its panel the same way (``source``,
``max_persons``, ``split_seed``, ``test_source``), so rows of one dataset score the same transitions: a split
the data gives (:class:`~lit_career.sources.PanelSource`) is kept, the rest is drawn. Row files live in
``configs/rows/<dataset>/<name>.yaml``; a plan (``configs/rows/plans/*.yaml``) lists rows in the order
they run (a row that reuses another's LM comes after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ArgumentParser

from lit_career.errors import InputError
from lit_career.sources import PanelSource

RowModel = Literal[
    "markov1", "markov2", "logit", "bag_of_jobs", "career", "career_pretrained", "oracle", "lm"
]


@dataclass
class CareerArgs:
    """Settings of the CAREER rows (``career``, ``career_pretrained``)."""

    size: Literal["full", "small", "tiny"] = "small"
    """Transformer size; ``full`` is the paper's model."""
    pretrain_source: PanelSource | None = None
    """Panel CAREER is pretrained on (``career_pretrained`` only, required there)."""
    max_epochs: int = 30
    """Fine-tuning epochs at most (early stopping on validation NLL)."""
    pretrain_max_epochs: int | None = None
    """Pretraining epochs at most (default: ``max_epochs``)."""
    batch_size: int = 64
    """Sequences per batch."""
    patience: int = 3
    """Early-stopping patience in epochs."""
    accelerator: str = "auto"
    """Lightning accelerator (``auto``, ``cpu``, ``gpu``)."""


@dataclass
class LMArgs:
    """Settings of an LM row: fine-tune the LM (or reuse another row's, or none), fit the head, predict."""

    head: Path
    """``fit`` config of the head (``configs/fit/head/*.yaml``)."""
    finetune: Path | None = None
    """``fit`` config of the LM fine-tuning; with neither this nor ``reuse`` the LM is used off the shelf."""
    reuse: str | None = None
    """Name of the row of the same dataset whose fine-tuned LM this row uses (run that row first)."""
    base_model: str | None = None
    """Base LM of both stages (default: the fine-tuning config's, else the head config's)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Corpus arguments given to both stages, e.g. ``{max_length: 1024, template: {labels: codes}}``."""
    finetune_overrides: dict[str, Any] = field(default_factory=dict)
    """Settings over the fine-tuning config, by dotted key (e.g. ``{trainer.max_epochs: 4}``)."""
    head_overrides: dict[str, Any] = field(default_factory=dict)
    """Settings over the head config, by dotted key (e.g. ``{data.init_args.max_train_persons: 1500}``)."""
    bound_sample_persons: int = 0
    """Embedding heads: also score the full closed set on this many test persons, to measure how tight the
    T=1 likelihood bound is (slow: every title)."""
    bound_seed: int = 0
    """Seed of that sample."""


@dataclass
class RowSpec:
    """One comparison row."""

    name: str
    """Row name: the model name in the predictions and the row's folder."""
    dataset: str
    """Dataset folder the row writes under (rows of one dataset score the same transitions)."""
    model: RowModel
    """``markov1``, ``markov2``, ``logit``, ``bag_of_jobs``, ``career``, ``career_pretrained``, ``oracle``
    (synthetic sources only) or ``lm`` (settings in ``lm``)."""
    source: PanelSource = field(default_factory=PanelSource)
    """The panel, split by person, trained on and evaluated (default: the bundled NLSY79). LM rows take their
    panels from ``lm.data`` (the corpus' ``sources``)."""
    test_source: PanelSource | None = None
    """Panel whose persons are the whole test set. ``source`` (LM rows: ``lm.data.sources`` if given, else
    ``source``) then gives train and valid only: its persons drawn into them in the default proportions
    renormalized (8/9, 1/9) with ``split_seed``, any test persons its data gives left out."""
    split_seed: int = 0
    """Seed of the person split (of the persons whose split the data does not give)."""
    seed: int = 0
    """Seed of training (initialization, batch order)."""
    max_persons: int | None = None
    """Keep this many persons of ``source`` (and of ``test_source``) before splitting (smoke tests, demos)."""
    career: CareerArgs = field(default_factory=CareerArgs)
    """CAREER settings."""
    lm: LMArgs | None = None
    """LM settings (``model: lm`` only)."""
    root: Path = Path("outputs/experiments")
    """Folder of all rows: the row writes into ``root/dataset/name``."""

    def __post_init__(self) -> None:
        if (self.model == "lm") != (self.lm is not None):
            raise InputError("lm settings are required by model lm and only used by it")
        if (self.model == "career_pretrained") != (self.career.pretrain_source is not None):
            raise InputError(
                "career.pretrain_source is required by model career_pretrained and only used by it"
            )
        if self.model == "oracle" and self.source.kind != "synthetic":
            raise InputError(f"the oracle needs a synthetic source, not {self.source.kind!r}")
        if self.lm is not None and self.lm.finetune is not None and self.lm.reuse is not None:
            raise InputError(
                "an LM row either fine-tunes (lm.finetune) or reuses another row's LM (lm.reuse)"
            )
        if self.test_source is not None:
            self._check_test_source()

    def _check_test_source(self) -> None:
        """A test source is a panel of its own, and the only place the row's test set comes from."""
        if self.model == "oracle":
            raise InputError("the oracle knows only the world of its source: it takes no test_source")
        if self.test_source == self.source:
            raise InputError("test_source is the row's source: its persons would be trained on and tested")
        if any(_split_of(s) != "auto" for s in [self.test_source, *self.train_sources]):
            raise InputError(
                "with test_source the row sets each source's split: leave split out of the sources"
            )
        if self.lm is not None and any(
            "data.init_args.sources" in o for o in (self.lm.finetune_overrides, self.lm.head_overrides)
        ):
            raise InputError(
                "with test_source, give an LM row's sources in lm.data.sources, not in overrides"
            )

    @property
    def train_sources(self) -> list[PanelSource | dict[str, Any]]:
        """Where a row with a ``test_source`` draws train and valid from: ``source``, or the LM row's
        ``lm.data.sources`` when it gives them."""
        return (self.lm.data.get("sources") if self.lm is not None else None) or [self.source]

    @property
    def out_dir(self) -> Path:
        return Path(self.root) / self.dataset / self.name

    def folder_of(self, row: str) -> Path:
        """The folder of another row of the same dataset."""
        return Path(self.root) / self.dataset / row


def _split_of(source: PanelSource | dict[str, Any]) -> str:
    """The ``split`` of a source given as a PanelSource or as a dict (``lm.data.sources``)."""
    return source.get("split", "auto") if isinstance(source, dict) else source.split


def row_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(RowSpec, as_group=False)
    return parser


def load_row(path: Path, **overrides: Any) -> RowSpec:
    """Read and validate a row file; ``overrides`` replace its top-level fields (``root=...``)."""
    parser = row_parser()
    try:
        config = parser.parse_object({**(yaml.safe_load(Path(path).read_text()) or {}), **overrides})
        return RowSpec(**parser.instantiate(config).as_dict())
    except InputError:
        raise
    except Exception as err:  # jsonargparse reports type errors with several exception types
        raise InputError(f"not a row spec ({str(err).splitlines()[0]})", file=str(path)) from None


def load_plan(path: Path) -> list[Path]:
    """The row files a plan lists (``rows:``, paths relative to ``configs/rows``), in order."""
    rows = (yaml.safe_load(Path(path).read_text()) or {}).get("rows") or []
    folder = Path(path).resolve().parent.parent
    missing = [row for row in rows if not (folder / f"{row}.yaml").is_file()]
    if missing:
        raise InputError(f"no row file for {missing}", file=str(path))
    return [folder / f"{row}.yaml" for row in rows]
