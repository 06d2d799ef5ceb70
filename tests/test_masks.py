import pytest
import torch

from modules.masks import causal_mask, make_mask


def test_causal_mask_is_lower_triangular_when_square():
    assert torch.equal(causal_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())


def test_causal_mask_right_aligned_for_cached_keys():
    # two new queries after three cached positions see the cache and themselves
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    assert torch.equal(causal_mask(2, 5), expected)


def test_no_padding_uses_fast_paths():
    assert make_mask(None, 4, 4, causal=False) == (None, False)
    assert make_mask(None, 4, 4, causal=True) == (None, True)
    assert make_mask(None, 1, 9, causal=True) == (None, False)  # one step sees the whole cache
    mask, is_causal = make_mask(None, 2, 5, causal=True)
    assert not is_causal and torch.equal(mask, causal_mask(2, 5))


def test_padding_and_combined_masks():
    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mask, is_causal = make_mask(attention_mask, 3, 3, causal=False)
    assert not is_causal and mask.shape == (2, 1, 1, 3)
    assert mask[1, 0, 0].tolist() == [True, True, False]
    mask, _ = make_mask(attention_mask, 3, 3, causal=True)
    assert mask.shape == (2, 1, 3, 3)
    assert mask[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_mask_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(batch, 4\)"):
        make_mask(torch.ones(2, 5), 4, 4, causal=False)
    with pytest.raises(ValueError, match="expected"):
        make_mask(torch.ones(2, 1, 4), 4, 4, causal=False)
