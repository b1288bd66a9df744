"""Test environment: offline hubs and W&B, one thread, caches in a temp dir."""

import os
import tempfile

_cache = tempfile.mkdtemp(prefix="lit_career_test_cache_")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DIR": os.path.join(_cache, "wandb"),
    "WANDB_CACHE_DIR": os.path.join(_cache, "wandb_cache"),
    "HF_HOME": os.path.join(_cache, "hf"),
}.items():
    os.environ.setdefault(key, value)
# Models built for tests (tiny Llama, converted SmolLM2) are shared across tests of one session.
os.environ.setdefault("LIT_CAREER_CACHE", os.path.join(_cache, "lit_career"))

import torch  # noqa: E402

torch.set_num_threads(1)
