"""Language-model tasks: next-token prediction (decoder-only) and masked LM (encoder-only)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from modules.config import DecoderConfig, EncoderConfig
from modules.generation import Sampling, generate
from modules.models import DecoderTransformer, EncoderTransformer
from modules.tasks.base import OptimizerConfig, TaskModule, encoder_text_batch
from modules.tasks.pretrained import pretrained_model

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
        ignore_index=-100,
        reduction="sum",
    )
    return loss_sum, (labels != -100).sum()


class CausalLMModule(TaskModule):
    """Next-token loss (labels already shifted by the data module) and perplexity. After each
    validation it samples a continuation of the first validation window's opening tokens
    (a generator of its own, so training randomness is untouched) into `samples`."""

    config_class = DecoderConfig

    def __init__(
        self,
        vocab_size: int,
        eos_id: int | None = None,
        tokenizer_path: str | None = None,
        preset: str = "gpt2-small",
        arch: dict[str, Any] | None = None,
        init_from: str | None = None,
        sample_tokens: int = 200,
        sampling: Sampling = NANOGPT_SAMPLING,
        optim: OptimizerConfig = CAUSAL_LM_OPTIM,
        compile: bool = False,
    ) -> None:
        """`init_from`: a HF GPT-2 folder, `package:MODULE`, or one of our .ckpt files to
        fine-tune (its architecture wins; `arch` may only change dropout)."""
        super().__init__(optim, compile)
        if init_from:
            self.model = pretrained_model(init_from, DecoderTransformer, vocab_size, arch)
        else:
            cfg = self.build_config(preset, arch, vocab_size=vocab_size)
            self.model = DecoderTransformer(cfg)  # type: ignore[arg-type]
        self.eos_id, self.sample_tokens = eos_id, sample_tokens
        self.sampling = Sampling(**sampling) if isinstance(sampling, dict) else sampling
        self.load_tokenizer(tokenizer_path)
        self._prompt: list[int] = []
        self.store_hparams()

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return token_loss(self.model(batch["input_ids"]), batch["labels"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if batch_idx == 0:
            self._prompt = batch["input_ids"][0, :16].tolist()

    def log_validation_metrics(self, loss: Tensor) -> None:
        self.log("val/ppl", loss.exp())
        if (
            self.tokenizer is not None
            and self._prompt
            and self.sample_tokens
            and not self.trainer.sanity_checking
            and bool(torch.isfinite(loss))  # a diverged model's logits cannot be sampled
        ):
            generator = torch.Generator(self.device).manual_seed(0)
            stops = (self.eos_id,) if self.eos_id is not None else ()
            [continuation] = generate(
                self.model,
                [self._prompt],
                self.sample_tokens,
                self.sampling,
                stops,
                overflow="slide",
                generator=generator,
            )
            prompt, text = self.tokenizer.decode_batch([self._prompt, continuation])
            self.samples = [{"prompt": prompt, "continuation": text}]

    def log_test_metrics(self, loss: Tensor) -> None:
        self.log("test/ppl", loss.exp())

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        ids = self.encode(text)
        return {
            "input_ids": torch.tensor([ids], device=self.device),
            "labels": torch.tensor([[*ids[1:], -100]], device=self.device),
        }


class MaskedLMModule(TaskModule):
    """MLM loss and accuracy on the masked positions (masking is done by the collator)."""

    config_class = EncoderConfig

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        bos_id: int | None = None,
        eos_id: int | None = None,
        tokenizer_path: str | None = None,
        preset: str = "bert-base",
        arch: dict[str, Any] | None = None,
        optim: OptimizerConfig = MASKED_LM_OPTIM,
        compile: bool = False,
    ) -> None:
        super().__init__(optim, compile)
        cfg = self.build_config(preset, arch, vocab_size=vocab_size, pad_token_id=pad_id)
        self.model = EncoderTransformer(cfg)  # type: ignore[arg-type]
        self.accuracy = MeanMetric()
        self.bos_id, self.eos_id = bos_id, eos_id
        self.load_tokenizer(tokenizer_path)
        self.store_hparams()

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        return encoder_text_batch(self, text, label=None)

    def _masked_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits and labels of the masked positions only."""
        hidden = self.model(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
        chosen = batch["labels"] != -100
        return self.model.mlm_logits(hidden, chosen), batch["labels"][chosen]

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return token_loss(*self._masked_logits(batch))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits, labels = self._masked_logits(batch)
        loss_sum, count = token_loss(logits, labels)
        self.val_loss.update(loss_sum / count.clamp(min=1), weight=count)
        self.accuracy.update((logits.argmax(-1) == labels).float())

    def log_validation_metrics(self, loss: Tensor) -> None:
        self.log("val/accuracy", self.accuracy.compute())
        self.accuracy.reset()

    def log_test_metrics(self, loss: Tensor) -> None:
        self.log("test/accuracy", self.accuracy.compute())
        self.accuracy.reset()
