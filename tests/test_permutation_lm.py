"""Permutation LM (XLNet): two-stream attention sees only what the factorisation order allows
(checked with autograd on both attention paths), the partial-prediction targets, and the
checkpoint as an encoder for fine-tuning and the tools."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.permutation_lm import PermutationLMCollator, span_targets
from modules.attention import recorded_attention
from modules.codec import IGNORE, Codec
from modules.config import EncoderConfig
from modules.masks import causal_mask, two_stream_mask
from modules.models import EncoderTransformer, QueryStream, TwoStream
from modules.tasks import (
    PermutationLMModule,
    QuestionAnsweringModule,
    SequenceClassificationModule,
    load_task,
)
from tests.cli_helpers import CONFIGS, metric_by_step, run_cli, run_cli_process
from tests.codecs import toy_codec
from tests.test_training import only_run

SIZES = dict(d_model=32, n_heads=4, n_layers=2, d_ff=64, vocab_size=60, max_length=64)


def rows(*lengths: int) -> list[dict[str, list[int]]]:
    """[CLS] w.. [SEP] rows of toy-codec ids (<s> 1, </s> 2)."""
    return [{"input_ids": [1, *(4 + (7 * i + n) % 56 for i in range(n)), 2]} for n in lengths]


def encoder(positions: str = "learned") -> tuple[EncoderTransformer, QueryStream]:
    torch.manual_seed(0)
    cfg = EncoderConfig.from_preset("tiny", **SIZES, positions=positions, dropout=0.0)
    return EncoderTransformer(cfg).eval(), QueryStream(cfg)


def test_identity_order_with_every_position_a_target_gives_the_causal_masks():
    length = 7
    mask = two_stream_mask(
        torch.arange(1, length + 1)[None], torch.ones(1, length), torch.arange(length)[None]
    )
    assert mask.shape == (1, 1, 2 * length, length)
    assert torch.equal(mask[0, 0, :length], causal_mask(length, length))
    assert torch.equal(mask[0, 0, length:], causal_mask(length, length).tril(-1))


def test_partial_prediction_targets():
    codec = toy_codec(60)
    examples = rows(120, 64, 3, 1, 0) * 8
    collate = PermutationLMCollator(codec, k=6, max_span=5, seed=0)
    state = torch.get_rng_state()
    batch = collate(examples)
    assert torch.equal(torch.get_rng_state(), state)  # training randomness untouched
    again = collate(examples)
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # fixed per batch
    other = collate(examples[1:] + examples[:1])
    assert not torch.equal(other["ranks"], batch["ranks"][list(range(1, 40)) + [0]])

    ids, labels, ranks = batch["input_ids"], batch["labels"], batch["ranks"]
    target = labels != IGNORE
    padded, _ = codec.pad([e["input_ids"] for e in examples])
    assert torch.equal(ids, padded)  # the real tokens, no [MASK]
    special = torch.isin(ids, torch.tensor(codec.special_ids)) | (batch["attention_mask"] == 0)
    assert not (target & special).any()  # never padding or special tokens
    real = (~special).sum()
    assert abs(target.sum() / real - 1 / 6) < 0.03  # about one token in K
    # the targets rank 1..n in some order, everything else 0
    for row in range(len(examples)):
        n = int(target[row].sum())
        assert sorted(ranks[row][target[row]].tolist()) == list(range(1, n + 1))
        assert (ranks[row][~target[row]] == 0).all()
        slots = batch["target_positions"][row]
        assert sorted(slots[:n].tolist()) == target[row].nonzero().flatten().tolist()
        assert (slots[n:] == 0).all()  # the filler points at [CLS]
    # no row of either stream sees nothing; non-targets see exactly the real non-targets
    mask = two_stream_mask(ranks, batch["attention_mask"], batch["target_positions"])[:, 0]
    assert mask.any(-1).all()
    content = mask[:, : ids.size(1)]
    context = (~target & (batch["attention_mask"] == 1))[:, None, :].expand_as(content)
    assert torch.equal(content[~target], context[~target])


def test_spans_and_ratio_follow_k_and_max_span():
    torch.manual_seed(0)
    eligible = [True] * 600
    everything = span_targets(eligible, torch.rand(1200).tolist(), k=1, max_span=5)
    assert everything == list(range(600))
    singles = span_targets(eligible, torch.rand(1200).tolist(), k=3, max_span=1)
    assert abs(len(singles) / 600 - 1 / 3) < 0.05
    runs, run = [], 0
    for p in range(600):  # with k=50 spans never touch: each run is one span
        run = run + 1 if p in set(span_targets(eligible, [0.999, 0.0] * 600, 50, 5)) else 0
        runs.append(run)
    assert max(runs) == 5  # a draw near 1 gives the longest span, 5
    with pytest.raises(ValueError, match="partial_prediction_k=0"):
        PermutationLMCollator(toy_codec(60), k=0)


def streams(
    model: EncoderTransformer, batch: dict[str, torch.Tensor], start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The content and the query stream of a permutation-LM batch."""
    order = TwoStream(batch["ranks"], batch["target_positions"], start)
    hidden = model(batch["input_ids"], batch["attention_mask"], two_stream=order)
    length = batch["input_ids"].size(1)
    return hidden[:, :length], hidden[:, length:]


