"""A fit interrupted at any step and resumed from its checkpoint repeats the uninterrupted fit exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from lit_career.llm.corpus import ResumeCorpus
from lit_career.llm.lm import CausalLMFineTuner
from lit_career.runs.preemption import STOPPED_EXIT_CODE

TESTS = Path(__file__).resolve().parent
TINY = TESTS.parent / "configs" / "fit" / "lm" / "lora_tiny_cpu.yaml"

# 48 training resumes in batches of 8: 6 steps per epoch
RUNS = {
    # max_steps (two epochs and two steps of a third), a validation every 4 steps
    "steps": dict(max_steps=14, val_check_interval=4, check_val_every_n_epoch=None),
    # max_epochs, a validation at each epoch end (as configs/fit/trainer/cpu_epochs.yaml)
    "epochs": dict(max_epochs=2),
}


class Killed(Exception):
    """What the test raises in place of a killed process."""


class Recorder(Callback):
    """Training loss and trainable weights after every step, validation NLL after every validation."""

    def __init__(self):
        self.loss, self.weights, self.val = {}, {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss[trainer.global_step] = float(outputs["loss"])
        self.weights[trainer.global_step] = {
            name: p.detach().clone() for name, p in pl_module.named_parameters() if p.requires_grad
        }

    def on_validation_end(self, trainer, pl_module):
        self.val[trainer.global_step] = float(trainer.callback_metrics["val/nll"])


class KillAfter(Callback):
    """Stop the fit as a kill would, once every checkpoint of step ``step`` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed


def corpus(cache) -> ResumeCorpus:
    return ResumeCorpus(tokenizer="tiny", max_persons=60, max_length=512, batch_size=8, cache_dir=str(cache))


def fit(run: str, root, cache, callbacks: list[Callback], ckpt_path=None) -> None:
    """The same fit every time (fresh corpus, module and trainer), with a checkpoint after every step
    (``step=<n>``) and ModelCheckpoint's own on ``val/nll`` (``val-step=<n>``: at each validation end,
    or at the epoch end after the epoch's validation)."""
    seed_everything(0)
    module = CausalLMFineTuner("tiny", optimizer=partial(torch.optim.AdamW, lr=1e-2), warmup_steps=2)
    every_step = ModelCheckpoint(root, "{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = Trainer(
        accelerator="cpu",
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[
            *callbacks,
            every_step,
            ModelCheckpoint(root, "val-{step}", monitor="val/nll", save_top_k=-1),
        ],
        **RUNS[run],
    )
    trainer.fit(module, corpus(cache), ckpt_path=ckpt_path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def references(tmp_path_factory, cache):
    """The uninterrupted fits, recorded on first use."""
    recorded = {}

    def reference(run: str) -> Recorder:
        if run not in recorded:
            recorded[run] = Recorder()
            fit(run, tmp_path_factory.mktemp(run), cache, [recorded[run]])
        return recorded[run]

    return reference


@pytest.mark.parametrize(
    ("run", "saved"),
    [
        ("steps", "step=3"),  # mid-epoch
        ("steps", "step=5"),  # one batch before the end of epoch 0
        ("steps", "step=6"),  # after its last batch
        ("steps", "step=7"),  # after the first batch of epoch 1
        ("steps", "val-step=8"),  # after a validation mid-epoch
        ("epochs", "val-step=6"),  # at the end of epoch 0, after its validation
    ],
)
def test_a_fit_killed_after_any_step_resumes_as_if_never_stopped(references, cache, tmp_path, run, saved):
    expected = references(run)
    step = int(saved.rpartition("=")[2])
    with pytest.raises(Killed):
        fit(run, tmp_path, cache, [KillAfter(step)])
    resumed = Recorder()
    fit(run, tmp_path, cache, [resumed], ckpt_path=tmp_path / f"{saved}.ckpt")

    later = [s for s in expected.loss if s > step]
    assert list(resumed.loss) == later
    assert [resumed.loss[s] for s in later] == pytest.approx([expected.loss[s] for s in later], abs=1e-6)
    for s in later:
        for name, weight in resumed.weights[s].items():
            torch.testing.assert_close(weight, expected.weights[s][name], rtol=0, atol=1e-6)
    assert resumed.val == pytest.approx({s: v for s, v in expected.val.items() if s > step}, abs=1e-6)


def cli_fit(root: Path, *extra: str, **popen) -> subprocess.Popen:
    """``python -m lit_career fit`` of the tiny LoRA config, 3 epochs of 6 steps, every step recorded in ``root/steps``."""
    probe = {"class_path": "batch_probe.RecordBatches", "init_args": {"folder": str(root / "steps")}}
    args = [
        "--config", str(TINY),
        "--data.init_args.max_persons", "60",
        "--data.init_args.batch_size", "8",
        "--trainer.max_steps", "18",
        "--trainer.val_check_interval", "4",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root / "runs"),
        f"--trainer.callbacks+={json.dumps(probe)}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "lit_career", "fit", *args, *extra], cwd=root, env=env, text=True, **popen
    )


@pytest.mark.slow
def test_sigterm_saves_last_and_the_resumed_fit_repeats_the_uninterrupted_one(tmp_path):
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    for root in (reference, stopped):
        root.mkdir()
    with (reference / "err.txt").open("w") as err:
        assert cli_fit(reference, stdout=subprocess.DEVNULL, stderr=err).wait(timeout=300) == 0

    with (stopped / "err.txt").open("w") as err:
        process = cli_fit(stopped, stdout=subprocess.PIPE, stderr=err)
        for line in process.stdout:  # PrintMetrics: "step 4  val/nll ..." after the first validation
            if line.startswith("step 4 "):
                process.send_signal(signal.SIGTERM)
                break
        process.stdout.read()
        assert process.wait(timeout=300) == STOPPED_EXIT_CODE
    assert "Traceback" not in (stopped / "err.txt").read_text()
    (last,) = stopped.glob("runs/*/checkpoints/last.ckpt")
    step = torch.load(last, weights_only=True)["global_step"]
    trained = json.loads((stopped / "steps" / "rank0.json").read_text())
    # saved at the end of the step the signal came in (not ModelCheckpoint's last at the validation)
    assert 4 < step < 18 and step == max(map(int, trained)) + 1

    with (stopped / "err.txt").open("a") as err:
        resumed = cli_fit(stopped, "--ckpt_path", "last", stdout=subprocess.DEVNULL, stderr=err)
        assert resumed.wait(timeout=300) == 0, (stopped / "err.txt").read_text()[-3000:]
    expected = json.loads((reference / "steps" / "rank0.json").read_text())
    got = json.loads((stopped / "steps" / "rank0.json").read_text())
    assert list(got) == [str(s) for s in range(step + 1, 19)]
    for s, record in got.items():
        assert record["resumes"] == expected[s]["resumes"]
        assert record["loss"] == pytest.approx(expected[s]["loss"], abs=1e-6)
    (adapter,) = stopped.glob("runs/*/adapter/adapter_model.safetensors")
    (reference_adapter,) = reference.glob("runs/*/adapter/adapter_model.safetensors")
    weights, reference_weights = load_file(adapter), load_file(reference_adapter)
    assert weights.keys() == reference_weights.keys()
    for name, weight in weights.items():
        torch.testing.assert_close(weight, reference_weights[name], rtol=0, atol=1e-6)
