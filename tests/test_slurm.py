"""The cluster workflow on a real single-node SLURM (``slurm/local_cluster.sh``): an array sweep of tiny
fits, and a fit that gets the pre-timeout signal, requeues and resumes from its checkpoint."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from wandb_records import offline_runs, read_offline_run

from lit_career.llm.backbone import tiny_folder
from lit_career.runs.sweep import sweep

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "slurm" / "local_cluster.sh"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")
TINY = REPO / "configs" / "fit" / "lm" / "lora_tiny_cpu.yaml"
# one CPU per job (two jobs at once on two cores), no GPU
RESOURCES = {"gres": "none", "cpus-per-task": "1", "mem": "3G", "time": "00:05:00"}
# 20 persons, 16 of them in train: one batch per epoch (short fits for the sweep; the requeue test sets its own)
SMALL = {
    "trainer.enable_progress_bar": False,
    "data.init_args.max_persons": 20,
    "data.init_args.batch_size": 16,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    """Environment (``SLURM_CONF`` included) of a local cluster started for this module, stopped after it."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"SLURM cannot start here: {', '.join(missing)} not installed "
            "(apt-get install --no-install-recommends slurmctld slurmd slurm-client munge)"
        )
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port())}
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "start", str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, f"local SLURM did not start:\n{started.stderr}"
        env["SLURM_CONF"] = str(state / "slurm.conf")
        tiny_folder()  # build the tiny model once, before jobs share the cache
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(state)], env=env, timeout=60)


def slurm(env: dict[str, str], *args: str) -> str:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=30).stdout


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def wait_until_done(env: dict[str, str], job: str, timeout: float) -> list[dict[str, str]]:
    """Wait until no task of ``job`` is pending or running; return each task's ``scontrol show job`` fields."""
    wait_for(lambda: not slurm(env, "squeue", "-h", "-j", job).strip(), timeout, f"job {job} to finish")
    lines = slurm(env, "scontrol", "-o", "show", "job", job).splitlines()
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines]


# a W&B note that no shell may split or run: a newline, quotes, command substitutions, spaces, leading dashes
NOTES = '--notes\nit\'s "quoted" $(touch PWNED) `touch PWNED`  two spaces'