def with_token_grads(model: EncoderTransformer):
    """Replaces the token embeddings' output by a leaf, so gradients per input token show."""
    leaf: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        leaf["x"] = output.detach().requires_grad_()
        return leaf["x"]

    return leaf, model.embed.tokens.register_forward_hook(hook)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("path", ["sdpa", "math"])
def test_two_stream_sees_only_what_the_order_allows(path: str, positions: str):
    """Autograd: the query stream at a target depends on no token of that target or of any
    target after it in the order; a non-target's content depends on no target token."""
    model, query_stream = encoder(positions)
    batch = PermutationLMCollator(toy_codec(60), k=3)(rows(20, 11, 6))
    leaf, handle = with_token_grads(model)
    with recorded_attention(model) if path == "math" else nullcontext():
        content, query = streams(model, batch, query_stream.start)
    handle.remove()
    ranks, real = batch["ranks"], batch["attention_mask"].bool()
    probe = torch.randn(32)  # a sum would see nothing through the final LayerNorm
    checked = 0
    for row in range(ranks.size(0)):
        targets = batch["target_positions"][row][: int((ranks[row] > 0).sum())]
        assert len(targets) >= 2
        for slot, position in enumerate(targets.tolist()):
            (grad,) = torch.autograd.grad(query[row, slot] @ probe, leaf["x"], retain_graph=True)
            seen = grad[row].abs().sum(-1) > 0
            later = ranks[row] >= ranks[row, position]
            assert not seen[later].any(), (row, position)
            assert torch.equal(seen, real[row] & ~later)  # and everything earlier is seen
            assert grad[torch.arange(3) != row].abs().max() == 0
            checked += 1
        for position in (~(ranks[row] > 0) & real[row]).nonzero().flatten().tolist():
            (grad,) = torch.autograd.grad(
                content[row, position] @ probe, leaf["x"], retain_graph=True
            )
            seen = grad[row].abs().sum(-1) > 0
            assert torch.equal(seen, real[row] & (ranks[row] == 0)), (row, position)
    assert checked >= 6


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_two_stream_paths_agree_and_an_empty_row_gives_zeros_not_nan(positions: str):
    model, query_stream = encoder(positions)
    batch = PermutationLMCollator(toy_codec(60), k=3)(rows(20, 11, 6))
    fast = streams(model, batch, query_stream.start)
    with recorded_attention(model) as weights:
        slow = streams(model, batch, query_stream.start)
    for a, b in zip(fast, slow, strict=True):
        assert (a - b).abs().max() < 1e-5
    targets = batch["target_positions"].size(1)
    assert weights["stack.blocks.0.self_attn"].shape[-2:] == (22 + targets, 22)  # stacked rows
    # every position a target, the identity order: the first query row sees nothing
    ids = torch.randint(4, 60, (1, 6), dtype=torch.long)
    everything = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "ranks": torch.arange(1, 7)[None],
        "target_positions": torch.arange(6)[None],
    }
    start = query_stream.start.detach().requires_grad_()
    _, query = streams(model, everything, start)
    query.sum().backward()
    assert torch.isfinite(query).all() and torch.isfinite(start.grad).all()


def test_with_no_target_the_content_stream_is_the_encoder():
    model, query_stream = encoder()
    ids = torch.tensor([[1, 9, 8, 7, 2, 0], [1, 5, 2, 0, 0, 0]])
    mask = (ids != 0).long()
    nothing = {
        "input_ids": ids,
        "attention_mask": mask,
        "ranks": torch.zeros_like(ids),
        "target_positions": ids.new_zeros(2, 0),
    }
    content, query = streams(model, nothing, query_stream.start)
    assert query.shape == (2, 0, 32)
    assert (content - model(ids, mask))[mask.bool()].abs().max() < 1e-5


def test_task_trains_and_text_batches_have_no_targets():
    task = PermutationLMModule(codec=toy_codec(60), preset="tiny", arch=SIZES)
    batch = PermutationLMCollator(task.codec, k=3)(rows(20, 11, 6))
    out = task.step(batch)
    assert out.count == (batch["labels"] != IGNORE).sum()
    out.loss_sum.backward()
    assert task.query_stream.start.grad.abs().sum() > 0
    one = task.text_batch("w5 w6 w7")
    assert one["target_positions"].shape == (1, 0) and task.step(one).count == 0
    first = task.first_example(batch, max_length=8)
    assert first["input_ids"].shape == first["ranks"].shape == (1, 8)


