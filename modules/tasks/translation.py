"""Encoder-decoder translation: label-smoothed loss, greedy-decoded BLEU on validation."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.text import CHRFScore, SacreBLEUScore

from modules.config import EncoderDecoderConfig
from modules.generation import beam_search, greedy_translate, until_eos
from modules.models import EncoderDecoderTransformer
from modules.tasks.base import OptimizerConfig, TaskModule

# The paper's optimiser: Adam(0.9, 0.98, 1e-9), inverse square-root decay after warm-up.
TRANSLATION_OPTIM = OptimizerConfig(
    lr=7e-4,
    betas=(0.9, 0.98),
    eps=1e-9,
    weight_decay=0.0,
    schedule="inverse_sqrt",
    warmup_steps=4000,
)


class TranslationModule(TaskModule):
    config_class = EncoderDecoderConfig

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        tokenizer_path: str | None = None,
        preset: str = "paper-base",
        arch: dict[str, Any] | None = None,
        label_smoothing: float = 0.1,
        bleu: bool = True,
        monitor: Literal["val/bleu", "val/chrf", "val/exact_match", "val/loss"] = "val/bleu",
        beam_size: int = 4,
        length_penalty: float = 0.6,
        optim: OptimizerConfig = TRANSLATION_OPTIM,
        compile: bool = False,
    ) -> None:
        """Validation decodes greedily and scores sacreBLEU, chrF and exact match on
        detokenised text when `bleu` and `tokenizer_path` (linked from the data module) are
        set; the test stage and `predict` decode with beam search (`beam_size`,
        `length_penalty` alpha; the paper's 4 and 0.6). `monitor` picks the best checkpoint
        (chrF suits one-word outputs, where BLEU's 4-grams do not exist)."""
        super().__init__(optim, compile, monitor if bleu and tokenizer_path else "val/loss")
        cfg = self.build_config(preset, arch, vocab_size=vocab_size, pad_token_id=pad_id)
        self.model = EncoderDecoderTransformer(cfg)  # type: ignore[arg-type]
        self.bos_id, self.eos_id = bos_id, eos_id
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.label_smoothing = label_smoothing
        self.load_tokenizer(tokenizer_path)
        self.decode_during_validation = bleu
        self.bleu = SacreBLEUScore()
        self.chrf = CHRFScore(n_word_order=0)  # chrF (sacreBLEU default), not chrF++
        self.exact_match = MeanMetric()
        self.store_hparams()

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.model(
            batch["input_ids"], batch["decoder_input_ids"], attention_mask=batch["attention_mask"]
        )
        labels = batch["labels"]
        loss_sum = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return loss_sum, (labels != -100).sum()

    def translate(self, input_ids: Tensor, attention_mask: Tensor, beam_size: int = 1) -> list[str]:
        """Detokenised translations: greedy (beam_size 1) or beam search."""
        assert self.tokenizer is not None
        if beam_size == 1:
            ids = greedy_translate(self.model, input_ids, attention_mask, self.bos_id, self.eos_id)
            rows = [until_eos(row, self.eos_id) for row in ids.tolist()]
        else:
            hypotheses = beam_search(
                self.model,
                input_ids,
                attention_mask,
                self.bos_id,
                self.eos_id,
                beam_size,
                self.length_penalty,
            )
            rows = [h.tokens for h in hypotheses]
        return self.tokenizer.decode_batch(rows)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[str]:
        return self.translate(batch["input_ids"], batch["attention_mask"], self.beam_size)

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        """The source `text` with `target` (default: the model's greedy translation)."""
        source = torch.tensor([self.encode(text)], device=self.device)
        mask = torch.ones_like(source)
        if target is None:
            ids = greedy_translate(self.model, source, mask, self.bos_id, self.eos_id)
            target_ids = until_eos(ids[0].tolist(), self.eos_id)
        else:
            target_ids = self.encode(target)
        return {
            "input_ids": source,
            "attention_mask": mask,
            "decoder_input_ids": torch.tensor([[self.bos_id, *target_ids]], device=self.device),
            "labels": torch.tensor([[*target_ids, self.eos_id]], device=self.device),
        }

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self.tokenizer is None or not self.decode_during_validation:
            return
        beam = self.beam_size if self.trainer.testing else 1  # validation: greedy, cheaper
        hypotheses = self.translate(batch["input_ids"], batch["attention_mask"], beam)
        labels = [[t for t in row if t >= 0] for row in batch["labels"].tolist()]
        references = self.tokenizer.decode_batch([until_eos(r, self.eos_id) for r in labels])
        self.bleu.update(hypotheses, [[r] for r in references])
        self.chrf.update(hypotheses, [[r] for r in references])
        matches = torch.tensor([h == r for h, r in zip(hypotheses, references, strict=True)])
        self.exact_match.update(matches.float())
        if batch_idx == 0:
            sources = self.tokenizer.decode_batch(batch["input_ids"][:4].tolist())
            self.samples = [
                {"source": s, "hypothesis": h, "reference": r}
                for s, h, r in zip(sources, hypotheses[:4], references[:4], strict=False)
            ]

    def _log_decoding(self, stage: str) -> None:
        if self.tokenizer is None or not self.decode_during_validation:
            return
        self.log(f"{stage}/bleu", self.bleu.compute() * 100, prog_bar=stage == "val")
        self.log(f"{stage}/chrf", self.chrf.compute() * 100)
        self.log(f"{stage}/exact_match", self.exact_match.compute(), prog_bar=stage == "val")
        for metric in (self.bleu, self.chrf, self.exact_match):
            metric.reset()

    def log_validation_metrics(self, loss: Tensor) -> None:
        self._log_decoding("val")

    def log_test_metrics(self, loss: Tensor) -> None:
        self._log_decoding("test")
