"""Per-transition distributions: the one interface between every model and the evaluation.

A :class:`Predictions` holds, for each transition (person, year), the realized state and the model's
log-probability vector over the closed vocabulary, plus the covariates the evaluation slices by.
Markov, logit, CAREER, the LLM heads and the synthetic oracle all emit this; ``metrics`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lit_career.errors import InputError
from lit_career.io import write_file_atomic
from lit_career.panel.taxonomy import vocabulary
from lit_career.panel.transitions import KEY_COLUMNS


@dataclass
class Predictions:
    """``table`` has one row per transition (columns :data:`KEY_COLUMNS` + covariates);
    ``log_probs[i]`` is the log distribution over the vocabulary for row ``i`` (rows sum to 1 in prob);
    ``vocabulary`` names that vocabulary (:attr:`~lit_career.panel.taxonomy.Vocabulary.identity`, name and
    content hash; ``None``: not recorded, read as the bundled occ1990dd, which every file written before
    vocabularies were recorded is over)."""

    table: pd.DataFrame
    log_probs: np.ndarray
    model: str = "model"
    vocabulary: str | None = None

    @property
    def vocabulary_identity(self) -> str:
        """The recorded vocabulary, the bundled occ1990dd one when none is."""
        return self.vocabulary or vocabulary().identity

    def __post_init__(self) -> None:
        if len(self.table) != len(self.log_probs):
            raise ValueError(f"{len(self.table)} transitions but {len(self.log_probs)} distributions")
        missing = [c for c in KEY_COLUMNS if c not in self.table]
        if missing:
            raise ValueError(f"predictions table lacks columns {missing}")

    def check_normalized(self, atol: float = 1e-4) -> None:
        """Raise if a row's probabilities do not sum to 1 within ``atol``."""
        total = np.exp(self.log_probs.astype(np.float64)).sum(axis=1)
        bad = np.flatnonzero(np.abs(total - 1) > atol)
        if len(bad):
            raise ValueError(
                f"{self.model}: {len(bad)} distribution(s) do not sum to 1, e.g. row {bad[0]} sums to {total[bad[0]]:.6f}"
            )

    def realized_log_prob(self) -> np.ndarray:
        return self.log_probs[np.arange(len(self.table)), self.table["state"].to_numpy()]

    def write(self, path: str | Path, top_k: int | None = None) -> None:
        """Write as Parquet (atomically): the table plus ``log_probs`` (full vector) or
        ``top_states``/``top_log_probs``."""
        table = pa.Table.from_pandas(self.table.reset_index(drop=True), preserve_index=False)
        lp = self.log_probs.astype(np.float32)
        if top_k is None:
            table = table.append_column(
                "log_probs", pa.FixedSizeListArray.from_arrays(lp.ravel(), lp.shape[1])
            )
        else:
            top = np.argsort(-lp, axis=1)[:, :top_k]
            for name, values in (
                ("top_states", top.astype(np.int16)),
                ("top_log_probs", np.take_along_axis(lp, top, 1)),
            ):
                table = table.append_column(name, pa.FixedSizeListArray.from_arrays(values.ravel(), top_k))
        table = table.replace_schema_metadata(
            {b"model": self.model.encode(), b"vocabulary": self.vocabulary_identity.encode()}
        )
        write_file_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))

    @classmethod
    def read(cls, path: str | Path) -> Predictions:
        """Read predictions written with the full vector; an :class:`InputError` naming the file says why
        another Parquet file is not that (written with ``top_k``, or which columns it lacks)."""
        table = pq.read_table(path)
        names = table.column_names
        if "log_probs" not in names and {"top_states", "top_log_probs"} <= set(names):
            raise InputError(
                "written with top_k; the full distribution is needed for evaluation", file=str(path)
            )
        missing = [c for c in (*KEY_COLUMNS, "log_probs") if c not in names]
        if missing:
            raise InputError(f"not a predictions file: it lacks the columns {missing}", file=str(path))
        if not pa.types.is_fixed_size_list(table.schema.field("log_probs").type):
            raise InputError("log_probs is not a fixed-size list of log-probabilities", file=str(path))
        column = table.column("log_probs").combine_chunks()
        log_probs = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
        metadata = table.schema.metadata or {}
        recorded = metadata.get(b"vocabulary")
        return cls(
            table.drop(["log_probs"]).to_pandas(),
            log_probs,
            metadata.get(b"model", b"model").decode(),
            recorded.decode() if recorded else None,
        )