@pytest.mark.slow
def test_array_sweep_runs_every_task(cluster, tmp_path, monkeypatch, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "grid",
                "config": str(TINY),
                "out_dir": str(tmp_path / "runs"),
                "overrides": {
                    **SMALL,
                    "trainer.max_steps": 4,
                    "trainer.val_check_interval": 2,
                    "trainer.logger.init_args.notes": NOTES,
                },
                "grid": {"model.init_args.optimizer.init_args.lr": [0.002, 0.02]},
                "slurm": RESOURCES,
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_CONF", cluster["SLURM_CONF"])
    runs = sweep(spec, submit=True)
    job = re.search(r"submitted array job (\d+)", capsys.readouterr().out).group(1)

    tasks = wait_until_done(cluster, job, timeout=150)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    assert {(t["JobState"], t["ExitCode"]) for t in tasks} == {("COMPLETED", "0:0")}, tasks
    final_losses = []
    for run, lr in zip(runs, [0.002, 0.02], strict=True):
        assert (tmp_path / "runs" / "grid" / f"slurm-{job}_{run.index}.out").is_file()  # one log per task
        assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
        saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
        assert saved["model"]["init_args"]["optimizer"]["init_args"]["lr"] == lr
        assert saved["trainer"]["logger"]["init_args"]["notes"] == NOTES  # through the manifest unchanged
        (wandb_run,) = offline_runs(run.run_dir)
        assert (wandb_run.run_id, wandb_run.group) == (run.run_id, job)
        assert [h["train/loss"] for h in wandb_run.history if "train/loss" in h], "no per-step training loss"
        val = [h for h in wandb_run.history if "val/nll" in h]
        assert [h["trainer/global_step"] for h in val] == [1, 3]  # validations after steps 2 and 4
        final_losses.append(val[-1]["val/nll"])
    assert final_losses[0] != final_losses[1]  # each task ran its own grid point
    assert not (tmp_path / "PWNED").exists()  # the jobs' working directory


def submit_fit(env: dict[str, str], workdir: Path, name: str, args: list[str]) -> str:
    out = slurm(
        env,
        "sbatch",
        "--parsable",
        f"--chdir={workdir}",
        f"--output={workdir / name}.out",
        f"--export=ALL,RUN_NAME={name}",
        *(f"--{key}={value}" for key, value in RESOURCES.items()),
        str(REPO / "slurm" / "fit.sbatch"),
        str(TINY),
        *args,
    )
    return out.strip().split(";")[0]


def loss_curves(runs: list, after: int = -1) -> dict[str, list[tuple[int, float]]]:
    """(global step, value) of every training and validation loss logged after step ``after`` in the
    W&B pieces ``runs`` (W&B logs a step's values at the step index before the counter moves on)."""
    history = [row for run in runs for row in run.history]
    return {
        key: [
            (row["trainer/global_step"], row[key])
            for row in history
            if key in row and row["trainer/global_step"] >= after
        ]
        for key in ("train/loss", "val/nll")
    }


# 120 persons, 96 of them in train, in batches of 4: 24 steps per epoch, so the signal sent after the
# validation at step 10 stops the fit mid-epoch, and the resumed fit crosses the ends of epochs 0 and 1
PREEMPTED_FIT = {
    "trainer.enable_progress_bar": False,
    "data.init_args.max_persons": 120,
    "data.init_args.batch_size": 4,
    "trainer.max_steps": 60,
    "trainer.val_check_interval": 10,
    "trainer.log_every_n_steps": 1,  # so the step of the checkpoint is logged (before the requeue)
}
STEPS_PER_EPOCH = 24


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["USR1", "TERM"])  # before the time limit (--signal), on preemption
def test_preempted_fit_requeues_and_resumes(cluster, tmp_path, signal):
    args = []
    for key, value in PREEMPTED_FIT.items():
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    # the same fit twice, side by side; only one is signalled
    jobs = {name: submit_fit(cluster, tmp_path, name, args) for name in ("reference", "preempted")}
    log = tmp_path / "preempted.out"
    wait_for(lambda: log.is_file() and "step 10 " in log.read_text(), 120, "the first validation of the fit")
    # what --signal=SIGUSR1@90 does before the time limit, and preemption with SIGTERM: signal the job
    # steps (srun's python), not the shell
    slurm(cluster, "scancel", f"--signal={signal}", jobs["preempted"])

    (preempted,) = wait_until_done(cluster, jobs["preempted"], timeout=150)
    (reference,) = wait_until_done(cluster, jobs["reference"], timeout=60)
    text = log.read_text()
    assert (preempted["JobState"], preempted["Restarts"]) == ("COMPLETED", "1"), preempted
    assert (reference["JobState"], reference["Restarts"]) == ("COMPLETED", "0"), reference
    assert re.search(r"restart 1 on", text), "the batch script did not run again (SLURM_RESTART_COUNT)"
    stopped = int(re.search(rf"SIG{signal} received: checkpoint at step (\d+), then requeue", text).group(1))
    assert 10 < stopped < 60 and stopped % STEPS_PER_EPOCH, f"not stopped mid-epoch: step {stopped}"
    assert "Restored all states from the checkpoint at runs/preempted/hpc_ckpt_1.ckpt" in text
    run_dir = tmp_path / "runs" / "preempted"
    # the restarted job continued the same W&B run: two offline pieces with the job's fixed id
    pieces = sorted((run_dir / "wandb").glob("offline-run-*"))
    if signal == "USR1":  # RequeueAtStepEnd finished the first piece before the requeue: every step is there
        runs, after = [read_offline_run(piece) for piece in pieces], -1
    else:  # SIGTERM reached W&B's service too and cut the first piece: the resumed one is compared
        runs, after = [read_offline_run(pieces[-1])], stopped
    assert len(pieces) == 2 and {run.run_id for run in runs} == {"preempted"}

    curves = loss_curves(runs, after)
    reference_curves = loss_curves(offline_runs(tmp_path / "runs" / "reference"), after)
    # Lightning does not run again a validation due after the step of the checkpoint (W&B logs step - 1)
    reference_curves["val/nll"] = [
        (step, v) for step, v in reference_curves["val/nll"] if step != stopped - 1
    ]
    for key, curve in curves.items():
        # every loss logged once, at the same steps as the uninterrupted fit, the last after step 60
        assert [step for step, _ in curve] == [step for step, _ in reference_curves[key]], key
        assert curve[-1][0] == 59, key  # W&B logs the step index before the counter moves on
        # same seed, same CPU, one thread, the same batches after the resume: equal up to float32 rounding
        assert [v for _, v in curve] == pytest.approx([v for _, v in reference_curves[key]], rel=0, abs=1e-6)
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    reference = load_file(tmp_path / "runs" / "reference" / "adapter" / "adapter_model.safetensors")
    assert adapter.keys() == reference.keys()
    for name, weight in adapter.items():
        torch.testing.assert_close(weight, reference[name], rtol=0, atol=1e-6)