def write_text(folder: Path) -> Path:
    folder.mkdir()
    words = [
        "the",
        "permutation",
        "language",
        "model",
        "predicts",
        "every",
        "target",
        "in",
        "a",
        "random",
        "order",
    ]
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    for split in ("train", "validation"):
        (folder / f"{split}.txt").write_text("\n".join(lines * 4))
    return folder


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_permutation_lm_checkpoint_fine_tunes_and_serves_the_tools(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    text = write_text(tmp_path / "text")
    run_cli(
        [
            "fit",
            "-c",
            str(CONFIGS / "xlnet" / "pydocs-plm.yaml"),
            f"--runs_dir={tmp_path / 'runs'}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.preset=tiny",
            '--model.init_args.arch={"max_length": 64}',
            "--data.init_args.source=" + json.dumps({"kind": "local", "name": str(text)}),
            "--data.init_args.tokenizer.vocab_size=200",
            "--data.init_args.max_length=32",
            "--data.init_args.batch_size=4",
        ]
    )
    run = only_run(tmp_path / "runs")
    assert metric_by_step(run, "val/loss") and metric_by_step(run, "val/accuracy")
    checkpoint = run / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert "query_stream.start" in state["state_dict"]
    codec = Codec.from_state(state["codec"])
    encoder_weights = {k: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    for cls, args in (
        (SequenceClassificationModule, {"num_classes": 3}),
        (QuestionAnsweringModule, {}),
    ):
        task = cls(codec=codec, init_from=str(checkpoint), **args)
        ours = task.state_dict()
        shared = {k: v for k, v in encoder_weights.items() if k in ours}
        assert shared and all(torch.equal(ours[k], v) for k, v in shared.items())
        assert not any("query_stream" in k for k in ours)

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("the model predicts\nevery target\n")
    run_cli(["embed", str(checkpoint), "--input", str(sentences), "--output", f"{tmp_path}/e.npy"])
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.shape == (2, load_task(checkpoint).model.cfg.d_model)
    run_cli(["attention", str(checkpoint), "the model predicts", "--out", str(tmp_path / "maps")])
    assert (tmp_path / "maps" / "stack-blocks-0-self_attn.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_reproduces_an_uninterrupted_permutation_lm_run(tmp_path: Path, monkeypatch):
    """Dropout on, targets drawn per batch: a run cut at step 4 and resumed logs the losses of
    the uninterrupted run."""
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    text = write_text(tmp_path / "text")
    common = [
        "-c",
        str(CONFIGS / "xlnet" / "pydocs-plm.yaml"),
        "--trainer.max_steps=8",
        "--trainer.val_check_interval=4",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.preset=tiny",
        '--model.init_args.arch={"max_length": 64, "dropout": 0.1}',
        "--data.init_args.source=" + json.dumps({"kind": "local", "name": str(text)}),
        "--data.init_args.tokenizer.vocab_size=200",
        "--data.init_args.max_length=32",
        "--data.init_args.batch_size=4",
    ]
    run_cli(["fit", *common, f"--runs_dir={tmp_path / 'full'}"])
    run_cli(["fit", *common, f"--runs_dir={tmp_path / 'cut'}", "--trainer.max_steps=4"])
    run_cli(["fit", *common, f"--runs_dir={tmp_path / 'cut'}", "--ckpt_path=last"])
    full, cut = only_run(tmp_path / "full"), only_run(tmp_path / "cut")
    expected, resumed = metric_by_step(full, "train/loss"), metric_by_step(cut, "train/loss")
    assert sorted(resumed) == sorted(expected) == list(range(8))
    for step in range(8):
        assert abs(expected[step] - resumed[step]) < 1e-5, step
    assert metric_by_step(full, "val/loss") == pytest.approx(
        metric_by_step(cut, "val/loss"), abs=1e-5
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_ddp_trains_a_permutation_lm(tmp_path: Path):
    """Two CPU processes (gloo): every parameter gets a gradient (the pooler, trained only by
    fine-tuning, is frozen), every step and validation is logged. The targets are drawn per
    rank's half-batch, so the losses are not those of one process (as for the masked LM)."""
    text = write_text(tmp_path / "text")
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    done = run_cli_process(
        [
            "fit",
            "-c",
            str(CONFIGS / "xlnet" / "pydocs-plm.yaml"),
            f"--runs_dir={tmp_path / 'runs'}",
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--model.init_args.preset=tiny",
            '--model.init_args.arch={"max_length": 64}',
            "--data.init_args.source=" + json.dumps({"kind": "local", "name": str(text)}),
            "--data.init_args.tokenizer.vocab_size=200",
            "--data.init_args.max_length=32",
            "--data.init_args.batch_size=8",
        ],
        env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = only_run(tmp_path / "runs")
    assert sorted(metric_by_step(run, "train/loss")) == [0, 1, 2, 3]
    losses = metric_by_step(run, "val/loss")
    assert len(losses) == 2 and all(np.isfinite(list(losses.values())))
