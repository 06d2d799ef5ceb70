"""The structure `tsuite inspect` draws: a model in the manner of Figure 1 of "Attention Is All
You Need", read from the modules themselves and from one sample-batch pass (`Trace`).

A diagram is a list of columns (the encoder, the decoder), each its boxes from the bottom up:
the input, the embeddings and positions, one block of its stack (drawn once, "N x"), the
final norm and the heads; plus the edges between boxes (data flow, residual connections, the
encoder output into every decoder block's cross-attention). Every box names the paper section
it implements and the code that implements it, and holds its parameters and FLOPs summed over
the N blocks, so the shares of all boxes add up to 100%. A two-stream model (XLNet's content
and query streams sharing one stack's weights) is two columns over the same blocks, the second
counting no parameters, with an edge of kind "cross" from the content stream's keys/values
(`add_query_stream`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

import modules
from experiments.diagram_papers import (
    ATTENTION_USES,
    BERT_CLASSIFY,
    BERT_INPUT,
    BERT_MLM,
    BERT_SQUAD,
    EMBEDDINGS,
    FEED_FORWARD,
    GELU,
    GQA,
    LABEL_SMOOTHING,
    LEARNED_POSITIONS,
    MULTI_HEAD,
    POSITIONAL,
    PRE_LN,
    RESIDUAL,
    RMSNORM,
    ROPE,
    SCALED_DOT_PRODUCT,
    SWIGLU,
    XLNET_OBJECTIVE,
    XLNET_TWO_STREAM,
    Reference,
)
from experiments.trace import Trace, trace
from modules.attention import MultiHeadAttention
from modules.layers import Block, Embeddings, FeedForward, Stack
from modules.models.encoder import MaskedLMHead, Pooler, QueryStream
from modules.positions import SinusoidalPositions
from modules.tasks import (
    CausalLMModule,
    MaskedLMModule,
    PermutationLMModule,
    QuestionAnsweringModule,
    Seq2SeqModule,
    SequenceClassificationModule,
    TaskModule,
)

BoxKind = Literal[
    "input",  # the token ids entering a column (no code, no paper)
    "embedding",
    "positions",  # absolute positions added to the embeddings
    "norm",  # a norm on its own: pre-LN sublayers, the final norm, BERT's embedding norm
    "attention",
    "feed_forward",
    "add",  # pre-LN residual: x + f(norm(x))
    "add_norm",  # post-LN residual: norm(x + f(x))
    "head",
    "softmax",
    "output",  # what the column produces (no code, no paper)
]
EdgeKind = Literal["flow", "positions", "residual", "cross"]
Mask = Literal["padding", "causal", "causal + padding", "factorisation order", "none"]
TERMINALS = ("input", "output")


@dataclass(frozen=True)
class CodeRef:
    path: str  # relative to the repository root
    line: int
    name: str  # class or Class.method

    def __str__(self) -> str:
        return f"{self.path}:{self.name}"


@dataclass
class Box:
    id: str  # unique in the diagram: "decoder.cross_attn"
    kind: BoxKind
    label: str
    detail: str = ""
    code: CodeRef | None = None
    refs: list[Reference] = field(default_factory=list)
    params: int = 0  # over all N blocks for a box in a stack; shared weights count once
    flops: int = 0  # forward, for the sample batch
    shape: tuple = ()  # output shape for the sample batch
    mask: Mask | None = None  # attentions only
    used: bool = True  # False: the model has it but this task does not run it


@dataclass
class Sublayer:
    kind: Literal["self_attention", "cross_attention", "feed_forward"]
    boxes: list[Box]  # bottom to top: [norm, function, add] pre-LN, [function, add_norm] post-LN

    @property
    def function(self) -> Box:
        return next(b for b in self.boxes if b.kind in ("attention", "feed_forward"))


@dataclass
class StackPart:
    module: str  # attribute of the model: "encoder", "decoder", "stack"
    n_layers: int
    norm: Literal["pre", "post"]
    causal: bool
    sublayers: list[Sublayer]


@dataclass
class Column:
    name: str  # "encoder" / "decoder"
    title: str
    below: list[Box]  # input, embeddings, positions, embedding norm
    stack: StackPart
    above: list[Box]  # final norm, heads, softmax, output

    def boxes(self) -> list[Box]:
        """Bottom to top."""
        inside = [b for s in self.stack.sublayers for b in s.boxes]
        return [*self.below, *inside, *self.above]


@dataclass
class Edge:
    source: str
    target: str
    kind: EdgeKind
    shape: tuple = ()


@dataclass
class Diagram:
    title: str
    sample: str  # the sample batch, for the caption
    columns: list[Column]
    edges: list[Edge]
    total_params: int
    total_flops: int

    def boxes(self) -> Iterator[Box]:
        for column in self.columns:
            yield from column.boxes()

    def box(self, box_id: str) -> Box:
        return next(b for b in self.boxes() if b.id == box_id)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def edges_of(self, kind: EdgeKind) -> list[Edge]:
        return [e for e in self.edges if e.kind == kind]

    def param_share(self, box: Box) -> float:
        return 100 * box.params / max(self.total_params, 1)

    def flop_share(self, box: Box) -> float:
        return 100 * box.flops / max(self.total_flops, 1)


def code_ref(obj: Any) -> CodeRef:
    """Where `obj` (a class or function of this repository) is defined."""
    obj = inspect.unwrap(obj)
    root = Path(modules.__file__).resolve().parent.parent
    path = Path(inspect.getsourcefile(obj) or "").resolve()
    line = inspect.getsourcelines(obj)[1]
    return CodeRef(path.relative_to(root).as_posix(), line, obj.__qualname__)


# --- building the diagram -------------------------------------------------------------------
@dataclass
class Head:
    """A module the task adds on top of the model (a classifier, a span head)."""

    module: nn.Module
    label: str
    detail: str
    ref: Reference
    code: CodeRef


@dataclass
class Objective:
    """The task's softmax and loss, the top box of the last column."""

    label: str
    detail: str
    refs: list[Reference]
    code: CodeRef
    output: str  # what comes out: "Output Probabilities"


