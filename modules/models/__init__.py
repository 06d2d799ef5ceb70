"""The three Transformer families, each a thin composition of `modules.layers.Stack`."""

from __future__ import annotations

from torch import nn

from modules.codec import Family
from modules.config import DecoderConfig, EncoderConfig, EncoderDecoderConfig, TransformerConfig
from modules.models.decoder import DecoderTransformer
from modules.models.encoder import EncoderTransformer, QueryStream, TwoStream, mean_pooled
from modules.models.encoder_decoder import EncoderDecoderTransformer

# Each family's model class and config class.
FAMILIES: dict[Family, tuple[type[nn.Module], type[TransformerConfig]]] = {
    "encoder": (EncoderTransformer, EncoderConfig),
    "decoder": (DecoderTransformer, DecoderConfig),
    "encoder-decoder": (EncoderDecoderTransformer, EncoderDecoderConfig),
}

__all__ = [
    "FAMILIES",
    "DecoderConfig",
    "DecoderTransformer",
    "EncoderConfig",
    "EncoderDecoderConfig",
    "EncoderDecoderTransformer",
    "EncoderTransformer",
    "QueryStream",
    "TwoStream",
    "mean_pooled",
]
