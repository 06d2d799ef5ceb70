"""The three Transformer families, each a thin composition of `modules.layers.Stack`."""

from modules.config import DecoderConfig, EncoderConfig, EncoderDecoderConfig
from modules.models.decoder import DecoderTransformer
from modules.models.encoder import EncoderTransformer, mean_pooled
from modules.models.encoder_decoder import EncoderDecoderTransformer

__all__ = [
    "DecoderConfig",
    "DecoderTransformer",
    "EncoderConfig",
    "EncoderDecoderConfig",
    "EncoderDecoderTransformer",
    "EncoderTransformer",
    "mean_pooled",
]
