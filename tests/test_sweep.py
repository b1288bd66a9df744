"""``python -m lit_career sweep``: sweep files → runs, manifest lines, the sbatch command, errors."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.runs.lightning_cli import LitCareerCLI
from lit_career.runs.sweep import expand, load_spec, plan, sbatch_command, sweep, write_manifest

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


def test_manifest_lines_come_back_through_the_shell(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            runs=[
                {
                    "trainer.logger.init_args.notes": "it's a 'test' $HOME",
                    "data.init_args.split_fractions": {"train": 0.9, "valid": 0.1},
                    "trainer.enable_progress_bar": False,
                }
            ],
        )
    )
    (run,) = plan(spec)
    manifest = write_manifest([run], tmp_path / "m.txt")
    line = manifest.read_text().splitlines()[0]
    # what slurm/array.sbatch does with the line: eval it into a command's arguments
    echoed = subprocess.run(
        ["bash", "-c", 'eval "set -- $1"; printf "%s\\n" "$@"', "_", line],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert echoed == run.args
    assert run.args[run.args.index("--data.init_args.split_fractions") + 1] == '{"train": 0.9, "valid": 0.1}'
    assert run.args[run.args.index("--trainer.enable_progress_bar") + 1] == "false"


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
        logger = config["trainer"]["logger"]["init_args"]
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == lr
        assert config["trainer"]["default_root_dir"] == logger["save_dir"] == str(run.run_dir)
        assert config["model"]["init_args"]["export_dir"] == str(run.run_dir / "adapter")
        assert (logger["id"], logger["resume"], logger["name"]) == (run.run_id, "allow", f"lr-{run.index}")


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
    manifest = tmp_path / "runs" / "sub" / "manifest.txt"
    assert argv[0] == "--parsable" and argv[1] == "--array=0-1" and argv[-1] == str(manifest)
    assert [shlex.split(line) for line in manifest.read_text().splitlines()] == [r.args for r in runs]
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
