"""The encoder-decoder Transformer of "Attention Is All You Need"."""

from __future__ import annotations

from torch import Tensor, nn

from modules.config import EncoderDecoderConfig
from modules.layers import Embeddings, LayerCache, Stack, cache_length, init_weights
from modules.positions import position_ids_for


class EncoderDecoderTransformer(nn.Module):
    """`encode` once, then `decode` (all target positions, or step by step with a cache).

    One vocabulary: the source and target embeddings and the output projection share one
    matrix when `tie_embeddings` is set (the paper's weight sharing).
    """

    def __init__(self, cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder_embed = Embeddings(cfg)
        shared = self.encoder_embed.tokens if cfg.tie_embeddings else None
        self.decoder_embed = Embeddings(cfg, tokens=shared)
        self.encoder = Stack(cfg, cfg.n_layers, causal=False)
        self.decoder = Stack(cfg, cfg.decoder_layers, causal=True, cross_attention=True)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.decoder_embed.tokens.weight
        init_weights(self, cfg, cfg.n_layers + cfg.decoder_layers)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Source tokens (batch, src) -> memory (batch, src, d_model)."""
        position_ids = position_ids_for(input_ids.size(1), 0, self.cfg.max_length, input_ids.device)
        x = self.encoder_embed(input_ids, position_ids)
        return self.encoder(x, attention_mask, position_ids)

    def decode(
        self,
        decoder_input_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        cache: list[LayerCache] | None = None,
    ) -> Tensor:
        """Target logits (batch, tgt, vocab). memory_mask is the source attention_mask.

        With a cache, pass only the new target tokens; the cross-attention keys and values are
        computed from `memory` at the first step and reused afterwards.
        """
        position_ids = position_ids_for(
            decoder_input_ids.size(1), cache_length(cache), self.cfg.max_length, memory.device
        )
        x = self.decoder_embed(decoder_input_ids, position_ids)
        x = self.decoder(x, decoder_attention_mask, position_ids, memory, memory_mask, cache)
        return self.lm_head(x)

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
    ) -> Tensor:
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask)

    def new_cache(self, max_length: int | None = None) -> list[LayerCache]:
        return self.decoder.new_cache(max_length)