class _Builder:
    """Walks the model once, giving each parameter to the first box that holds it."""

    def __init__(self, model: nn.Module, record: Trace) -> None:
        self.model, self.record = model, record
        self.counted: set[int] = set()
        self.edges: list[Edge] = []

    def params(self, *modules_: nn.Module | None) -> int:
        total = 0
        for module in modules_:
            for p in module.parameters() if module is not None else ():
                if id(p) not in self.counted:
                    self.counted.add(id(p))
                    total += p.numel()
        return total

    def flops(self, *modules_: nn.Module | None) -> int:
        return sum(self.record.flops.get(m, 0) for m in modules_ if m is not None)

    def out(self, module: nn.Module | None) -> tuple:
        return self.record.outputs.get(module, ()) if module is not None else ()

    def flow(self, boxes: list[Box]) -> None:
        """Flow edges along the main line; positions join the sum beside it."""
        previous: Box | None = None
        pending: list[Box] = []
        for box in boxes:
            if box.kind == "positions":
                pending.append(box)
                continue
            if previous is not None:
                self.edges.append(Edge(previous.id, box.id, "flow", previous.shape))
            for side in pending:
                self.edges.append(Edge(side.id, box.id, "positions", side.shape))
            pending = []
            previous = box

    # -- the parts --
    def embeddings(self, name: str, embed: Embeddings, first: bool) -> list[Box]:
        ids = self.record.inputs.get(embed, ())
        boxes = [
            Box(
                id=f"{name}.input",
                kind="input",
                label="Inputs" if first else "Outputs (shifted right)",
                detail=f"token ids {ids}" if ids else "token ids",
                shape=ids,
            )
        ]
        cfg = self.model.cfg  # type: ignore[attr-defined]
        shared = id(embed.tokens.weight) in self.counted
        tokens = self.params(embed.tokens)
        types = self.params(embed.token_types)
        label = "Input Embedding" if first else "Output Embedding"
        detail = f"vocabulary {embed.tokens.num_embeddings} × d_model {embed.tokens.embedding_dim}"
        if shared:
            detail = "shared with the input embedding"
        if embed.scale != 1.0:
            detail += " · × √d_model"
        refs = [EMBEDDINGS]
        if embed.token_types is not None:
            label = "Token + Segment Embedding"
            detail += f" · {embed.token_types.num_embeddings} segments"
            refs = [BERT_INPUT]
        boxes.append(
            Box(
                id=f"{name}.tokens",
                kind="embedding",
                label=label,
                detail=detail,
                code=code_ref(Embeddings),
                refs=refs,
                params=tokens + types,
                flops=self.flops(embed),
                shape=self.out(embed),  # its tokens may be shared: called twice
            )
        )
        if isinstance(embed.positions, SinusoidalPositions):
            boxes.append(
                Box(
                    id=f"{name}.positions",
                    kind="positions",
                    label="Positional Encoding",
                    detail=f"sinusoidal · {cfg.max_length} positions",
                    code=code_ref(SinusoidalPositions),
                    refs=[POSITIONAL],
                    shape=self.out(embed.positions),
                )
            )
        elif embed.positions is not None:
            positions: nn.Embedding = embed.positions  # type: ignore[assignment]
            boxes.append(
                Box(
                    id=f"{name}.positions",
                    kind="positions",
                    label="Position Embedding",
                    detail=f"learned · {positions.num_embeddings} × {positions.embedding_dim}",
                    code=code_ref(Embeddings),
                    refs=[BERT_INPUT if embed.token_types is not None else LEARNED_POSITIONS],
                    params=self.params(positions),
                    shape=self.out(positions),
                )
            )
        if embed.norm is not None:
            boxes.append(
                Box(
                    id=f"{name}.embedding_norm",
                    kind="norm",
                    label=norm_name(embed.norm),
                    detail="of the summed embeddings",
                    code=code_ref(Embeddings),
                    refs=[BERT_INPUT, *norm_refs(embed.norm, pre=False)[1:]],
                    params=self.params(embed.norm),
                    shape=self.out(embed),
                )
            )
        return boxes

    def stack(self, name: str, module_name: str, stack: Stack, below: Box) -> StackPart:
        """One block of the stack, its sublayers in order, each with its norm and residual."""
        blocks = list(stack.blocks)
        first: Block = blocks[0]  # type: ignore[assignment]
        pre = first.pre_norm
        sublayers = []
        entry = below
        for attr, kind in (
            ("self_attn", "self_attention"),
            ("cross_attn", "cross_attention"),
            ("ffn", "feed_forward"),
        ):
            function = getattr(first, attr)
            if function is None:
                continue
            functions = [getattr(b, attr) for b in blocks]
            norms = [getattr(b, f"{attr}_norm") for b in blocks]
            prefix = f"{name}.{attr}"
            box = self.function_box(prefix, functions, stack)
            norm_params = self.params(*norms)
            if pre:
                boxes = [
                    Box(
                        id=f"{prefix}.norm",
                        kind="norm",
                        label=norm_name(first.self_attn_norm),
                        detail="before the sublayer (pre-LN)",
                        code=code_ref(Block._sublayer),
                        refs=norm_refs(first.self_attn_norm, pre=True),
                        params=norm_params,
                        shape=self.out(norms[0]),
                    ),
                    box,
                    Box(
                        id=f"{prefix}.add",
                        kind="add",
                        label="Add",
                        detail="x + Sublayer(Norm(x))",
                        code=code_ref(Block._sublayer),
                        refs=[RESIDUAL],
                        shape=box.shape,
                    ),
                ]
            else:
                norm = norm_name(first.self_attn_norm)
                boxes = [
                    box,
                    Box(
                        id=f"{prefix}.add_norm",
                        kind="add_norm",
                        label="Add & Norm",
                        detail=f"{norm}(x + Sublayer(x))",
                        code=code_ref(Block._sublayer),
                        refs=norm_refs(first.self_attn_norm, pre=False),
                        params=norm_params,
                        shape=self.out(norms[0]) or box.shape,
                    ),
                ]
            self.edges.append(Edge(entry.id, boxes[-1].id, "residual", entry.shape))
            entry = boxes[-1]
            sublayers.append(Sublayer(kind, boxes))  # type: ignore[arg-type]
        return StackPart(
            module_name, len(blocks), "pre" if pre else "post", stack.causal, sublayers
        )

    def function_box(self, prefix: str, functions: list[nn.Module], stack: Stack) -> Box:
        """The attention or feed-forward of every block, drawn once."""
        first = functions[0]
        params, flops = self.params(*functions), self.flops(*functions)
        if isinstance(first, FeedForward):
            act = ACTIVATIONS.get(first.activation, first.activation)
            refs = [FEED_FORWARD]
            if first.gated:
                refs.append(SWIGLU)
            elif first.activation.startswith("gelu"):
                refs.append(GELU)
            sizes = f"{first.up.in_features} → {first.down.in_features} → {first.down.out_features}"
            return Box(
                id=prefix,
                kind="feed_forward",
                label="Feed Forward",
                detail=f"{sizes} · {act}",
                code=code_ref(FeedForward),
                refs=refs,
                params=params,
                flops=flops,
                shape=self.out(first),
            )
        if not isinstance(first, MultiHeadAttention):
            raise TypeError(f"{prefix}: no diagram box for {type(first).__name__}")
        mask = mask_kind(first, self.record.calls.get(first, {}))
        parts = [f"{first.n_heads} heads × d_k {first.key_dim}"]
        refs = [MULTI_HEAD, SCALED_DOT_PRODUCT]
        if first.n_kv_heads != first.n_heads:
            parts.append(f"{first.n_kv_heads} K/V heads")
            refs.append(GQA)
        if first.cross:
            label = "Multi-Head Cross-Attention"
            refs.append(ATTENTION_USES)
        elif stack.causal:
            label = "Masked Multi-Head Self-Attention"
            refs.append(ATTENTION_USES)
        else:
            label = "Multi-Head Self-Attention"
        parts.append(f"{mask} mask" if mask != "none" else "no mask")
        if stack.rotary is not None and not first.cross:
            parts.append("RoPE on Q, K")
            refs.append(ROPE)
        return Box(
            id=prefix,
            kind="attention",
            label=label,
            detail=" · ".join(parts),
            code=code_ref(MultiHeadAttention),
            refs=refs,
            params=params,
            flops=flops,
            shape=self.out(first),
            mask=mask,
        )

    def final_norm(self, name: str, stack: Stack) -> list[Box]:
        if stack.final_norm is None:
            return []
        return [
            Box(
                id=f"{name}.final_norm",
                kind="norm",
                label=f"Final {norm_name(stack.final_norm)}",
                detail="after the last block (pre-LN)",
                code=code_ref(Stack.forward),
                refs=norm_refs(stack.final_norm, pre=True),
                params=self.params(stack.final_norm),
                shape=self.out(stack),
            )
        ]

    def model_head(self, name: str, module: nn.Module) -> Box:
        """lm_head, mlm_head, pooler: the model's own heads."""
        cfg = self.model.cfg  # type: ignore[attr-defined]
        used = self.record.ran(module)
        if isinstance(module, MaskedLMHead):
            tied = id(module.decoder.weight) in self.counted
            act = ACTIVATIONS.get(cfg.activation, "GELU")
            detail = f"dense → {act} → {norm_name(module.norm)} → {module.decoder.out_features}"
            label, refs, code = "MLM Head", [BERT_MLM], code_ref(MaskedLMHead)
            detail += " · tied to the embedding" if tied else " · untied"
        elif isinstance(module, Pooler):
            label, refs, code = "Pooler", [BERT_CLASSIFY], code_ref(Pooler)
            detail = "tanh(dense(first token))"
        elif isinstance(module, nn.Linear):
            tied = id(module.weight) in self.counted
            sizes = f"{module.in_features} → {module.out_features}"
            detail = sizes + (" · tied to the embedding" if tied else " · untied")
            label, refs, code = "Linear", [EMBEDDINGS], code_ref(type(self.model))
        else:
            label, refs, code = type(module).__name__, [], code_ref(type(self.model))
            detail = name
        if not used:
            detail += " · not run by this task"
        return Box(
            id=name,
            kind="head",
            label=label,
            detail=detail,
            code=code,
            refs=refs,
            params=self.params(module),
            flops=self.flops(module),
            shape=self.out(module),
            used=used,
        )

    def task_head(self, head: Head) -> Box:
        return Box(
            id=f"task.{head.label.lower().replace(' ', '_')}",
            kind="head",
            label=head.label,
            detail=head.detail,
            code=head.code,
            refs=[head.ref],
            params=self.params(head.module),
            flops=self.flops(head.module),
            shape=self.out(head.module),
        )


