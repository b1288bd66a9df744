"""Resume-pass features of SmolLM2-135M on NLSY79: one process vs N single-thread worker processes.

The pass behind the embedding/two-stage heads and the T=1 likelihood bound (hidden state before each
target and the realized target's log-probability, one forward per resume). The same fixed set of
test resumes is extracted into an empty cache folder with 1 and with ``--workers`` processes, each
run from scratch; throughput is tokens per second of wall time, for the whole run (model load and
process start included, as in a real run) and in the steady state between the first and the last
shard written. The outputs of the two runs are compared (they must be identical). The ratio
is only meaningful on an otherwise idle machine: the script reports the load average it saw.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_features.py --resumes 192 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from lit_career.benchmarks_io import write_section
from lit_career.llm.corpus import ResumeCorpus
from lit_career.llm.features import FrozenLM, extract

SHARD = 16


def steady_rate(folder: Path, token_ids: list[list[int]], workers: int, shard_size: int) -> float:
    """Tokens/s between the first and the last shard written (model load and process start excluded): the
    first shard of each worker is not counted, the span starts when the first shard was written."""
    shards = sorted(folder.glob("shard-*.pt"), key=lambda p: p.stat().st_mtime)
    tokens = [sum(map(len, token_ids[int(p.stem[6:]) * shard_size :][:shard_size])) for p in shards]
    span = shards[-1].stat().st_mtime - shards[0].stat().st_mtime
    return sum(tokens[workers:]) / span


def timed_extract(corpus: ResumeCorpus, resumes: int, workers: int, folder: Path) -> tuple[float, tuple]:
    table = corpus.transitions("test")
    table = table[table["resume"] < resumes]
    token_ids = corpus.token_ids("test")[:resumes]
    began = time.perf_counter()
    out = extract(
        FrozenLM("smollm2-135m"),
        token_ids,
        table,
        folder,
        batch_size=4,
        pad_id=corpus.tokenizer.pad_token_id,
        workers=workers,
        shard_size=SHARD,
    )
    return time.perf_counter() - began, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resumes", type=int, default=192)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = ResumeCorpus(tokenizer="smollm2-135m")
    corpus.setup()
    tokens = sum(map(len, corpus.token_ids("test")[: args.resumes]))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        one_s, one = timed_extract(corpus, args.resumes, 1, Path(tmp) / "one")
        many_s, many = timed_extract(corpus, args.resumes, args.workers, Path(tmp) / "many")
        ids = corpus.token_ids("test")[: args.resumes]
        one_steady = steady_rate(Path(tmp) / "one", ids, 1, SHARD)
        many_steady = steady_rate(Path(tmp) / "many", ids, args.workers, SHARD)
    load_after = os.getloadavg()[0]
    identical = torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    ratio = one_s / many_s
    body = f"""
{args.resumes} NLSY79 test resumes ({tokens:,} SmolLM2 tokens), hidden states + realized-target log-probs,
batch 4, shards of 16 resumes, fp32, one thread per process; wall time from an empty cache, model load
and process start included.

| processes | seconds | tokens/s (all) | tokens/s per process | steady tokens/s (all) | steady per process |
|---|---|---|---|---|---|
| 1 | {one_s:.1f} | {tokens / one_s:.0f} | {tokens / one_s:.0f} | {one_steady:.0f} | {one_steady:.0f} |
| {args.workers} | {many_s:.1f} | {tokens / many_s:.0f} | {tokens / many_s / args.workers:.0f} | {many_steady:.0f} | {many_steady / args.workers:.0f} |

Speed-up, whole runs: {ratio:.2f}x; steady state (between the first and the last shard written, so
without model load and process start): {many_steady / one_steady:.2f}x (target >= 1.8x on an idle machine:
{"met" if many_steady / one_steady >= 1.8 else "NOT met"}). Outputs identical: {identical}. 1-minute load average before / after: {load_before:.2f} / {load_after:.2f}
(above ~0.2 before means the machine was not idle).

Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_features.py --resumes {args.resumes} --workers {args.workers}`
"""
    print(body)
    write_section("Resume-pass features: worker processes (bench_features.py)", body)


if __name__ == "__main__":
    main()
