"""Two-process DDP (gloo, CPU) of the LoRA tiny fit through the command line: the ranks end equal, each\nrank trains on its own share of the length buckets and resumes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_career.llm.corpus import ResumeCorpus

TESTS = Path(__file__).resolve().parent
TINY = TESTS.parent / "configs" / "fit" / "lm" / "lora_tiny_cpu.yaml"


def fit_in_subprocess(args: list[str]) -> None:
    """``python -m lit_career fit *args`` with the probes of tests/ importable; it must succeed. A subprocess:
    Lightning's DDP launcher starts rank 1 by running the same command again."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "lit_career", "fit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


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
    fit_in_subprocess(args)

    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert [(r["world_size"], r["step"]) for r in ranks] == [(2, 4), (2, 4)]
    weights0, weights1 = ranks[0]["weights"], ranks[1]["weights"]
    assert weights0.keys() == weights1.keys() and any("lora_B" in k for k in weights0)
    for name in weights0:
        assert torch.equal(weights0[name], weights1[name]), f"ranks disagree on {name}"
    # the ranks trained (LoRA B starts at zero) and rank 0 exported the adapter
    assert any(weights0[k].abs().sum() > 0 for k in weights0 if "lora_B" in k)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def ddp_fit(tmp_path: Path, name: str, *extra: str) -> None:
    """Two-rank fit of 60 persons (48 training resumes, 12 batches of 4 per epoch: 6 per rank), 9 steps,
    each rank's batches recorded in ``<name>/steps``, a checkpoint after every step in ``<name>/checkpoints``."""
    probe = {
        "class_path": "batch_probe.RecordBatches",
        "init_args": {"folder": str(tmp_path / name / "steps")},
    }
    every_step = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "dirpath": str(tmp_path / name / "checkpoints"),
            "filename": "{step}",
            "every_n_train_steps": 1,
            "save_top_k": -1,
        },
    }
    args = [
        "--config", str(TINY),
        "--trainer.strategy", "ddp",
        "--trainer.devices", "2",
        "--trainer.use_distributed_sampler", "true",  # what Lightning would do with a DataLoader
        "--trainer.max_steps", "9",
        "--trainer.val_check_interval", "4",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / name / "run"),
        "--model.init_args.export_dir", str(tmp_path / name / "adapter"),
        "--data.init_args.max_persons", "60",
        f"--trainer.callbacks+={json.dumps(probe)}",
        f"--trainer.callbacks+={json.dumps(every_step)}",
        *extra,
    ]  # fmt: skip
    fit_in_subprocess(args)


def rank_steps(folder: Path) -> list[dict[int, dict]]:
    return [
        {int(step): record for step, record in json.loads((folder / f"rank{r}.json").read_text()).items()}
        for r in (0, 1)
    ]


@pytest.mark.slow
def test_each_rank_trains_on_its_own_length_buckets_and_resumes_its_share(tmp_path):
    ddp_fit(tmp_path, "reference")
    ranks = rank_steps(tmp_path / "reference" / "steps")
    corpus = ResumeCorpus(tokenizer="tiny", max_persons=60, max_length=512, batch_size=4)
    corpus.setup()
    single = corpus.train_dataloader().batch_sampler.sampler  # the batches of one process, by epoch
    for rank, steps in enumerate(ranks):
        for epoch in (0, 1):
            single.set_epoch(epoch)
            seen = [record["resumes"] for _, record in sorted(steps.items()) if record["epoch"] == epoch]
            # the single process's buckets dealt out in turn: disjoint between the ranks, none broken up
            assert seen == [batch.tolist() for batch in single.batches()[rank::2][: len(seen)]]
            assert len(seen) == (6 if epoch == 0 else 3)
        # so each rank pads about as little as one process does
        epoch0 = [record for record in steps.values() if record["epoch"] == 0]
        padding = 1 - sum(r["tokens"] for r in epoch0) / sum(r["positions"] for r in epoch0)
        assert padding == pytest.approx(corpus.stats["padding_fraction"]["train"], abs=0.02)

    # resumed mid-epoch from the checkpoint after step 3: each rank goes on with its own next batches
    ddp_fit(tmp_path, "resumed", "--ckpt_path", str(tmp_path / "reference" / "checkpoints" / "step=3.ckpt"))
    for reference, resumed in zip(ranks, rank_steps(tmp_path / "resumed" / "steps"), strict=True):
        assert sorted(resumed) == list(range(4, 10))
        for step, record in resumed.items():
            assert record["resumes"] == reference[step]["resumes"]
            assert record["loss"] == pytest.approx(reference[step]["loss"], abs=1e-6)
