"""LM rows of ``python -m lit_career row`` score the same transitions as the baselines."""

import json
from pathlib import Path

import pytest
import yaml

from lit_career.evaluation.evaluate import evaluate
from lit_career.llm.lm import CausalLMFineTuner
from lit_career.panel.predictions import Predictions
from lit_career.runs.lm_row import _lm_parameters
from lit_career.runs.row import run_row
from lit_career.runs.spec import LMArgs, RowSpec, load_plan, load_row
from lit_career.sources import PanelSource

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "configs" / "rows"
FIT_LM = ROOT / "configs" / "fit" / "lm"
LLM_CONFIGS = sorted(
    p
    for p in ROWS.glob("*/*.yaml")
    if p.parent.name != "plans" and yaml.safe_load(p.read_text())["model"] == "lm"
)
LM_PLANS = ("lm_cpu.yaml", "lm_gpu.yaml", "lm_smollm2_cpu.yaml")
SURVEY = {"kind": "synthetic", "population": "survey", "persons": 200, "seed": 0}
RESUMES = {"kind": "synthetic", "population": "resume", "persons": 300, "seed": 0}


def lm_row(out: Path, head: str, **lm) -> dict:
    """Run an LM row into ``out`` and return its metrics.json."""
    spec = RowSpec(
        name=out.name,
        dataset=out.parent.name,
        model="lm",
        root=out.parent.parent,
        lm=LMArgs(head=ROOT / "configs/fit/head" / head, **lm),
    )
    run_row(spec)
    return json.loads((out / "metrics.json").read_text())


def baseline_row(out: Path, source: PanelSource, **kwargs) -> None:
    run_row(
        RowSpec(
            name=out.name,
            dataset=out.parent.name,
            model="markov1",
            source=source,
            root=out.parent.parent,
            **kwargs,
        )
    )


def test_fine_tuned_row_scores_the_baselines_transitions(tmp_path):
    out = tmp_path / "d" / "llm_tiny"
    info = lm_row(
        out,
        "likelihood.yaml",
        finetune=FIT_LM / "lora_tiny_cpu.yaml",
        data={"max_persons": 40, "max_length": 512},
        finetune_overrides={"trainer.max_steps": 3},
    )
    assert info["steps"] == 3 and 0 < info["trainable_parameters"] < info["lm_parameters"]
    assert info["parameters"] == info["lm_parameters"] + info["head_parameters"] == info["lm_parameters"] + 1
    # a row that reuses this adapter counts the same LM without loading it
    assert _lm_parameters("tiny", str(out / "finetune/adapter")) == info["lm_parameters"]
    assert (out / "finetune/adapter/adapter_config.json").is_file()
    # each stage has its own W&B run, in its own folder
    assert len(list((out / "finetune/wandb").glob("offline-run-*"))) == 1
    assert len(list((out / "head/wandb").glob("offline-run-*"))) == 1
    for split in ("valid", "test"):
        predictions = Predictions.read(out / f"predictions_{split}.parquet")
        predictions.check_normalized()
        assert predictions.model == "llm_tiny" and set(predictions.table["split"]) == {split}
    assert json.loads((out / "metrics.json").read_text())["test"]["ppl_all"] == info["test"]["ppl_all"]

    baseline_row(tmp_path / "d" / "markov1", PanelSource(), max_persons=40)
    table = evaluate([tmp_path / "d" / "markov1", out], out_dir=tmp_path / "evaluation")
    assert list(table.index) == ["markov1", "llm_tiny"]
    assert table.loc["llm_tiny", "ppl_all"] == pytest.approx(info["test"]["ppl_all"])
    assert table.loc["llm_tiny", "parameters"] == info["parameters"]


