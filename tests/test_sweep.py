"""``python -m lit_career sweep``: sweep files → runs, manifest lines, the sbatch command, errors."""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Trainer

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.llm.corpus import ResumeCorpus
from lit_career.llm.lm import CausalLMFineTuner
from lit_career.runs.lightning_cli import LitCareerCLI, fit_parser
from lit_career.runs.sweep import expand, load_spec, plan, sbatch_command, sweep

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "fit" / "lm" / "lora_tiny_cpu.yaml"


def write_spec(folder: Path, **fields) -> Path:
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump({"config": str(TINY), "out_dir": str(folder / "runs"), **fields}))
    return path


def test_grid_is_every_combination_after_the_common_overrides(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            overrides={"trainer.max_steps": 5, "model.init_args.lora.r": 2},
            grid={
                "model.init_args.lora.r": [4, 8],
                "model.init_args.optimizer.init_args.lr": [0.1, 0.2, 0.3],
            },
        )
    )
    runs = expand(spec)
    assert len(runs) == 6
    assert [(r["model.init_args.lora.r"], r["model.init_args.optimizer.init_args.lr"]) for r in runs] == [
        (4, 0.1), (4, 0.2), (4, 0.3), (8, 0.1), (8, 0.2), (8, 0.3)
    ]  # fmt: skip
    assert all(r["trainer.max_steps"] == 5 for r in runs)
    assert spec.name == "s"  # the file's stem when the file names none


def test_runs_list_or_a_single_run(tmp_path):
    listed = load_spec(
        write_spec(tmp_path, runs=[{"seed_everything": 1}, {"model": "configs/fit/model/qlora_tiny.yaml"}])
    )
    assert expand(listed) == [{"seed_everything": 1}, {"model": "configs/fit/model/qlora_tiny.yaml"}]
    assert expand(load_spec(write_spec(tmp_path))) == [{}]


def test_run_ids_are_stable_and_follow_the_overrides(tmp_path):
    spec = load_spec(
        write_spec(tmp_path, name="lr sweep/1", grid={"model.init_args.optimizer.init_args.lr": [0.1, 0.2]})
    )
    first, again = plan(spec), plan(load_spec(write_spec(tmp_path, name="lr sweep/1", grid=spec.grid)))
    assert [r.run_id for r in first] == [r.run_id for r in again]
    assert len({r.run_id for r in first}) == 2
    assert all(r.run_id.startswith(f"lr-sweep-1-{r.index}-") for r in first)  # W&B-safe characters only
    assert [r.run_dir for r in first] == [
        tmp_path.resolve() / "runs" / "lr-sweep-1" / r.run_id for r in first
    ]
    changed = plan(
        load_spec(
            write_spec(
                tmp_path, name="lr sweep/1", grid={"model.init_args.optimizer.init_args.lr": [0.1, 0.3]}
            )
        )
    )
    assert changed[0].run_id == first[0].run_id and changed[1].run_id != first[1].run_id


TRICKY = {
    "newline": "first line\nsecond line",
    "single quote": "it's",
    "double quote": 'say "hi"',
    "command substitution": "$(touch PWNED)",
    "backticks": "`touch PWNED`",
    "spaces": "two  spaces ",
    "leading dashes": "--trainer.max_steps=1",
}


@pytest.mark.parametrize("value", TRICKY.values(), ids=TRICKY.keys())
def test_array_sbatch_hands_each_value_to_fit_unchanged(tmp_path, monkeypatch, value):
    """slurm/array.sbatch run by bash as SLURM would, with a stand-in srun that records its arguments."""
    monkeypatch.chdir(tmp_path)
    notes = "trainer.logger.init_args.notes"
    runs = sweep(write_spec(tmp_path, name="q", grid={notes: [value, "next run"]}))
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "{tmp_path}/argv-$SLURM_ARRAY_TASK_ID"\n')
    fake.chmod(0o755)
    path = f"{fake.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    manifest = tmp_path / "runs" / "q" / "manifest.jsonl"
    for run in runs:
        env = {**os.environ, "PATH": path, "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": str(run.index)}
        subprocess.run(["bash", str(REPO / "slurm" / "array.sbatch"), str(manifest)], env=env, check=True)
        argv = (tmp_path / f"argv-{run.index}").read_text().split("\0")[:-1]
        assert argv == ["python", "-m", "lit_career", "fit", *run.args]
        assert (
            fit_parser().parse_args(["fit", *argv[4:]]).fit.trainer.logger.init_args.notes
            == run.overrides[notes]
        )
    assert runs[0].overrides[notes] == value
    assert not (tmp_path / "PWNED").exists()


