"""Where everything of a `Diagram` goes, as the paper draws Figure 1: columns side by side
with their stacks' bottoms aligned, each stack's block once in a frame with "N x" beside it,
residuals around each sublayer, the encoder output across into the decoder, then a legend and
notes. The result is a `Scene` of plain shapes that `diagram_render` writes as SVG or PNG."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from experiments.diagram import TERMINALS, Box, Column, Diagram, Edge

FONT, MONO = "DejaVu Sans", "DejaVu Sans Mono"  # matplotlib ships both

BOX_W = 300  # a box on a column's main line
SIDE_W = 250  # the positions box beside the embeddings
GAP = 30  # between two boxes: an arrow, maybe a shape
PAD = 10  # inside a box
ADD_R = 11  # a circled plus: positions added, a pre-LN residual
FRAME_RES, FRAME_PAD = 44, 16  # the stack's frame, on the residual side and the other side
COLUMN_GAP = 140  # between the encoder's and the decoder's boxes: the cross-attention edge
MARGIN, TOP = 30, 84
NOTES_W = 420

INK, MUTED, FAINT = "#333333", "#666666", "#9a9a9a"
PARAMS_INK, FLOPS_INK, CROSS_INK, CODE_INK = "#4d4d4d", "#c2410c", "#b45309", "#1f5fa8"
STYLE = {  # fill, stroke: the paper's colours
    "embedding": ("#f8cecc", "#b85450"),
    "positions": ("#f5f5f5", "#8c8c8c"),
    "norm": ("#fff2cc", "#d6b656"),
    "add_norm": ("#fff2cc", "#d6b656"),
    "attention": ("#ffe6cc", "#d79b00"),
    "feed_forward": ("#dae8fc", "#6c8ebf"),
    "head": ("#e1d5e7", "#9673a6"),
    "softmax": ("#d5e8d4", "#82b366"),
}


# --- shapes ---------------------------------------------------------------------------------
@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str
    radius: float = 6.0
    width: float = 1.3
    dash: bool = False


@dataclass
class Circle:
    x: float
    y: float
    r: float
    fill: str
    stroke: str
    width: float = 1.3


@dataclass
class Text:
    x: float
    y: float  # the baseline
    text: str
    size: float = 11.0
    bold: bool = False
    mono: bool = False
    anchor: str = "start"  # start, middle, end
    color: str = INK


@dataclass
class Line:
    points: list[tuple[float, float]]
    color: str = INK
    width: float = 1.3
    arrow: bool = True


@dataclass
class Link:
    """Shapes that together link to `href`, with a tooltip."""

    href: str
    title: str
    shapes: list[Rect | Circle | Text | Line] = field(default_factory=list)
    id: str = ""


Shape = Rect | Circle | Text | Line | Link


@dataclass
class Scene:
    width: float
    height: float
    shapes: list[Shape]


@lru_cache(maxsize=8192)
def text_width(text: str, size: float, bold: bool = False, mono: bool = False) -> float:
    """Width in px of `text` in the fonts the PNG uses (the SVG names them first)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(family=MONO if mono else FONT, weight="bold" if bold else "normal")
    prop.set_size(size)
    # the advance width from the font's metrics (measuring the glyph outlines took ~0.2 s each)
    return text_to_path.get_text_width_height_descent(text, prop, ismath=False)[0]


def wrap(text: str, size: float, width: float, bold: bool = False, mono: bool = False) -> list[str]:
    """Lines of at most `width` px, broken at " · " where possible, else at spaces."""
    lines: list[str] = []
    for part in text.split(" · "):
        if lines and text_width(f"{lines[-1]} · {part}", size, bold, mono) <= width:
            lines[-1] += " · " + part
            continue
        lines.append("")
        for word in part.split(" "):
            joined = f"{lines[-1]} {word}" if lines[-1] else word
            if lines[-1] and text_width(joined, size, bold, mono) > width:
                lines.append(word)
            else:
                lines[-1] = joined
    return lines


def shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def si(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


# --- layout ---------------------------------------------------------------------------------
@dataclass
class Placed:
    x: float  # left
    y: float  # top
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class ColumnPlace:
    column: Column
    cx: float
    residual_left: bool
    frame: Placed | None = None


class Layout:
    """Places every box bottom-up, the columns' stacks side by side with their bottoms
    aligned, then draws frames, edges, boxes, the caption, the legend and the notes."""

    def __init__(self, diagram: Diagram, code_base: str) -> None:
        self.d = diagram
        self.code_base = code_base.rstrip("/") or "."
        self.at: dict[str, Placed] = {}  # box id -> where
        self.sums: dict[str, Placed] = {}  # box id -> the circled plus below it (positions)
        self.first_of: dict[str, str] = {}  # a sublayer's last box -> its first box
        self.columns: list[ColumnPlace] = []
        self.shapes: list[Shape] = []
        boxes = [b for b in diagram.boxes() if b.used]
        self.top_params = max((b.params for b in boxes), default=0) or 1
        self.top_flops = max((b.flops for b in boxes), default=0) or 1

    # -- sizes --
    def lines(self, box: Box, width: float) -> list[str]:
        return wrap(box.detail, 11, width - 2 * PAD) if box.detail else []

    def height(self, box: Box, width: float = BOX_W) -> float:
        if box.kind == "add":
            return 2 * ADD_R
        if box.kind in TERMINALS:
            return 32
        shares = 17 if box.params or box.flops else 0
        return 28 + 15 * len(self.lines(box, width)) + shares

    # -- placing, bottom-up from y = 0 (shifted down at the end) --
    def place(self) -> None:
        step = BOX_W + 2 * FRAME_PAD + COLUMN_GAP
        for i, column in enumerate(self.d.columns):
            self.columns.append(ColumnPlace(column, i * step, residual_left=i == 0))
            for sublayer in column.stack.sublayers:
                self.first_of[sublayer.boxes[-1].id] = sublayer.boxes[0].id
        cursors = [self.place_below(c) for c in self.columns]
        start = min(cursors) - 0.6 * GAP  # the stacks' frames start level
        for c in self.columns:
            self.place_above(c, self.place_stack(c, start))

    def put(self, box: Box, cx: float, cursor: float, height: float | None = None) -> float:
        """Place `box` centred at `cx` above `cursor` (the top of what is below)."""
        w = 2 * ADD_R if box.kind == "add" else BOX_W
        h = height or self.height(box)
        self.at[box.id] = Placed(cx - w / 2, cursor - GAP - h, w, h)
        return cursor - GAP - h

    def place_below(self, c: ColumnPlace) -> float:
        """Inputs, embeddings, positions: row by row as tall as the tallest of all columns."""
        cursor = GAP  # the first box gets no gap below it
        for row, box in enumerate(c.column.below):
            if box.kind == "positions":
                total = Placed(c.cx - ADD_R, cursor - GAP - 2 * ADD_R, 2 * ADD_R, 2 * ADD_R)
                cursor = total.y
                h = self.height(box, SIDE_W)
                x = c.cx - BOX_W / 2 - 40 - SIDE_W if c.residual_left else c.cx + BOX_W / 2 + 40
                self.at[box.id] = Placed(x, total.cy - h / 2, SIDE_W, h)
                self.sums[box.id] = total
            else:
                cursor = self.put(box, c.cx, cursor, height=self.row_height(row))
        return cursor

    def row_height(self, row: int) -> float:
        return max(self.height(c.below[row]) for c in self.d.columns if row < len(c.below))

    def place_stack(self, c: ColumnPlace, start: float) -> float:
        boxes = [b for s in c.column.stack.sublayers for b in s.boxes]
        cursor = start - 22 + GAP  # room for the first residual's branch point
        for box in boxes:
            cursor = self.put(box, c.cx, cursor)
        x = c.cx - BOX_W / 2 - (FRAME_RES if c.residual_left else FRAME_PAD)
        c.frame = Placed(x, cursor - 12, BOX_W + FRAME_RES + FRAME_PAD, start - cursor + 12)
        return c.frame.y

    def place_above(self, c: ColumnPlace, cursor: float) -> None:
        """The final norm, the heads, the loss; parts the task does not run go beside the
        first head, away from the residuals."""
        cursor += 0.4 * GAP
        anchor = c.frame
        beside = 0
        for box in c.column.above:
            if box.used:
                cursor = self.put(box, c.cx, cursor)
                if box.kind == "head" and (anchor is c.frame):
                    anchor = self.at[box.id]
            elif anchor is not None:
                beside += 1
                h = self.height(box)
                x = anchor.cx - BOX_W / 2 + (BOX_W + 40) * beside  # heads: in the last column
                self.at[box.id] = Placed(x, anchor.bottom - h, BOX_W, h)

    def shift(self) -> tuple[float, float]:
        """Move the drawing below the caption, centred in a width that holds at least two
        columns of notes; returns that width and the drawing's bottom."""
        frames = [c.frame for c in self.columns if c.frame is not None]
        rects = [*self.at.values(), *self.sums.values(), *frames]
        left = min([r.x for r in rects] + [f.x - 64 for f in frames])  # room for "N x"
        right = max([r.x + r.w for r in rects] + [f.x + f.w + 64 for f in frames])
        width = max(right - left, 2 * NOTES_W + 30)
        dx, dy = MARGIN + (width - (right - left)) / 2 - left, TOP - min(r.y for r in rects)
        for r in rects:
            r.x += dx
            r.y += dy
        for c in self.columns:
            c.cx += dx
        return width, max(r.bottom for r in rects)

    # -- the scene --
    def scene(self) -> Scene:
        self.place()
        width, bottom = self.shift()
        for c in self.columns:
            self.draw_frame(c)
        for edge in self.d.edges:
            self.draw_edge(edge)
        self.draw_shapes_on_edges()
        for box in self.d.boxes():
            self.draw_box(box)
        for total in self.sums.values():
            self.plus(total.cx, total.cy)
        self.draw_caption()
        legend_bottom = self.draw_legend(MARGIN, bottom + 34, width)
        notes_bottom = self.draw_notes(MARGIN, legend_bottom + 24, width)
        return Scene(MARGIN + width + MARGIN, notes_bottom + 20, self.shapes)

    def draw_frame(self, c: ColumnPlace) -> None:
        if c.frame is None:
            return
        f, stack = c.frame, c.column.stack
        self.shapes.append(Rect(f.x, f.y, f.w, f.h, "#f4f4f4", FAINT, 12, 1.2))
        x, anchor = (f.x - 12, "end") if c.residual_left else (f.x + f.w + 12, "start")
        self.shapes.append(Text(x, f.cy - 2, f"{stack.n_layers}×", 24, bold=True, anchor=anchor))
        self.shapes.append(Text(x, f.cy + 17, c.column.title, 11, True, anchor=anchor, color=MUTED))
        norm = "pre-LN" if stack.norm == "pre" else "post-LN"
        self.shapes.append(Text(x, f.cy + 31, norm, 10.5, anchor=anchor, color=MUTED))

    def draw_box(self, box: Box) -> None:
        p = self.at[box.id]
        if box.kind in TERMINALS:
            self.shapes.append(Text(p.cx, p.y + 13, box.label, 12, True, anchor="middle"))
            if box.shape:
                text = ("token ids " if box.kind == "input" else "") + shape_text(box.shape)
                self.shapes.append(
                    Text(p.cx, p.y + 28, text, 10, mono=True, anchor="middle", color=MUTED)
                )
            return
        shapes: list = []
        text = box.refs[0].tag if box.refs else ""
        if box.kind == "add":
            shapes += [Circle(p.cx, p.cy, ADD_R, "#ffffff", INK), *self.plus_lines(p.cx, p.cy)]
            if self.column_of(box.id).residual_left:  # the tag away from the residual line
                tag = Text(p.x + p.w + 6, p.cy + 4, text, 9.5, color=MUTED)
            else:
                tag = Text(p.x - 6, p.cy + 4, text, 9.5, anchor="end", color=MUTED)
        else:
            fill, stroke = STYLE.get(box.kind, ("#ffffff", INK))
            color = INK if box.used else MUTED
            shapes.append(Rect(p.x, p.y, p.w, p.h, fill, stroke, dash=not box.used))
            shapes.append(Text(p.x + PAD, p.y + 18, box.label, 12.5, True, color=color))
            y = p.y + 18
            for line in self.lines(box, p.w):
                y += 15
                shapes.append(Text(p.x + PAD, y, line, 11, color=color))
            if box.params or box.flops:
                shapes += self.shares(box, p.x + PAD, y + 8, p.w - 2 * PAD)
            tag = Text(p.x + p.w - PAD, p.y + 17, text, 10, anchor="end", color=MUTED)
        self.shapes.append(Link(self.code_href(box), self.tooltip(box), shapes, f"code:{box.id}"))
        if box.refs:
            titles = "; ".join(f"{r} ({r.url})" for r in box.refs)
            self.shapes.append(Link(box.refs[0].url, titles, [tag], f"paper:{box.id}"))

    def shares(self, box: Box, x: float, y: float, width: float) -> list[Shape]:
        """A bar each for parameters and FLOPs, relative to the largest part, and the share
        (none for a part without either: a tied head, a norm, whose FLOPs are not counted)."""
        out: list[Shape] = []
        rows = (
            (box.params, self.top_params, self.d.param_share(box), "params", PARAMS_INK),
            (box.flops, self.top_flops, self.d.flop_share(box), "FLOPs", FLOPS_INK),
        )
        for i, (value, top, share, word, ink) in enumerate(rows):
            if not value:
                continue
            bx = x + i * width / 2
            out.append(Rect(bx, y, 48, 7, "#ffffff", "#b5b5b5", 1.5, 0.8))
            out.append(Rect(bx, y, max(1.5, 48 * value / top), 7, ink, ink, 1.5, 0.0))
            text = f"{share:.1f}%" if share >= 0.05 else "<0.1%"
            out.append(Text(bx + 54, y + 7, f"{text} {word}", 9.5, color=ink))
        return out

    def plus_lines(self, x: float, y: float) -> list[Line]:
        r = ADD_R * 0.55
        return [
            Line([(x - r, y), (x + r, y)], INK, 1.4, arrow=False),
            Line([(x, y - r), (x, y + r)], INK, 1.4, arrow=False),
        ]

    def plus(self, x: float, y: float) -> None:
        self.shapes += [Circle(x, y, ADD_R, "#ffffff", INK), *self.plus_lines(x, y)]

    def column_of(self, box_id: str) -> ColumnPlace:
        return next(c for c in self.columns if any(b.id == box_id for b in c.column.boxes()))

    def draw_edge(self, edge: Edge) -> None:
        source, target = self.at[edge.source], self.at[edge.target]
        if edge.kind == "flow":
            joined = self.joined(edge.target)
            if joined is not None:  # the positions are added on the way
                total = self.sums[joined]
                self.shapes.append(Line([(source.cx, source.y), (total.cx, total.bottom)]))
                self.shapes.append(Line([(total.cx, total.y), (target.cx, target.bottom)]))
            else:
                self.shapes.append(Line([(source.cx, source.y), (target.cx, target.bottom)]))
        elif edge.kind == "positions":
            total = self.sums[edge.source]
            if source.x < total.x:
                self.shapes.append(Line([(source.x + source.w, total.cy), (total.x, total.cy)]))
            else:
                self.shapes.append(Line([(source.x, total.cy), (total.x + total.w, total.cy)]))
        elif edge.kind == "residual":
            first = self.at[self.first_of[edge.target]]
            left = self.column_of(edge.target).residual_left
            branch = first.bottom + 11
            x = target.cx + (-1 if left else 1) * (BOX_W / 2 + 22)
            end = target.x if left else target.x + target.w
            self.shapes.append(Circle(target.cx, branch, 2.4, INK, INK, 0))
            self.shapes.append(
                Line([(target.cx, branch), (x, branch), (x, target.cy), (end, target.cy)])
            )
        elif edge.kind == "cross":
            self.draw_cross(source, target, edge)

    def joined(self, target_id: str) -> str | None:
        """The positions box whose sum lies below `target_id`, if any."""
        return next(
            (e.source for e in self.d.edges if e.kind == "positions" and e.target == target_id),
            None,
        )

    def draw_cross(self, source: Placed, target: Placed, edge: Edge) -> None:
        """Up from the encoder's output, across, and into the decoder block's cross-attention
        from the left, as in the paper; one block is drawn for all N. From a box below the
        target (XLNet's content stream, whose every layer gives the query stream its keys
        and values): out of its side, then up the gap between the columns."""
        x = target.x - FRAME_PAD - COLUMN_GAP / 2
        column = self.column_of(edge.target).column
        blocks = f"into all {column.stack.n_layers} {column.title.lower()} blocks"
        shape = shape_text(edge.shape)
        if source.y > target.bottom:
            points = [(source.x + source.w, source.cy), (x, source.cy), (x, target.cy)]
            shape_at, middle = source.cy + 14, x
        else:
            up = source.y - 24
            points = [(source.cx, source.y), (source.cx, up), (x, up), (x, target.cy)]
            shape_at, middle = up - 19, (source.cx + x) / 2  # where the paper leaves room
        self.shapes.append(Line([*points, (target.x, target.cy)], CROSS_INK, 1.8))
        self.shapes.append(
            Text(target.x - 6, target.cy - 6, "K, V", 10, True, anchor="end", color=CROSS_INK)
        )
        self.shapes.append(
            Text(middle, shape_at, shape, 9.5, mono=True, anchor="middle", color=CROSS_INK)
        )
        self.shapes.append(
            Text(middle, shape_at + 13, blocks, 9.5, anchor="middle", color=CROSS_INK)
        )

    def draw_shapes_on_edges(self) -> None:
        """The tensor's shape beside a flow arrow wherever it changes along a column."""
        shown = {c.name: b.shape for c in self.d.columns for b in c.below if b.kind == "input"}
        for edge in self.d.edges:
            if edge.kind != "flow" or not edge.shape:
                continue
            c = self.column_of(edge.target)
            if shown.get(c.column.name) == edge.shape:
                continue
            shown[c.column.name] = edge.shape
            y = self.at[edge.source].y - 7  # just above where the arrow leaves
            x, anchor = (c.cx + 8, "start") if c.residual_left else (c.cx - 8, "end")
            text = shape_text(edge.shape)
            self.shapes.append(Text(x, y, text, 9.5, mono=True, anchor=anchor, color=MUTED))

    def draw_caption(self) -> None:
        d = self.d
        self.shapes.append(Text(MARGIN, 32, d.title, 17, True))
        summary = (
            f"{d.total_params:,} parameters · {si(d.total_flops)} forward FLOPs for the sample "
            f"batch {d.sample}"
        )
        self.shapes.append(Text(MARGIN, 52, summary, 11, color=MUTED))

    def draw_legend(self, x: float, y: float, width: float) -> float:
        """What the lines and bars mean, in lines of `width` px; returns the bottom."""
        items: list[tuple[Shape, str]] = [
            (Line([(0, 0), (28, 0)]), "data flow and residual connections"),
            (Rect(0, 0, 28, 7, PARAMS_INK, PARAMS_INK, 1.5, 0.0), "share of the parameters"),
            (
                Rect(0, 0, 28, 7, FLOPS_INK, FLOPS_INK, 1.5, 0.0),
                "share of the forward FLOPs (matrix products and attention)",
            ),
        ]
        if self.d.edges_of("cross"):
            cross = Line([(0, 0), (28, 0)], CROSS_INK, 1.8)
            text = "encoder output (keys, values) into every decoder block"
            if any(c.name == "query" for c in self.d.columns):
                text = "each layer's content stream (keys, values) into the query stream"
            items.insert(1, (cross, text))
        cursor = x
        for sample, text in items:
            size = 34 + text_width(text, 10.5)
            if cursor > x and cursor + size > x + width:
                cursor, y = x, y + 18
            if isinstance(sample, Line):
                sample.points = [(cursor, y - 4), (cursor + 28, y - 4)]
            else:
                sample.x, sample.y = cursor, y - 8
            self.shapes += [sample, Text(cursor + 34, y, text, 10.5, color=MUTED)]
            cursor += size + 28
        note = (
            "Bars are relative to the largest part, the numbers are shares of the whole; a box "
            "inside the N× frame counts all N blocks and shared weights count once. Shapes are "
            "those of the sample batch. Section tags link to the papers, boxes to the code."
        )
        for line in wrap(note, 10.5, width):
            y += 16
            self.shapes.append(Text(x, y, line, 10.5, color=MUTED))
        return y

    def note(self, box: Box, x: float, y: float) -> float:
        """One note: the box's label, its papers' sections, its code; returns the bottom."""
        self.shapes.append(Text(x, y + 12, box.label, 11.5, True))
        y += 12
        for r in box.refs:
            for i, line in enumerate(wrap(f"{r.paper}, {r.section} {r.what}", 10, NOTES_W - 12)):
                y += 13
                text = Text(x + (10 if i else 0), y, line, 10, color=MUTED)
                self.shapes.append(Link(r.url, f"{r} ({r.url})", [text]))
        if box.code is not None:
            y += 13
            text = Text(x, y, f"{box.code}  (line {box.code.line})", 9.5, mono=True, color=CODE_INK)
            self.shapes.append(Link(self.code_href(box), str(box.code), [text]))
        return y + 4

    def note_height(self, box: Box) -> float:
        lines = sum(
            len(wrap(f"{r.paper}, {r.section} {r.what}", 10, NOTES_W - 12)) for r in box.refs
        )
        return 16 + 13 * (lines + (box.code is not None))

    def draw_notes(self, x: float, y: float, width: float) -> float:
        """Per kind of box, like margin notes: the papers' sections and the code, in as many
        columns as fit in `width`; returns the bottom."""
        self.shapes.append(Text(x, y + 14, "Notes: the papers and the code", 13, True))
        y += 24
        notes: list[Box] = []
        seen: set[tuple] = set()
        for box in self.d.boxes():
            key = (box.label, tuple(box.refs), box.code)
            if box.kind not in TERMINALS and key not in seen:
                seen.add(key)
                notes.append(box)
        n = max(1, int((width + 30) // (NOTES_W + 30)))
        heights = [self.note_height(b) + 8 for b in notes]
        target = sum(heights) / n
        column, cursor, bottom = 0, y, y
        for box, h in zip(notes, heights, strict=True):
            if cursor > y and cursor - y + h > target + 20 and column < n - 1:
                column, cursor = column + 1, y
            cursor = self.note(box, x + column * (NOTES_W + 30), cursor) + 8
            bottom = max(bottom, cursor)
        return bottom

    def code_href(self, box: Box) -> str:
        if box.code is None:
            return ""
        return f"{self.code_base}/{box.code.path}#L{box.code.line}"

    def tooltip(self, box: Box) -> str:
        lines = [f"{box.label}: {box.detail}" if box.detail else box.label]
        lines += [f"{r} ({r.url})" for r in box.refs]
        if box.code is not None:
            lines.append(f"code: {box.code}, line {box.code.line}")
        if box.params or box.flops:
            lines.append(
                f"{box.params:,} parameters ({self.d.param_share(box):.1f}%), "
                f"{box.flops:,} forward FLOPs ({self.d.flop_share(box):.1f}%)"
            )
        if box.shape:
            lines.append(f"output {shape_text(box.shape)} for the sample batch")
        return "\n".join(lines)