ACTIVATIONS = {
    "relu": "ReLU",
    "gelu": "GELU",
    "gelu_tanh": "GELU (tanh)",
    "silu": "SiLU",
    "swiglu": "SwiGLU",
}


def norm_name(norm: nn.Module) -> str:
    return "RMSNorm" if isinstance(norm, nn.RMSNorm) else "LayerNorm"


def norm_refs(norm: nn.Module, pre: bool) -> list[Reference]:
    refs = [PRE_LN if pre else RESIDUAL]
    return [*refs, RMSNORM] if isinstance(norm, nn.RMSNorm) else refs


def mask_kind(module: MultiHeadAttention, call: dict[str, Any]) -> Mask:
    """Which mask the attention was called with: SDPA's causal flag, a padding mask
    (batch, 1, 1, keys), a combined causal + padding mask, XLNet's two-stream mask (more
    query rows than keys: the content stream's and the query stream's), or none."""
    if call.get("is_causal"):
        return "causal"
    mask = call.get("mask")
    if not isinstance(mask, Tensor):
        return "none"
    queries, keys = mask.size(-2), mask.size(-1)
    if queries == 1 or module.cross:
        return "padding"
    if queries > keys:
        return "factorisation order"
    future = torch.ones(queries, keys, dtype=torch.bool, device=mask.device).triu(
        keys - queries + 1
    )
    if mask[..., future].any():
        return "padding"
    return "causal" if mask[..., ~future].all() else "causal + padding"


