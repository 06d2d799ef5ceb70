"""`tsuite sweep SWEEP.yaml [OVERRIDES...]`: run a W&B sweep file's grid locally, one run after
another, then `tsuite compare` over its runs. The same files drive W&B agents
(`just sweep NAME`); offline, every method is run as the full grid of `values`."""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from experiments import compare
from experiments.packaged import packaged_file


def grid(spec: dict[str, Any]) -> list[dict[str, Any]]:
    names, choices = [], []
    for name, options in (spec.get("parameters") or {}).items():
        names.append(name)
        choices.append(options["values"] if "values" in options else [options["value"]])
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*choices)]


def cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def command(spec: dict[str, Any], assignment: dict[str, Any], overrides: list[str]) -> list[str]:
    """The sweep's command with W&B's macros filled in: ${args} becomes --key=value."""
    args = [f"--{k}={cli_value(v)}" for k, v in assignment.items()]
    out: list[str] = []
    for part in spec.get("command") or ["${env}", "tsuite", "fit", "${args}"]:
        if part == "${env}":
            continue
        if part in ("tsuite", "${program}"):
            out += [sys.executable, "-m", "experiments"]
        elif part == "${interpreter}":
            out.append(sys.executable)
        elif part in ("${args}", "${args_no_hyphens}"):
            out += args + overrides
        else:
            out.append(part)
    return out


def option(parts: list[str], name: str, default: str) -> str:
    for i, part in enumerate(parts):
        if part == name and i + 1 < len(parts):
            return parts[i + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return default


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite sweep", description=__doc__)
    p.add_argument("sweep", type=Path, help="a W&B sweep file (experiments/sweeps/...)")
    p.add_argument("--dry_run", action="store_true", help="print the commands only")
    args, overrides = p.parse_known_args(argv)
    args.sweep = Path(packaged_file(str(args.sweep), "sweeps"))
    if not args.sweep.is_file():
        raise FileNotFoundError(f"sweep file {args.sweep} does not exist")
    spec = yaml.safe_load(args.sweep.read_text())
    runs = grid(spec)
    if not runs:
        raise ValueError(f"{args.sweep} has no parameters to sweep")
    started = time.time()
    for i, assignment in enumerate(runs, start=1):
        cmd = command(spec, assignment, overrides)
        print(
            f"[sweep {i}/{len(runs)}] {' '.join(f'{k}={v}' for k, v in assignment.items())}",
            flush=True,
        )
        if args.dry_run:
            print("  " + " ".join(cmd))
            continue
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise RuntimeError(f"sweep run {i} failed (exit {done.returncode}): {' '.join(cmd)}")
    if args.dry_run:
        return
    full = command(spec, {}, overrides)
    experiment_dir = Path(option(full, "--runs_dir", "runs")) / option(
        full, "--experiment", spec.get("name", "")
    )
    folders = [
        p.parent
        for p in experiment_dir.glob("version_*/config.yaml")
        if p.stat().st_mtime >= started
    ]
    compare.main([*map(str, sorted(folders)), "--out", str(experiment_dir / "compare")])
