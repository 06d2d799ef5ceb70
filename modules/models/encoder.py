"""BERT-style encoder-only Transformer with its masked-LM head and pooler, XLNet's two-stream
attention for permutation LM, and mean pooling for sentence embeddings."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.config import EncoderConfig
from modules.layers import ACTIVATIONS, Embeddings, Stack, init_weights, make_norm
from modules.masks import two_stream_mask
from modules.positions import position_ids_for


class MaskedLMHead(nn.Module):
    """dense -> activation -> norm -> projection onto the (tied) vocabulary, plus a bias."""

    def __init__(self, cfg: EncoderConfig, tokens: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = ACTIVATIONS["gelu" if cfg.activation == "swiglu" else cfg.activation]
        self.norm = make_norm(cfg)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.decoder.weight = tokens.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))


class Pooler(nn.Module):
    """tanh(dense(hidden state of the first token)), BERT's sentence representation."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.dense(hidden[:, 0]).tanh()


class QueryStream(nn.Module):
    """The input of XLNet's query stream: one learned vector in place of every target's token
    (the encoder adds the target's position), so the stream knows where it predicts, never
    what. It lives beside the encoder, in the permutation-LM task, so that the encoder stays a
    plain BERT encoder for classification, question answering, embeddings and export."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.randn(cfg.d_model) * (cfg.init_std or cfg.d_model**-0.5))


class TwoStream(NamedTuple):
    """What XLNet's two-stream attention needs beside the tokens (Yang et al. 2019, 2.3)."""

    ranks: Tensor  # (batch, seq) the factorisation order, see modules.masks.two_stream_mask
    target_positions: Tensor  # (batch, targets) where the query stream predicts
    query_start: Tensor  # (d_model,) the query stream's learned input (QueryStream.start)


class EncoderTransformer(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg, type_vocab_size=cfg.type_vocab_size)
        self.stack = Stack(cfg, cfg.n_layers, causal=False)
        self.mlm_head = MaskedLMHead(cfg, self.embed.tokens) if cfg.mlm_head else None
        self.pooler = Pooler(cfg) if cfg.pooler else None
        init_weights(self, cfg, cfg.n_layers)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        two_stream: TwoStream | None = None,
    ) -> Tensor:
        """Contextual hidden states (batch, seq, d_model); attention_mask 1 = real token.

        With `two_stream`, XLNet's two-stream attention: the content stream (this encoder on
        the real tokens) followed by the query stream at the targets, (batch, seq + targets,
        d_model); the query stream starts from `two_stream.query_start` plus each target's
        position embedding."""
        if position_ids is None:
            position_ids = position_ids_for(
                input_ids.size(1), 0, self.cfg.max_length, input_ids.device
            )
        x = self.embed(input_ids, position_ids, token_type_ids)
        if two_stream is None:
            return self.stack(x, attention_mask, position_ids)
        ranks, targets, start = two_stream
        batch, length = input_ids.shape
        types = None if token_type_ids is None else token_type_ids.gather(1, targets)
        query = self.embed.embed_vectors(start.expand(batch, targets.size(1), -1), targets, types)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.cat([position_ids.expand(batch, -1), targets], dim=1)
        mask = two_stream_mask(ranks, attention_mask, targets)
        return self.stack(
            torch.cat([x, query], dim=1), position_ids=positions, mask=mask, kv_length=length
        )

    def mlm_logits(self, hidden: Tensor, chosen: Tensor | None = None) -> Tensor:
        """Vocabulary logits (batch, seq, vocab), or (n, vocab) for only the `chosen` positions
        (a boolean mask such as labels != -100). Training needs the masked ~15% only, and the
        head's projection onto the vocabulary is the largest matmul of a small BERT."""
        if self.mlm_head is None:
            raise ValueError("this encoder was built with mlm_head=False")
        return self.mlm_head(hidden if chosen is None else hidden[chosen])

    def pool(self, hidden: Tensor) -> Tensor:
        if self.pooler is None:
            raise ValueError("this encoder was built with pooler=False")
        return self.pooler(hidden)


def mean_pooled(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """L2-normalised mean of the hidden states of the real tokens (attention_mask 1), the
    sentence embedding of sentence-transformers: (batch, seq, d) -> (batch, d)."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=-1)
