#!/usr/bin/env bash
# GPU verification (issue: QLoRA memory/throughput, scorer speed, a real fine-tune), one H100/H200,
# no network. Needs python3 with a CUDA torch, transformers, peft, lightning, pandas, pyarrow.
# Brings what such a machine may lack in .gpu/site (bitsandbytes' Python files + its CUDA 13.0
# library, gguf), and SmolLM2-135M as a GGUF split in parts under $GPU_CHECK_PARTS (see README).
#   bash benchmarks/gpu_check.sh [memory] [scorer] [finetune] [rows]     (default: all four)
# Figures: $OUT/gpu_<stage>.{json,md} ($OUT defaults to benchmarks/gpu_out).
# Prepare .gpu/ with benchmarks/gpu_bundle.sh. Where each call carries at most 64 MiB, split it in two
# calls on the same (warm) machine:
#   1 (carry .gpu/site, .gpu/smol/*part00): mkdir -p /tmp/gpu_check/parts && cp .gpu/smol/*part00 /tmp/gpu_check/parts/ && bash benchmarks/gpu_check.sh memory scorer
#   2 (carry .gpu/site, .gpu/smol/*part01): cp .gpu/smol/*part01 /tmp/gpu_check/parts/ && bash benchmarks/gpu_check.sh finetune rows
# Don't pipe it through a block-buffering filter: the figures print as each stage ends.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export LIT_CAREER_CACHE="${LIT_CAREER_CACHE:-/tmp/gpu_check/cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, peft, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__)"
python3 benchmarks/gpu_check.py "$@"