def build(
    model: nn.Module,
    record: Trace,
    title: str,
    sample: str,
    heads: list[Head] | None = None,
    objective: Objective | None = None,
) -> Diagram:
    """The diagram of `model` (embeddings, stacks, its own heads), the `heads` a task adds on
    top and the task's `objective`, with shapes, masks and FLOPs from `record`."""
    heads = heads or []
    b = _Builder(model, record)
    columns: list[Column] = []
    waiting: list[tuple[str, Embeddings]] = []  # embeddings before their stack
    owners: list[tuple[nn.Module, str]] = []  # the model's own heads
    for name, child in model.named_children():
        if isinstance(child, Embeddings):
            waiting.append((name, child))
        elif isinstance(child, Stack):
            if not waiting:
                raise TypeError(f"{type(model).__name__}.{name}: a stack without embeddings")
            embed_name, embed = waiting.pop(0)
            column = embed_name.removesuffix("_embed")
            if column == "embed":
                column = "decoder" if child.causal else "encoder"
            below = b.embeddings(column, embed, first=not columns)
            part = b.stack(column, name, child, _main(below)[-1])
            title_ = "Decoder" if child.causal else "Encoder"
            columns.append(Column(column, title_, below, part, b.final_norm(column, child)))
        else:
            owners.append((child, name))
    if not columns:
        raise TypeError(f"{type(model).__name__} has no modules.layers.Stack to draw")
    tops = [(b.model_head(name, m), m) for m, name in owners]
    tops += [(b.task_head(head), head.module) for head in heads]
    entered = {m: i for i, m in enumerate(record.order)}
    tops.sort(key=lambda top: (not top[0].used, entered.get(top[1], len(entered))))
    last = columns[-1]
    last.above += [box for box, _ in tops]
    if objective is not None:
        shape = next((box.shape for box, _ in reversed(tops) if box.used), ())
        last.above.append(
            Box(
                id="objective",
                kind="softmax",
                label=objective.label,
                detail=objective.detail,
                code=objective.code,
                refs=objective.refs,
                shape=shape,
            )
        )
        last.above.append(Box(id="output", kind="output", label=objective.output, shape=shape))
    for column in columns:
        b.flow([box for box in column.boxes() if box.used])
    for previous, column in zip(columns, columns[1:], strict=False):
        memory = _main(previous.boxes())[-1]
        for sublayer in column.stack.sublayers:
            if sublayer.kind == "cross_attention":
                b.edges.append(Edge(memory.id, sublayer.function.id, "cross", memory.shape))
    unique = {id(p): p.numel() for m in (model, *(h.module for h in heads)) for p in m.parameters()}
    return Diagram(title, sample, columns, b.edges, sum(unique.values()), record.total_flops)


