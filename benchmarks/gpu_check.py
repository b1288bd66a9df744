"""GPU verification of the QLoRA, scoring and fine-tuning paths (run through benchmarks/gpu_check.sh).

Stages (any subset, in order given):

* ``memory``: QLoRA (NF4 + double quant, bf16 compute) vs bf16 LoRA on a Llama-3.2-1B-shaped model
  with random weights: peak GPU memory, tokens/s and model FLOPs utilization at sequence lengths 512
  and 1024, equal batch, gradient checkpointing and the chunked loss (1,024 tokens) on for both;
* ``scorer``: the closed-set scorer on the same model: transitions/s naive (one forward per
  candidate) vs shared prompt (bf16), and their max difference in fp32 (TF32 off);
* ``finetune``: QLoRA fine-tune of SmolLM2-135M on the bundled NLSY79 corpus for a fixed number of
  steps, then the next-occupation perplexity over the closed set on validation resumes, before and after;
* ``rows``: the LM rows of ``configs/rows/plans/lm_gpu.yaml`` in order (the project's own row runner, on
  the carried SmolLM2), each row's test metrics and wall time; no row starts after ``GPU_CHECK_ROWS_S``
  seconds (default 420), and a failing row is recorded and skipped.

Model FLOPs per trained token = 2 × forward FLOPs (the frozen base needs activation gradients but
no weight gradients; recomputation by checkpointing is not counted), forward = 2 × (linear weights
incl. the output head) + 4 × layers × sequence length × hidden size (attention scores and values).
Figures go to ``$OUT/gpu_<stage>.json`` and ``$OUT/gpu_<stage>.md``; ``GPU_CHECK_SMOKE=1`` runs tiny
shapes (CPU is fine) to test the script itself.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
OUT = Path(os.environ.get("OUT") or "benchmarks/gpu_out")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
WORK = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu_check"))


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def card() -> str:
    return torch.cuda.get_device_name() if DEVICE.type == "cuda" else "CPU (smoke)"


def matmul_rate() -> float:
    """Measured bf16 matrix-product rate in FLOP/s (8192³, median of 10 after warm-up)."""
    n = 512 if SMOKE else 8192
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / sorted(times)[5]


def llama_1b_folder() -> Path:
    """A Llama-3.2-1B-shaped model with random weights, saved once in bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = WORK / ("llama-smoke" if SMOKE else "llama-3.2-1b-shape")
    if (folder / "config.json").exists():
        return folder
    shape = dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    )
    if SMOKE:
        shape = dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=4096,
        )
    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500000.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def model_flops_per_token(folder: Path, seq: int) -> float:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(folder)
    head_dim = c.hidden_size // c.num_attention_heads
    per_layer = (
        c.hidden_size * head_dim * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)
        + 3 * c.hidden_size * c.intermediate_size
    )
    linear = c.num_hidden_layers * per_layer + c.hidden_size * c.vocab_size
    forward = 2 * linear + 4 * c.num_hidden_layers * seq * c.hidden_size
    return 2 * forward


class StepTimer:
    """Lightning callback: wall time of each training step (synchronized)."""

    def __init__(self):
        from lightning.pytorch import Callback

        timer = self

        class _Callback(Callback):
            def on_train_batch_start(self, *args):
                sync()
                timer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, *args):
                sync()
                timer.times.append(time.perf_counter() - timer.start)
                timer.losses.append(float(outputs["loss"]))

        self.callback, self.times, self.losses, self.start = _Callback(), [], [], 0.0


def random_batches(vocab: int, batch: int, seq: int, steps: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (steps * batch, seq), generator=g)
    data = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x} for x in ids]
    return torch.utils.data.DataLoader(data, batch_size=batch)


