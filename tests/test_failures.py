"""One line per failure: broken adapters, base models, metrics and prediction files, unwritable or full output
folders and unsafe cache files each give exit 2 and one ``error:`` line naming the file, no traceback."""

import ast
import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from packaging.requirements import Requirement
from packaging.version import Version

from lit_career.cli import main
from lit_career.errors import InputError
from lit_career.llm.backbone import load_causal_lm, load_frozen_lm, load_tokenizer
from lit_career.panel.predictions import Predictions
from lit_career.panel.taxonomy import vocabulary

REPO = Path(__file__).resolve().parent.parent
HEAD = REPO / "configs" / "fit" / "head"
TINY = Path(os.environ["LIT_CAREER_TINY"])
SMALL = ["--trainer.logger=false", "--trainer.max_epochs=1", "--data.init_args.max_persons=10"]


def one_error_line(capsys, args: list[str]) -> str:
    """Run the CLI on ``args``; assert exit 2, no traceback and one ``error:`` line, and return that line."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def cut(path: Path, keep: float = 0.5) -> None:
    """Truncate ``path`` to ``keep`` of its size, as an interrupted copy would."""
    os.truncate(path, int(path.stat().st_size * keep))


# ---------------------------------------------------------------- adapters and base models


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A LoRA adapter of the tiny Llama, exported as a fine-tuning run does (weights, tokenizer, hparams)."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("export") / "adapter"
    config = LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(load_causal_lm("tiny"), config).save_pretrained(folder)
    load_tokenizer("tiny").save_pretrained(folder)
    (folder / "hparams.yaml").write_text("base_model: tiny\n")
    return folder


def break_adapter(adapter: Path, folder: Path, how: str) -> Path:
    """A copy of ``adapter`` at ``folder`` broken ``how``; returns the file the error should name."""
    if how == "empty":
        folder.mkdir()
        return folder
    shutil.copytree(adapter, folder)
    config, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if how == "truncated_weights":
        cut(weights)
        return weights
    if how == "missing_config":
        config.unlink()
        return folder
    cut(config, 0.3)
    return config


BROKEN_ADAPTERS = {
    "truncated_weights": "unreadable safetensors",
    "missing_config": "no adapter_config.json",
    "cut_config": "not valid JSON",
    "empty": "empty",
}


@pytest.mark.parametrize("how", BROKEN_ADAPTERS)
def test_broken_adapter_given_to_a_head_is_one_line(adapter, tmp_path, capsys, how):
    named = break_adapter(adapter, tmp_path / "adapter", how)
    line = one_error_line(
        capsys,
        ["fit", "--config", str(HEAD / "embedding.yaml"), f"--model.init_args.adapter={tmp_path / 'adapter'}"]
        + [f"--trainer.default_root_dir={tmp_path / 'runs'}", *SMALL],
    )
    assert line.startswith(f"error: {named}:") and BROKEN_ADAPTERS[how] in line


@pytest.mark.parametrize("how", BROKEN_ADAPTERS)
def test_load_frozen_lm_refuses_a_broken_adapter_naming_the_file(adapter, tmp_path, how):
    named = break_adapter(adapter, tmp_path / "adapter", how)
    with pytest.raises(InputError, match=BROKEN_ADAPTERS[how]) as caught:
        load_frozen_lm("tiny", str(tmp_path / "adapter"), "none", torch.device("cpu"))
    assert caught.value.file == str(named)


def lm_row_reusing(tmp_path: Path) -> tuple[Path, Path]:
    """A row spec whose LM is row ``tuned``'s, and the folder that row's fine-tuned LM is exported to."""
    spec = tmp_path / "reuser.yaml"
    spec.write_text(
        f"name: reuser\ndataset: d\nmodel: lm\nroot: {tmp_path / 'rows'}\n"
        f"lm: {{head: {HEAD / 'embedding.yaml'}, reuse: tuned, data: {{max_persons: 10}}}}\n"
    )
    return spec, tmp_path / "rows" / "d" / "tuned" / "finetune" / "adapter"


def test_row_reusing_a_broken_or_missing_fine_tuned_lm_is_one_line(adapter, tmp_path, capsys):
    spec, export = lm_row_reusing(tmp_path)
    line = one_error_line(capsys, ["row", "--spec", str(spec)])
    assert line.startswith(f"error: {export}:") and "holds no fine-tuned LM" in line

    export.parent.mkdir(parents=True)
    break_adapter(adapter, export, "missing_config")
    line = one_error_line(capsys, ["row", "--spec", str(spec)])
    assert line == f"error: {export}: not a peft adapter folder (no adapter_config.json)"

    shutil.rmtree(export)  # a whole fine-tuned model (mode full) whose weights were cut
    shutil.copytree(TINY, export)
    cut(export / "model.safetensors")
    line = one_error_line(capsys, ["row", "--spec", str(spec)])
    assert line.startswith(f"error: {export / 'model.safetensors'}: unreadable safetensors file")


BROKEN_BASES = {
    "empty": ((), "the folder is empty: it holds no model"),
    "tokenizer_only": (
        ("tokenizer.json", "tokenizer_config.json"),
        "the folder holds no model (no config.json)",
    ),
    "no_tokenizer": (("config.json", "model.safetensors"), "the folder holds no tokenizer"),
}


@pytest.mark.parametrize("how", BROKEN_BASES)
def test_base_model_folder_without_a_model_is_one_line(tmp_path, capsys, how):
    files, message = BROKEN_BASES[how]
    base = tmp_path / "base"
    base.mkdir()
    for name in files:
        shutil.copy(TINY / name, base / name)
    line = one_error_line(
        capsys,
        [
            "fit",
            "--config",
            str(REPO / "configs/fit/lm/lora_tiny_cpu.yaml"),
            f"--model.init_args.base_model={base}",
        ]
        + [
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
            "--trainer.logger=false",
            "--trainer.max_steps=1",
        ],
    )
    assert line.startswith(f"error: {base}: {message}") and "sentencepiece" not in line


def test_cut_config_or_weights_of_a_base_model_name_the_file(tmp_path):
    for name in ("config.json", "model.safetensors"):
        base = shutil.copytree(TINY, tmp_path / name)
        cut(base / name)
        with pytest.raises(InputError) as caught:
            load_causal_lm(str(base))
        assert caught.value.file == str(base / name)


# ---------------------------------------------------------------- evaluate


def write_run(folder: Path, metrics: str | None = None) -> Path:
    """A run folder with test predictions of 40 transitions (and ``metrics.json`` holding ``metrics``)."""
    rng = np.random.default_rng(0)
    n, states = 40, len(vocabulary())
    table = pd.DataFrame(
        {
            "person_id": (np.arange(n) // 4).astype(str),
            "year": 2000 + np.arange(n) % 4,
            "state": rng.integers(0, 5, n),
            "prev_state": -1,
            "gap": 0,
            "split": "test",
        }
    )
    logits = rng.normal(size=(n, states)).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    Predictions(table, log_probs, "model").write(folder / "predictions_test.parquet")
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics)
    return folder


@pytest.mark.parametrize(
    "metrics, message",
    [
        ('{"model": "m", "parameters": 12', "not valid JSON (line 1, column"),
        ('[{"parameters": 12}]', "expected a JSON object"),
        ('{"model": "m", "parameters": "many"}', "'parameters' must be a number"),
    ],
)
def test_evaluate_with_a_broken_metrics_json_is_one_line(tmp_path, capsys, metrics, message):
    run = write_run(tmp_path / "run", metrics)
    line = one_error_line(capsys, ["evaluate", f"[{run}]", "--out_dir", str(tmp_path / "out")])
    assert line.startswith(f"error: {run / 'metrics.json'}: ") and message in line


def test_evaluate_on_a_parquet_file_that_is_not_predictions_names_the_missing_columns(tmp_path, capsys):
    other = tmp_path / "texts.parquet"
    pd.DataFrame({"person_id": ["a"], "year": [2000], "text": ["..."]}).to_parquet(other)
    line = one_error_line(
        capsys, ["evaluate", f"[{other}]", "--split", "null", "--out_dir", str(tmp_path / "out")]
    )
    assert line == (
        f"error: {other}: not a predictions file: it lacks the columns ['state', 'prev_state', 'gap', 'log_probs']"
    )


# ---------------------------------------------------------------- unwritable and full output folders


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A read-only folder. Root writes anywhere, so for root its refusal is simulated where the check writes."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = tempfile.TemporaryFile

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).is_relative_to(folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    yield folder
    folder.chmod(0o755)


def never(*args, **kwargs):
    raise AssertionError("long work started before the output folder was checked")


@pytest.mark.parametrize("command", ["prepare", "evaluate", "row"])
def test_read_only_output_folder_is_one_line_before_any_work(
    read_only, tmp_path, monkeypatch, capsys, command
):
    from lit_career.evaluation import evaluate
    from lit_career.sources import PanelSource

    monkeypatch.setattr(PanelSource, "load", never)
    monkeypatch.setattr(evaluate, "prediction_files", never)
    out = read_only / "out"
    args = {
        "prepare": ["prepare", "--out_dir", str(out)],
        "evaluate": ["evaluate", f"[{write_run(tmp_path)}]", "--out_dir", str(out)],
        "row": ["row", "--spec", str(REPO / "configs/rows/nlsy79/markov1.yaml"), "--root", str(out)],
    }[command]
    line = one_error_line(capsys, args)
    folder = out / "nlsy79" / "markov1" if command == "row" else out
    assert line.startswith(f"error: {folder}: the folder is not writable (")


def test_synth_checks_its_output_folder_before_building_the_world(read_only, monkeypatch):
    from lit_career.synthetic import command

    monkeypatch.setattr(command, "world_of", never)
    with pytest.raises(InputError, match="the folder is not writable") as caught:
        command.synth_command(None, str(read_only / "out"))
    assert caught.value.file == str(read_only / "out")


@pytest.mark.parametrize("head", ["embedding", "likelihood"])
def test_read_only_feature_cache_is_one_line_before_the_lm_runs(
    read_only, tmp_path, monkeypatch, capsys, head
):
    from lit_career.llm import head as occupation_head

    monkeypatch.setattr(occupation_head, "load_frozen_lm", never)
    args = ["fit", "--config", str(HEAD / f"{head}.yaml"), f"--trainer.default_root_dir={tmp_path}", *SMALL]
    line = one_error_line(capsys, [*args, f"--model.init_args.feature_cache_dir={read_only}"])
    assert line.startswith(f"error: {read_only}") and line.endswith(
        ": the folder is not writable (Permission denied)"
    )


def fill_disk_while_writing(monkeypatch, owner, method: str, victim: str) -> None:
    """Make ``owner.method`` write half of a file whose name holds ``victim``, then fail as a full disk does."""
    real = getattr(owner, method)

    def write(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        if victim in Path(path).name:
            cut(Path(path))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(owner, method, write)


def test_full_disk_in_prepare_leaves_no_partial_file_and_one_line(tmp_path, monkeypatch, capsys):
    fill_disk_while_writing(monkeypatch, pd.DataFrame, "to_parquet", "transitions")
    out = tmp_path / "out"
    line = one_error_line(capsys, ["prepare", "--out_dir", str(out)])
    assert line == f"error: {out / 'transitions.parquet'}: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == ["texts.parquet"]
    assert len(pd.read_parquet(out / "texts.parquet")) > 0

    def broken_disk(self, path, *args, **kwargs):  # not the user's to fix: the traceback stays
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_disk)
    with pytest.raises(OSError, match="Input/output error"):
        main(["prepare", "--out_dir", str(out)])


def test_full_disk_in_evaluate_leaves_no_partial_plot_and_one_line(tmp_path, monkeypatch, capsys):
    fill_disk_while_writing(monkeypatch, Figure, "savefig", "reliability")
    out = tmp_path / "out"
    line = one_error_line(capsys, ["evaluate", f"[{write_run(tmp_path / 'run')}]", "--out_dir", str(out)])
    assert line == f"error: {out / 'reliability.png'}: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.csv",
        "metrics.md",
        "perplexity.png",
        "subgroups.csv",
    ]


def test_adapter_export_is_swapped_in_whole_and_a_failed_one_changes_nothing(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    from lit_career.llm.lm import CausalLMFineTuner

    tuner = CausalLMFineTuner(base_model="tiny", mode="lora")
    tuner.configure_model()
    folder = tuner.export(tmp_path / "adapter")
    (folder / "config.yaml").write_text("kept: true\n")  # what the CLI saves beside the export
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "hparams.yaml"} < set(
        before
    )

    def full_disk(self, path, *args, **kwargs):
        (Path(path) / "tokenizer.json").write_text("{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(path) / "tokenizer.json"))

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    with pytest.raises(OSError) as caught:
        tuner.export(folder)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary folder left beside it

    monkeypatch.undo()
    tuner.export(folder)  # a later export replaces the old one and keeps what the CLI saved
    assert (folder / "config.yaml").read_text() == "kept: true\n"


# ---------------------------------------------------------------- safe loading


def test_loading_is_safe_torch_2_6_and_weights_only_everywhere():
    tomllib = pytest.importorskip("tomllib")
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [Requirement(d) for d in dependencies if Requirement(d).name == "torch"]
    assert Version("2.5.99") not in torch_req.specifier and Version("2.6.0") in torch_req.specifier
    calls = []
    for path in (REPO / "lit_career").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: k.value for k in node.keywords}
                calls.append((path.name, ast.unparse(keywords.get("weights_only", ast.Constant(None)))))
    assert calls and all(value == "True" for _, value in calls), calls


class Payload:
    """Creates ``marker`` when unpickled by a loader that runs pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> Path:
    """``corpus/`` (tokenized resumes) and ``features/``, filled by an embedding head (hidden-state shards)
    and a likelihood head (score files)."""
    root = tmp_path_factory.mktemp("cache")
    for head in ("embedding", "likelihood"):
        main(head_fit(head, root / "runs", root))
    return root


