"""Fine-tuning from pretrained weights: a saved HF GPT-2 folder (with its tokenizer.json) into
CausalLMModule, and our own MLM checkpoint into the classifier."""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from modules.codec import Codec
from modules.tasks import CausalLMModule
from tests.cli_helpers import run_cli
from tests.codecs import toy_codec

transformers = pytest.importorskip("transformers")
TEXT = "the cat sat on the mat and the dog sat on the log while the bird sang " * 40


@pytest.fixture
def gpt2_folder(tmp_path: Path) -> Path:
    """A GPT-2 saved the way HF saves it, with a byte-level BPE tokenizer.json."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        [TEXT],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    folder = tmp_path / "gpt2"
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_causal_lm_starts_from_hf_gpt2_weights(gpt2_folder: Path):
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    vocab = hf.config.vocab_size
    codec = Codec(Tokenizer.from_file(str(gpt2_folder / "tokenizer.json")), "decoder")
    module = CausalLMModule(codec=codec, init_from=str(gpt2_folder), arch={"dropout": 0.0}).eval()
    ids = torch.randint(0, vocab, (2, 10))
    with torch.no_grad():
        assert (module.model(ids) - hf(ids).logits).abs().max() < 1e-4
    with pytest.raises(ValueError, match="vocabulary of"):
        CausalLMModule(codec=toy_codec(vocab + 1, "decoder"), init_from=str(gpt2_folder))
    with pytest.raises(ValueError, match="cannot change the pretrained weights"):
        CausalLMModule(codec=codec, init_from=str(gpt2_folder), arch={"d_model": 64})


def test_fine_tune_gpt2_through_the_cli(gpt2_folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    (tmp_path / "text").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "text" / f"{split}.txt").write_text(TEXT)
    run_cli(
        [
            "fit",
            "-c",
            "experiments/configs/gpt/pydocs-tiny.yaml",
            f"--runs_dir={tmp_path / 'runs'}",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            "--trainer.enable_progress_bar=false",
            f"--model.init_args.init_from={gpt2_folder}",
            '--model.init_args.arch={"dropout": 0.0}',
            "--data.init_args.source="
            + json.dumps({"kind": "local", "name": str(tmp_path / "text")}),
            f"--data.init_args.tokenizer.path={gpt2_folder / 'tokenizer.json'}",
            "--data.init_args.max_length=32",
            "--data.init_args.batch_size=4",
        ]
    )
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["steps"] == 3 and "2 layers" in summary["model"]


def test_classifier_starts_from_our_mlm_checkpoint(tmp_path: Path, monkeypatch):
    from modules.tasks import SequenceClassificationModule

    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    (tmp_path / "text").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "text" / f"{split}.txt").write_text(TEXT.replace(" and ", "\n"))
    run_cli(
        [
            "fit",
            "-c",
            "experiments/configs/bert/pydocs-mlm.yaml",
            f"--runs_dir={tmp_path / 'runs'}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.preset=tiny",
            '--model.init_args.arch={"max_length": 64}',
            "--data.init_args.source="
            + json.dumps({"kind": "local", "name": str(tmp_path / "text")}),
            "--data.init_args.tokenizer.vocab_size=200",
            "--data.init_args.max_length=32",
            "--data.init_args.batch_size=4",
        ]
    )
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    state = torch.load(checkpoint, weights_only=True)
    classifier = SequenceClassificationModule(
        codec=Codec.from_state(state["codec"]),
        num_classes=3,
        init_from=str(checkpoint),
    )
    encoder_weights = {k: v for k, v in state["state_dict"].items() if k.startswith("model.stack.")}
    ours = classifier.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in encoder_weights.items())
    assert classifier.model.mlm_head is None and classifier.head[1].out_features == 3
