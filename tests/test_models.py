"""The three models: causality, padding invariance, KV-cache decoding, presets, errors."""

import pytest
import torch

from modules.models import (
    DecoderConfig,
    DecoderTransformer,
    EncoderConfig,
    EncoderDecoderConfig,
    EncoderDecoderTransformer,
    EncoderTransformer,
)

TOL = 1e-5
VOCAB = 512  # the `tiny` presets' vocabulary


def decoder(**overrides) -> DecoderTransformer:
    return DecoderTransformer(DecoderConfig.from_preset("tiny", **overrides)).eval()


def encoder(**overrides) -> EncoderTransformer:
    return EncoderTransformer(EncoderConfig.from_preset("tiny", **overrides)).eval()


def seq2seq(**overrides) -> EncoderDecoderTransformer:
    return EncoderDecoderTransformer(EncoderDecoderConfig.from_preset("tiny", **overrides)).eval()


def ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length))


VARIANTS = {
    "default": {},
    "gqa-rotary": dict(n_kv_heads=2, positions="rotary"),
    "rmsnorm-swiglu-post": dict(norm="rmsnorm", activation="swiglu", pre_norm=False),
    "sinusoidal-pre": dict(positions="sinusoidal", pre_norm=True),
    "key-dim-rotary": dict(key_dim=8, positions="rotary", n_kv_heads=2),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_only_is_causal(variant):
    model = decoder(**VARIANTS[variant])
    x = ids(2, 10)
    changed = x.clone()
    changed[:, 6:] = ids(2, 4)
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert (a[:, :6] - b[:, :6]).abs().max() < TOL
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3  # the later positions did change


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_decoder_decoder_is_causal(variant):
    model = seq2seq(**VARIANTS[variant])
    src, tgt = ids(2, 8), ids(2, 9)
    changed = tgt.clone()
    changed[:, 5:] = ids(2, 4)
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    assert (a[:, :5] - b[:, :5]).abs().max() < TOL


def test_encoder_padding_invariance_and_padded_rows_finite():
    model = encoder()
    x = ids(2, 6)
    with torch.no_grad():
        plain = model(x)
        padded = torch.cat([x, torch.zeros(2, 4, dtype=torch.long)], dim=1)
        mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 4)], dim=1).long()
        out = model(padded, attention_mask=mask)
        assert (out[:, :6] - plain).abs().max() < TOL
        # a fully padded sequence in the batch gives finite numbers, and leaves the others alone
        batch = torch.cat([padded, ids(1, 10)])
        batch_mask = torch.cat([mask, torch.zeros(1, 10, dtype=torch.long)])
        out = model(batch, attention_mask=batch_mask)
        assert torch.isfinite(out).all()
        assert (out[:2, :6] - plain).abs().max() < TOL
        assert torch.isfinite(model.mlm_logits(out)).all() and model.pool(out).shape == (3, 64)


def test_encoder_decoder_source_padding_invariance():
    model = seq2seq()
    src, tgt = ids(2, 7), ids(2, 5)
    with torch.no_grad():
        plain = model(src, tgt)
        padded = torch.cat([src, ids(2, 3)], dim=1)  # any token ids in padding
        mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 3)], dim=1).long()
        out = model(padded, tgt, attention_mask=mask)
        assert (out - plain).abs().max() < TOL
        # target padding (right side) never changes real target positions
        tgt_padded = torch.cat([tgt, torch.zeros(2, 2, dtype=torch.long)], dim=1)
        tgt_mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 2)], dim=1).long()
        out = model(padded, tgt_padded, attention_mask=mask, decoder_attention_mask=tgt_mask)
        assert (out[:, :5] - plain).abs().max() < TOL
        # a batch row whose source is all padding stays finite
        empty = torch.zeros_like(mask)
        assert torch.isfinite(model(padded, tgt, attention_mask=empty)).all()


def test_decoder_only_left_padding_invariance():
    model = decoder()
    x = ids(1, 6)
    with torch.no_grad():
        plain = model(x)
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
        mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 6)], dim=1).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(padded, attention_mask=mask, position_ids=positions)
    assert (out[:, 3:] - plain).abs().max() < TOL
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_only_cached_decoding_equals_full_forward(variant):
    model = decoder(**VARIANTS[variant])
    x = ids(2, 12)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(max_length=16)
        chunks = [model(x[:, :5], cache=cache)]
        for t in range(5, 9):
            chunks.append(model(x[:, t : t + 1], cache=cache))
        chunks.append(model(x[:, 9:], cache=cache))  # several new tokens after a cache
    assert (torch.cat(chunks, dim=1) - full).abs().max() < TOL


