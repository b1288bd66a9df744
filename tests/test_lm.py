"""CausalLMFineTuner on the tiny Llama and a small NLSY79 corpus, CPU, a few steps per test."""

import math
from functools import partial

import bitsandbytes as bnb
import pytest
import torch
import yaml
from bitsandbytes.functional import dequantize_4bit
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_career.llm.backbone import load_causal_lm, load_tokenizer
from lit_career.llm.corpus import ResumeCorpus
from lit_career.llm.lm import CausalLMFineTuner, LoraSettings
from lit_career.llm.scoring import ClosedSetScorer

ADAMW = partial(torch.optim.AdamW, lr=1e-2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> ResumeCorpus:
    """60 persons: 48 training resumes, 6 validation resumes in two batches of unequal length."""
    data = ResumeCorpus(
        tokenizer="tiny",
        max_persons=60,
        max_length=512,
        batch_size=4,
        cache_dir=str(tmp_path_factory.mktemp("c")),
    )
    data.prepare_data()
    data.setup()
    return data


def trainer(root, **kwargs) -> Trainer:
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in kwargs.get("callbacks", [])),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    return Trainer(**{**options, **kwargs})


class Recorder(Callback):
    """Loss and learning rate of every optimizer step, by global step after the step."""

    def __init__(self):
        self.loss, self.lr = {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss[trainer.global_step] = float(outputs["loss"])
        self.lr[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def tensors(tree) -> list[torch.Tensor]:
    """Every tensor in nested dicts and lists."""
    if torch.is_tensor(tree):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list | tuple) else []
    return [t for value in values for t in tensors(value)]


def eval_logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[batch["attention_mask"].bool()]


def test_resume_from_checkpoint_repeats_the_uninterrupted_run(corpus, tmp_path):
    seed_everything(0)
    reference, saver = Recorder(), ModelCheckpoint(tmp_path / "ckpt", "{epoch}", save_top_k=-1)
    module = CausalLMFineTuner("tiny", lora=LoraSettings(dropout=0.1), optimizer=ADAMW, warmup_steps=2)
    trainer(
        tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[reference, saver]
    ).fit(module, corpus)
    checkpoint = torch.load(tmp_path / "ckpt" / "epoch=0.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    # only the LoRA tensors: a small fraction of the model
    assert set(checkpoint["state_dict"]) == module.trainable_names()
    assert all("lora_" in key for key in checkpoint["state_dict"])
    saved = sum(t.numel() for t in checkpoint["state_dict"].values())
    assert saved < 0.2 * sum(p.numel() for p in module.parameters())

    seed_everything(0)  # the same config, as a requeued job has
    torch.rand(1000)  # whatever drew from the RNG before (a sanity check, ...) must not matter
    resumed = Recorder()
    again = trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[resumed])
    again.fit(
        CausalLMFineTuner("tiny", lora=LoraSettings(dropout=0.1), optimizer=ADAMW, warmup_steps=2),
        corpus,
        ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt",
    )
    assert again.global_step == 6 and list(resumed.loss) == [4, 5, 6]
    # same batches, dropout masks, weights, Adam moments and schedule: the same steps (float32 noise only)
    assert resumed.lr == {step: reference.lr[step] for step in (4, 5, 6)}
    for step in (4, 5, 6):
        assert resumed.loss[step] == pytest.approx(reference.loss[step], rel=1e-6, abs=1e-6)
    assert len(set(reference.loss.values())) == 6  # the loss moves: the comparison is not vacuous
    # the learning rate for the next step: linear warmup over 2 steps, then cosine decay to 0 at the
    # run's last step (6 = max_epochs x limit_train_batches)
    assert [reference.lr[s] for s in (1, 2, 3)] == pytest.approx(
        [5e-3, 1e-2, 1e-2 * (1 + math.cos(math.pi / 4)) / 2]
    )
    assert reference.lr[6] == pytest.approx(0.0, abs=1e-12)


def test_checkpoint_of_another_mode_is_refused(corpus, tmp_path):
    module = CausalLMFineTuner("tiny", mode="lora", optimizer=ADAMW)
    run = trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=True)
    run.fit(module, corpus)
    path = run.checkpoint_callback.best_model_path
    with pytest.raises(ValueError, match="trainable tensors"):
        trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(
            CausalLMFineTuner("tiny", mode="full", optimizer=ADAMW), corpus, ckpt_path=path
        )


