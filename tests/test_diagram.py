"""The architecture diagram's structure is the model as built: boxes and their order, masks,
residual and cross-attention edges, shares; the SVG is well-formed and every box links to its
code and its paper."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from experiments.architecture import sample_batch
from experiments.diagram import TERMINALS, Diagram, mask_kind, task_diagram
from experiments.diagram_papers import (
    GQA,
    LABEL_SMOOTHING,
    PRE_LN,
    RMSNORM,
    ROPE,
    SWIGLU,
    XLNET_OBJECTIVE,
    XLNET_TWO_STREAM,
)
from experiments.diagram_render import write
from experiments.trace import trace
from modules.attention import MultiHeadAttention
from modules.masks import make_mask
from modules.tasks import (
    CausalLMModule,
    MaskedLMModule,
    PermutationLMModule,
    QuestionAnsweringModule,
    SequenceClassificationModule,
    TaskModule,
    TranslationModule,
)
from tests.codecs import toy_codec

VOCAB = 96


def diagram_of(task: TaskModule, length: int = 12) -> Diagram:
    torch.manual_seed(0)
    return task_diagram(task.eval(), sample_batch(task, 2, length))


def translation(**arch) -> TranslationModule:
    return TranslationModule(codec=toy_codec(VOCAB, "encoder-decoder"), preset="tiny", arch=arch)


def kinds(diagram: Diagram, column: str) -> list[str]:
    return [b.kind for b in diagram.column(column).boxes() if b.used]


def assert_accounted(diagram: Diagram, task: TaskModule, length: int = 12) -> None:
    """Every parameter in exactly one box, every counted FLOP in one box: shares sum to 100%."""
    boxes = list(diagram.boxes())
    assert sum(b.params for b in boxes) == sum(p.numel() for p in task.parameters())
    assert diagram.total_params == sum(p.numel() for p in task.parameters())
    torch.manual_seed(0)
    assert sum(b.flops for b in boxes) == trace(task, sample_batch(task, 2, length)).total_flops
    assert sum(diagram.param_share(b) for b in boxes) == pytest.approx(100)
    assert sum(diagram.flop_share(b) for b in boxes) == pytest.approx(100)
    for box in boxes:
        twin = box.id.startswith("query.")  # XLNet's query stream: the content stream's blocks
        if (box.kind in ("attention", "feed_forward") and not twin) or (
            box.kind == "head" and box.used
        ):
            assert box.flops > 0, box.id


def residuals(diagram: Diagram) -> dict[str, str]:
    return {e.target: e.source for e in diagram.edges_of("residual")}


def test_encoder_decoder_post_ln_as_the_paper():
    task = translation()
    d = diagram_of(task)
    assert [c.name for c in d.columns] == ["encoder", "decoder"]
    sublayer = ["attention", "add_norm"]
    assert kinds(d, "encoder") == [
        "input", "embedding", "positions", *sublayer, "feed_forward", "add_norm",
    ]  # fmt: skip
    assert kinds(d, "decoder") == [
        "input", "embedding", "positions", *sublayer, *sublayer, "feed_forward", "add_norm",
        "head", "softmax", "output",
    ]  # fmt: skip
    encoder, decoder = d.column("encoder").stack, d.column("decoder").stack
    assert (encoder.n_layers, decoder.n_layers) == (2, 2)
    assert (encoder.norm, decoder.norm, encoder.causal, decoder.causal) == (
        "post", "post", False, True,
    )  # fmt: skip
    assert [s.kind for s in decoder.sublayers] == [
        "self_attention", "cross_attention", "feed_forward",
    ]  # fmt: skip
    assert d.box("encoder.self_attn").mask == "padding"
    assert d.box("decoder.self_attn").mask == "causal"
    assert d.box("decoder.cross_attn").mask == "padding"  # the source's padding
    assert d.box("encoder.positions").label == "Positional Encoding"
    assert d.box("encoder.positions").params == 0  # a fixed table
    # each residual goes around one sublayer into its Add & Norm
    assert residuals(d) == {
        "encoder.self_attn.add_norm": "encoder.tokens",
        "encoder.ffn.add_norm": "encoder.self_attn.add_norm",
        "decoder.self_attn.add_norm": "decoder.tokens",
        "decoder.cross_attn.add_norm": "decoder.self_attn.add_norm",
        "decoder.ffn.add_norm": "decoder.cross_attn.add_norm",
    }
    [cross] = d.edges_of("cross")
    assert (cross.source, cross.target) == ("encoder.ffn.add_norm", "decoder.cross_attn")
    assert cross.shape == (2, 12, 64)
    # one matrix for both embeddings and the output projection (section 3.4)
    assert d.box("encoder.tokens").params == VOCAB * 64
    assert d.box("decoder.tokens").params == 0 and "shared" in d.box("decoder.tokens").detail
    assert d.box("lm_head").params == 0 and "tied" in d.box("lm_head").detail
    assert d.box("lm_head").shape == (2, 9, VOCAB)
    assert LABEL_SMOOTHING in d.box("objective").refs
    assert_accounted(d, task)


def test_encoder_decoder_pre_ln_has_norms_before_sublayers_and_a_final_norm():
    task = translation(pre_norm=True, tie_embeddings=False)
    d = diagram_of(task)
    assert kinds(d, "encoder") == [
        "input", "embedding", "positions", "norm", "attention", "add", "norm", "feed_forward",
        "add", "norm",
    ]  # fmt: skip
    assert d.box("encoder.final_norm").refs[0] == PRE_LN
    [cross] = d.edges_of("cross")
    assert cross.source == "encoder.final_norm"  # the memory is the normalised output
    assert residuals(d)["decoder.cross_attn.add"] == "decoder.self_attn.add"
    assert d.box("decoder.tokens").params == VOCAB * 64  # untied: its own matrix
    assert d.box("lm_head").params == 64 * VOCAB and "untied" in d.box("lm_head").detail
    assert_accounted(d, task)


def test_decoder_only_pre_ln_gpt():
    task = CausalLMModule(codec=toy_codec(VOCAB, "decoder"), preset="tiny")
    d = diagram_of(task)
    assert [c.name for c in d.columns] == ["decoder"]
    assert kinds(d, "decoder") == [
        "input", "embedding", "positions", "norm", "attention", "add", "norm", "feed_forward",
        "add", "norm", "head", "softmax", "output",
    ]  # fmt: skip
    attention = d.box("decoder.self_attn")
    assert attention.mask == "causal" and attention.label.startswith("Masked")
    assert d.box("decoder.positions").params == 128 * 64  # learned: max_length x d_model
    assert d.box("lm_head").params == 0  # tied (GPT-2)
    assert d.edges_of("cross") == []
    assert_accounted(d, task)


def test_decoder_only_with_gqa_rope_rmsnorm_swiglu_untied():
    arch = dict(
        n_kv_heads=2, positions="rotary", norm="rmsnorm", activation="swiglu", tie_embeddings=False
    )
    task = CausalLMModule(codec=toy_codec(VOCAB, "decoder"), preset="tiny", arch=arch)
    d = diagram_of(task)
    assert "positions" not in kinds(d, "decoder")  # RoPE acts inside attention
    attention = d.box("decoder.self_attn")
    assert "4 heads × d_k 16" in attention.detail and "2 K/V heads" in attention.detail
    assert "RoPE" in attention.detail and {GQA, ROPE} <= set(attention.refs)
    assert d.box("decoder.self_attn.norm").label == "RMSNorm"
    assert RMSNORM in d.box("decoder.final_norm").refs
    assert SWIGLU in d.box("decoder.ffn").refs
    assert d.box("lm_head").params == 64 * VOCAB
    block = task.model.stack.blocks[0]
    assert d.box("decoder.self_attn").params == 2 * sum(
        p.numel() for p in block.self_attn.parameters()
    )
    assert_accounted(d, task)


def test_encoder_only_mlm_with_its_unused_pooler():
    task = MaskedLMModule(codec=toy_codec(VOCAB), preset="tiny")
    d = diagram_of(task)
    assert [c.name for c in d.columns] == ["encoder"]
    assert kinds(d, "encoder") == [
        "input", "embedding", "positions", "norm", "attention", "add_norm", "feed_forward",
        "add_norm", "head", "softmax", "output",
    ]  # fmt: skip
    assert d.box("encoder.self_attn").mask == "padding"
    assert d.box("encoder.tokens").label == "Token + Segment Embedding"
    assert d.box("mlm_head").label == "MLM Head" and "tied" in d.box("mlm_head").detail
    pooler = d.box("pooler")
    assert not pooler.used and pooler.flops == 0 and pooler.params > 0
    assert all(pooler.id not in (e.source, e.target) for e in d.edges)
    assert_accounted(d, task)


def test_permutation_lm_draws_two_streams_over_one_stack(tmp_path: Path):
    task = PermutationLMModule(codec=toy_codec(VOCAB), preset="tiny")
    d = diagram_of(task)
    assert [c.name for c in d.columns] == ["encoder", "query"]
    assert kinds(d, "encoder") == [
        "input", "embedding", "positions", "norm", "attention", "add_norm", "feed_forward",
        "add_norm", "output",
    ]  # fmt: skip
    assert kinds(d, "query") == [
        "input", "embedding", "positions", "norm", "attention", "add_norm", "feed_forward",
        "add_norm", "head", "softmax", "output",
    ]  # fmt: skip
    # one stack: the query stream's blocks hold no weights and FLOPs of their own
    stack = [b for s in d.column("query").stack.sublayers for b in s.boxes]
    assert all(b.params == 0 and b.flops == 0 for b in stack)
    assert d.box("query.start").params == task.query_stream.start.numel()
    assert XLNET_TWO_STREAM in d.box("query.start").refs
    assert d.box("encoder.self_attn").mask == "factorisation order"
    # keys and values of the query stream come from the content stream, into its attention
    [cross] = d.edges_of("cross")
    assert cross.target == "query.self_attn" and cross.source == "encoder.embedding_norm"
    assert residuals(d)["query.self_attn.add_norm"] == "query.embedding_norm"
    # the head and the loss sit on the query stream, with the shape of the targets
    targets = sample_batch(task, 2, 12)["target_positions"].shape
    assert d.box("query.self_attn").shape == (*targets, task.model.cfg.d_model)
    assert d.column("query").above[0].id == "mlm_head"
    assert d.box("encoder.output").shape == (2, 12, task.model.cfg.d_model)
    assert XLNET_OBJECTIVE in d.box("objective").refs
    assert_accounted(d, task)
    [svg] = [p for p in write(d, tmp_path, "plm") if p.suffix == ".svg"]
    ET.parse(svg)
    assert "query-stream blocks" in svg.read_text()


@pytest.mark.parametrize("kind", ["classification", "question answering"])
def test_encoder_task_heads_come_from_the_task(kind: str):
    if kind == "classification":
        task = SequenceClassificationModule(codec=toy_codec(VOCAB), num_classes=3, preset="tiny")
        expected = ["Pooler", "Classifier"]
    else:
        task = QuestionAnsweringModule(codec=toy_codec(VOCAB), preset="tiny")
        expected = ["Span Head"]
    d = diagram_of(task)
    heads = [b.label for b in d.column("encoder").boxes() if b.kind == "head"]
    assert heads == expected  # in the order they run
    assert_accounted(d, task)


def test_mask_kinds():
    attention = MultiHeadAttention(16, 2)
    padded = torch.tensor([[1, 1, 1, 0]])
    assert mask_kind(attention, {"is_causal": True}) == "causal"
    assert mask_kind(attention, {"mask": None}) == "none"
    assert mask_kind(attention, {"mask": make_mask(padded, 4, 4, False)[0]}) == "padding"
    assert mask_kind(attention, {"mask": make_mask(padded, 4, 4, True)[0]}) == "causal + padding"
    full = make_mask(torch.ones(1, 4), 4, 4, True)[0]
    assert mask_kind(attention, {"mask": full}) == "causal"


def test_svg_is_well_formed_and_every_box_links_code_and_paper(tmp_path: Path):
    task = translation(n_kv_heads=2)
    d = diagram_of(task)
    svg_path, png_path = write(d, tmp_path / "out", "arch")
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    root = ET.fromstring(svg_path.read_text())
    links = {a.get("id"): a for a in root.iter("{http://www.w3.org/2000/svg}a")}
    repo = Path(__file__).resolve().parents[1]
    boxes = [b for b in d.boxes() if b.kind not in TERMINALS]
    assert boxes
    for box in boxes:
        code, paper = links[f"code:{box.id}"], links[f"paper:{box.id}"]
        path, _, line = code.get("href").partition("#L")
        source = (tmp_path / "out" / path).resolve()
        assert source.is_relative_to(repo) and source.is_file(), box.id
        name = box.code.name.rpartition(".")[2]
        defined = source.read_text().splitlines()[int(line) - 1].strip()
        assert defined.startswith((f"class {name}", f"def {name}")), (box.id, defined)
        assert paper.get("href").startswith("https://"), box.id
        title = paper.find("{http://www.w3.org/2000/svg}title").text
        assert box.refs[0].section in title, box.id
        assert box.label in code.find("{http://www.w3.org/2000/svg}title").text