def test_decoder_only_logits_to_keep_are_the_last_positions():
    model = decoder()
    x = ids(2, 12)
    with torch.no_grad():
        full = model(x)
        assert torch.equal(model(x, logits_to_keep=0), full)
        last = model(x, logits_to_keep=3)
        cache = model.new_cache(max_length=16)
        cached = model(x[:, :9], cache=cache, logits_to_keep=1)
    assert last.shape == (2, 3, VOCAB) and (last - full[:, -3:]).abs().max() < TOL
    assert cached.shape == (2, 1, VOCAB) and (cached[:, 0] - full[:, 8]).abs().max() < TOL


def test_decoder_only_cached_decoding_with_left_padding():
    model = decoder(n_kv_heads=2, positions="rotary")
    x = ids(2, 8)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(x, attention_mask=mask, position_ids=positions)
        cache = model.new_cache()
        steps = [
            model(x[:, :4], attention_mask=mask[:, :4], position_ids=positions[:, :4], cache=cache)
        ]
        for t in range(4, 8):
            steps.append(
                model(x[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1], cache=cache)
            )
    real = mask.bool()
    assert (torch.cat(steps, dim=1)[real] - full[real]).abs().max() < TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_decoder_cached_decoding_equals_full_forward(variant):
    model = seq2seq(**VARIANTS[variant])
    src, tgt = ids(2, 9), ids(2, 7)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, 5:] = 0
    with torch.no_grad():
        full = model(src, tgt, attention_mask=mask)
        memory = model.encode(src, mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, t : t + 1], memory, mask, cache=cache) for t in range(7)]
    assert (torch.cat(steps, dim=1) - full).abs().max() < TOL


def test_preset_parameter_counts_match_published_sizes():
    def count(model) -> float:
        return sum(p.numel() for p in model.parameters()) / 1e6

    # paper: 65M for the base model with a ~37k shared vocabulary (Table 3)
    assert (
        62 < count(EncoderDecoderTransformer(EncoderDecoderConfig.from_preset("paper-base"))) < 66
    )
    # BERT-base 110M; our count includes the MLM head's dense + LayerNorm (0.6M)
    bert = EncoderTransformer(EncoderConfig.from_preset("bert-base", mlm_head=False))
    assert round(count(bert), 1) == 109.5
    assert round(count(DecoderTransformer(DecoderConfig.from_preset("gpt2-small"))), 1) == 124.4


def test_paper_big_preset_and_weight_sharing():
    cfg = EncoderDecoderConfig.from_preset("paper-big", vocab_size=1000)
    assert (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout) == (1024, 16, 4096, 0.3)
    model = seq2seq()
    assert model.lm_head.weight is model.encoder_embed.tokens.weight
    assert model.decoder_embed.tokens is model.encoder_embed.tokens
    gpt = decoder()
    assert gpt.lm_head.weight is gpt.embed.tokens.weight


def test_gpt2_scaled_residual_init():
    model = DecoderTransformer(
        DecoderConfig.from_preset("tiny", n_layers=8, d_model=256, d_ff=1024)
    )
    proj = model.stack.blocks[0].ffn.down.weight.std().item()
    other = model.stack.blocks[0].ffn.up.weight.std().item()
    assert abs(other - 0.02) < 0.002 and abs(proj - 0.02 / 4) < 0.001


def test_all_models_train():
    for model, batch in [
        (decoder(dropout=0.1), (ids(2, 8),)),
        (encoder(), (ids(2, 8),)),
        (seq2seq(), (ids(2, 8), ids(2, 6))),
    ]:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        target = batch[-1]
        losses = []
        for _ in range(20):
            out = model(*batch)
            logits = model.mlm_logits(out) if isinstance(model, EncoderTransformer) else out
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] / 2, type(model).__name__


def test_bad_configs_name_the_value():
    with pytest.raises(ValueError, match="d_model=100 is not divisible by n_heads=8"):
        DecoderConfig(d_model=100, n_heads=8)
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        EncoderConfig.from_preset("tiny", n_kv_heads=3)
    with pytest.raises(ValueError, match="dropout=1.5"):
        DecoderConfig(dropout=1.5)
    with pytest.raises(ValueError, match="unknown preset 'gpt5'.*gpt2-small"):
        DecoderConfig.from_preset("gpt5")
    with pytest.raises(ValueError, match="n_layer"):
        DecoderConfig.from_preset("tiny", n_layer=3)


def test_sequence_longer_than_position_table_names_max_length():
    model = decoder(max_length=16)
    with pytest.raises(ValueError, match="17 positions.*max_length=16"):
        model(ids(1, 17))
    cache = model.new_cache()
    model(ids(1, 15), cache=cache)
    with pytest.raises(ValueError, match=r"17 positions \(15 cached \+ 2 new\)"):
        model(ids(1, 2), cache=cache)
    with pytest.raises(ValueError, match="max_length=16"):
        seq2seq(max_length=16).encode(ids(1, 20))


def test_mismatched_attention_mask_names_shapes():
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\)"):
        encoder()(ids(2, 6), attention_mask=torch.ones(2, 5))
