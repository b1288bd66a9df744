"""Test environment: offline hubs and W&B, one thread, caches in a temp dir removed at exit, the committed tiny Llama."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_cache = tempfile.mkdtemp(prefix="lit_career_test_cache_")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DIR": os.path.join(_cache, "wandb"),
    "WANDB_CACHE_DIR": os.path.join(_cache, "wandb_cache"),
    "HF_HOME": os.path.join(_cache, "hf"),
    "TORCHINDUCTOR_CACHE_DIR": os.path.join(_cache, "torchinductor"),
}.items():
    os.environ.setdefault(key, value)
# Models built for tests (converted SmolLM2) are shared across tests of one session.
os.environ.setdefault("LIT_CAREER_CACHE", os.path.join(_cache, "lit_career"))
# "tiny" is the committed copy (tests/assets/README.md), never rebuilt; test_backbone checks it is current.
os.environ["LIT_CAREER_TINY"] = str(Path(__file__).resolve().parent / "assets" / "tiny-llama-nlsy79")

import torch  # noqa: E402

torch.set_num_threads(1)
