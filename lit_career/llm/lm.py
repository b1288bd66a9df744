"""Fine-tune a causal LM on resume token batches: QLoRA, LoRA or full fine-tuning.

``CausalLMFineTuner`` builds its model in :meth:`~CausalLMFineTuner.configure_model` (so a 4-bit base
is quantized where it will run, CPU or GPU, through transformers' ``BitsAndBytesConfig``):

* ``qlora``: NF4 base with double quantization, compute in bfloat16 on GPU (float32 on CPU), norms
  upcast by peft's ``prepare_model_for_kbit_training``, LoRA adapters on top;
* ``lora``: LoRA adapters on an unquantized base;
* ``full``: every weight trains.

Checkpoints hold only the trainable tensors and the optimizer and schedule state (Lightning's).
Each training batch reseeds torch's RNG from ``seed_everything``'s seed, the global step and the
batch index, so a run resumed from an epoch-end checkpoint repeats the uninterrupted run's steps
exactly. At the end of ``fit`` the model is exported (atomically) to :attr:`CausalLMFineTuner.export_path`:
the peft adapter folder (the whole model for ``full``), the tokenizer and ``hparams.yaml``, also
logged as a W&B artifact with ``log_adapter_artifact``. Training logs the loss per step and its
mean per epoch (``train/loss_epoch``). Validation logs the token loss and perplexity and, optionally, the perplexity of the next
occupation over the closed set of titles on the first validation resumes.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.core.saving import save_hparams_to_yaml
from torch.utils.checkpoint import checkpoint
from torchmetrics.aggregation import MeanMetric

from lit_career.io import replace_folder_atomic
from lit_career.llm.batching import IGNORE


@dataclass
class LoraSettings:
    """LoRA adapters (peft ``LoraConfig``).

    Args:
        r: rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``all-linear`` (every linear layer but the output head).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = field(default="all-linear")


