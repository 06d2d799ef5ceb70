"""GPT-style decoder-only Transformer (GPT-2 by default)."""

from __future__ import annotations

from torch import Tensor, nn

from modules.config import DecoderConfig
from modules.layers import Embeddings, LayerCache, Stack, cache_length, init_weights
from modules.positions import position_ids_for


class DecoderTransformer(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.stack = Stack(cfg, cfg.n_layers, causal=True)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.tokens.weight
        init_weights(self, cfg, cfg.n_layers)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        logits_to_keep: int = 0,
    ) -> Tensor:
        """Next-token logits (batch, seq, vocab), or (batch, logits_to_keep, vocab) for only
        the last positions (decoding needs one: the vocabulary projection of every prompt
        position would cost time and memory for nothing).

        attention_mask: (batch, cached + seq), 1 = real token; leave None when nothing is padded
        (the fast causal kernel is used). With a cache, only the new tokens are passed.
        """
        past = cache_length(cache)
        if position_ids is None:
            position_ids = position_ids_for(
                input_ids.size(1), past, self.cfg.max_length, input_ids.device
            )
        x = self.embed(input_ids, position_ids)
        x = self.stack(x, attention_mask, position_ids, cache=cache)
        return self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)

    def new_cache(self, max_length: int | None = None) -> list[LayerCache]:
        return self.stack.new_cache(max_length)
