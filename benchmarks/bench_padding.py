"""Padding fraction, tokens per resume and tokenization time of the resume corpus on the bundled NLSY79.

Target: padding under 5% of the tokens of training batches at the default batch size (8).
For each tokenizer, builds the corpus in a fresh cache (timing render + tokenize), sets it up again
from the cache, and measures the padding of one epoch's length-bucketed batches against random
batches of the same resumes.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_padding.py [tokenizer ...]
(default tokenizers: tiny smollm2-135m)
"""

import sys
import tempfile
import time

import numpy as np

from lit_career.benchmarks_io import write_section
from lit_career.llm.batching import CHUNK_BATCHES, BucketSampler, padding_fraction
from lit_career.llm.corpus import ResumeCorpus

BATCH_SIZES = (8, 16, 32)


def measure(tokenizer: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        corpus = ResumeCorpus(tokenizer=tokenizer, cache_dir=cache)
        corpus.tokenizer  # noqa: B018 - load (or build) the tokenizer outside the timings
        corpus.setup()
        began = time.perf_counter()
        ResumeCorpus(tokenizer=tokenizer, cache_dir=cache).setup()
        cached = time.perf_counter() - began
    lengths = corpus.resumes("train")["n_tokens"].to_numpy()
    padding = {}
    for size in BATCH_SIZES:
        bucketed = BucketSampler(lengths, size, seed=0).batches()
        order = np.random.default_rng(0).permutation(len(lengths))
        shuffled = [order[i : i + size] for i in range(0, len(order), size)]
        padding[size] = (padding_fraction(lengths, bucketed), padding_fraction(lengths, shuffled))
    stats = corpus.stats
    return {
        "tokenizer": tokenizer,
        "vocab": len(corpus.tokenizer),
        "resumes": sum(stats["resumes"].values()),
        "tokens": stats["tokens"],
        "per_resume": stats["tokens_per_resume"],
        "max": stats["max_tokens"],
        "truncated": stats["truncated_resumes"],
        "tokenize_s": stats["sources"]["NLSY79"]["tokenize_seconds"],
        "cached_s": cached,
        "default": stats["padding_fraction"],
        "padding": padding,
    }


def main(tokenizers: list[str]) -> None:
    rows = [measure(t) for t in tokenizers]
    lines = [
        "Whole bundled NLSY79 (all splits), default corpus settings (max_length 1024, batch size 8, "
        f"bucketing within random chunks of {CHUNK_BATCHES} batches). Setup from cache includes loading the panel "
        "and the tokenizer.",
        "",
        "| tokenizer | vocab | resumes | tokens | tokens/resume | max | truncated | render+tokenize s | setup from cache s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokenizer']} | {r['vocab']:,} | {r['resumes']:,} | {r['tokens']:,} | {r['per_resume']:.1f} | "
            f"{r['max']} | {r['truncated']} | {r['tokenize_s']:.1f} | {r['cached_s']:.1f} |"
        )
    lines += [
        "",
        "Padding fraction (padding / all positions) of one training epoch, length-bucketed vs random batches:",
        "",
        "| tokenizer | batch size | bucketed | random | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        for size, (bucketed, shuffled) in r["padding"].items():
            lines.append(
                f"| {r['tokenizer']} | {size} | {bucketed:.2%} | {shuffled:.2%} | {shuffled / bucketed:.0f}× |"
            )
    lines.append("")
    for r in rows:
        default = ", ".join(f"{split} {value:.2%}" for split, value in r["default"].items())
        verdict = "met" if r["default"]["train"] < 0.05 else "NOT met"
        lines.append(
            f"- {r['tokenizer']}: corpus.stats padding at batch size 8: {default}; target < 5%: {verdict}."
        )
    lines += [
        "",
        "Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_padding.py "
        + " ".join(tokenizers)
        + "`",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("Corpus: padding and tokens per resume on NLSY79", body)


if __name__ == "__main__":
    main(sys.argv[1:] or ["tiny", "smollm2-135m"])
