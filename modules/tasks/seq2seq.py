"""The encoder-decoder task, for translation and summarisation alike: label-smoothed loss;
validation decodes greedily and scores the detokenised text with the configured metrics
(BLEU, chrF, exact match, ROUGE), the test stage and `predict` decode with `decoding` (beam
search by default)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.text import CHRFScore, SacreBLEUScore

from modules.batch import AnyBatch, Seq2SeqBatch
from modules.codec import IGNORE
from modules.generation import until_stop
from modules.models import EncoderDecoderTransformer
from modules.rouge import ROUGE_TYPES, Rouge
from modules.seq2seq import Decoding, decode
from modules.tasks.base import Goal, StepOutput, TaskModule
from modules.tasks.optimization import OptimizerConfig
from modules.tasks.pretrained import pretrained_model

# The paper's optimiser: Adam(0.9, 0.98, 1e-9), inverse square-root decay after warm-up.
PAPER_OPTIM = OptimizerConfig(
    lr=7e-4,
    betas=(0.9, 0.98),
    eps=1e-9,
    weight_decay=0.0,
    schedule="inverse_sqrt",
    warmup_steps=4000,
)
TextMetric = Literal["bleu", "chrf", "exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum"]
TRANSLATION_METRICS: list[TextMetric] = ["bleu", "chrf", "exact_match"]
SCALES = {"bleu": 100.0, "chrf": 100.0, "exact_match": 1.0}  # to the reported scale


class CorpusRouge(Metric):
    """The mean ROUGE F1 x 100 of each type over the examples seen (`modules.rouge`), summed
    per process so that it adds up across devices."""

    full_state_update = False

    def __init__(self, types: list[str]) -> None:
        super().__init__()
        self.rouge = Rouge(tuple(types))
        self.add_state("total", torch.zeros(len(types)), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[list[str]]) -> None:
        for hypothesis, refs in zip(hypotheses, references, strict=True):
            scores = self.rouge.example(hypothesis, refs)
            self.total += torch.tensor([scores[t] for t in self.rouge.types])
        self.count += len(hypotheses)

    def compute(self) -> dict[str, Tensor]:
        means = self.total / self.count.clamp(min=1)
        return dict(zip(self.rouge.types, means, strict=True))


class Seq2SeqModule(TaskModule):
    family = "encoder-decoder"
    metric_goals: dict[str, Goal] = {
        "loss": "min",
        **dict.fromkeys(("bleu", "chrf", "exact_match", *ROUGE_TYPES), "max"),  # type: ignore[dict-item]
    }
    progress_metrics = ("loss", "bleu", "exact_match", "rouge1", "rougeL")

    def __init__(
        self,
        preset: str = "paper-base",
        label_smoothing: float = 0.1,
        metrics: list[TextMetric] | None = None,
        decoding: Decoding | dict[str, Any] = Decoding(),  # noqa: B008 (frozen)
        max_source_length: int | None = None,
        warm_start_decoder: bool = True,
        optim: OptimizerConfig = PAPER_OPTIM,
        **common: Any,
    ) -> None:
        """metrics: scored on detokenised text at each validation, greedily decoded (BLEU, chrF
        and exact match by default; rouge1/rouge2/rougeL/rougeLsum for summarisation; chrF and
        exact match suit one-word outputs, where BLEU's 4-grams do not exist); the first is the
        default `monitor`. decoding: how the test stage, `predict` and the tools decode
        (`modules.seq2seq.Decoding`; the paper's beam 4, alpha 0.6 by default).
        max_source_length: sources of raw text are cut to this many tokens (linked from the
        data module; None: the model's position table). warm_start_decoder: with `init_from`
        a BERT-style encoder, also start the decoder from it (BERT2BERT; False: BERT2RND).
        `common`: see TaskModule (codec, arch, init_from, compile, monitor, freeze)."""
        self.warm_start_decoder = warm_start_decoder  # read by build_model, called just below
        super().__init__(preset=preset, optim=optim, **common)
        self.text_metrics = list(TRANSLATION_METRICS if metrics is None else metrics)
        unknown = sorted(set(self.text_metrics) - set(self.metric_goals))
        if unknown:
            raise ValueError(f"model.metrics {unknown}: choose from {list(self.metric_goals)[1:]}")
        self.decoding = Decoding(**decoding) if isinstance(decoding, dict) else decoding
        self.max_source_length = max_source_length
        self.label_smoothing = label_smoothing
        rouge = [m for m in self.text_metrics if m in ROUGE_TYPES]
        factories = {
            "bleu": SacreBLEUScore,
            "chrf": lambda: CHRFScore(n_word_order=0),  # chrF (sacreBLEU's default), not chrF++
            "exact_match": MeanMetric,
            "rouge": lambda: CorpusRouge(rouge),
        }
        wanted = [m for m in self.text_metrics if m not in ROUGE_TYPES] + (
            ["rouge"] if rouge else []
        )
        self.add_metrics(**{name: factories[name] for name in wanted})
        if common.get("monitor") is None and self.text_metrics:
            self._monitor = f"val/{self.text_metrics[0]}"
        self.store_hparams()

    def build_model(
        self, preset: str, arch: dict[str, Any] | None, init_from: str | None
    ) -> nn.Module:
        if not init_from:
            return super().build_model(preset, arch, init_from)
        vocab = self.codec.vocab_size if self.codec is not None else None
        return pretrained_model(
            init_from, EncoderDecoderTransformer, vocab, arch, self.warm_start_decoder
        )

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

    # --- decoding ---------------------------------------------------------------------------
    def generate(
        self, input_ids: Tensor, attention_mask: Tensor, decoding: Decoding | None = None
    ) -> list[str]:
        """Detokenised targets of a batch of sources, decoded with `decoding` (default: the
        task's own)."""
        codec = self.require_codec()
        rows = decode(
            self.model,  # type: ignore[arg-type]
            input_ids,
            attention_mask,
            codec.bos_id,
            codec.eos_id,
            decoding or self.decoding,
        )
        return codec.decode_batch(rows)

    def source_limit(self) -> int:
        longest = self.model.cfg.max_length
        return min(self.max_source_length or longest, longest)

    def encode_sources(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Each text's token ids (none for a blank one) cut to `source_limit()` tokens, and
        each text's length in tokens before the cut."""
        codec, limit = self.require_codec(), self.source_limit()
        encoded = [codec.encode(text) if text.strip() else [] for text in texts]
        return [ids[:limit] for ids in encoded], [len(ids) for ids in encoded]

    def generate_ids(
        self, sources: list[list[int]], decoding: Decoding | None = None, batch_size: int = 64
    ) -> list[str]:
        """Targets of encoded sources in their order (empty sources give empty targets),
        decoded in batches of similar length."""
        codec = self.require_codec()
        order = sorted(
            (i for i in range(len(sources)) if sources[i]), key=lambda i: len(sources[i])
        )
        output = [""] * len(sources)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = codec.pad([sources[i] for i in chunk])
            texts = self.generate(ids.to(self.device), mask.to(self.device), decoding)
            for i, text in zip(chunk, texts, strict=True):
                output[i] = text
        return output

    def generate_texts(
        self, texts: list[str], decoding: Decoding | None = None, batch_size: int = 64
    ) -> list[str]:
        """Targets of raw source texts in their order (blank lines stay blank); sources longer
        than `source_limit()` tokens are cut (`encode_sources` says how many)."""
        return self.generate_ids(self.encode_sources(texts)[0], decoding, batch_size)

    def predict_step(self, batch: Seq2SeqBatch, batch_idx: int) -> list[str]:
        return self.generate(batch["input_ids"], batch["attention_mask"])

    def text_batch(self, text: str, target: str | None = None) -> dict[str, Tensor]:
        """The source `text` with `target` (default: the model's greedy output)."""
        codec = self.require_codec()
        source = torch.tensor(self.encode_sources([text])[0], device=self.device)
        mask = torch.ones_like(source)
        if target is None:
            greedy = self.decoding.replace(beam_size=1)
            [target_ids] = decode(self.model, source, mask, codec.bos_id, codec.eos_id, greedy)  # type: ignore[arg-type]
        else:
            target_ids = codec.encode(target)
        decoder_input, labels = codec.target(target_ids)
        return {
            "input_ids": source,
            "attention_mask": mask,
            "decoder_input_ids": torch.tensor([decoder_input], device=self.device),
            "labels": torch.tensor([labels], device=self.device),
        }

    # --- metrics ------------------------------------------------------------------------------
    def update_metrics(self, batch: AnyBatch, out: StepOutput, stage: str, batch_idx: int) -> None:
        metrics = self.stage_metrics[stage]
        if self.codec is None or not self.text_metrics:
            return
        # validation decodes greedily (cheaper); the test stage as configured
        decoding = self.decoding if stage == "test" else self.decoding.replace(beam_size=1)
        hypotheses = self.generate(batch["input_ids"], batch["attention_mask"], decoding)
        references = batch.get("references")
        if references is None:  # a batch made without raw text: the labels, detokenised
            labels = [[t for t in row if t >= 0] for row in batch["labels"].tolist()]
            eos = (self.codec.eos_id,)
            references = self.codec.decode_batch([until_stop(r, eos) for r in labels])
        for name in metrics:
            if name == "exact_match":
                matches = [h == r for h, r in zip(hypotheses, references, strict=True)]
                metrics[name].update(torch.tensor(matches).float())
            elif name != "loss":
                metrics[name].update(hypotheses, [[r] for r in references])
        if batch_idx == 0 and stage == "val":
            sources = self.codec.decode_batch(batch["input_ids"][:4].tolist())
            self.samples = [
                {"source": s, "hypothesis": h, "reference": r}
                for s, h, r in zip(sources, hypotheses[:4], references[:4], strict=False)
            ]

    def metric_values(self, metrics: nn.ModuleDict, stage: str) -> dict[str, Tensor]:
        values = {"loss": metrics["loss"].compute()}
        if self.codec is None:
            return values
        rouge = metrics["rouge"].compute() if "rouge" in metrics else {}
        for name in self.text_metrics:
            values[name] = rouge[name] if name in rouge else metrics[name].compute() * SCALES[name]
        return values