def test_a_stopped_lm_row_continues_from_its_last_checkpoint(tmp_path, monkeypatch):
    """A row stopped after one fine-tuning epoch, run again with a budget of two, trains the second epoch only
    and ends where an uninterrupted two-epoch row ends (constant learning rate, no dropout: the same weights).
    A stop inside an epoch restarts that epoch's batches (the corpus' sampler keeps no position)."""
    steps = []
    training_step = CausalLMFineTuner.training_step
    monkeypatch.setattr(
        CausalLMFineTuner,
        "training_step",
        lambda self, *a: steps.append(self.global_step) or training_step(self, *a),
    )
    same = {"model.init_args.schedule": "constant_with_warmup", "model.init_args.lora.dropout": 0.0}
    setup = {"finetune": FIT_LM / "lora_tiny_cpu.yaml", "data": {"max_persons": 40, "max_length": 512}}
    stopped, whole = tmp_path / "d" / "stopped", tmp_path / "d" / "whole"

    def budget(epochs: int) -> dict:
        return {**same, "trainer.max_steps": -1, "trainer.max_epochs": epochs}

    lm_row(stopped, "likelihood.yaml", finetune_overrides=budget(1), **setup)
    epoch = len(steps)
    assert steps == list(range(epoch)) and (stopped / "finetune/checkpoints/last.ckpt").is_file()
    resumed = lm_row(stopped, "likelihood.yaml", finetune_overrides=budget(2), **setup)
    assert steps[epoch:] == list(range(epoch, 2 * epoch))
    uninterrupted = lm_row(whole, "likelihood.yaml", finetune_overrides=budget(2), **setup)
    for key in ("steps", "tokens_seen", "epochs"):
        assert resumed[key] == uninterrupted[key], key
    assert resumed["test"]["ppl_all"] == pytest.approx(uninterrupted["test"]["ppl_all"], rel=1e-6)


@pytest.mark.slow  # fast subset: the row test above, full export in test_lm, the head in test_predictor
def test_pooled_full_finetune_then_embedding_head_on_the_survey_alone(tmp_path):
    out = tmp_path / "d" / "llm_embedding"
    lm_row(
        out,
        "embedding.yaml",
        finetune=FIT_LM / "full_tiny_synthetic_pooled.yaml",
        data={"max_persons": None, "max_length": 512},
        finetune_overrides={"data.init_args.sources": [SURVEY, RESUMES], "trainer.max_epochs": 1},
        head_overrides={"data.init_args.sources": [SURVEY], "trainer.max_epochs": 2},
    )
    exported = out / "finetune/adapter"
    assert (exported / "model.safetensors").is_file() and not (exported / "adapter_config.json").exists()
    head = yaml.safe_load((out / "head/config.yaml").read_text())["model"]["init_args"]
    assert (head["base_model"], head["adapter"]) == (str(exported), None)
    finetuned = yaml.safe_load((exported / "config.yaml").read_text())["data"]["init_args"]["sources"]
    assert [s["population"] for s in finetuned] == ["survey", "resume"]

    survey = PanelSource(**SURVEY)
    baseline_row(tmp_path / "d" / "markov1", survey)
    table = evaluate(
        [tmp_path / "d" / "markov1", out], out_dir=tmp_path / "evaluation"
    )  # raises unless same transitions
    assert set(Predictions.read(out / "predictions_test.parquet").table["source"]) == {survey.load().source}
    assert table.loc["llm_embedding", "n_transitions"] == table.loc["markov1", "n_transitions"]


def _sources(spec: RowSpec) -> list[dict]:
    """The sources the head of an LM row is evaluated on (the default is the bundled NLSY79)."""
    return (
        spec.lm.head_overrides.get("data.init_args.sources")
        or spec.lm.data.get("sources")
        or [{"kind": "nlsy79"}]
    )


@pytest.mark.parametrize("path", LLM_CONFIGS, ids=lambda p: p.name)
def test_lm_row_evaluates_on_its_baselines_panel_and_split(path):
    spec = load_row(path)
    for config in (spec.lm.finetune, spec.lm.head):
        assert config is None or (ROOT / config).is_file(), config
    assert spec.lm.data.get("max_persons", "unset") is None and spec.lm.data.get("split_seed", 0) == 0
    baseline = load_row(ROWS / spec.dataset / "markov1.yaml")
    (source,) = _sources(spec)
    assert {k: v for k, v in {**PanelSource().__dict__, **source}.items() if k != "columns"} == {
        k: v for k, v in baseline.source.__dict__.items() if k != "columns"
    }
    assert baseline.split_seed == 0 and baseline.max_persons is None


def test_lm_plans_name_every_lm_row_once_after_the_row_it_reuses():
    listed = [p for name in LM_PLANS for p in load_plan(ROWS / "plans" / name)]
    assert sorted(listed) == LLM_CONFIGS
    for plan in LM_PLANS:
        done = set()
        for path in load_plan(ROWS / "plans" / plan):
            spec = load_row(path)
            assert spec.lm.reuse is None or spec.lm.reuse in done, f"{path.name} runs before {spec.lm.reuse}"
            done.add(spec.name)
