"""Write a `Scene` (experiments/diagram_layout.py) as SVG text, each box a link to its code
and its section tag a link to the paper, tooltips in <title>; or draw the same shapes with
matplotlib for the PNG. Pure Python: no system binaries."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import modules
from experiments.diagram import Diagram
from experiments.diagram_layout import (
    FONT,
    MONO,
    Circle,
    Layout,
    Link,
    Rect,
    Scene,
    Shape,
    Text,
)

SVG_FONTS = {False: "'DejaVu Sans', Verdana, sans-serif", True: "'DejaVu Sans Mono', monospace"}


# --- writers --------------------------------------------------------------------------------
def _arrowhead(points: list[tuple[float, float]], length: float = 8.0, half: float = 3.6):
    """The shortened polyline and the arrow's triangle at its end."""
    (x0, y0), (x1, y1) = points[-2], points[-1]
    norm = math.hypot(x1 - x0, y1 - y0) or 1.0
    ux, uy = (x1 - x0) / norm, (y1 - y0) / norm
    bx, by = x1 - ux * length, y1 - uy * length
    triangle = [(x1, y1), (bx - uy * half, by + ux * half), (bx + uy * half, by - ux * half)]
    return [*points[:-1], (bx, by)], triangle


def _svg_shape(shape: Shape) -> str:
    if isinstance(shape, Link):
        inner = "\n".join(_svg_shape(s) for s in shape.shapes)
        title = f"<title>{escape(shape.title)}</title>"
        ident = f" id={quoteattr(shape.id)}" if shape.id else ""
        if not shape.href:
            return f"<g{ident}>{title}\n{inner}\n</g>"
        return f'<a{ident} href={quoteattr(shape.href)} target="_blank">{title}\n{inner}\n</a>'
    if isinstance(shape, Rect):
        dash = ' stroke-dasharray="5 3"' if shape.dash else ""
        stroke = f' stroke="{shape.stroke}" stroke-width="{shape.width:g}"' if shape.width else ""
        return (
            f'<rect x="{shape.x:.1f}" y="{shape.y:.1f}" width="{shape.w:.1f}" '
            f'height="{shape.h:.1f}" rx="{shape.radius:g}" fill="{shape.fill}"{stroke}{dash}/>'
        )
    if isinstance(shape, Circle):
        stroke = f' stroke="{shape.stroke}" stroke-width="{shape.width:g}"' if shape.width else ""
        return (
            f'<circle cx="{shape.x:.1f}" cy="{shape.y:.1f}" r="{shape.r:g}" '
            f'fill="{shape.fill}"{stroke}/>'
        )
    if isinstance(shape, Text):
        weight = ' font-weight="bold"' if shape.bold else ""
        return (
            f'<text x="{shape.x:.1f}" y="{shape.y:.1f}" font-size="{shape.size:g}" '
            f'font-family="{SVG_FONTS[shape.mono]}" text-anchor="{shape.anchor}" '
            f'fill="{shape.color}"{weight}>{escape(shape.text)}</text>'
        )
    points = shape.points
    head = ""
    if shape.arrow:
        points, triangle = _arrowhead(points)
        corners = " ".join(f"{x:.1f},{y:.1f}" for x, y in triangle)
        head = f'<polygon points="{corners}" fill="{shape.color}"/>'
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (
        f'<polyline points="{path}" fill="none" stroke="{shape.color}" '
        f'stroke-width="{shape.width:g}" stroke-linejoin="round"/>{head}'
    )


def svg(scene: Scene) -> str:
    body = "\n".join(_svg_shape(s) for s in scene.shapes)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{scene.width:.0f}" '
        f'height="{scene.height:.0f}" viewBox="0 0 {scene.width:.0f} {scene.height:.0f}">\n'
        f'<rect width="100%" height="100%" fill="#ffffff"/>\n{body}\n</svg>\n'
    )


def png(scene: Scene, path: Path, scale: float = 2.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle as CirclePatch
    from matplotlib.patches import FancyBboxPatch, Polygon
    from PIL import Image

    pt = 0.72  # px -> points at 100 dpi
    figure = plt.figure(figsize=(scene.width / 100, scene.height / 100), dpi=100)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)
    ax.axis("off")
    anchors = {"start": "left", "middle": "center", "end": "right"}

    def draw(shape: Shape) -> None:
        if isinstance(shape, Link):
            for inner in shape.shapes:
                draw(inner)
        elif isinstance(shape, Rect):
            ax.add_patch(
                FancyBboxPatch(
                    (shape.x, shape.y),
                    shape.w,
                    shape.h,
                    boxstyle=f"round,pad=0,rounding_size={min(shape.radius, shape.h / 2)}",
                    facecolor=shape.fill,
                    edgecolor=shape.stroke if shape.width else "none",
                    linewidth=shape.width * pt,
                    linestyle=(0, (5, 3)) if shape.dash else "solid",
                )
            )
        elif isinstance(shape, Circle):
            ax.add_patch(
                CirclePatch(
                    (shape.x, shape.y),
                    shape.r,
                    facecolor=shape.fill,
                    edgecolor=shape.stroke if shape.width else "none",
                    linewidth=shape.width * pt,
                )
            )
        elif isinstance(shape, Text):
            ax.text(
                shape.x,
                shape.y,
                shape.text,
                fontsize=shape.size * pt,
                family=MONO if shape.mono else FONT,
                weight="bold" if shape.bold else "normal",
                ha=anchors[shape.anchor],
                va="baseline",
                color=shape.color,
            )
        else:
            points = shape.points
            if shape.arrow:
                points, triangle = _arrowhead(points)
                ax.add_patch(
                    Polygon(triangle, closed=True, facecolor=shape.color, edgecolor="none")
                )
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=shape.color, linewidth=shape.width * pt, solid_joinstyle="round")

    for shape in scene.shapes:
        draw(shape)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100 * scale, facecolor="white")
    plt.close(figure)
    # a palette of 256 colours keeps the anti-aliasing and makes the file 3x smaller
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)


def write(diagram: Diagram, folder: Path, name: str, with_png: bool = True) -> list[Path]:
    """`folder/name.svg` (and `folder/name.png`); code links are relative to the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    root = Path(modules.__file__).resolve().parent.parent
    code_base = Path(os.path.relpath(root, folder.resolve())).as_posix()
    scene = Layout(diagram, code_base).scene()
    svg_path, png_path = folder / f"{name}.svg", folder / f"{name}.png"
    svg_path.write_text(svg(scene), encoding="utf-8")
    if not with_png:
        return [svg_path]
    png(scene, png_path)
    return [svg_path, png_path]
