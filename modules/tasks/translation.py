"""Encoder-decoder translation: label-smoothed loss; validation decodes greedily and scores the
detokenised text, the test stage and `predict` decode with beam search."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.text import CHRFScore, SacreBLEUScore

from modules.batch import Seq2SeqBatch
from modules.codec import IGNORE
from modules.generation import until_stop
from modules.seq2seq import beam_search, greedy_translate
from modules.tasks.base import Goal, StepOutput, TaskModule
from modules.tasks.optimization import OptimizerConfig

# The paper's optimiser: Adam(0.9, 0.98, 1e-9), inverse square-root decay after warm-up.
TRANSLATION_OPTIM = OptimizerConfig(
    lr=7e-4,
    betas=(0.9, 0.98),
    eps=1e-9,
    weight_decay=0.0,
    schedule="inverse_sqrt",
    warmup_steps=4000,
)
TextMetric = Literal["bleu", "chrf", "exact_match"]
METRICS = {  # what each text metric is made of, and the factor to its reported scale
    "bleu": (SacreBLEUScore, 100.0),
    "chrf": (lambda: CHRFScore(n_word_order=0), 100.0),  # chrF (sacreBLEU's default), not chrF++
    "exact_match": (MeanMetric, 1.0),
}


class TranslationModule(TaskModule):
    family = "encoder-decoder"
    metric_goals: dict[str, Goal] = {
        "loss": "min",
        "bleu": "max",
        "chrf": "max",
        "exact_match": "max",
    }
    default_monitor = "val/bleu"
    progress_metrics = ("loss", "bleu", "exact_match")

    def __init__(
        self,
        preset: str = "paper-base",
        label_smoothing: float = 0.1,
        metrics: list[TextMetric] | None = None,
        beam_size: int = 4,
        length_penalty: float = 0.6,
        optim: OptimizerConfig = TRANSLATION_OPTIM,
        **common: Any,
    ) -> None:
        """Validation decodes greedily and scores `metrics` (sacreBLEU, chrF, exact match; all
        three by default) on detokenised text; the test stage and `predict` decode with beam
        search (`beam_size`, `length_penalty` alpha; the paper's 4 and 0.6). chrF and exact
        match suit one-word outputs, where BLEU's 4-grams do not exist. `common`: see
        TaskModule (codec, arch, init_from, compile, monitor)."""
        super().__init__(preset=preset, optim=optim, **common)
        self.text_metrics = list(METRICS) if metrics is None else list(metrics)
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.label_smoothing = label_smoothing
        self.add_metrics(**{name: METRICS[name][0] for name in self.text_metrics})
        self.store_hparams()

    def logged_metrics(self) -> list[str]:
        return ["loss", *self.text_metrics] if self.codec is not None else ["loss"]

    def step(self, batch: Seq2SeqBatch) -> StepOutput:  # type: ignore[override]
        logits = self.model(
            batch["input_ids"], batch["decoder_input_ids"], attention_mask=batch["attention_mask"]
        )
        labels = batch["labels"]
        loss_sum = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return StepOutput(loss_sum, (labels != IGNORE).sum())

    def translate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        beam_size: int = 1,
        length_penalty: float | None = None,
    ) -> list[str]:
        """Detokenised translations: greedy (beam_size 1) or beam search (with the task's
        length penalty unless one is given)."""
        codec = self.require_codec()
        if beam_size == 1:
            ids = greedy_translate(
                self.model, input_ids, attention_mask, codec.bos_id, codec.eos_id
            )
            rows = [until_stop(row, (codec.eos_id,)) for row in ids.tolist()]
        else:
            hypotheses = beam_search(
                self.model,
                input_ids,
                attention_mask,
                codec.bos_id,
                codec.eos_id,
                beam_size,
                self.length_penalty if length_penalty is None else length_penalty,
            )
            rows = [h.tokens for h in hypotheses]
        return codec.decode_batch(rows)

    def translate_texts(
        self,
        texts: list[str],
        beam_size: int,
        length_penalty: float | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """Translations of raw sentences in their order (empty lines stay empty), decoded in
        batches of similar length."""
        codec = self.require_codec()
        encoded = [codec.encode(text) if text.strip() else [] for text in texts]
        longest = self.model.cfg.max_length
        for number, ids in enumerate(encoded, start=1):
            if len(ids) > longest:
                raise ValueError(
                    f"line {number} has {len(ids)} tokens; the model reads at most {longest}"
                )
        order = sorted((i for i in range(len(texts)) if encoded[i]), key=lambda i: len(encoded[i]))
        output = [""] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = codec.pad([encoded[i] for i in chunk])
            translations = self.translate(
                ids.to(self.device), mask.to(self.device), beam_size, length_penalty
            )
            for i, text in zip(chunk, translations, strict=True):
                output[i] = text
        return output

    def predict_step(self, batch: Seq2SeqBatch, batch_idx: int) -> list[str]:
        return self.translate(batch["input_ids"], batch["attention_mask"], self.beam_size)

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        """The source `text` with `target` (default: the model's greedy translation)."""
        codec = self.require_codec()
        source = torch.tensor([codec.encode(text)], device=self.device)
        mask = torch.ones_like(source)
        if target is None:
            ids = greedy_translate(self.model, source, mask, codec.bos_id, codec.eos_id)
            target_ids = until_stop(ids[0].tolist(), (codec.eos_id,))
        else:
            target_ids = codec.encode(target)
        decoder_input, labels = codec.target(target_ids)
        return {
            "input_ids": source,
            "attention_mask": mask,
            "decoder_input_ids": torch.tensor([decoder_input], device=self.device),
            "labels": torch.tensor([labels], device=self.device),
        }

    def update_metrics(
        self,
        metrics: nn.ModuleDict,
        batch: dict[str, Any],
        out: StepOutput,
        stage: str,
        batch_idx: int,
    ) -> None:
        if self.codec is None or not self.text_metrics:
            return
        beam = self.beam_size if stage == "test" else 1  # validation: greedy, cheaper
        hypotheses = self.translate(batch["input_ids"], batch["attention_mask"], beam)
        labels = [[t for t in row if t >= 0] for row in batch["labels"].tolist()]
        eos = (self.codec.eos_id,)
        references = self.codec.decode_batch([until_stop(r, eos) for r in labels])
        for name in self.text_metrics:
            if name == "exact_match":
                matches = [h == r for h, r in zip(hypotheses, references, strict=True)]
                metrics[name].update(torch.tensor(matches).float())
            else:
                metrics[name].update(hypotheses, [[r] for r in references])
        if batch_idx == 0 and stage == "val":
            sources = self.codec.decode_batch(batch["input_ids"][:4].tolist())
            self.samples = [
                {"source": s, "hypothesis": h, "reference": r}
                for s, h, r in zip(sources, hypotheses[:4], references[:4], strict=False)
            ]

    def metric_values(self, metrics: nn.ModuleDict, stage: str) -> dict[str, Tensor]:
        values = {"loss": metrics["loss"].compute()}
        if self.codec is not None:
            for name in self.text_metrics:
                values[name] = metrics[name].compute() * METRICS[name][1]
        return values