def head_fit(head: str, runs: Path, caches: Path) -> list[str]:
    """Arguments of a short ``fit`` of ``head`` whose corpus and feature caches are under ``caches``."""
    return ["fit", "--config", str(HEAD / f"{head}.yaml"), f"--trainer.default_root_dir={runs}", *SMALL] + [
        f"--data.init_args.cache_dir={caches / 'corpus'}",
        f"--model.init_args.feature_cache_dir={caches / 'features'}",
    ]


def spoil(path: Path, how: str, marker: Path) -> None:
    if how == "pickle_payload":
        torch.save({"rows": Payload(marker), "hidden": torch.zeros(1), "target": torch.zeros(1)}, path)
    elif how == "truncated":
        cut(path)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))


@pytest.mark.parametrize(
    "head, pattern", [("embedding", "hidden-*/shard-*.pt"), ("likelihood", "scores-*.pt")]
)
@pytest.mark.parametrize("how", ["pickle_payload", "truncated", "empty", "random_bytes"])
def test_unsafe_or_broken_cache_file_is_refused_with_one_line(caches, tmp_path, capsys, head, pattern, how):
    copy = shutil.copytree(caches, tmp_path / "caches", ignore=shutil.ignore_patterns("runs"))
    marker = tmp_path / "payload_ran"
    spoiled = sorted((copy / "features").glob(pattern))
    assert spoiled
    for path in spoiled:
        spoil(path, how, marker)
    line = one_error_line(capsys, head_fit(head, tmp_path / "runs", copy))
    assert any(line.startswith(f"error: {path}: unreadable cache file") for path in spoiled), line
    assert line.endswith("delete it to recompute") and not marker.exists()
    if how == "pickle_payload":  # the payload is live: a loader that unpickles code runs it
        torch.load(spoiled[0], weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize("name", ["resumes.parquet", "transitions.parquet", "meta.json"])
def test_cut_tokenized_resume_cache_is_one_line(caches, tmp_path, capsys, name):
    copy = shutil.copytree(caches, tmp_path / "caches", ignore=shutil.ignore_patterns("runs"))
    (victim,) = (copy / "corpus").glob(f"*/{name}")
    cut(victim)
    line = one_error_line(capsys, head_fit("embedding", tmp_path / "runs", copy))
    expected = "not valid JSON (line" if name == "meta.json" else "unreadable cache file ("
    assert line.startswith(f"error: {victim}: {expected}"), line
    assert name == "meta.json" or line.endswith("to recompute")
