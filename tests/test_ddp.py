"""Two-process DDP (gloo, CPU) of the LoRA tiny fit through the command line: the ranks end equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
TINY = TESTS.parent / "configs" / "fit" / "lm" / "lora_tiny_cpu.yaml"


@pytest.mark.slow
def test_two_rank_ddp_lora_fit_keeps_the_ranks_equal(tmp_path):
    probe = {"class_path": "rank_weights.SaveRankWeights", "init_args": {"folder": str(tmp_path / "ranks")}}
    args = [
        "--config", str(TINY),
        "--trainer.strategy", "ddp",
        "--trainer.devices", "2",
        "--trainer.max_steps", "4",
        "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "run"),
        "--model.init_args.export_dir", str(tmp_path / "run" / "adapter"),
        f"--trainer.callbacks+={json.dumps(probe)}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    # a subprocess: Lightning's DDP launcher starts rank 1 by running the same command again
    done = subprocess.run(
        [sys.executable, "-m", "lit_career", "fit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert [(r["world_size"], r["step"]) for r in ranks] == [(2, 4), (2, 4)]
    weights0, weights1 = ranks[0]["weights"], ranks[1]["weights"]
    assert weights0.keys() == weights1.keys() and any("lora_B" in k for k in weights0)
    for name in weights0:
        assert torch.equal(weights0[name], weights1[name]), f"ranks disagree on {name}"
    # the ranks trained (LoRA B starts at zero) and rank 0 exported the adapter
    assert any(weights0[k].abs().sum() > 0 for k in weights0 if "lora_B" in k)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