def train_once(folder: Path, mode: str, seq: int, batch: int, steps: int, warmup: int) -> dict:
    from lightning.pytorch import Trainer
    from transformers import AutoConfig

    from lit_career.llm.lm import CausalLMFineTuner, LoraSettings

    module = CausalLMFineTuner(
        base_model=str(folder),
        mode=mode,
        compute_dtype="bfloat16",
        gradient_checkpointing=True,
        loss_chunk_size=1024,  # as configs/fit/model/qlora_llama*.yaml: the 128k-vocabulary logits never whole
        lora=LoraSettings(r=16, alpha=32, dropout=0.0),
        export_dir=str(WORK / "unused_export"),
    )
    module.on_fit_end = lambda: None  # no export in a benchmark
    timer = StepTimer()
    trainer = Trainer(
        accelerator="auto",
        devices=1,
        precision="bf16-mixed",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer.callback],
        num_sanity_val_steps=0,
    )
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    vocab = AutoConfig.from_pretrained(folder).vocab_size
    trainer.fit(module, train_dataloaders=random_batches(vocab, batch, seq, steps))
    peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else float("nan")
    step = sorted(timer.times[warmup:])[len(timer.times[warmup:]) // 2]
    losses = timer.losses
    del module, trainer
    return {
        "mode": mode,
        "seq": seq,
        "batch": batch,
        "peak_gib": peak,
        "step_s": step,
        "tokens_per_s": batch * seq / step,
        "nan": any(math.isnan(x) for x in losses),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def stage_memory() -> dict:
    folder = llama_1b_folder()
    rate = matmul_rate()
    rows = []
    batch, steps, warmup = (2, 4, 1) if SMOKE else (8, 10, 3)
    for seq in (512, 1024) if not SMOKE else (64,):
        for mode in ("lora", "qlora"):
            row = train_once(folder, mode, seq, batch, steps, warmup)
            row["mfu"] = row["tokens_per_s"] * model_flops_per_token(folder, seq) / rate
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratios = {
        seq: next(r["peak_gib"] for r in rows if r["seq"] == seq and r["mode"] == "qlora")
        / next(r["peak_gib"] for r in rows if r["seq"] == seq and r["mode"] == "lora")
        for seq in sorted({r["seq"] for r in rows})
    }
    lines = [
        f"Llama-3.2-1B shape (random weights), batch {batch}, LoRA r=16 on all linear layers, gradient "
        f"checkpointing, chunked loss (1,024 tokens), bf16-mixed; measured bf16 matmul rate {rate / 1e12:.0f} TFLOP/s on {card()}.",
        "",
        "| mode | seq | peak GPU memory (GiB) | tokens/s | MFU | NaN | loss first → last |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['seq']} | {r['peak_gib']:.2f} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | "
            f"{r['nan']} | {r['first_loss']:.3f} → {r['last_loss']:.3f} |"
        )
    lines.append("")
    lines += [f"QLoRA / LoRA peak memory at seq {s}: **{x:.2f}×** (target ≤ 0.45)" for s, x in ratios.items()]
    return {"rows": rows, "matmul_tflops": rate / 1e12, "memory_ratio": ratios, "markdown": "\n".join(lines)}


def nlsy79_resumes(tokenizer, n: int) -> list[tuple[list[int], list[int]]]:
    """Token ids and title boundaries of the first ``n`` NLSY79 resumes (tokenized whole)."""
    from lit_career.panel.nlsy79 import load_nlsy79
    from lit_career.text.resume import render_panel
    from lit_career.text.tokenize import token_spans

    panel = load_nlsy79()
    panel = panel.subset(panel.persons.index[:n])
    texts, transitions = render_panel(panel)
    out = []
    for k, text in enumerate(texts["text"]):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        rows = transitions[transitions["resume"] == k]
        spans = token_spans(
            np.asarray(enc["offset_mapping"]), rows["prompt_end"].to_numpy(), rows["target_end"].to_numpy()
        )
        out.append((enc["input_ids"], [int(s) for s in spans[0]]))
    return out


def stage_scorer() -> dict:
    from transformers import AutoModelForCausalLM

    from lit_career.llm.backbone import load_tokenizer
    from lit_career.llm.scoring import ClosedSetScorer
    from lit_career.text.resume import ResumeTemplate

    folder = llama_1b_folder()
    tokenizer = load_tokenizer("tiny")  # ids < 2048 fit any vocabulary; the model's weights are random
    candidates = [" " + t for t in ResumeTemplate().targets()]
    resumes = nlsy79_resumes(tokenizer, 2 if SMOKE else 10)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.backends.cuda.matmul.allow_tf32 = False
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(DEVICE)
        scorer = ClosedSetScorer(
            model, tokenizer, candidates, chunk_size=4096 if DEVICE.type == "cuda" else 256
        )
        ids, bounds = resumes[0]
        few = bounds[-1:]  # naive reference on one year: 347 forwards
        sync()
        t = time.perf_counter()
        naive = scorer.naive_scores(ids, few)
        sync()
        naive_s = time.perf_counter() - t
        fast = scorer.score_resume(ids, few)
        scorer.score_resume(*resumes[0])  # warm-up
        sync()
        t = time.perf_counter()
        n_transitions = sum(len(scorer.score_resume(i, b)) for i, b in resumes)
        sync()
        fast_s = time.perf_counter() - t
        results[str(dtype)] = {
            "max_abs_diff": float((naive - fast).abs().max()),
            "naive_transitions_per_s": len(few) / naive_s,
            "fast_transitions_per_s": n_transitions / fast_s,
            "transitions": n_transitions,
            "nan": bool(torch.isnan(fast).any()),
        }
        print(dtype, json.dumps(results[str(dtype)]), flush=True)
        del model, scorer
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
    bf = results[str(torch.bfloat16)]
    speedup = bf["fast_transitions_per_s"] / bf["naive_transitions_per_s"]
    lines = [
        f"Closed-set scorer ({len(candidates)} candidates) on the Llama-3.2-1B-shaped model, {card()}, "
        f"{bf['transitions']} NLSY79 transitions (tiny tokenizer ids).",
        "",
        "| dtype | naive transitions/s | shared-prompt transitions/s | speed-up | max abs diff (nats) | NaN |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name.replace('torch.', '')} | {r['naive_transitions_per_s']:.2f} | {r['fast_transitions_per_s']:.1f} | "
            f"{r['fast_transitions_per_s'] / r['naive_transitions_per_s']:.0f}× | {r['max_abs_diff']:.2e} | {r['nan']} |"
        )
    lines.append(f"\nbf16 speed-up {speedup:.0f}× (target ≥ 20×); fp32 difference is the exactness check.")
    return {"results": results, "speedup_bf16": speedup, "markdown": "\n".join(lines)}


def occupation_ppl(module, corpus, resumes: int) -> tuple[float, int]:
    """exp mean NLL of the realized state over the closed set on the first validation resumes."""
    from lit_career.llm.scoring import ClosedSetScorer, normalize

    candidates = [" " + t for t in corpus.template.targets()]
    scorer = ClosedSetScorer(
        module.model, corpus.tokenizer, candidates, chunk_size=4096 if DEVICE.type == "cuda" else 256
    )
    transitions = corpus.transitions("valid")
    token_ids = corpus.token_ids("valid")
    nll = []
    for resume, rows in transitions[transitions["resume"] < resumes].groupby("resume"):
        logp, _ = normalize(scorer.score_resume(token_ids[resume], rows["tok_start"].tolist()))
        states = torch.as_tensor(rows["state"].to_numpy(), dtype=torch.long)
        nll.append(-logp.gather(1, states[:, None]).squeeze(1))
    nll = torch.cat(nll)
    return math.exp(float(nll.mean())), len(nll)


def stage_finetune() -> dict:
    from lightning.pytorch import Trainer, seed_everything

    from lit_career.llm.corpus import ResumeCorpus
    from lit_career.llm.lm import CausalLMFineTuner, LoraSettings

    source = "tiny" if SMOKE else str(smollm2_gguf())
    steps, resumes = (5, 3) if SMOKE else (300, 40)
    seed_everything(0)
    t0 = time.perf_counter()
    log = lambda what: print(f"[{time.perf_counter() - t0:6.1f} s] {what}", flush=True)  # noqa: E731
    corpus = ResumeCorpus(
        tokenizer=source, batch_size=16, max_persons=300 if SMOKE else None, cache_dir=str(WORK / "corpus")
    )
    corpus.prepare_data()
    corpus.setup("fit")
    log("corpus tokenized")
    module = CausalLMFineTuner(
        base_model=source,
        mode="qlora",
        compute_dtype="bfloat16" if DEVICE.type == "cuda" else "float32",
        lora=LoraSettings(r=16, alpha=32, dropout=0.05),
        warmup_steps=20,
        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0),
        export_dir=str(WORK / "adapter"),
    )
    timer = StepTimer()
    trainer = Trainer(
        accelerator="auto",
        devices=1,
        precision="bf16-mixed" if DEVICE.type == "cuda" else "32-true",
        max_steps=steps,
        max_time={"seconds": 20 if SMOKE else 75},
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer.callback],
        limit_val_batches=20,
        check_val_every_n_epoch=1000,
        num_sanity_val_steps=0,
    )
    module.trainer = trainer  # configure_model places the base on the trainer's device
    module.configure_model()
    module._trainer = None
    log("model loaded")
    before, n = occupation_ppl(module, corpus, resumes)
    log(f"off-the-shelf occupation perplexity {before:.2f}")
    setup_s = time.perf_counter() - t0
    trainer.fit(module, datamodule=corpus)
    log(f"fit: {trainer.global_step} steps")
    val = trainer.validate(module, datamodule=corpus, verbose=False)[0]
    after, _ = occupation_ppl(module, corpus, resumes)
    log(f"fine-tuned occupation perplexity {after:.2f}")
    step = sorted(timer.times[5:] or timer.times)[len(timer.times[5:] or timer.times) // 2]
    result = {
        "base": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized, then NF4)" if not SMOKE else "tiny",
        "steps": trainer.global_step,
        "batch": 16,
        "step_s": step,
        "train_loss_first": timer.losses[0],
        "train_loss_last": timer.losses[-1],
        "nan": any(math.isnan(x) for x in timer.losses),
        "val_token_ppl": val.get("val/ppl"),
        "val_occupation_ppl_before": before,
        "val_occupation_ppl_after": after,
        "val_transitions": n,
        "val_resumes": resumes,
        "setup_s": setup_s,
    }
    print(json.dumps(result), flush=True)
    lines = [
        f"QLoRA (NF4, bf16 compute, r=16) fine-tune of {result['base']} on the bundled NLSY79 corpus, {card()}: "
        f"{result['steps']} steps of batch 16 (median {step * 1000:.0f} ms/step), train loss "
        f"{result['train_loss_first']:.3f} → {result['train_loss_last']:.3f}, NaN: {result['nan']}.",
        "",
        f"| | next-occupation perplexity (closed set, first {resumes} validation resumes, {n} transitions) |",
        "|---|---|",
        f"| off-the-shelf | {before:.2f} |",
        f"| fine-tuned | {after:.2f} |",
        "",
        f"Validation token perplexity after fine-tuning: {result['val_token_ppl']:.3f}.",
    ]
    result["markdown"] = "\n".join(lines)
    return result


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file, joined from its carried parts once."""
    parts = sorted(Path(os.environ.get("GPU_CHECK_PARTS", WORK / "parts")).glob("*.gguf.part*"))
    gguf = WORK / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        if len(parts) < 2:
            raise SystemExit(f"need the split SmolLM2 GGUF parts, found {parts}")
        gguf.write_bytes(b"".join(p.read_bytes() for p in parts))
    return gguf


def gpu_rows(plan: Path, root: Path) -> list:
    """The plan's row specs, written under ``root``; smoke: tiny LM, 60 persons, CPU, a few steps."""
    from dataclasses import replace

    from lit_career.runs.spec import load_plan, load_row

    specs = [load_row(path, root=str(root)) for path in load_plan(plan)]
    if not SMOKE:
        base = str(smollm2_gguf())
        own = [s.lm.reuse is None and "smollm2" in s.name for s in specs]  # reusing rows read the adapter's
        return [
            replace(s, lm=replace(s.lm, base_model=base)) if o else s for s, o in zip(specs, own, strict=True)
        ]
    cpu = {"trainer.accelerator": "cpu", "trainer.precision": "32-true"}
    smoke = []
    for spec in specs[:3]:
        tune = {
            **cpu,
            "trainer.max_steps": 2,
            "trainer.val_check_interval": 1.0,
            "trainer.limit_val_batches": 1,
        }
        lm = replace(
            spec.lm,
            base_model="tiny" if spec.lm.reuse is None else None,
            data={**spec.lm.data, "max_persons": 60},
            finetune_overrides=tune if spec.lm.finetune else {},
            head_overrides={**cpu, "trainer.max_epochs": 1},
            bound_sample_persons=min(spec.lm.bound_sample_persons, 1),
        )
        smoke.append(replace(spec, lm=lm))
    return smoke