def test_a_task_without_its_manifest_line_fails(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(["--trainer.max_steps=1"]) + "\n")
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1"}
    done = subprocess.run(
        ["bash", str(REPO / "slurm" / "array.sbatch"), str(manifest)], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and f"line 2 of {manifest} is not a JSON list" in done.stderr


def parsed_fit_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        LitCareerCLI(["fit", *args, "--print_config"])
    assert done.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_each_run_parses_as_fit_arguments_with_its_own_directory_and_id(tmp_path, capsys):
    spec = load_spec(
        write_spec(tmp_path, name="lr", grid={"model.init_args.optimizer.init_args.lr": [0.01, 0.02]})
    )
    for run, lr in zip(plan(spec), [0.01, 0.02], strict=True):
        config = parsed_fit_config(run.args, capsys)
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == lr
        # fit puts the run in <default_root_dir>/<run_name>, W&B run id = run name
        assert (config["trainer"]["default_root_dir"], config["run_name"]) == (
            str(run.run_dir.parent),
            run.run_id,
        )
        assert config["model"]["init_args"]["export_dir"] == str(run.run_dir / "adapter")
        assert config["trainer"]["logger"]["init_args"]["name"] == f"lr-{run.index}"


def test_sbatch_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write_spec(tmp_path, name="g", max_parallel=2, slurm={"mem": "8G", "time": "1:00:00"}))
    command = sbatch_command(spec, tmp_path / "runs" / "g" / "manifest.txt", 5)
    assert command[0] == "sbatch" and command[-2:] == [
        str(REPO / "slurm" / "array.sbatch"),
        str(tmp_path / "runs" / "g" / "manifest.txt"),
    ]
    options = dict(option[2:].split("=", 1) for option in command[1:-2])
    assert options == {
        "array": "0-4%2",
        "job-name": "g",
        "chdir": str(tmp_path),
        "output": str(tmp_path / "runs" / "g" / "slurm-%A_%a.out"),
        "mem": "8G",
        "time": "1:00:00",
    }


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, name="d", grid={"seed_everything": [1, 2, 3]})
    runs = sweep(path, dry_run=True, slurm={"partition": "gpu"})
    lines = capsys.readouterr().out.splitlines()
    commands = [shlex.split(line) for line in lines if line.startswith("python -m lit_career fit ")]
    assert [c[4:] for c in commands] == [r.args for r in runs]
    assert lines[-1].startswith("sbatch --array=0-2 ") and "--partition=gpu" in lines[-1]
    assert not (tmp_path / "runs").exists()


def test_submit_runs_sbatch_with_the_manifest(tmp_path, monkeypatch, capsys):
    """A stand-in sbatch on PATH records its arguments and answers like ``sbatch --parsable``."""
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path}/argv\necho "4242;cluster"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    runs = sweep(write_spec(tmp_path, name="sub", grid={"seed_everything": [1, 2]}), submit=True)
    argv = (tmp_path / "argv").read_text().splitlines()
    manifest = tmp_path / "runs" / "sub" / "manifest.jsonl"
    assert argv[0] == "--parsable" and argv[1] == "--array=0-1" and argv[-1] == str(manifest)
    assert [json.loads(line) for line in manifest.read_text().splitlines()] == [r.args for r in runs]
    assert "submitted array job 4242" in capsys.readouterr().out


def test_submit_without_sbatch_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="sbatch not found"):
        sweep(write_spec(tmp_path), submit=True)


def test_failed_submit_is_an_input_error(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\necho "sbatch: error: invalid partition" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(InputError, match="invalid partition"):
        sweep(write_spec(tmp_path), submit=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": 3}, "unknown keys"),
        ({"grid": {"seed_everything": [1]}, "runs": [{}]}, "either 'grid' or 'runs'"),
        ({"grid": {"seed_everything": 1}}, "non-empty list"),
        ({"runs": [1, 2]}, "list of mappings"),
        ({"config": "nowhere.yaml"}, "base config nowhere.yaml not found"),
        ({"max_parallel": 0}, "positive whole number"),
    ],
)
def test_bad_sweep_files(tmp_path, capsys, fields, message):
    path = write_spec(tmp_path, **fields)
    with pytest.raises(InputError, match=message):
        load_spec(path)
    with pytest.raises(SystemExit) as done:
        main(["sweep", str(path)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: ") and "\n" not in err


def unbuildable(cls: type):
    """``cls.__init__`` that fails, with the signature the parser reads."""

    @functools.wraps(cls.__init__)
    def init(self, *args, **kwargs):
        raise AssertionError(f"checking a sweep built a {cls.__name__}")

    return init


@pytest.mark.parametrize(
    ("fields", "index", "key", "reason"),
    [
        (
            {"grid": {"model.init_args.lora.rr": [8, 16]}},
            0,
            "'model.init_args.lora.rr' = 8",
            "'rr' is not accepted",
        ),
        (
            {"grid": {"model.init_args.lora.r": ["eight", 16]}},
            0,
            "'model.init_args.lora.r' = 'eight'",
            "eight",
        ),
        (
            {"runs": [{"seed_everything": 1}, {"trainer.max_steps": "x"}]},
            1,
            "'trainer.max_steps' = 'x'",
            "int",
        ),
    ],
    ids=["unknown key", "bad value", "second run"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "submit"])
def test_runs_that_fit_rejects_stop_the_sweep(
    tmp_path, monkeypatch, capsys, fields, index, key, reason, dry_run
):
    """Caught by parsing alone (nothing can be built here), before anything is written or submitted."""
    for cls in (CausalLMFineTuner, ResumeCorpus, Trainer):
        monkeypatch.setattr(cls, "__init__", unbuildable(cls))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: a submit would be an error of its own
    path = write_spec(tmp_path, name="bad", **fields)
    run = plan(load_spec(path))[index]
    with pytest.raises(SystemExit) as done:
        main(["sweep", str(path), "--dry_run", str(dry_run).lower(), "--submit", str(not dry_run).lower()])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: run {index} ({run.run_id}): key {key}: ") and "\n" not in err
    assert reason in err.split(": key ")[1]
    assert not (tmp_path / "runs").exists()
