"""The Hugging Face reference models of the side-by-side benchmarks, their sizes and batches.

Each reference is built with random weights (fixed seed), SDPA attention and no dropout; our
model is made from it with `modules.interop.from_hf`, so both sides hold the same weights and
the same configuration. Batches are identical for both sides.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.interop import from_hf

Family = Literal["decoder", "encoder", "encoder-decoder"]
FAMILIES: tuple[Family, ...] = ("decoder", "encoder", "encoder-decoder")
REFERENCE_NAMES = {
    "decoder": "GPT2LMHeadModel",
    "encoder": "BertForMaskedLM",
    "encoder-decoder": "MarianMTModel",
}


@dataclass(frozen=True)
class Size:
    name: str
    d_model: int
    n_heads: int
    n_layers: int  # decoder-only and encoder-only; the encoder-decoder splits them in two
    d_ff: int
    vocab_size: int = 16384
    max_length: int = 512


SIZES = {
    "10M": Size("10M", d_model=256, n_heads=4, n_layers=6, d_ff=1024),
    "40M": Size("40M", d_model=512, n_heads=8, n_layers=10, d_ff=2048),
    "tiny": Size(
        "tiny", d_model=64, n_heads=4, n_layers=2, d_ff=128, vocab_size=512, max_length=320
    ),
}


def hf_model(family: Family, size: Size, seed: int = 0) -> nn.Module:
    """The reference model, random weights from `seed`, SDPA attention, dropout off."""
    import transformers

    torch.manual_seed(seed)
    s = size
    sdpa: dict[str, Any] = {"attn_implementation": "sdpa"}
    if family == "decoder":
        config = transformers.GPT2Config(
            vocab_size=s.vocab_size,
            n_positions=s.max_length,
            n_embd=s.d_model,
            n_layer=s.n_layers,
            n_head=s.n_heads,
            n_inner=s.d_ff,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
            **sdpa,
        )
        model = transformers.GPT2LMHeadModel(config)
    elif family == "encoder":
        config = transformers.BertConfig(
            vocab_size=s.vocab_size,
            hidden_size=s.d_model,
            num_hidden_layers=s.n_layers,
            num_attention_heads=s.n_heads,
            intermediate_size=s.d_ff,
            max_position_embeddings=s.max_length,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=0,
            **sdpa,
        )
        model = transformers.BertForMaskedLM(config)
    else:
        config = transformers.MarianConfig(
            vocab_size=s.vocab_size,
            d_model=s.d_model,
            encoder_layers=s.n_layers // 2,
            decoder_layers=s.n_layers // 2,
            encoder_attention_heads=s.n_heads,
            decoder_attention_heads=s.n_heads,
            encoder_ffn_dim=s.d_ff,
            decoder_ffn_dim=s.d_ff,
            max_position_embeddings=s.max_length,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            pad_token_id=s.vocab_size - 1,
            decoder_start_token_id=s.vocab_size - 1,
            eos_token_id=0,
            forced_eos_token_id=None,
            **sdpa,
        )
        model = transformers.MarianMTModel(config)
    implementation = model.config._attn_implementation
    if implementation != "sdpa":
        raise RuntimeError(f"{type(model).__name__} uses {implementation!r} attention, not SDPA")
    return model


def pair(family: Family, size: Size, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, reference) with the same weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = hf_model(family, size, seed)
    return from_hf(reference), reference


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_batch(
    family: Family, size: Size, batch: int, length: int, seed: int = 0
) -> dict[str, Tensor]:
    """A training batch in our batch contract (`modules.batch`). Encoder inputs are padded the
    way per-batch padding leaves them (rows 1/8 to 3/8 shorter in turn); causal LM windows
    are packed, so never padded."""
    g = torch.Generator().manual_seed(seed)
    vocab = size.vocab_size - 1  # the last id is Marian's padding
    ids = torch.randint(1, vocab, (batch, length + 1), generator=g)
    if family == "decoder":
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        mask[row, length - (row % 4) * length // 8 :] = 0
    if family == "encoder":
        input_ids = ids[:, :-1].masked_fill(mask == 0, 0)
        chosen = (torch.rand(batch, length, generator=g) < 0.15) & mask.bool()
        labels = input_ids.masked_fill(~chosen, -100)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    source = ids[:, :-1].masked_fill(mask == 0, size.vocab_size - 1)
    target = torch.randint(1, vocab, (batch, length + 1), generator=g)
    target[:, 0] = size.vocab_size - 1  # decoder start
    return {
        "input_ids": source,
        "attention_mask": mask,
        "decoder_input_ids": target[:, :-1],
        "labels": target[:, 1:],
    }


def positions(batch: dict[str, Tensor]) -> int:
    """Token positions a step processes (padding included, as the Throughput callback counts)."""
    return sum(batch[k].numel() for k in ("input_ids", "decoder_input_ids") if k in batch)


def logits(model: nn.Module, family: Family, batch: dict[str, Tensor], reference: bool) -> Tensor:
    """Training logits of either side, each called the way its users call it."""
    mask = batch.get("attention_mask")
    if reference:
        if family == "encoder-decoder":
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=mask,
                decoder_input_ids=batch["decoder_input_ids"],
            )
        else:
            out = model(input_ids=batch["input_ids"], attention_mask=mask)
        return out.logits
    if family == "decoder":
        return model(batch["input_ids"])
    if family == "encoder":  # as MaskedLMModule trains: the vocabulary logits of masked positions
        return model.mlm_logits(model(batch["input_ids"], mask), batch["labels"] != -100)
    return model(batch["input_ids"], batch["decoder_input_ids"], attention_mask=mask)


def loss(model: nn.Module, family: Family, batch: dict[str, Tensor], reference: bool) -> Tensor:
    """Mean cross-entropy over the labelled positions, the same function for both sides."""
    out = logits(model, family, batch, reference)
    labels = batch["labels"]
    if out.dim() == 2:  # logits of the labelled positions only
        labels = labels[labels != -100]
    return F.cross_entropy(
        out.reshape(-1, out.size(-1)).float(), labels.reshape(-1), ignore_index=-100
    )
