"""``python -m lit_career sweep``: expand a sweep file into a SLURM array of ``fit`` runs.

A sweep file (YAML) names a base config and the overrides of each run::

    name: lora_lr                          # default: the file's stem
    config: configs/fit/lm/qlora_llama32_1b.yaml
    out_dir: runs/sweeps                   # run directories: <out_dir>/<name>/<run id>
    overrides: {trainer.max_epochs: 1}     # every run
    grid:                                  # every combination, in this order (or `runs:`, a list of mappings)
      model.init_args.optimizer.init_args.lr: [1.0e-4, 2.0e-4]
      model.init_args.lora.r: [8, 16]
    slurm: {gres: "gpu:1", mem: 48G, time: "06:00:00"}   # sbatch options over slurm/array.sbatch's
    max_parallel: 4                        # at most this many runs at once (sbatch --array=...%4)

The base config logs with W&B (``configs/fit/logger/wandb.yaml``). Keys are ``fit`` options without the
leading ``--``; values are passed as YAML/JSON, so a value can also be a config file
(``model: configs/fit/model/lora_tiny.yaml``). Relative paths are resolved by the jobs from the directory
``sweep`` ran in (the job's working directory). Before anything is written or submitted (``--dry_run`` too),
every run's arguments are parsed by the parser of ``python -m lit_career fit`` (nothing is instantiated): a
key or value that ``fit`` rejects is an error naming the sweep file, the run and the key.

Each run gets a stable name ``<name>-<index>-<hash of its overrides>`` (the name reduced to letters, digits,
``_`` and ``-``), passed as ``--run_name``: its folder ``<out_dir>/<name>/<run name>`` holds its checkpoints
(``hpc_ckpt_<n>.ckpt`` on requeue), W&B files (the W&B run id is the run name), config and adapter; a
requeued run resumes from there and continues the same W&B run. The manifest
``<out_dir>/<name>/manifest.jsonl`` holds one line per run: a JSON list of the arguments of
``python -m lit_career fit``. ``slurm/array.sbatch`` hands line ``SLURM_ARRAY_TASK_ID + 1`` to ``fit``
argument for argument, no shell parsing involved (any value survives: newlines, quotes, ``$(...)``), with
the W&B group set to the array job id.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError

from lit_career.errors import InputError
from lit_career.io import write_file_atomic
from lit_career.runs.lightning_cli import fit_parser

ARRAY_SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "array.sbatch"
SPEC_KEYS = {"name", "config", "out_dir", "overrides", "grid", "runs", "slurm", "max_parallel"}


@dataclass
class SweepSpec:
    """A parsed sweep file (see module docstring)."""

    name: str
    config: Path
    out_dir: Path = Path("runs/sweeps")
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    slurm: dict[str, str] = field(default_factory=dict)
    max_parallel: int | None = None


@dataclass
class SweepRun:
    """One array task: its overrides, run name (also its W&B run id), folder and ``fit`` arguments."""

    index: int
    overrides: dict[str, Any]
    run_id: str
    run_dir: Path
    args: list[str]


def load_spec(path: Path) -> SweepSpec:
    """Read and check a sweep file; problems raise :class:`InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("sweep file not found", file=str(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"not valid YAML: {err}", file=str(path)) from err
    if not isinstance(raw, dict):
        raise InputError(
            "a sweep file is a mapping (name, config, overrides, grid or runs, slurm)", file=str(path)
        )
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise InputError(f"unknown keys {unknown}; allowed: {sorted(SPEC_KEYS)}", file=str(path))
    if "config" not in raw:
        raise InputError("missing 'config' (the base config of every run)", file=str(path))
    if raw.get("grid") and raw.get("runs"):
        raise InputError("give either 'grid' or 'runs', not both", file=str(path))
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise InputError("'grid' maps each option to a non-empty list of values", file=str(path))
    runs = raw.get("runs") or []
    if not isinstance(runs, list) or any(not isinstance(r, dict) for r in runs):
        raise InputError("'runs' is a list of mappings (option: value)", file=str(path))
    for key in ("overrides", "slurm"):
        if not isinstance(raw.get(key) or {}, dict):
            raise InputError(f"'{key}' is a mapping", file=str(path))
    max_parallel = raw.get("max_parallel")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise InputError("'max_parallel' is a positive whole number", file=str(path))
    config = Path(raw["config"])
    if not config.is_file():
        raise InputError(
            f"base config {config} not found (paths are relative to the working directory)", file=str(path)
        )
    return SweepSpec(
        name=str(raw.get("name") or path.stem),
        config=config,
        out_dir=Path(raw.get("out_dir") or "runs/sweeps"),
        overrides=dict(raw.get("overrides") or {}),
        grid=grid,
        runs=runs,
        slurm={str(k): str(v) for k, v in (raw.get("slurm") or {}).items()},
        max_parallel=max_parallel,
    )


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Each run's overrides: the common ones, then its grid point or its entry of ``runs``."""
    if spec.grid:
        points = [
            dict(zip(spec.grid, values, strict=True)) for values in itertools.product(*spec.grid.values())
        ]
    else:
        points = spec.runs or [{}]
    return [{**spec.overrides, **point} for point in points]


def cli_value(value: Any) -> str:
    """A YAML value as one ``fit`` command-line value (strings as they are, the rest as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def slug(name: str) -> str:
    """``name`` with only letters, digits, ``_`` and ``-`` (safe for W&B ids, folders and job names)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "sweep"


def run_id(name: str, index: int, overrides: dict[str, Any]) -> str:
    """Stable run name (and W&B run id): the same sweep name, index and overrides always give the same one."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{slug(name)}-{index}-{digest}"


def fit_args(spec: SweepSpec, index: int, overrides: dict[str, Any], run_dir: Path) -> list[str]:
    """Run ``index``'s ``fit`` arguments: the base config, its overrides, then its folder, name and adapter
    folder. Each is one ``--key=value`` argument, so a value starting with ``-`` is still a value."""
    return [
        f"--config={spec.config.resolve()}",
        *(f"--{key}={cli_value(value)}" for key, value in overrides.items()),
        f"--trainer.default_root_dir={run_dir.parent}",
        f"--run_name={run_dir.name}",
        f"--trainer.logger.init_args.name={spec.name}-{index}",
        f"--model.init_args.export_dir={run_dir / 'adapter'}",
    ]


def plan(spec: SweepSpec) -> list[SweepRun]:
    """The runs of ``spec`` with absolute run directories and their ``fit`` arguments."""
    sweep_dir = spec.out_dir.resolve() / slug(spec.name)
    runs = []
    for index, overrides in enumerate(expand(spec)):
        rid = run_id(spec.name, index, overrides)
        run_dir = sweep_dir / rid
        runs.append(SweepRun(index, overrides, rid, run_dir, fit_args(spec, index, overrides, run_dir)))
    return runs


def check_runs(spec: SweepSpec, runs: list[SweepRun], path: Path) -> None:
    """Parse each run's arguments as ``fit`` does, instantiating nothing; the first run ``fit`` would reject
    raises an :class:`InputError` naming ``path``, the run and the key."""
    parser = fit_parser()
    for run in runs:
        try:
            parser.parse_args(["fit", *run.args])
        except ArgumentError as err:
            where = rejected_key(parser, spec, run)
            raise InputError(
                f"run {run.index} ({run.run_id}): {where}: {innermost(err)}", file=str(path)
            ) from None


def rejected_key(parser, spec: SweepSpec, run: SweepRun) -> str:
    """The first override of ``run`` that ``fit`` rejects after the ones before it, or the base config."""
    items = list(run.overrides.items())
    for n in range(len(items) + 1):
        try:
            parser.parse_args(["fit", *fit_args(spec, run.index, dict(items[:n]), run.run_dir)])
        except ArgumentError:
            return f"key {items[n - 1][0]!r} = {items[n - 1][1]!r}" if n else f"base config {spec.config}"
    return "its arguments"  # rejected only all together: the message says why


def innermost(err: ArgumentError) -> str:
    """The most indented lines of a jsonargparse error (the reason under its nesting), on one line."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    depth = max(len(line) - len(line.lstrip()) for line in lines)
    deepest = (line.strip().removeprefix("- ") for line in lines if len(line) - len(line.lstrip()) == depth)
    return "; ".join(dict.fromkeys(deepest))


def write_manifest(runs: list[SweepRun], path: Path) -> Path:
    """One JSON list of ``fit`` arguments per line, in task order (JSON escapes newlines: one run, one line)."""
    text = "".join(json.dumps(run.args) + "\n" for run in runs)
    return write_file_atomic(path, lambda tmp: tmp.write_text(text))


def sbatch_command(spec: SweepSpec, manifest: Path, n_runs: int, script: Path = ARRAY_SCRIPT) -> list[str]:
    """``sbatch --array=0-<n-1>[%max_parallel]`` with the sweep's options, run from the current directory."""
    array = f"0-{n_runs - 1}" + (f"%{spec.max_parallel}" if spec.max_parallel else "")
    options = {
        "array": array,
        "job-name": slug(spec.name),
        "chdir": str(Path.cwd()),
        "output": str(manifest.parent / "slurm-%A_%a.out"),
        **spec.slurm,
    }
    return ["sbatch", *(f"--{key}={value}" for key, value in options.items()), str(script), str(manifest)]


def sweep(
    spec: Path,
    submit: bool = False,
    dry_run: bool = False,
    slurm: dict[str, str] | None = None,
) -> list[SweepRun]:
    """Expand a sweep file into a SLURM array job: write the manifest and print (or submit) the sbatch command.

    Args:
        spec: sweep file (YAML, see ``configs/sweeps/``).
        submit: run the sbatch command and print the array job id.
        dry_run: write nothing; print each run's full ``python -m lit_career fit`` command (shell-quoted) and
            the sbatch command.
        slurm: sbatch options over the sweep file's ``slurm`` (e.g. ``{"partition": "gpu", "time": "2:00:00"}``).
    """
    parsed = load_spec(spec)
    parsed.slurm |= {str(k): str(v) for k, v in (slurm or {}).items()}
    runs = plan(parsed)
    check_runs(parsed, runs, spec)
    manifest = parsed.out_dir.resolve() / slug(parsed.name) / "manifest.jsonl"
    command = sbatch_command(parsed, manifest, len(runs))
    if dry_run:
        for run in runs:
            print(f"# task {run.index}: W&B run {run.run_id}")
            print(shlex.join(["python", "-m", "lit_career", "fit", *run.args]))
        print(shlex.join(command))
        return runs
    write_manifest(runs, manifest)
    print(f"{len(runs)} runs of sweep {parsed.name!r}; manifest {manifest}")
    if not submit:
        print(shlex.join(command))
        return runs
    try:
        done = subprocess.run([command[0], "--parsable", *command[1:]], capture_output=True, text=True)
    except FileNotFoundError:
        raise InputError("sbatch not found: submit from a SLURM login node (or print the command)") from None
    if done.returncode != 0:
        raise InputError(f"sbatch failed: {done.stderr.strip()}")
    job = done.stdout.strip().split(";")[0]
    print(f"submitted array job {job}; logs {manifest.parent}/slurm-{job}_<task>.out")
    return runs