def lora_gradients(module: CausalLMFineTuner, batch: dict) -> dict[str, torch.Tensor]:
    """Gradients of the LoRA weights, set to seeded random values (B nonzero, so that A gets a gradient)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    module(**batch).loss.backward()
    return {name: p.grad for name, p in module.model.named_parameters() if p.requires_grad}


def test_qlora_gradients_match_a_dequantized_fp32_reference(corpus):
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    qlora = CausalLMFineTuner("tiny", mode="qlora", lora=lora)
    qlora.configure_model()
    quantized = {
        name.removeprefix("base_model.model.").removesuffix(".base_layer"): layer
        for name, layer in qlora.model.named_modules()
        if isinstance(layer, bnb.nn.Linear4bit)
    }
    assert len(quantized) == 7 * 2  # q, k, v, o, gate, up, down in each of the 2 layers
    for layer in quantized.values():
        state = layer.weight.quant_state
        assert state.quant_type == "nf4" and state.nested  # double quantization
    batch = next(iter(corpus.train_dataloader()))
    grads_4bit = lora_gradients(qlora, batch)

    reference = load_causal_lm("tiny")
    with torch.no_grad():
        for name, layer in reference.named_modules():
            if name in quantized:
                weight = quantized[name].weight
                layer.weight.copy_(dequantize_4bit(weight.data, weight.quant_state))
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    reference = get_peft_model(reference, config).train()
    lora_weights = {k: v for k, v in qlora.model.state_dict().items() if "lora_" in k}
    assert not reference.load_state_dict(lora_weights, strict=False).unexpected_keys
    reference(**batch).loss.backward()

    grads = dict(reference.named_parameters())
    assert len(grads_4bit) == len(lora_weights)
    for name, grad in grads_4bit.items():
        # fp32 on both sides; only the matmul kernels differ (bnb's CPU 4-bit path vs a dense matmul)
        torch.testing.assert_close(grad, grads[name].grad, rtol=1e-4, atol=1e-6)
        assert grad.abs().max() > 0


def test_gradient_checkpointing_keeps_the_gradients(corpus):
    batch = next(iter(corpus.train_dataloader()))
    plain, checkpointed = (
        CausalLMFineTuner("tiny", mode="qlora", lora=LoraSettings(dropout=0.0), gradient_checkpointing=flag)
        for flag in (False, True)
    )
    for module in (plain, checkpointed):
        module.configure_model()
    layers = checkpointed.model.get_base_model().model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    expected, actual = lora_gradients(plain, batch), lora_gradients(checkpointed, batch)
    # non-reentrant checkpointing: the frozen embeddings need no requires_grad hack for LoRA to get gradients
    assert expected.keys() == actual.keys() and all(g is not None for g in actual.values())
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-7)


def test_8bit_adamw_trains_and_resumes(corpus, tmp_path):
    adamw8bit = partial(bnb.optim.AdamW8bit, lr=1e-2, min_8bit_size=256)  # 8-bit state for the LoRA matrices
    run = trainer(tmp_path, max_steps=2, limit_val_batches=0, enable_checkpointing=True)
    run.fit(CausalLMFineTuner("tiny", optimizer=adamw8bit), corpus)
    checkpoint = torch.load(run.checkpoint_callback.best_model_path, weights_only=False)
    assert torch.uint8 in {t.dtype for t in tensors(checkpoint["optimizer_states"])}  # 8-bit moments
    again = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    again.fit(
        CausalLMFineTuner("tiny", optimizer=adamw8bit),
        corpus,
        ckpt_path=run.checkpoint_callback.best_model_path,
    )
    assert again.global_step == 3


@pytest.mark.parametrize("mode", ["lora", "qlora", "full"])
def test_export_reloads_with_identical_logits(corpus, tmp_path, mode):
    module = CausalLMFineTuner("tiny", mode=mode, optimizer=ADAMW, export_dir=str(tmp_path / "adapter"))
    trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(module, corpus)
    folder = tmp_path / "adapter"

    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["mode"] == mode and hparams["base_model"] == "tiny" and hparams["lora"]["r"] == 16
    tokenizer, original = AutoTokenizer.from_pretrained(folder), load_tokenizer("tiny")
    assert tokenizer.get_vocab() == original.get_vocab()

    batch = next(iter(corpus.val_dataloader()))
    if mode == "full":
        reloaded = AutoModelForCausalLM.from_pretrained(folder)
        base_logits = eval_logits(load_causal_lm("tiny"), batch)
    else:
        base = load_causal_lm("tiny", quantization="nf4" if mode == "qlora" else "none")
        reloaded = PeftModel.from_pretrained(base, folder)
        with reloaded.disable_adapter():
            base_logits = eval_logits(reloaded, batch)
    expected = eval_logits(module.model, batch)
    assert torch.equal(eval_logits(reloaded, batch), expected)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # training moved the model


def test_validation_loss_is_the_token_weighted_mean(corpus, tmp_path):
    module = CausalLMFineTuner("tiny")
    metrics = trainer(tmp_path).validate(module, corpus, verbose=False)[0]
    total, count, sizes = 0.0, 0, []
    module.model.eval()
    for batch in corpus.val_dataloader():
        with torch.no_grad():
            logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp, labels = logits[:, :-1].log_softmax(-1), batch["labels"][:, 1:]
        mask = labels != -100
        total -= float(logp.gather(2, labels.clamp_min(0)[..., None])[..., 0][mask].sum())
        count += int(mask.sum())
        sizes.append(int(mask.sum()))
    assert len(set(sizes)) > 1  # batches of unequal token counts: a plain mean of batch means would differ
    assert metrics["val/nll"] == pytest.approx(total / count, rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_occupation_perplexity_scores_the_true_title_in_context(corpus, tmp_path):
    module = CausalLMFineTuner("tiny", occupation_ppl_resumes=1)
    metrics = trainer(tmp_path).validate(module, corpus, verbose=False)[0]

    ids = corpus.token_ids("valid")[0]
    rows = corpus.transitions("valid").query("resume == 0")
    with torch.no_grad():
        logp = module.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    in_context = torch.tensor(
        [
            sum(float(logp[t - 1, ids[t]]) for t in range(s, e))
            for s, e in zip(rows.tok_start, rows.tok_end, strict=True)
        ]
    )
    candidates = [" " + target for target in corpus.template.targets()]
    scores = ClosedSetScorer(module.model, corpus.tokenizer, candidates).score_resume(
        ids, rows.tok_start.tolist()
    )
    nll = scores.logsumexp(-1) - in_context
    assert metrics["val/occupation_ppl"] == pytest.approx(math.exp(float(nll.mean())), rel=1e-4)


def _record_size(sizes: list[int], tensor: torch.Tensor) -> torch.Tensor:
    sizes.append(tensor.numel())
    return tensor


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_chunked_loss_matches_the_model_loss_without_keeping_full_logits(corpus, mode):
    batch = next(iter(corpus.train_dataloader()))
    tokens, vocab = batch["input_ids"].numel(), len(corpus.tokenizer)
    results = {}
    for chunk in (None, 7):  # 7 divides neither the token count nor the batch
        module = CausalLMFineTuner("tiny", mode=mode, lora=LoraSettings(dropout=0.0), loss_chunk_size=chunk)
        module.configure_model()
        torch.manual_seed(0)
        with torch.no_grad():  # the same weights in both, LoRA B nonzero
            for p in module.model.parameters():
                if p.requires_grad and mode == "lora":
                    p.normal_(0, 0.1)
        saved: list[int] = []
        keep = partial(_record_size, saved)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            loss = module.next_token_loss(batch)
        loss.backward()
        grads = {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad}
        results[chunk] = loss, grads, max(saved)
    (loss, grads, largest), (chunked, chunked_grads, chunked_largest) = results[None], results[7]
    torch.testing.assert_close(chunked, loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == chunked_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6)
    # the model's loss keeps every logit; with chunks the largest saved tensor is an activation, 16x smaller
    assert largest >= tokens * vocab > 10 * chunked_largest
