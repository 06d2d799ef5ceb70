"""An encoder-decoder warm-started from a pretrained BERT-style encoder (Rothe et al. 2020,
"Leveraging Pre-trained Checkpoints for Sequence Generation Tasks").

The encoder-decoder takes the encoder's architecture (post-LN, learned positions, embedding
norm, GELU, its sizes and vocabulary) and its weights: the encoder from the encoder, and with
`decoder=True` (BERT2BERT) the decoder's embeddings, self-attention and feed-forward too
(BERT2RND: the decoder starts fresh). The cross-attention always starts fresh. Source and
target share the pretrained embeddings, which are also the output projection. BERT adds the
first token-type embedding to every token; it is folded into the position table here, which
computes exactly the same."""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import Tensor

from modules.config import EncoderDecoderConfig, TransformerConfig
from modules.models import EncoderDecoderTransformer, EncoderTransformer

SHARED_FIELDS = [f.name for f in dataclasses.fields(TransformerConfig)]
BLOCK_PARTS = ("self_attn.", "self_attn_norm.", "ffn.", "ffn_norm.")  # what a BERT layer has


@dataclasses.dataclass
class WarmStart:
    model: EncoderDecoderTransformer
    loaded: list[str]  # our tensors copied from the encoder
    fresh: list[str]  # our tensors that keep their new initialisation
    unused: list[str]  # the encoder's tensors with no place (pooler, MLM head, token types)

    def report(self, source: str) -> str:
        return (
            f"warm start from {source}: loaded {len(self.loaded)} tensors "
            f"({', '.join(grouped(self.loaded))}); fresh {len(self.fresh)} "
            f"({', '.join(grouped(self.fresh)) or 'none'}); unused from the encoder: "
            f"{', '.join(grouped(self.unused)) or 'none'}"
        )


def grouped(names: list[str]) -> list[str]:
    """Tensor names folded into their modules, layer numbers as *, e.g.
    ['encoder_embed.{tokens,positions}', 'decoder.blocks.*.{cross_attn,cross_attn_norm}']."""
    modules: dict[str, list[str]] = {}
    for name in names:
        parts = re.sub(r"\.\d+\.", ".*.", name).split(".")
        depth = 4 if len(parts) > 4 and parts[1] == "blocks" else 2
        prefix, module = ".".join(parts[: depth - 1]), parts[depth - 1]
        if module not in modules.setdefault(prefix, []):
            modules[prefix].append(module)
    return [
        f"{prefix}.{parts[0]}" if len(parts) == 1 else f"{prefix}.{{{','.join(parts)}}}"
        for prefix, parts in modules.items()
    ]


def warm_start(encoder: EncoderTransformer, decoder: bool = True, **changes: object) -> WarmStart:
    """The encoder-decoder made from `encoder`; `changes` may set runtime fields (dropout) and
    `n_decoder_layers` (a shallower decoder takes the encoder's first layers)."""
    cfg = dataclasses.replace(
        EncoderDecoderConfig(**{name: getattr(encoder.cfg, name) for name in SHARED_FIELDS}),
        tie_embeddings=True,
        **changes,  # type: ignore[arg-type]
    )
    if cfg.decoder_layers > encoder.cfg.n_layers and decoder:
        raise ValueError(
            f"n_decoder_layers={cfg.decoder_layers}: the pretrained encoder has only "
            f"{encoder.cfg.n_layers} layers to start the decoder from"
        )
    model = EncoderDecoderTransformer(cfg)
    theirs = encoder.state_dict()
    positions = theirs["embed.positions.weight"]
    if "embed.token_types.weight" in theirs:
        positions = positions + theirs["embed.token_types.weight"][0]
    mapping: dict[str, Tensor] = {}
    embed_sides = ("encoder_embed", "decoder_embed") if decoder else ("encoder_embed",)
    for side in embed_sides:
        mapping[f"{side}.tokens.weight"] = theirs["embed.tokens.weight"]
        mapping[f"{side}.positions.weight"] = positions
        for key in ("weight", "bias"):
            if f"embed.norm.{key}" in theirs:
                mapping[f"{side}.norm.{key}"] = theirs[f"embed.norm.{key}"]
    for key, value in theirs.items():
        if not key.startswith("stack.blocks."):
            continue
        rest = key.removeprefix("stack.blocks.")
        mapping[f"encoder.blocks.{rest}"] = value
        layer, _, part = rest.partition(".")
        if decoder and int(layer) < cfg.decoder_layers and part.startswith(BLOCK_PARTS):
            mapping[f"decoder.blocks.{rest}"] = value
    ours = model.state_dict()
    for key, value in mapping.items():
        if ours[key].shape != value.shape:
            raise ValueError(
                f"{key}: shape {tuple(ours[key].shape)}, pretrained {tuple(value.shape)}"
            )
    with torch.no_grad():
        for key, value in mapping.items():
            ours[key].copy_(value)
    tied = {"lm_head.weight", "decoder_embed.tokens.weight"}  # the shared embedding
    loaded = sorted(set(mapping) | (tied if "encoder_embed.tokens.weight" in mapping else set()))
    fresh = sorted(k for k in ours if k not in loaded)
    used = {"embed.tokens.weight", "embed.positions.weight", "embed.token_types.weight"}
    used |= {k for k in theirs if k.startswith(("stack.blocks.", "embed.norm."))}
    unused = sorted(k for k in theirs if k not in used)
    return WarmStart(model, loaded, fresh, unused)
