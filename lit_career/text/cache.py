"""Content-keyed cache of tokenized resumes.

Per source, ``<cache root>/<sha>/`` holds ``resumes.parquet`` (person_id, text, input_ids as
list<int32>, dropped_years), ``transitions.parquet`` and ``meta.json``; the sha hashes the panel's
content, the source settings (its mixture weight excepted), the template and its labels, the
tokenizer's serialized content and BOS id, and ``max_length``. Splits are assigned after loading, so
changing them does not retokenize. The folder is written atomically; a file of it that cannot be read is an
error naming it (the folder is recomputed once deleted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from lit_career.errors import InputError
from lit_career.io import write_folder_atomic
from lit_career.panel.careers import CareerPanel
from lit_career.text.resume import ResumeTemplate
from lit_career.text.tokenize import TokenizedPanel

CACHE_VERSION = 2


def _sha(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def panel_fingerprint(panel: CareerPanel) -> str:
    """Hash of a panel's records, covariates and source name (splits excluded)."""
    persons = panel.persons.drop(columns="split", errors="ignore")
    return _sha(
        pd.util.hash_pandas_object(panel.records, index=False).to_numpy().tobytes(),
        pd.util.hash_pandas_object(persons, index=True).to_numpy().tobytes(),
        ",".join(map(str, panel.records.columns)) + "|" + ",".join(map(str, persons.columns)),
        panel.source,
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything the tokenizer does to a text: its serialized content and the BOS it gets."""
    return _sha(tokenizer.backend_tokenizer.to_str(), str(tokenizer.bos_token_id))


def cache_key(
    panel: CareerPanel,
    source: Any,
    template: ResumeTemplate,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> str:
    """Cache folder name of one source's tokenized resumes (``source``: the dataclass that read the panel)."""
    config = {k: v for k, v in dataclasses.asdict(source).items() if k != "weight"}
    return _sha(
        str(CACHE_VERSION),
        panel_fingerprint(panel),
        json.dumps(config, sort_keys=True, default=str),
        json.dumps(dataclasses.asdict(template), sort_keys=True),
        "\n".join(template.label_strings(panel.vocab)),
        tokenizer_fingerprint(tokenizer),
        str(max_length),
    )[:32]


def write_cache(data: TokenizedPanel, folder: Path, meta: dict) -> None:
    """Write ``data`` to ``folder`` atomically (a concurrent writer of the same key may win)."""

    def fill(tmp: Path) -> None:
        resumes = pa.Table.from_pandas(data.resumes, preserve_index=False).append_column(
            "input_ids", pa.array(data.token_ids, type=pa.list_(pa.int32()))
        )
        pq.write_table(resumes, tmp / "resumes.parquet")
        data.transitions.to_parquet(tmp / "transitions.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))

    write_folder_atomic(folder, fill, "meta.json")


def read_cache(folder: Path) -> TokenizedPanel:
    """The tokenized panel :func:`write_cache` wrote to ``folder``; an unreadable file there is an
    :class:`InputError` naming it."""
    table = _read_table(folder / "resumes.parquet")
    column = table.column("input_ids").combine_chunks()
    values, offsets = column.values.to_numpy(), column.offsets.to_numpy()
    token_ids = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    resumes = table.drop_columns(["input_ids"]).to_pandas()
    return TokenizedPanel(resumes, token_ids, _read_table(folder / "transitions.parquet").to_pandas())


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        reason = str(err).strip().splitlines()[0]
        raise InputError(
            f"unreadable cache file ({reason}); delete its folder to recompute", file=str(path)
        ) from None
