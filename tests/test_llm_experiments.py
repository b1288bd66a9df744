"""``python -m lit_career llm``: an LLM row of the comparison scores the baselines' transitions."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lit_career.data.sources import PanelSource
from lit_career.evaluation.compare import compare
from lit_career.evaluation.predictions import Predictions
from lit_career.experiments import run_experiment
from lit_career.llm_experiments import _lm_parameters, run_llm_experiment

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "configs" / "experiments"
LLM_CONFIGS = sorted(EXPERIMENTS.glob("llm_*.yaml"))
SURVEY = {"kind": "synthetic", "population": "survey", "persons": 200, "seed": 0}
RESUMES = {"kind": "synthetic", "population": "resume", "persons": 300, "seed": 0}


def test_fine_tuned_row_scores_the_baselines_transitions(tmp_path):
    out = tmp_path / "llm"
    info = run_llm_experiment(
        predictor=ROOT / "configs/predictor/likelihood.yaml",
        out_dir=out,
        finetune=EXPERIMENTS / "lora_tiny_cpu.yaml",
        data={"max_persons": 40, "max_length": 512},
        finetune_args=["--trainer.max_steps=3"],
        name="llm_tiny",
    )
    assert info["steps"] == 3 and 0 < info["trainable_parameters"] < info["lm_parameters"]
    assert info["parameters"] == info["lm_parameters"] + info["head_parameters"] == info["lm_parameters"] + 1
    # a row that reuses this adapter counts the same LM without loading it
    assert _lm_parameters("tiny", str(out / "finetune/adapter")) == info["lm_parameters"]
    assert (out / "finetune/adapter/adapter_config.json").is_file()
    # each stage has its own W&B run, in its own folder
    assert len(list((out / "finetune/wandb").glob("offline-run-*"))) == 1
    assert len(list((out / "predictor/wandb").glob("offline-run-*"))) == 1
    for split in ("valid", "test"):
        predictions = Predictions.read(out / f"predictions_{split}.parquet")
        predictions.check_normalized()
        assert predictions.model == "llm_tiny" and set(predictions.table["split"]) == {split}
    assert json.loads((out / "metrics.json").read_text())["test"]["ppl_all"] == info["test"]["ppl_all"]

    run_experiment("markov1", PanelSource(), tmp_path / "markov1", max_persons=40)
    table = compare([tmp_path / "markov1", out], out_dir=tmp_path / "compare")
    assert list(table.index) == ["markov1", "llm_tiny"]
    assert table.loc["llm_tiny", "ppl_all"] == pytest.approx(info["test"]["ppl_all"])
    assert table.loc["llm_tiny", "parameters"] == info["parameters"]


@pytest.mark.slow  # fast subset: the row test above, full export in test_lm, the head in test_predictor
def test_pooled_full_finetune_then_embedding_head_on_the_survey_alone(tmp_path):
    out = tmp_path / "pooled"
    run_llm_experiment(
        predictor=ROOT / "configs/predictor/embedding.yaml",
        out_dir=out,
        finetune=EXPERIMENTS / "full_tiny_synthetic_pooled.yaml",
        data={"max_persons": None, "max_length": 512},
        finetune_args=[f"--data.init_args.sources={json.dumps([SURVEY, RESUMES])}", "--trainer.max_epochs=1"],
        head_args=[f"--data.init_args.sources={json.dumps([SURVEY])}", "--trainer.max_epochs=2"],
    )
    exported = out / "finetune/adapter"
    assert (exported / "model.safetensors").is_file() and not (exported / "adapter_config.json").exists()
    head = yaml.safe_load((out / "predictor/config.yaml").read_text())["model"]["init_args"]
    assert (head["base_model"], head["adapter"]) == (str(exported), None)
    finetuned = yaml.safe_load((exported / "config.yaml").read_text())["data"]["init_args"]["sources"]
    assert [s["population"] for s in finetuned] == ["survey", "resume"]

    survey = PanelSource(**SURVEY)
    run_experiment("markov1", survey, tmp_path / "markov1")
    table = compare([tmp_path / "markov1", out], out_dir=tmp_path / "compare")  # raises unless same transitions
    assert set(Predictions.read(out / "predictions_test.parquet").table["source"]) == {survey.load().source}
    assert table.loc["llm_embedding", "n_transitions"] == table.loc["markov1", "n_transitions"]


def _sources(config: dict) -> list[dict]:
    """The sources the head of an llm row is evaluated on (the default is the bundled NLSY79)."""
    for arg in config.get("head_args") or []:
        if arg.startswith("--data.init_args.sources="):
            return yaml.safe_load(arg.split("=", 1)[1])
    return (config.get("data") or {}).get("sources") or [{"kind": "nlsy79"}]


@pytest.mark.parametrize("path", LLM_CONFIGS, ids=lambda p: p.name)
def test_llm_row_config_evaluates_on_its_baselines_panel_and_split(path):
    config = yaml.safe_load(path.read_text())
    for key in ("finetune", "predictor"):
        if config.get(key):
            assert (ROOT / config[key]).is_file(), key
    data = config.get("data") or {}
    assert data.get("max_persons", "unset") is None and data.get("split_seed", 0) == 0
    dataset = Path(config["out_dir"]).parent.name
    baseline = yaml.safe_load((EXPERIMENTS / f"baseline_markov1_{dataset}.yaml").read_text())
    expected = {**PanelSource().__dict__, **baseline.get("source", {})}
    (source,) = _sources(config)
    assert {k: v for k, v in {**PanelSource().__dict__, **source}.items() if k != "columns"} == {
        k: v for k, v in expected.items() if k != "columns"
    }
    assert baseline.get("split_seed", 0) == 0 and baseline.get("max_persons") is None


def test_llm_rows_write_distinct_run_directories():
    out_dirs = pd.Series([yaml.safe_load(p.read_text())["out_dir"] for p in LLM_CONFIGS])
    assert not out_dirs.duplicated().any()


def test_run_lists_name_every_llm_config_once_after_the_row_it_reuses():
    listed = [ROOT / p for name in ("llm_cpu.txt", "llm_gpu.txt") for p in (EXPERIMENTS / name).read_text().split()]
    assert sorted(listed) == LLM_CONFIGS
    out_dirs = [yaml.safe_load(p.read_text())["out_dir"] for p in listed]
    for i, path in enumerate(listed):
        config = yaml.safe_load(path.read_text())
        reused = [str(config.get("base_model", "")), *(config.get("head_args") or [])]
        for producer in out_dirs:
            if any(f"{producer}/finetune/adapter" in arg for arg in reused):
                assert producer in out_dirs[:i], f"{path.name} runs before {producer}"
