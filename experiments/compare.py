"""`tsuite compare`: runs side by side — the config keys that differ, parameters, best and final
metrics, tokens/s and wall time — and their learning curves as a PNG.

Offline from run folders (config.yaml, metrics.csv, summary.json), or online from a W&B
project / group through the W&B API.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.user_files import load_yaml, read_text
from modules.tasks import metric_goal
from modules.tasks.checkpoints import import_task

# Keys that differ between any two runs without being a variant of the experiment.
NOT_A_VARIANT = (
    "runs_dir",
    "run_dir",
    "ckpt_path",
    "config",
    "tags",
    "wandb_project",
    "experiment",
    "data.init_args.cache_dir",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
)


@dataclass
class Run:
    name: str
    config: dict[str, Any]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def best(self, metric: str) -> float | None:
        values = [v for _, v in self.history.get(metric, []) if not math.isnan(v)]
        if not values:
            return None
        goal = metric_goal(import_task(self.config["model.class_path"]), metric)
        return max(values) if goal == "max" else min(values)

    def final(self, metric: str) -> float | None:
        values = self.history.get(metric, [])
        return values[-1][1] if values else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def run_folders(paths: list[Path]) -> list[Path]:
    """Run folders among `paths`; an experiment folder stands for all its versions."""
    found = []
    for path in paths:
        if (path / "config.yaml").is_file():
            found.append(path)
        else:
            found += sorted(
                p.parent for p in path.rglob("config.yaml") if (p.parent / "metrics.csv").is_file()
            )
    if not found:
        raise FileNotFoundError(
            f"no run folders (config.yaml + metrics.csv) in {[str(p) for p in paths]}"
        )
    return found


def load_local(folder: Path) -> Run:
    config = flatten(load_yaml(folder / "config.yaml"))
    history: dict[str, list[tuple[int, float]]] = {}
    metrics_file = folder / "metrics.csv"
    if metrics_file.is_file() and metrics_file.stat().st_size:  # empty: no metrics logged yet
        rows = csv.DictReader(io.StringIO(read_text(metrics_file), newline=""))
        for row in rows:
            for key, value in row.items():
                if key in ("step", "epoch") or not value or key.startswith("lr-"):
                    continue
                try:
                    point = (int(float(row["step"])), float(value))
                except (TypeError, ValueError) as error:
                    raise ValueError(
                        f"{metrics_file}, line {rows.line_num}: {key}={value!r} at "
                        f"step={row.get('step')!r} is not a number"
                    ) from error
                history.setdefault(key, []).append(point)
    for key, points in history.items():  # a resumed run logs some steps twice: keep the last
        history[key] = sorted(dict(points).items())
    summary_file = folder / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    name = f"{config.get('experiment') or folder.parent.name}/{folder.name}"
    return Run(name, config, history, summary)


def load_wandb(path: str, group: str | None) -> list[Run]:
    import wandb

    api = wandb.Api()
    runs = []
    for remote in api.runs(path, filters={"group": group} if group else None):
        config = flatten(remote.config.get("config", remote.config))
        history: dict[str, list[tuple[int, float]]] = {}
        for row in remote.scan_history():
            for key, value in row.items():
                if isinstance(value, int | float) and "/" in key and not key.startswith("lr-"):
                    history.setdefault(key, []).append(
                        (int(row.get("trainer/global_step", row.get("_step", 0))), float(value))
                    )
        summary = {"wall_seconds": remote.summary.get("_runtime"), "parameters": None}
        runs.append(Run(remote.name, config, history, summary))
    return runs


def differing_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for run in runs for k in run.config})
    differ = []
    for key in keys:
        if key.startswith(NOT_A_VARIANT) or key in NOT_A_VARIANT:
            continue
        values = {json.dumps(run.config.get(key), sort_keys=True, default=str) for run in runs}
        if len(values) > 1:
            differ.append(key)
    return differ


def table(runs: list[Run]) -> str:
    keys = differing_keys(runs)
    metrics = sorted({m for run in runs for m in run.history if m.startswith(("val/", "test/"))})
    header = [
        "run",
        *[k.removeprefix("model.init_args.").removeprefix("data.init_args.") for k in keys],
        "params",
        *[f"{m} best/final" for m in metrics],
        "tokens/s",
        "wall s",
    ]
    rows = []
    for run in runs:
        params = run.summary.get("parameters")
        row = [
            run.name,
            *[_fmt(run.config.get(k)) for k in keys],
            f"{params / 1e6:.2f}M" if params else "-",
        ]
        for metric in metrics:
            best, final = run.best(metric), run.final(metric)
            row.append("-" if best is None else f"{best:.4g} / {final:.4g}")
        rate = run.summary.get("tokens_per_second")
        wall = run.summary.get("wall_seconds")
        row += [f"{rate:,.0f}" if rate else "-", f"{wall:.0f}" if wall else "-"]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted(
        {m for run in runs for m in run.history if m.startswith(("val/", "train/loss"))}
    )
    columns = min(3, len(metrics)) or 1
    rows = math.ceil(len(metrics) / columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    for axis, metric in zip(axes.flat, metrics, strict=False):
        for run in runs:
            points = run.history.get(metric, [])
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(
                    steps,
                    values,
                    label=run.name,
                    marker="o" if len(points) < 30 else None,
                    markersize=3,
                )
        axis.set_title(metric)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    figure.tight_layout(rect=(0, 0.1 + 0.03 * (len(labels) // 4), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _fmt(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsuite compare", description=__doc__)
    p.add_argument("runs", nargs="*", type=Path, help="run folders or experiment folders")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="compare runs from W&B instead")
    p.add_argument("--group", help="with --wandb: only this group (experiment)")
    p.add_argument("--out", type=Path, help="where to write compare.txt and curves.png")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.wandb:
        runs = load_wandb(args.wandb, args.group)
        out = args.out or Path("compare")
    else:
        if not args.runs:
            raise ValueError("give run folders (or an experiment folder) to compare, or --wandb")
        folders = run_folders(args.runs)
        runs = [load_local(f) for f in folders]
        common = _common_parent(folders)
        if len({r.name for r in runs}) < len(runs):  # same experiment/version in two places
            for run, folder in zip(runs, folders, strict=True):
                run.name = str(folder.resolve().relative_to(common))
        out = args.out or common / "compare"
    if not runs:
        raise ValueError("no runs to compare")
    out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    (out / "compare.txt").write_text(text + "\n")
    plot(runs, out / "curves.png")
    print(text)
    print(f"\nwritten: {out / 'compare.txt'}, {out / 'curves.png'}")


def _common_parent(folders: list[Path]) -> Path:
    parents = [f.resolve().parent for f in folders]
    common = parents[0]
    while not all(common in p.parents or p == common for p in parents):
        common = common.parent
    return common