def stage_rows() -> dict:
    from lit_career.runs.row import run_row

    deadline = time.perf_counter() + float(os.environ.get("GPU_CHECK_ROWS_S", 420))
    rows, lines = (
        [],
        [
            "| row | test ppl | movers | stayers | T=1 bound (test) | Z sample exact / bound | s |",
            "|---|---|---|---|---|---|---|",
        ],
    )
    for spec in gpu_rows(Path("configs/rows/plans/lm_gpu.yaml"), WORK / "rows"):
        if time.perf_counter() > deadline:
            rows.append({"row": spec.name, "status": "not started (deadline)"})
            continue
        began = time.perf_counter()
        try:
            run_row(spec)
        except Exception as err:  # record and go on: one broken row must not cost the others
            rows.append({"row": spec.name, "status": f"failed: {type(err).__name__}: {err}"[:300]})
            print(f"row {spec.name} failed: {err}", flush=True)
            continue
        record = json.loads((spec.out_dir / "metrics.json").read_text())
        test, bound = record["test"], (record.get("likelihood_bound") or {}).get("test", {})
        seconds = time.perf_counter() - began
        rows.append({"row": spec.name, "status": "done", "seconds": seconds, "test": test, "bound": bound})
        z = (
            f"{bound['sample_ppl_exact']:.2f} / {bound['sample_ppl_bound']:.2f}"
            if "sample_ppl_exact" in bound
            else "–"
        )
        lines.append(
            f"| {spec.name} | {test['ppl_all']:.2f} | {test['ppl_movers']:.1f} | {test['ppl_stayers']:.3f} | "
            f"{bound.get('ppl_all_bound', float('nan')):.2f} | {z} | {seconds:.0f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", *(f"- {r['row']}: {r['status']}" for r in rows if r["status"] != "done")]
    return {"rows": rows, "markdown": "\n".join(lines)}


def main(stages: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        start = time.perf_counter()
        stages_by_name = {
            "memory": stage_memory,
            "scorer": stage_scorer,
            "finetune": stage_finetune,
            "rows": stage_rows,
        }
        result = stages_by_name[stage]()
        result.update(
            card=card(),
            seconds=time.perf_counter() - start,
            date=time.strftime("%Y-%m-%d"),
            torch=torch.__version__,
        )
        (OUT / f"gpu_{stage}.json").write_text(json.dumps(result, indent=1, default=str))
        (OUT / f"gpu_{stage}.md").write_text(result["markdown"] + "\n")
        print(f"== {stage}: {result['seconds']:.0f} s\n{result['markdown']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["memory", "scorer", "finetune", "rows"])
