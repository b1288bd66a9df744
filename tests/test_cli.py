"""``python -m lit_career``: fit from YAML with offline W&B, resume in the same folder, one-line input errors."""

import importlib
import math
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
import wandb
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.loggers import WandbLogger
from peft import PeftModel
from wandb_records import offline_runs

from lit_career.cli import COMMANDS, DEMO_CONFIG, main
from lit_career.llm.backbone import load_causal_lm
from lit_career.runs.lightning_cli import LitCareerCLI

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "fit" / "lm"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHORT = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1"]
# The first training losses of the tiny fits (committed tiny Llama, seed 0, one CPU thread): any change in
# the model, data, tokenization, loss or optimizer shows here (measured: x86-64, torch 2.13).
FIRST_LOSSES = {"lora": [7.657494, 7.624380, 7.623466], "qlora": [7.656220, 7.623854, 7.622345]}


def run_in(root: Path, name: str = "run") -> list[str]:
    # absolute: the W&B service process keeps the working directory of the first run of the session
    return ["--trainer.default_root_dir", str(root / "runs"), "--run_name", name]


def eval_logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_fit_from_yaml_logs_to_offline_wandb_and_exports(tmp_path, monkeypatch, mode):
    monkeypatch.chdir(tmp_path)
    cli = LitCareerCLI(
        ["fit", "--config", str(EXPERIMENTS / f"{mode}_tiny_cpu.yaml"), *SHORT, *run_in(tmp_path)]
    )
    assert cli.trainer.global_step == 4
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in cli.model.modules()) == (mode == "qlora")

    assert isinstance(cli.trainer.logger, WandbLogger)
    wandb.finish()  # in-process: close the run as the process exit would
    (run,) = offline_runs(tmp_path / "runs" / "run")  # offline: the run is only on disk, in the run folder
    val = [row for row in run.history if "val/nll" in row]
    assert [row["trainer/global_step"] for row in val] == [1, 3]  # after steps 2 and 4 (0-based step 1, 3)
    assert val[-1]["val/nll"] == pytest.approx(float(cli.trainer.callback_metrics["val/nll"]))
    assert val[-1]["val/ppl"] == pytest.approx(math.exp(val[-1]["val/nll"]), rel=1e-5)
    losses = [row["train/loss"] for row in run.history if "train/loss" in row]
    assert len(losses) == 4 and losses[:3] == pytest.approx(FIRST_LOSSES[mode], rel=0, abs=1e-4)
    # the model's and the corpus's hyperparameters (the tokenizer linked from the model's base)
    assert run.config["mode"] == mode and run.config["tokenizer"] == "tiny"

    export = tmp_path / "runs" / "run" / "adapter"  # <run folder>/adapter
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "hparams.yaml"} <= {
        p.name for p in export.iterdir()
    }
    resolved = yaml.safe_load((export / "config.yaml").read_text())  # the run's config, overrides included
    assert resolved["trainer"]["max_steps"] == 4 and resolved["model"]["init_args"]["mode"] == mode
    assert (tmp_path / "runs" / "run" / "config.yaml").is_file()


def test_same_command_finds_its_run_and_resumes_from_last(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    config = [
        "fit",
        "--config",
        str(EXPERIMENTS / "lora_tiny_cpu.yaml"),
        *SHORT,
        "--trainer.default_root_dir",
        str(root),
    ]
    first = LitCareerCLI(config)
    wandb.finish()
    folder = Path(first.trainer.default_root_dir)
    assert folder.parent == root and folder.name.startswith("lora_tiny_cpu-")
    assert Path(first.trainer.checkpoint_callback.last_model_path) == folder / "checkpoints" / "last.ckpt"

    # the same command again would overwrite the run: refused, with the way to continue it
    with pytest.raises(SystemExit) as exit_:
        main(config)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {folder}: this run already saved checkpoints: continue it with "
        "--ckpt_path last, or start another with --run_name NAME"
    )
    # continue it (a longer schedule needs a name: the settings, max_steps included, name an unnamed run)
    named = [*config, "--run_name", "named"]
    LitCareerCLI(named)
    wandb.finish()
    second = LitCareerCLI([*named, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    wandb.finish()
    assert second.trainer.global_step == 6
    assert second.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 6
    assert Path(second.trainer.default_root_dir) == root / "named"


def test_ckpt_path_last_without_a_checkpoint_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(EXPERIMENTS / "lora_tiny_cpu.yaml"), "--ckpt_path", "last"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("error: runs/lora_tiny_cpu-") and "this run saved no checkpoint" in err


class Payload:
    """Unpickling this creates ``marker``: a checkpoint carrying it must never be unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "pickle", "no_state_dict", "missing"])
def test_bad_checkpoint_is_one_line_and_never_unpickled(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    path, marker = tmp_path / f"{kind}.ckpt", tmp_path / "PAYLOAD_RAN"
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, good)
    contents = {
        "empty": b"",
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "random": bytes(range(256)) * 20,
    }
    if kind in contents:
        path.write_bytes(contents[kind])
    elif kind == "pickle":
        torch.save({"state_dict": {}, "hook": Payload(marker)}, path)
    elif kind == "no_state_dict":
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(EXPERIMENTS / "lora_tiny_cpu.yaml"), "--ckpt_path", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"error: {path}: ")
    assert not marker.exists()


def test_unwritable_run_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "locked").write_text("a file where the runs folder should be")  # even root can't write there
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--config",
                str(EXPERIMENTS / "lora_tiny_cpu.yaml"),
                "--trainer.default_root_dir",
                "locked",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: locked/lora_tiny_cpu-") and err.endswith(
        "the folder is not writable (Not a directory)\n"
    )


def test_input_error_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no_such_model"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--config",
                str(EXPERIMENTS / "lora_tiny_cpu.yaml"),
                "--model.init_args.base_model",
                str(missing),
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"error: model {str(missing)!r} is neither a local folder")


def test_function_subcommand_input_error_prints_one_line(tmp_path, capsys):
    bad = FIXTURES / "bad" / "empty.csv"
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--source.kind", "table", "--source.path", str(bad), "--out_dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {bad}: file is empty"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_function_subcommands_have_parsable_signatures(name):
    module, function = COMMANDS[name].split(":")
    ArgumentParser().add_function_arguments(getattr(importlib.import_module(module), function))


@pytest.mark.slow
def test_smollm2_demo_fits_exports_and_reloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--data.init_args.max_persons",
        "20",
    ]
    cli = LitCareerCLI(args, default_config_files=[DEMO_CONFIG])  # no --config: the demo
    assert cli.model.base_model == cli.datamodule.tokenizer_source == "smollm2-135m"
    assert cli.trainer.global_step == 2 and cli.trainer.callback_metrics["val/ppl"] > 1

    (adapter,) = (tmp_path / "runs").glob("demo-*/adapter")  # no --config: the demo, named after it
    reloaded = PeftModel.from_pretrained(load_causal_lm("smollm2-135m"), adapter)
    batch = next(iter(cli.datamodule.val_dataloader()))
    assert torch.equal(eval_logits(reloaded, batch), eval_logits(cli.model.model, batch))
