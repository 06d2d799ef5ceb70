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


# --- constraints: min/max length, no repeated n-grams, penalty forms, early stopping ---------
CONSTRAINED = dict(min_length=6, no_repeat_ngram_size=2, extra_length=10)


def repetitive_sources() -> tuple[torch.Tensor, torch.Tensor]:
    """Sources whose reversal repeats bigrams, so an unconstrained decoder repeats them too."""
    rows = [[5, 6, 5, 6, 5, 6], [7, 7, 7, 7, 0, 0], [8, 9, 8, 9, 8, 0], [4, 11, 0, 0, 0, 0]]
    ids = torch.tensor(rows)
    return ids, (ids != 0).long()


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def test_repeated_ngrams_matches_a_plain_loop():
    from modules.seq2seq import repeated_ngrams

    torch.manual_seed(0)
    history = torch.randint(0, 4, (6, 9))
    for n in (1, 2, 3):
        banned = repeated_ngrams(history, n, 5)
        for row, tokens in enumerate(history.tolist()):
            start = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
            expected = {g[-1] for g in ngrams(tokens, n) if g[:-1] == start}
            assert set(banned[row].nonzero().flatten().tolist()) == expected


def test_no_hypothesis_repeats_an_ngram(model):
    ids, mask = repetitive_sources()
    free = beam_search(model, ids, mask, BOS, EOS, beam_size=4, extra_length=10, min_length=6)
    assert all(len(set(ngrams(h.tokens, 2))) < len(ngrams(h.tokens, 2)) for h in free)
    for n in (2, 3):
        for beam_size in (1, 4):
            hypotheses = beam_search(
                model,
                ids,
                mask,
                BOS,
                EOS,
                beam_size,
                extra_length=10,
                min_length=6,
                no_repeat_ngram_size=n,
            )
            for h in hypotheses:
                assert len(set(ngrams(h.tokens, n))) == len(ngrams(h.tokens, n)), (n, h.tokens)
    greedy = greedy_translate(model, ids, mask, BOS, EOS, 10, no_repeat_ngram_size=2)
    for row in greedy.tolist():
        tokens = until_stop(row, (EOS,))
        assert len(set(ngrams(tokens, 2))) == len(ngrams(tokens, 2))


def test_no_hypothesis_is_shorter_than_min_length(model):
    ids, mask = sources((3, 2, 4, 3))
    free = beam_search(model, ids, mask, BOS, EOS, beam_size=4, extra_length=10)
    assert min(len(h.tokens) for h in free) < 8
    for beam_size in (1, 3):
        for h in beam_search(model, ids, mask, BOS, EOS, beam_size, extra_length=10, min_length=8):
            assert len(h.tokens) >= 8
    greedy = greedy_translate(model, ids, mask, BOS, EOS, 10, min_length=8)
    assert all(len(until_stop(row, (EOS,))) >= 8 for row in greedy.tolist())


def test_max_length_absolute_and_relative(model):
    ids, mask = sources((9, 5, 7))
    for h in beam_search(model, ids, mask, BOS, EOS, 3, extra_length=50, max_length=4):
        assert len(h.tokens) <= 4
    relative = beam_search(
        model, ids, mask, BOS, EOS, 3, extra_length=1, length_ratio=0.5, min_length=20
    )
    for row, h in enumerate(relative):  # min_length blocks eos: every hypothesis hits its limit
        assert len(h.tokens) == int(int(mask[row].sum()) * 0.5) + 1 and not h.complete


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_one_equals_greedy_under_constraints(model, alpha):
    ids, mask = repetitive_sources()
    greedy = [
        until_stop(row, (EOS,))
        for row in greedy_translate(model, ids, mask, BOS, EOS, **CONSTRAINED).tolist()
    ]
    # with a length penalty only early stopping keeps beam 1 from waiting for a better end
    beam = beam_search(
        model, ids, mask, BOS, EOS, beam_size=1, alpha=alpha, early_stopping=True, **CONSTRAINED
    )
    assert [h.tokens for h in beam] == greedy


@pytest.mark.parametrize("penalty", ["gnmt", "exponent"])
def test_constrained_batch_equals_one_at_a_time_and_cached_equals_uncached(model, penalty):
    ids, mask = repetitive_sources()
    options = dict(beam_size=4, alpha=1.0, penalty=penalty, **CONSTRAINED)
    batched = beam_search(model, ids, mask, BOS, EOS, **options)
    uncached = beam_search(model, ids, mask, BOS, EOS, use_cache=False, **options)
    assert [h.tokens for h in batched] == [h.tokens for h in uncached]
    assert [h.score for h in batched] == pytest.approx([h.score for h in uncached], abs=1e-4)
    for row in range(ids.size(0)):
        n = int(mask[row].sum())
        [single] = beam_search(model, ids[row : row + 1, :n], None, BOS, EOS, **options)
        assert single.tokens == batched[row].tokens
        assert single.score == pytest.approx(batched[row].score, abs=1e-4)
        if single.complete:  # the score is the hypothesis' own, under this penalty form
            own = sequence_score(
                model, ids[row : row + 1, :n], single.tokens, BOS, EOS, 1.0, penalty
            )
            assert own == pytest.approx(single.score, abs=1e-4)


def test_early_stopping_never_beats_the_exact_stop(model):
    ids, mask = sources((4, 6, 8, 5, 7, 3))
    exact = beam_search(model, ids, mask, BOS, EOS, beam_size=3, alpha=1.0, extra_length=10)
    early = beam_search(
        model, ids, mask, BOS, EOS, beam_size=3, alpha=1.0, extra_length=10, early_stopping=True
    )
    for e, x in zip(early, exact, strict=True):
        assert (e.complete, e.score) <= (x.complete, x.score + 1e-6)


def test_decoding_settings_are_checked():
    from modules.seq2seq import Decoding

    with pytest.raises(ValueError, match="beam_size=0"):
        Decoding(beam_size=0)
    with pytest.raises(ValueError, match="penalty='cubic'"):
        Decoding(penalty="cubic")  # type: ignore[arg-type]
    assert Decoding().replace(beam_size=None, min_length=3) == Decoding(min_length=3)
