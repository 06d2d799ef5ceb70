"""The attention core: SDPA path against the math path, masks, GQA, rotary, KV cache."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from modules.attention import KVCache, MultiHeadAttention, attention_math
from modules.masks import make_mask
from modules.positions import RotaryEmbedding

TOL = 1e-5


def _attention(**kwargs) -> MultiHeadAttention:
    return MultiHeadAttention(d_model=32, n_heads=4, **kwargs).eval()


def _both_paths(attn: MultiHeadAttention, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    fast = attn(*args, **kwargs)
    attn.record_weights = True
    slow = attn(*args, **kwargs)
    attn.record_weights = False
    return fast, slow


@pytest.mark.parametrize(("n_kv_heads", "key_dim"), [(None, None), (2, None), (1, None), (2, 4)])
@pytest.mark.parametrize("case", ["full", "causal", "padded", "padded-causal"])
def test_sdpa_equals_math(case, n_kv_heads, key_dim):
    attn = _attention(n_kv_heads=n_kv_heads, key_dim=key_dim)
    x = torch.randn(3, 7, 32)
    attention_mask = None
    if "padded" in case:
        attention_mask = torch.ones(3, 7, dtype=torch.long)
        attention_mask[1, 4:] = 0
        attention_mask[2, 1:] = 0
    mask, is_causal = make_mask(attention_mask, 7, 7, causal="causal" in case)
    fast, slow = _both_paths(attn, x, mask=mask, is_causal=is_causal)
    assert (fast - slow).abs().max() < TOL


def test_cross_attention_equals_math_and_respects_source_padding():
    attn = _attention(cross=True)
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    source_mask = torch.ones(2, 9, dtype=torch.long)
    source_mask[0, 6:] = 0
    mask, _ = make_mask(source_mask, 5, 9, causal=False)
    fast, slow = _both_paths(attn, x, memory, mask=mask)
    assert (fast - slow).abs().max() < TOL
    # changing padded source positions changes nothing
    changed = memory.clone()
    changed[0, 6:] = torch.randn(3, 32)
    assert (attn(x, changed, mask=mask) - fast).abs().max() < TOL


def test_recorded_weights_are_distributions_over_visible_keys():
    attn = _attention()
    attention_mask = torch.tensor([[1, 1, 1, 0, 0]])
    mask, _ = make_mask(attention_mask, 5, 5, causal=True)
    attn.record_weights = True
    attn(torch.randn(1, 5, 32), mask=mask)
    weights = attn.weights
    assert weights.shape == (1, 4, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 4, 5))
    assert weights[..., 3:].abs().max() == 0  # padded keys get no weight
    assert torch.triu(weights[0, 0], diagonal=1).abs().max() == 0  # no look-ahead


BACKENDS = [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_fully_masked_rows_give_zeros_not_nan(backend):
    attn = _attention()
    x = torch.randn(2, 4, 32, requires_grad=True)
    attention_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])  # second row: nothing visible
    mask, _ = make_mask(attention_mask, 4, 4, causal=False)
    with sdpa_kernel([backend]):
        y = attn(x, mask=mask)
        y.sum().backward()
    bias = attn.out.bias
    assert torch.allclose(y[1], bias.expand(4, -1))  # zero attention, then the output bias
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())
    attn.record_weights = True
    slow = attn(x, mask=mask)
    assert torch.isfinite(slow).all() and (slow - y).abs().max() < TOL


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_left_padded_causal_rows_match_math_path_with_gradients(backend, dtype):
    # queries before a row's first real token see nothing; on CPU the kernel itself must
    # give them zeros and finite gradients (the core skips its guard there)
    attn = _attention(n_kv_heads=2).to(dtype)
    x = torch.randn(2, 6, 32, dtype=dtype, requires_grad=True)
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    mask, _ = make_mask(attention_mask, 6, 6, causal=True)
    with sdpa_kernel([backend]):
        fast = attn(x, mask=mask)
        (fast.float() ** 2).sum().backward()
    grads = [x.grad.clone(), *(p.grad.clone() for p in attn.parameters())]
    x.grad = None
    attn.zero_grad()
    attn.record_weights = True
    slow = attn(x, mask=mask)
    (slow.float() ** 2).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(fast[0, :2].float(), attn.out.bias.float().expand(2, -1))
    assert (fast - slow).abs().max() < tol
    slow_grads = [x.grad, *(p.grad for p in attn.parameters())]
    for fast_grad, slow_grad in zip(grads, slow_grads, strict=True):
        assert torch.isfinite(fast_grad).all()
        assert (fast_grad - slow_grad).abs().max() < tol * max(1.0, slow_grad.abs().max())


def test_math_path_zero_rows():
    q = torch.randn(1, 1, 2, 4)
    mask = torch.tensor([[True, False], [False, False]])[None, None]
    y, weights = attention_math(q, q, q, mask)
    assert torch.equal(y[0, 0, 1], torch.zeros(4)) and torch.equal(weights[0, 0, 1], torch.zeros(2))


def test_rotary_attention_equals_math_and_is_relative():
    attn = _attention(n_kv_heads=2)
    rotary = RotaryEmbedding(head_dim=8, max_length=64)
    x = torch.randn(1, 6, 32)
    rope = rotary(torch.arange(6)[None])
    fast, slow = _both_paths(attn, x, is_causal=True, rope=rope)
    assert (fast - slow).abs().max() < TOL
    # rotary scores depend only on relative positions: shifting every position changes nothing
    shifted = attn(x, is_causal=True, rope=rotary(torch.arange(10, 16)[None]))
    assert (shifted - fast).abs().max() < 1e-4


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_incremental_self_attention_with_cache_equals_full(n_kv_heads):
    attn = _attention(n_kv_heads=n_kv_heads)
    rotary = RotaryEmbedding(head_dim=8, max_length=64)
    x = torch.randn(2, 9, 32)
    full = attn(x, is_causal=True, rope=rotary(torch.arange(9)[None]))
    cache = KVCache(max_length=16)
    steps = []
    for start, end in [(0, 4), (4, 5), (5, 6), (6, 9)]:  # a prompt, single steps, a chunk
        mask, is_causal = make_mask(None, end - start, end, causal=True)
        rope = rotary(torch.arange(start, end)[None])
        steps.append(attn(x[:, start:end], mask=mask, is_causal=is_causal, rope=rope, cache=cache))
    assert cache.length == 9 and cache.keys.shape[1] == (n_kv_heads or 4)
    assert (torch.cat(steps, dim=1) - full).abs().max() < TOL


def test_cross_attention_cache_projects_source_once():
    attn = _attention(cross=True)
    memory = torch.randn(2, 7, 32)
    calls = []
    attn.kv.register_forward_hook(lambda *_: calls.append(1))
    cache = KVCache()
    first = attn(torch.randn(2, 1, 32), memory, cache=cache)
    x = torch.randn(2, 1, 32)
    second = attn(x, memory, cache=cache)
    assert len(calls) == 1 and cache.length == 7
    assert (second - attn(x, memory)).abs().max() < TOL and first.shape == (2, 1, 32)


def test_cache_overflow_and_reorder():
    cache = KVCache(max_length=3)
    k = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 2, 1)
    cache.append(k, k)
    with pytest.raises(ValueError, match="full"):
        cache.append(k, k)
    cache.reorder(torch.tensor([1, 1]))
    assert cache.cached()[0][:, 0, :, 0].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_construction_errors_name_the_values():
    with pytest.raises(ValueError, match="d_model=30.*n_heads=4"):
        MultiHeadAttention(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        MultiHeadAttention(d_model=32, n_heads=4, n_kv_heads=3)


def test_attention_dropout_only_in_training():
    attn = MultiHeadAttention(d_model=32, n_heads=4, dropout=0.5)
    x = torch.randn(2, 6, 32)
    attn.eval()
    assert torch.equal(attn(x), attn(x))
    attn.train()
    assert not torch.equal(attn(x), attn(x))


def test_key_dim_changes_only_queries_and_keys():
    attn = _attention(key_dim=2, n_kv_heads=2)
    assert attn.qkv.out_features == 4 * 2 + 2 * 2 + 2 * 8  # q: 4 heads x 2, k: 2 x 2, v: 2 x 8
    cross = _attention(key_dim=2, cross=True)
    assert cross.q.out_features == 8 and cross.kv.out_features == 4 * 2 + 32
    assert attn(torch.randn(2, 5, 32), is_causal=True).shape == (2, 5, 32)
