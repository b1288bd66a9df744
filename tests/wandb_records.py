"""Read an offline W&B run back for tests: the records of its ``run-<id>.wandb`` file.

wandb 0.31 no longer ships a Python reader; the file is a LevelDB-style log (a 7-byte header, then
32 KiB blocks of chunks with a 7-byte header: CRC, length, type) of ``wandb_internal_pb2.Record``
protobufs, which ``wandb.proto`` still provides.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What one offline run directory holds."""

    run_id: str
    group: str
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` file, in order."""
    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(raw):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        chunk, pos = raw[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(path: Path, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records of a run file once its exit record is on disk: the W&B service writes the file
    asynchronously, and ``wandb.finish()`` can return before the last records are flushed."""
    deadline = time.monotonic() + timeout
    while True:
        found = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Run id, group, config, history rows, artifacts (name → file paths) and the files under ``files/``."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun(run_id="", group="")
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group = record.run.run_id, record.run.run_group
            run.config |= {_key(i): json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            run.config |= {_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            run.artifacts[record.artifact.name] = [entry.path for entry in record.artifact.manifest.contents]
    run.files = sorted(
        str(p.relative_to(run_dir / "files")) for p in (run_dir / "files").rglob("*") if p.is_file()
    )
    return run


def offline_runs(save_dir: Path) -> list[OfflineRun]:
    """Every offline run under ``<save_dir>/wandb``, oldest first."""
    return [read_offline_run(d) for d in sorted(Path(save_dir, "wandb").glob("offline-run-*"))]