def _main(boxes: list[Box]) -> list[Box]:
    """The boxes on a column's main line (positions join from the side)."""
    return [box for box in boxes if box.kind != "positions" and box.used]


def task_diagram(task: TaskModule, batch: dict[str, Tensor]) -> Diagram:
    """The diagram of a task's model, its heads and its loss, for one pass of `batch`."""
    record = trace(task, batch)
    sample = ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items() if k != "labels")
    title = f"{type(task.model).__name__} · {type(task).__name__}"
    diagram = build(task.model, record, title, sample, task_heads(task), task_objective(task))
    if isinstance(task, PermutationLMModule):
        add_query_stream(diagram, task, record, tuple(batch["target_positions"].shape))
    return diagram


def add_query_stream(
    diagram: Diagram, task: PermutationLMModule, record: Trace, targets: tuple
) -> None:
    """XLNet's query stream as a second column over the same blocks (their weights and FLOPs
    are counted once, in the content stream, which runs together with it), reading keys and
    values from the content stream; the prediction head and the loss move on top of it."""
    content = diagram.columns[0]
    prefix = content.name

    start = task.query_stream.start
    shape = (*targets, start.numel())

    def twin(box: Box) -> Box:
        id_ = "query" + box.id.removeprefix(prefix)
        return dataclasses.replace(box, id=id_, params=0, flops=0, shape=shape if box.shape else ())

    below = [
        Box(
            id="query.input",
            kind="input",
            label="Target Positions",
            detail=f"positions {targets}, predicted in the factorisation order",
            shape=targets,
        ),
        Box(
            id="query.start",
            kind="embedding",
            label="Query Stream Input",
            detail=f"one learned vector w ({start.numel()}) in place of each target's token",
            code=code_ref(QueryStream),
            refs=[XLNET_TWO_STREAM],
            params=start.numel(),
            shape=shape,
        ),
        *(twin(box) for box in content.below if box.kind in ("positions", "norm")),
    ]
    sublayers = [Sublayer(s.kind, [twin(box) for box in s.boxes]) for s in content.stack.sublayers]
    attention = sublayers[0].function
    attention.detail = (
        "the content stream's weights · Q: the query stream; K, V: the content stream · "
        "sees the tokens before its target in the order, never the target"
    )
    content.stack.sublayers[0].function.detail += " · each token sees those at or before it"
    norms = [box for box in content.above if box.kind == "norm"]
    on_top = [box for box in content.above if box.kind != "norm"]
    memory = _main(content.below)[-1]  # what each block reads its keys and values from
    for box in [*(b for s in content.stack.sublayers for b in s.boxes), *norms]:
        box.shape = memory.shape if box.shape else ()  # the trace saw both streams at once
    content.above = [
        *norms,
        Box(id=f"{prefix}.output", kind="output", label="Content Stream h", shape=memory.shape),
    ]
    query = Column("query", "Query-Stream", below, dataclasses.replace(content.stack), [])
    query.stack.sublayers = sublayers
    query.above = [*(twin(box) for box in norms), *on_top]
    content.title = "Content Stream"
    diagram.columns.append(query)
    # the data flow again, now in two columns; each residual of the stack again in the twin
    b = _Builder(task.model, record)
    for column in diagram.columns:
        b.flow([box for box in column.boxes() if box.used])
    twins = {box.id: twin(box).id for box in content.boxes()}
    residuals = [e for e in diagram.edges if e.kind == "residual"]
    residuals += [
        Edge(twins[e.source], twins[e.target], "residual", shape)
        for e in residuals
        if e.source in twins and e.target in twins
    ]
    cross = Edge(memory.id, attention.id, "cross", memory.shape)
    diagram.edges = [*b.edges, *residuals, cross]
    diagram.total_params += start.numel()