def chunked_next_token_loss(
    hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Mean cross-entropy of each label given the hidden state before it (the shift of transformers'
    causal-LM loss, -100 ignored), ``chunk_size`` tokens through ``head`` at a time; each chunk's logits
    are recomputed in backward instead of kept."""
    targets = labels[:, 1:].reshape(-1)
    keep = targets != IGNORE
    hidden, targets = hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep], targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk_size):
        chunk = slice(start, start + chunk_size)
        total = total + checkpoint(
            _summed_cross_entropy, head, hidden[chunk], targets[chunk], use_reentrant=False
        )
    return total / keep.sum().clamp(min=1)


def _summed_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")


class CausalLMFineTuner(LightningModule):
    """Next-token fine-tuning of a causal LM (see module docstring).

    Args:
        base_model: model source (see :func:`lit_career.llm.backbone.resolve_model_source`).
        mode: ``qlora`` (4-bit NF4 base + LoRA), ``lora`` (unquantized base + LoRA) or ``full``.
        lora: adapter settings (``qlora`` and ``lora``); a dict of them is accepted too.
        compute_dtype: dtype of the unquantized weights and 4-bit matmuls; ``auto``: bfloat16 for
            ``qlora`` on GPU, float32 for ``qlora`` on CPU, the checkpoint's dtype otherwise.
        double_quant: quantize the 4-bit quantization constants too (``qlora``).
        gradient_checkpointing: recompute activations in backward (non-reentrant).
        loss_chunk_size: compute the loss (training, validation, test) from the final hidden states this
            many tokens at a time, each chunk's logits recomputed in backward (:func:`chunked_next_token_loss`), so the
            ``[batch, length, vocabulary]`` logits never exist at once (they dominate the memory of a
            128k-vocabulary model); None: the model's own loss.
        optimizer: optimizer factory given the trainable parameters (e.g. AdamW, bitsandbytes' AdamW8bit).
        schedule: learning-rate schedule after the warmup, over the run's estimated optimizer steps.
        warmup_steps: linear warmup from 0.
        export_dir: where the adapter goes at the end of fit (default: ``<log_dir>/adapter``).
        occupation_ppl_resumes: score the next occupation over the closed set of titles on this many
            validation resumes at each validation end (0: off); needs a :class:`ResumeCorpus`.
        log_adapter_artifact: log the exported folder as a W&B artifact ``adapter-<run id>`` (type
            ``model``) to every :class:`~lightning.pytorch.loggers.WandbLogger` of the trainer.
    """

    def __init__(
        self,
        base_model: str = "tiny",
        mode: Literal["qlora", "lora", "full"] = "lora",
        lora: LoraSettings | None = None,
        compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        double_quant: bool = True,
        gradient_checkpointing: bool = False,
        loss_chunk_size: int | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Literal["cosine", "linear", "constant_with_warmup"] = "cosine",
        warmup_steps: int = 0,
        export_dir: str | None = None,
        occupation_ppl_resumes: int = 0,
        log_adapter_artifact: bool = False,
    ):
        super().__init__()
        self.lora = LoraSettings(**lora) if isinstance(lora, dict) else lora or LoraSettings()
        self.save_hyperparameters(ignore=["optimizer"])
        self.hparams["lora"] = asdict(self.lora)  # plain data: checkpoints load with weights_only=True
        self.base_model, self.mode = base_model, mode
        self.compute_dtype, self.double_quant = compute_dtype, double_quant
        self.gradient_checkpointing, self.loss_chunk_size = gradient_checkpointing, loss_chunk_size
        if loss_chunk_size is not None and loss_chunk_size < 1:
            raise ValueError(f"loss_chunk_size must be positive or None, got {loss_chunk_size}")
        self.make_optimizer, self.schedule, self.warmup_steps = optimizer, schedule, warmup_steps
        self.export_dir, self.occupation_ppl_resumes = export_dir, occupation_ppl_resumes
        self.log_adapter_artifact = log_adapter_artifact
        self.model: torch.nn.Module | None = None
        self.val_nll, self.test_nll = MeanMetric(), MeanMetric()
        self.tokens_seen = 0  # non-padding tokens this process has trained on (restored on resume)
        self.strict_loading = False  # checkpoints hold the trainable tensors only

    # ------------------------------------------------------------ model

    def configure_model(self) -> None:
        """Load the base (quantized for ``qlora``) and wrap it for training; idempotent."""
        if self.model is not None:
            return
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        from lit_career.llm.backbone import load_causal_lm

        device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        dtype = None if self.compute_dtype == "auto" else getattr(torch, self.compute_dtype)
        if self.mode == "qlora" and dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = load_causal_lm(
            self.base_model,
            quantization="nf4" if self.mode == "qlora" else "none",
            compute_dtype=dtype,
            double_quant=self.double_quant,
            device_map={"": device} if device.type == "cuda" else None,
        )
        checkpointing = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
        if self.mode == "qlora":
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=self.gradient_checkpointing, **checkpointing
            )
        elif self.gradient_checkpointing:
            model.gradient_checkpointing_enable(**checkpointing)
        if self.mode != "full":
            config = LoraConfig(
                r=self.lora.r,
                lora_alpha=self.lora.alpha,
                lora_dropout=self.lora.dropout,
                target_modules=self.lora.target_modules,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
        self.model = model.train()  # from_pretrained leaves it in eval mode

    def trainable_names(self) -> set[str]:
        """State-dict keys of the trainable parameters: what a checkpoint holds."""
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False)

    # ------------------------------------------------------------ optimization

    def configure_optimizers(self) -> dict:
        from transformers import get_scheduler

        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(params)
        scheduler = get_scheduler(
            self.schedule,
            optimizer,
            num_warmup_steps=self.warmup_steps,
            num_training_steps=int(self.trainer.estimated_stepping_batches),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def next_token_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token NLL of the batch's labels, in chunks when ``loss_chunk_size`` is set."""
        if self.loss_chunk_size is None:
            return self(**batch).loss
        causal_lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = causal_lm.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        return chunked_next_token_loss(
            hidden, causal_lm.get_output_embeddings(), batch["labels"], self.loss_chunk_size
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.next_token_loss(batch)
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train/tokens_seen", float(self.tokens_seen), batch_size=len(batch["input_ids"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=len(batch["input_ids"]))
        return loss

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Dropout masks depend only on (seed, step, batch), not on what drew from the RNG before
        # (validation, a sanity check, a restart), so a resumed run repeats the uninterrupted one.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(hash((seed, self.trainer.global_step, batch_idx)) % 2**63)

    # ------------------------------------------------------------ evaluation

    def _evaluate(self, batch: dict[str, torch.Tensor], metric: MeanMetric) -> None:
        tokens = (batch["labels"][:, 1:] != IGNORE).sum()  # HF shifts: the first label is never predicted
        metric.update(self.next_token_loss(batch), weight=tokens)

    def _log_perplexity(self, stage: str, metric: MeanMetric) -> dict[str, float]:
        loss = metric.compute()
        metric.reset()
        metrics = {f"{stage}/nll": float(loss), f"{stage}/ppl": math.exp(float(loss))}
        self.log_dict(metrics, prog_bar=stage == "val")
        return metrics

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_nll)

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val", self.val_nll)
        if self.occupation_ppl_resumes > 0 and not self.trainer.sanity_checking:
            self.log("val/occupation_ppl", self.occupation_perplexity(self.occupation_ppl_resumes))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_nll)

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test", self.test_nll)

    @torch.no_grad()
    def occupation_perplexity(self, resumes: int, split: str = "valid") -> float:
        """exp of the mean NLL of the true next occupation, renormalized over the closed set of titles,
        over every year of the first ``resumes`` resumes of ``split`` of the trainer's corpus."""
        from lit_career.llm.scoring import ClosedSetScorer, normalize

        corpus = self.trainer.datamodule
        # tok_start is the token holding the space before the title: every candidate starts with it
        candidates = [" " + target for target in corpus.template.targets(corpus.vocab)]
        scorer = ClosedSetScorer(self.model, corpus.tokenizer, candidates)
        transitions = corpus.transitions(split)
        token_ids = corpus.token_ids(split)
        nll = []
        for resume, rows in transitions[transitions["resume"] < resumes].groupby("resume"):
            ids = token_ids[resume]
            for state, start, end in rows[["state", "tok_start", "tok_end"]].itertuples(index=False):
                if scorer.candidate_ids[state] != ids[start:end]:
                    raise ValueError(
                        f"{self.base_model!r} tokenizes the title {candidates[state]!r} differently alone "
                        "than in its resume; the closed-set scores would not be the resume's probabilities"
                    )
            logp, _ = normalize(scorer.score_resume(ids, rows["tok_start"].tolist()))
            states = torch.as_tensor(rows["state"].to_numpy(), dtype=torch.long)
            nll.append(-logp.gather(1, states[:, None]).squeeze(1))
        return math.exp(float(torch.cat(nll).mean()))

    # ------------------------------------------------------------ checkpoints and export

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        saved, expected = set(checkpoint["state_dict"]), self.trainable_names()
        if saved != expected:
            missing, unexpected = sorted(expected - saved)[:3], sorted(saved - expected)[:3]
            raise ValueError(
                f"checkpoint does not match this model's trainable tensors (mode={self.mode!r}): "
                f"missing {missing}, unexpected {unexpected}"
            )

    @property
    def export_path(self) -> Path:
        """Folder of the exported adapter (or full model)."""
        if self.export_dir is not None:
            return Path(self.export_dir)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "adapter"

    def on_fit_end(self) -> None:
        folder = self.export_path  # on every rank: the trainer's log dir is a collective call under DDP
        if self.trainer.is_global_zero:
            self.export(folder)
            if self.log_adapter_artifact:
                self.log_artifact(folder)

    def log_artifact(self, folder: Path) -> None:
        """Log ``folder`` as the W&B artifact ``adapter-<run id>`` (type ``model``) of each W&B logger."""
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                artifact = wandb.Artifact(
                    f"adapter-{logger.version}", type="model", metadata=dict(self.hparams)
                )
                artifact.add_dir(str(folder))
                logger.experiment.log_artifact(artifact)

    def export(self, folder: Path) -> Path:
        """Write the peft adapter (the whole model for ``full``), the tokenizer and ``hparams.yaml`` into a
        temporary folder, then swap it in for ``folder``; files already in ``folder`` that the export does not
        write (the CLI's ``config.yaml``) are kept."""
        from lit_career.llm.backbone import load_tokenizer

        tokenizer = load_tokenizer(self.base_model)

        def fill(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_hparams_to_yaml(tmp / "hparams.yaml", self.hparams)

        return replace_folder_atomic(Path(folder), fill, keep_others=True)
