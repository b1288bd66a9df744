"""What a W&B review of a run finds, read back from the offline files: per-step and per-epoch metrics,
the resolved config, the adapter artifact, and the evaluation's tables and plots."""

from pathlib import Path

import pytest
import wandb
from test_report import write_predictions
from wandb_records import offline_runs

from lit_career.evaluation.evaluate import evaluate
from lit_career.runs.lightning_cli import LitCareerCLI

TINY = Path(__file__).resolve().parents[1] / "configs" / "fit" / "lm" / "lora_tiny_cpu.yaml"


def test_fit_run_holds_metrics_config_and_adapter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wandb.finish()  # no run of an earlier test may be reused
    run_dir = tmp_path / "run"
    options = {
        "trainer.max_steps": 6,
        "trainer.val_check_interval": 3,
        "trainer.log_every_n_steps": 1,
        "data.init_args.max_persons": 20,
        "data.init_args.batch_size": 8,  # 16 training resumes: two steps per epoch
        "model.init_args.optimizer.init_args.lr": 0.005,
        "trainer.default_root_dir": tmp_path,
        "run_name": "run",  # the run folder: W&B files, checkpoints, adapter
        "trainer.logger.init_args.id": "review-0",
        "model.init_args.log_adapter_artifact": "true",
    }
    LitCareerCLI(["fit", "--config", str(TINY), *(a for k, v in options.items() for a in (f"--{k}", str(v)))])
    wandb.finish()  # in-process: close the run as the process exit would
    (run,) = offline_runs(run_dir)
    assert run.run_id == "review-0"

    steps = [row["trainer/global_step"] for row in run.history if "train/loss" in row]
    assert steps == [0, 1, 2, 3, 4, 5]
    epochs = [(row["epoch"], row["train/loss_epoch"]) for row in run.history if "train/loss_epoch" in row]
    assert [epoch for epoch, _ in epochs] == [0, 1, 2]
    step_losses = [row["train/loss"] for row in run.history if "train/loss" in row]
    for epoch, loss in epochs:  # the epoch value is the mean of its two steps (equal batch sizes)
        assert loss == pytest.approx(sum(step_losses[2 * epoch : 2 * epoch + 2]) / 2, rel=1e-5)
    assert [row["trainer/global_step"] for row in run.history if "val/nll" in row] == [2, 5]
    assert any("lr-AdamW" in row for row in run.history)

    # the resolved config: every option of the run, as parsed (trainer, model, data)
    assert run.config["trainer"]["max_steps"] == 6
    assert run.config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.005
    assert run.config["data"]["init_args"]["max_persons"] == 20

    (files,) = [paths for name, paths in run.artifacts.items() if name.startswith("adapter-review-0")]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= set(files)


def test_evaluation_run_holds_tables_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    paths = [tmp_path / f"{name}.parquet" for name in ("weak", "sharp")]
    for path, sharpness in zip(paths, (0.5, 6.0), strict=True):
        write_predictions(path, path.stem, sharpness)
    evaluate(paths, tmp_path / "report", wandb=True)

    (run,) = offline_runs(tmp_path / "wandb")
    row = next(row for row in run.history if any(key.startswith("evaluation/") for key in row))
    logged = {key.removesuffix("/_type"): value for key, value in row.items() if key.endswith("/_type")}
    assert logged == {
        "evaluation/metrics": "table-file",
        "evaluation/subgroups": "table-file",
        "evaluation/perplexity": "image-file",
        "evaluation/reliability": "image-file",
        "evaluation/perplexity_by_subgroup": "image-file",
    }
    assert row["evaluation/metrics/nrows"] == 2  # one row per model
    for name in (
        "perplexity",
        "reliability",
        "perplexity_by_subgroup",
    ):  # the PNGs themselves are in the run's files
        assert row[f"evaluation/{name}/path"] in run.files