def task_heads(task: TaskModule) -> list[Head]:
    """The modules a task adds on top of its model."""
    d_model = task.model.cfg.d_model
    if isinstance(task, SequenceClassificationModule):
        classes = task.head[1].out_features
        detail = f"dropout → Linear {d_model} → {classes} classes"
        return [Head(task.head, "Classifier", detail, BERT_CLASSIFY, code_ref(type(task)))]
    if isinstance(task, QuestionAnsweringModule):
        detail = f"Linear {d_model} → 2 (start, end)"
        return [Head(task.head, "Span Head", detail, BERT_SQUAD, code_ref(type(task)))]
    return []


def task_objective(task: TaskModule) -> Objective:
    """The softmax and loss at the top of the diagram."""
    code = code_ref(type(task).step)
    if isinstance(task, Seq2SeqModule):
        if task.label_smoothing:
            detail = f"cross-entropy · label smoothing ε_ls = {task.label_smoothing:g}"
            return Objective(
                "Softmax", detail, [EMBEDDINGS, LABEL_SMOOTHING], code, "Output Probabilities"
            )
        return Objective("Softmax", "cross-entropy", [EMBEDDINGS], code, "Output Probabilities")
    if isinstance(task, CausalLMModule):
        return Objective(
            "Softmax", "next-token cross-entropy", [EMBEDDINGS], code, "Output Probabilities"
        )
    if isinstance(task, PermutationLMModule):
        detail = "cross-entropy at the targets, from the query stream"
        return Objective("Softmax", detail, [XLNET_OBJECTIVE], code, "Target-Token Probabilities")
    if isinstance(task, MaskedLMModule):
        detail = "cross-entropy on the masked positions"
        return Objective("Softmax", detail, [BERT_MLM], code, "Masked-Token Probabilities")
    if isinstance(task, SequenceClassificationModule):
        return Objective(
            "Softmax",
            "cross-entropy over the classes",
            [BERT_CLASSIFY],
            code,
            "Class Probabilities",
        )
    if isinstance(task, QuestionAnsweringModule):
        detail = "over the positions, for the start and for the end"
        return Objective("Softmax", detail, [BERT_SQUAD], code, "Answer Start / End")
    return Objective("Loss", type(task).__name__, [], code, "Output")
