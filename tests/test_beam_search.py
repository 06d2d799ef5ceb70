"""Beam search for the encoder-decoder: against greedy, the cache, and batching."""

import pytest
import torch

from modules.generation import until_stop
from modules.models import EncoderDecoderConfig, EncoderDecoderTransformer
from modules.seq2seq import beam_search, greedy_translate, sequence_score

BOS, EOS = 1, 2


@pytest.fixture(scope="module")
def model() -> EncoderDecoderTransformer:
    """A tiny model trained for a moment to reverse sequences: it is unsure enough for beam
    search to matter, and its outputs end (with eos) at different lengths."""
    torch.manual_seed(0)
    cfg = EncoderDecoderConfig.from_preset(
        "tiny", vocab_size=24, d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0
    )
    model = EncoderDecoderTransformer(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        length = int(torch.randint(2, 8, ()))
        source = torch.randint(3, 24, (32, length))
        target = source.flip(1)
        decoder_input = torch.cat([torch.full((32, 1), BOS), target], dim=1)
        labels = torch.cat([target, torch.full((32, 1), EOS)], dim=1)
        loss = torch.nn.functional.cross_entropy(
            model(source, decoder_input).flatten(0, 1), labels.flatten()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def sources(lengths=(5, 9, 3, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    longest = max(lengths)
    ids = torch.zeros(len(lengths), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, 24, (n,))
        mask[row, :n] = 1
    return ids, mask


def test_beam_one_equals_greedy(model):
    ids, mask = sources()
    greedy = [
        until_stop(row, (EOS,))
        for row in greedy_translate(model, ids, mask, BOS, EOS, extra_length=10).tolist()
    ]
    beam = beam_search(model, ids, mask, BOS, EOS, beam_size=1, alpha=0.0, extra_length=10)
    assert [h.tokens for h in beam] == greedy


def test_cached_equals_uncached(model):
    ids, mask = sources()
    cached = beam_search(model, ids, mask, BOS, EOS, extra_length=10)
    uncached = beam_search(model, ids, mask, BOS, EOS, extra_length=10, use_cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in uncached]
    assert [h.score for h in cached] == pytest.approx([h.score for h in uncached], abs=1e-4)


def test_batch_equals_one_source_at_a_time(model):
    ids, mask = sources()
    batched = beam_search(model, ids, mask, BOS, EOS, beam_size=4, extra_length=10)
    for row in range(ids.size(0)):
        n = int(mask[row].sum())
        [single] = beam_search(
            model, ids[row : row + 1, :n], None, BOS, EOS, beam_size=4, extra_length=10
        )
        assert single.tokens == batched[row].tokens
        assert single.score == pytest.approx(batched[row].score, abs=1e-4)


def test_beam_never_scores_below_greedy(model):
    ids, mask = sources((4, 6, 8, 5, 7, 3))
    compared = 0
    for beam_size in (2, 4, 8):
        beams = beam_search(
            model, ids, mask, BOS, EOS, beam_size=beam_size, alpha=0.6, extra_length=10
        )
        for row, hypothesis in enumerate(beams):
            n = int(mask[row].sum())
            source = ids[row : row + 1, :n]
            if hypothesis.complete:  # the returned score is the hypothesis' own score
                own = sequence_score(model, source, hypothesis.tokens, BOS, EOS)
                assert own == pytest.approx(hypothesis.score, abs=1e-4)
            greedy = until_stop(
                greedy_translate(model, source, None, BOS, EOS, extra_length=10)[0].tolist(), (EOS,)
            )
            if len(greedy) < n + 10:  # greedy ended with eos: score it the same way
                greedy_score = sequence_score(model, source, greedy, BOS, EOS)
                assert hypothesis.complete and hypothesis.score >= greedy_score - 1e-5
                compared += 1
    assert compared >= 12


def test_length_limit(model):
    ids, mask = sources((3,))
    [hypothesis] = beam_search(model, ids, mask, BOS, EOS, beam_size=2, extra_length=2)
    assert len(hypothesis.tokens) <= 5
