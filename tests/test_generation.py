"""Decoder-only generation: cache, padding, sampling controls, HF parity, context limits."""

import pytest
import torch

from modules.generation import Sampling, generate, next_token
from modules.models import DecoderConfig, DecoderTransformer

PROMPTS = [[5, 17, 42, 9, 100, 3, 77], [8, 8, 2], [300, 1, 2, 3, 4]]


def model(**overrides) -> DecoderTransformer:
    torch.manual_seed(0)
    return DecoderTransformer(DecoderConfig.from_preset("tiny", **overrides)).eval()


@pytest.mark.parametrize("variant", [{}, {"positions": "rotary", "n_kv_heads": 2}])
def test_cached_equals_uncached(variant):
    gpt = model(**variant)
    greedy = [generate(gpt, PROMPTS, 24, use_cache=c) for c in (True, False)]
    assert greedy[0] == greedy[1]
    sampling = Sampling(temperature=0.9, top_k=50, top_p=0.9, repetition_penalty=1.2)
    sampled = [
        generate(
            gpt, PROMPTS, 24, sampling, generator=torch.Generator().manual_seed(3), use_cache=c
        )
        for c in (True, False)
    ]
    assert sampled[0] == sampled[1]


def test_left_padded_batch_equals_one_prompt_at_a_time():
    gpt = model()
    batch = generate(gpt, PROMPTS, 16)
    for prompt, continuation in zip(PROMPTS, batch, strict=True):
        assert generate(gpt, [prompt], 16)[0] == continuation


def test_greedy_matches_hf_generate_with_imported_weights():
    transformers = pytest.importorskip("transformers")
    from modules.interop import from_hf

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=400,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    ours = from_hf(hf).eval()
    longest = max(len(p) for p in PROMPTS)
    input_ids = torch.tensor([[0] * (longest - len(p)) + p for p in PROMPTS])
    attention_mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in PROMPTS])
    expected = hf.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=20,
        min_new_tokens=20,
        do_sample=False,
        pad_token_id=0,
    )[:, longest:]
    assert generate(ours, PROMPTS, 20) == expected.tolist()


def test_sampling_controls():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert next_token(logits, None, Sampling(temperature=1.0, top_k=1), gen).unique().tolist() == [
        0
    ]
    top2 = next_token(logits, None, Sampling(temperature=1.0, top_k=2), gen).unique().tolist()
    assert top2 == [0, 1]
    # softmax([2, 1, 0.5, -1, -3]) = [.607, .223, .135, .030, .004]: the smallest set reaching
    # top_p 0.8 is two tokens (.83), reaching 0.85 three (.965)
    for top_p, kept in ((0.8, [0, 1]), (0.85, [0, 1, 2])):
        nucleus = next_token(logits, None, Sampling(temperature=1.0, top_p=top_p), gen)
        assert nucleus.unique().tolist() == kept
    hot = next_token(logits, None, Sampling(temperature=100.0), gen).bincount(minlength=5)
    assert hot.min() > 250  # a high temperature flattens the distribution
    seen = torch.zeros(1, 5, dtype=torch.bool)
    seen[0, 0] = True
    penalised = next_token(logits[:1], seen, Sampling(repetition_penalty=3.0), None)
    assert penalised.item() == 1  # 2.0 / 3 < 1.0


def test_stop_tokens_end_each_row():
    gpt = model()
    free = generate(gpt, PROMPTS, 12)
    stop = free[0][3]
    stopped = generate(gpt, PROMPTS, 12, stop_ids=(stop,))
    for full, cut in zip(free, stopped, strict=True):
        expected = full[: full.index(stop)] if stop in full else full
        assert cut == expected


def test_context_limits():
    gpt = model(max_length=32)
    with pytest.raises(ValueError, match="at least one token"):
        generate(gpt, [[]], 4)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generate(gpt, PROMPTS, 0)
    with pytest.raises(ValueError, match=r"prompt of 30 tokens \+ max_new_tokens=5 exceeds .* 32"):
        generate(gpt, [list(range(30))], 5)
    long_prompt = list(range(1, 41))  # longer than the context itself
    slid = generate(gpt, [long_prompt], 10, overflow="slide")
    assert len(slid) == 1 and len(slid[0]) == 10
    # sliding = feeding the last 32 tokens each step, as nanoGPT does
    window = list(long_prompt)
    expected = []
    for _ in range(10):
        logits = gpt(torch.tensor([window[-32:]]))
        expected.append(int(logits[0, -1].argmax()))
        window.append(expected[-1])
    assert slid[0] == expected
    fits = generate(gpt, [list(range(1, 21))], 30, overflow="slide")  # starts cached, then slides
    assert len(fits[0]) == 30


def shifted_reference(gpt: DecoderTransformer, prompt: list[int], steps: int) -> list[int]:
    """A sampled continuation by whole forwards over the window since the last shift: when a
    token does not fit in the context, the window restarts at its newest half."""
    context, generator = gpt.cfg.max_length, torch.Generator().manual_seed(0)
    history, start, out = list(prompt), max(0, len(prompt) - context), []
    for _ in range(steps):
        if len(history) - start > context:
            start = len(history) - context // 2
        logits = gpt(torch.tensor([history[start:]]))[:, -1]
        out.append(int(next_token(logits, None, Sampling(temperature=1.0), generator)))
        history.append(out[-1])
    return out


@pytest.mark.parametrize("variant", [{}, {"positions": "rotary", "n_kv_heads": 2}])
def test_shifted_window_continues_on_the_newest_half(variant):
    gpt = model(max_length=16, **variant)
    with torch.no_grad():  # peaked logits: what a random model writes hardly depends on context
        for weight in gpt.parameters():
            if weight.dim() > 1:
                weight.mul_(10)

    def shifted(prompts: list[list[int]], **options) -> list[list[int]]:
        generator = torch.Generator().manual_seed(0)
        return generate(gpt, prompts, 40, Sampling(temperature=1.0), generator=generator, **options)

    for prompt in ([3, 1, 4, 1, 5], list(range(1, 21))):  # fits; longer than the context
        cached = shifted([prompt], overflow="shift")
        assert cached[0] == shifted_reference(gpt, prompt, 40)
        assert shifted([prompt], overflow="shift", use_cache=False) == cached
    # within the context both are the plain continuation: 5 + 11 tokens fill it, the 12th
    # is still predicted from all 16
    fitting = shifted([[3, 1, 4, 1, 5]], overflow="shift")[0]
    slid = shifted([[3, 1, 4, 1, 5]], overflow="slide")[0]
    assert fitting[:12] == slid[:12] and fitting != slid
    # a batch shifts all its rows when the longest one's window is full: that row's text is
    # its text alone, the left-padded rows' until then (greedy: batch rows draw differently)
    batch = generate(gpt, PROMPTS, 40, overflow="shift")
    assert batch[0] == generate(gpt, PROMPTS[:1], 40, overflow="shift")[0]
    for prompt, continuation in zip(PROMPTS[1:], batch[1:], strict=True):
        before_shift = 16 - len(PROMPTS[0]) + 1
        alone = generate(gpt, [prompt], 40, overflow="shift")[0]
        assert continuation[:before_shift] == alone[:before_shift]
    with pytest.raises(ValueError, match="overflow='wrap'"):
        generate(gpt, PROMPTS, 4, overflow="wrap")  # type: ignore[arg-type]


def test_bad_sampling_values():
    with pytest.raises(ValueError, match="top_p=1.5"):
        Sampling(top_p=1.5)
    with pytest.raises(ValueError, match="temperature=-1"):
        Sampling(temperature=-1)
