"""Language-model tasks: next-token prediction (decoder-only) and masked LM (encoder-only)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from modules.batch import AnyBatch, CausalLMBatch, MaskedLMBatch
from modules.codec import IGNORE
from modules.generation import Overflow, Sampling, generate
from modules.tasks.base import Goal, StepOutput, TaskModule
from modules.tasks.optimization import OptimizerConfig

# GPT-style: AdamW(0.9, 0.95), weight decay 0.1 on matrices, warm-up then cosine to 10%.
CAUSAL_LM_OPTIM = OptimizerConfig(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, warmup_steps=100)
# nanoGPT's sample.py: temperature 0.8, top-k 200.
NANOGPT_SAMPLING = Sampling(temperature=0.8, top_k=200)
# BERT-style: AdamW, weight decay 0.01, warm-up then linear decay.
MASKED_LM_OPTIM = OptimizerConfig(
    lr=1e-4, weight_decay=0.01, schedule="linear", warmup_steps=1000, min_lr_ratio=0.0
)


def token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy over labelled positions (-100 = ignore) and their count; logits
    are (..., vocab) for labels of shape (...)."""
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss_sum, (labels != IGNORE).sum()


def encoder_text_batch(task: TaskModule, text: str, label: int | None) -> dict[str, Tensor]:
    """[CLS] text [SEP] as a batch of one for an encoder task; `label` for classification,
    None for masked LM (no position is a target)."""
    input_ids = torch.tensor([task.require_codec().encode(text)], device=task.device)
    labels = (
        torch.full_like(input_ids, IGNORE)
        if label is None
        else torch.tensor([label], device=task.device)
    )
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


class CausalLMModule(TaskModule):
    """Next-token loss (labels already shifted by the data module) and perplexity. After each
    validation it samples a continuation of the first validation window's opening tokens
    (a generator of its own, so training randomness is untouched) into `samples`; past the
    model's context its window shifts on the KV cache (`generate`'s overflow="shift")."""

    family = "decoder"
    metric_goals: dict[str, Goal] = {"loss": "min", "ppl": "min"}

    def __init__(
        self,
        preset: str = "gpt2-small",
        sample_tokens: int = 200,
        sampling: Sampling = NANOGPT_SAMPLING,
        optim: OptimizerConfig = CAUSAL_LM_OPTIM,
        **common: Any,
    ) -> None:
        """`common`: see TaskModule (codec, arch, init_from, compile, monitor, freeze)."""
        super().__init__(preset=preset, optim=optim, **common)
        self.sample_tokens = sample_tokens
        self.sampling = Sampling(**sampling) if isinstance(sampling, dict) else sampling
        self._prompt: list[int] = []
        self.store_hparams()

    def step(self, batch: CausalLMBatch) -> StepOutput:  # type: ignore[override]
        return StepOutput(*token_loss(self.model(batch["input_ids"]), batch["labels"]))

    def update_metrics(self, batch: AnyBatch, out: StepOutput, stage: str, batch_idx: int) -> None:
        if batch_idx == 0 and stage == "val":
            self._prompt = batch["input_ids"][0, :16].tolist()

    def metric_values(self, metrics: nn.ModuleDict, stage: str) -> dict[str, Tensor]:
        loss = metrics["loss"].compute()
        if stage == "val":
            self.sample(loss)
        return {"loss": loss, "ppl": loss.exp()}

    def sample(self, loss: Tensor) -> None:
        """A continuation of the validation prompt into `samples`."""
        if (
            self.codec is None
            or not self._prompt
            or not self.sample_tokens
            or self.trainer.sanity_checking
            or not bool(torch.isfinite(loss))  # a diverged model's logits cannot be sampled
        ):
            return
        generator = torch.Generator(self.device).manual_seed(0)
        [continuation] = generate(
            self.model,
            [self._prompt],
            self.sample_tokens,
            self.sampling,
            (self.codec.eos_id,),
            overflow="shift",
            generator=generator,
        )
        prompt, text = self.codec.decode_batch([self._prompt, continuation])
        self.samples = [{"prompt": prompt, "continuation": text}]

    def continue_text(
        self,
        prompt: str,
        max_new_tokens: int,
        sampling: Sampling,
        stops: tuple[str, ...] = (),
        num_samples: int = 1,
        overflow: Overflow = "error",
        seed: int = 0,
    ) -> list[str]:
        """`num_samples` continuations of `prompt` (each with the prompt in front), ending at
        the end-of-text token or at one of the one-token `stops`."""
        codec = self.require_codec()
        stop_ids = [codec.eos_id]
        for text in stops:
            ids = codec.encode(text)
            if len(ids) != 1:
                raise ValueError(f"--stop {text!r} is {len(ids)} tokens; a stop must be one token")
            stop_ids.append(ids[0])
        generator = torch.Generator(self.device).manual_seed(seed)
        outputs = generate(
            self.model,
            [codec.encode(prompt)] * num_samples,
            max_new_tokens,
            sampling,
            tuple(stop_ids),
            overflow=overflow,
            generator=generator,
        )
        return [prompt + codec.decode(ids) for ids in outputs]

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        ids = self.require_codec().encode(text)
        return {
            "input_ids": torch.tensor([ids], device=self.device),
            "labels": torch.tensor([[*ids[1:], IGNORE]], device=self.device),
        }


class MaskedLMModule(TaskModule):
    """MLM loss and accuracy on the masked positions (masking is done by the collator)."""

    family = "encoder"
    metric_goals: dict[str, Goal] = {"loss": "min", "accuracy": "max"}

    def __init__(
        self, preset: str = "bert-base", optim: OptimizerConfig = MASKED_LM_OPTIM, **common: Any
    ) -> None:
        """`common`: see TaskModule (codec, arch, init_from, compile, monitor, freeze)."""
        super().__init__(preset=preset, optim=optim, **common)
        self.add_metrics(accuracy=MeanMetric)
        self.store_hparams()

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        return encoder_text_batch(self, text, label=None)

    def step(self, batch: MaskedLMBatch) -> StepOutput:  # type: ignore[override]
        """Only the masked positions are projected onto the vocabulary."""
        hidden = self.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        chosen = batch["labels"] != IGNORE
        logits, labels = self.model.mlm_logits(hidden, chosen), batch["labels"][chosen]
        return StepOutput(*token_loss(logits, labels), {"logits": logits, "labels": labels})

    def update_metrics(self, batch: AnyBatch, out: StepOutput, stage: str, batch_idx: int) -> None:
        metrics = self.stage_metrics[stage]
        metrics["accuracy"].update(
            (out.extras["logits"].argmax(-1) == out.extras["labels"]).float()
        )
