"""Fine-tuning throughput on CPU, one thread: CausalLMFineTuner under Lightning vs a plain PyTorch loop.

For the tiny Llama and SmolLM2-135M-Instruct, in LoRA (fp32 base) and QLoRA (NF4 base): one model is
built by ``CausalLMFineTuner.configure_model``; the same fixed training batches (NLSY79 resumes)
are then run through ``Trainer.fit`` and through a plain loop (forward, backward, AdamW step, cosine
schedule step, zero_grad), alternately, a few times each. Throughput counts non-padding tokens over
the steps after ``--warmup`` per second of the training thread's CPU time (``time.thread_time``: the
2-core machine is shared, and wall time swung by 30% between identical runs), median of the repeats;
the overhead is plain / Lightning throughput - 1.
Each model and mode runs in its own process; peak memory is that process's peak RSS during each loop
(VmHWM, reset before it), model included.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_finetune.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader
from transformers import get_scheduler

from lit_career.benchmarks_io import write_section
from lit_career.llm.corpus import ResumeCorpus
from lit_career.llm.lm import CausalLMFineTuner, LoraSettings

LR = 1e-4


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def tokens(batches: list[dict]) -> int:
    return int(sum(int(b["attention_mask"].sum()) for b in batches))


class StepTimer(Callback):
    """CPU time of this thread from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.thread_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.thread_time()


def lightning_loop(module: CausalLMFineTuner, batches: list[dict], warmup: int, root: str) -> float:
    timer = StepTimer(warmup)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=len(batches),
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=root,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return timer.end - timer.start


def plain_loop(model: torch.nn.Module, batches: list[dict], warmup: int) -> float:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=len(batches))
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.thread_time()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.thread_time() - start


SETTINGS = {
    "tiny": {"batch_size": 8, "max_length": 512, "steps": 20, "repeats": 6},
    "smollm2-135m": {"batch_size": 2, "max_length": 160, "steps": 4, "repeats": 3},
}
"""Per model: resumes per batch, longest resume (tokens), measured steps and alternations of the two loops
(SmolLM2's kept small for time)."""


def bench(base_model: str, mode: str, warmup: int) -> dict:
    """Both loops on one model built by ``configure_model`` and the same batches, alternately."""
    settings = SETTINGS[base_model]
    corpus = ResumeCorpus(
        tokenizer=base_model,
        max_persons=300,
        max_length=settings["max_length"],
        batch_size=settings["batch_size"],
    )
    corpus.prepare_data()
    corpus.setup()
    loader = iter(corpus.train_dataloader())
    batches = [next(loader) for _ in range(warmup + settings["steps"])]
    module = CausalLMFineTuner(
        base_model, mode=mode, lora=LoraSettings(r=8, alpha=16), optimizer=partial(torch.optim.AdamW, lr=LR)
    )
    module.configure_model()
    measured = tokens(batches[warmup:])
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "lightning": []}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(settings["repeats"]):
            for loop in runs:
                reset_peak_rss()
                if loop == "plain":
                    seconds = plain_loop(module.model, batches, warmup)
                else:
                    seconds = lightning_loop(module, batches, warmup, root)
                runs[loop].append((seconds, peak_rss_mb()))
    out = {"model": base_model, "mode": mode, **settings, "tokens": measured}
    for loop, values in runs.items():
        seconds = statistics.median(v[0] for v in values)
        out[f"{loop}_tps"] = measured / seconds
        out[f"{loop}_tps_all"] = [round(measured / v[0], 1) for v in values]
        out[f"{loop}_step_ms"] = 1000 * seconds / settings["steps"]
        out[f"{loop}_rss"] = max(v[1] for v in values)
    out["overhead"] = out["plain_tps"] / out["lightning_tps"] - 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS))
    parser.add_argument("--modes", nargs="+", default=["lora", "qlora"])
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.one:  # a child process: its peak RSS is this model's alone
        print(json.dumps(bench(*args.one, args.warmup)))
        return

    rows = []
    for base_model in args.models:
        for mode in args.modes:
            child = [sys.executable, __file__, "--one", base_model, mode]
            child += ["--warmup", str(args.warmup)]
            out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)

    table = [
        "| model | mode | batch × max tokens | steps × repeats | tokens/s plain loop | tokens/s Lightning "
        "| overhead | ms/step plain / Lightning | peak RSS plain / Lightning (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['model']} | {r['mode']} | {r['batch_size']} × {r['max_length']} | {r['steps']} × {r['repeats']} "
            f"| {r['plain_tps']:.0f} {r['plain_tps_all']} | {r['lightning_tps']:.0f} {r['lightning_tps_all']} "
            f"| {100 * r['overhead']:+.1f}% | {r['plain_step_ms']:.0f} / {r['lightning_step_ms']:.0f} "
            f"| {r['plain_rss']:.0f} / {r['lightning_rss']:.0f} |"
        )
    worst = max(r["overhead"] for r in rows)
    body = "\n".join(
        [
            f"CPU, one thread; NLSY79 resume batches; {args.warmup} unmeasured warm-up step(s), then the "
            "measured steps; the two loops alternated (repeats) on the same model and batches. Tokens per "
            "second of the training thread's CPU time (other processes shared the 2-core machine), median "
            "of the repeats, every repeat in brackets. "
            "Overhead = plain / Lightning tokens per second - 1 (goal: under 10%). Peak RSS: one process "
            "per model and mode, model included.",
            "",
            *table,
            "",
            f"Largest overhead: {100 * worst:+.1f}% ({'under' if worst < 0.10 else 'NOT under'} 10%).",
            "",
            "`OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_finetune.py`",
        ]
    )
    print(body)
    write_section("Fine-tuning throughput: Lightning module vs plain loop (bench_finetune.py)", body)


if __name__ == "__main__":
    main()
