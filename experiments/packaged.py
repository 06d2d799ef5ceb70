"""The experiment configs, trainer presets and sweeps that ship inside the package, so that
`tsuite fit -c default` works after `pip install transformer-suite`, away from the repository.

`tsuite configs` lists them, one line each.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

PACKAGED = Path(__file__).parent  # experiments/configs/ and experiments/sweeps/

Kind = Literal["configs", "sweeps"]


def packaged_file(value: str, kind: Kind = "configs") -> str:
    """`value` if it is a path that exists (a path wins), else the packaged file it names:
    `default`, `translation/multi30k`, `trainer/gpu.yaml` and the repository path
    `experiments/configs/default.yaml` all name the packaged experiments/configs/default.yaml."""
    if Path(value).exists():
        return value
    name = value.removeprefix(f"experiments/{kind}/")
    packaged = PACKAGED / kind / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return str(packaged) if packaged.is_file() else value


def config_arguments(argv: list[str]) -> list[str]:
    """A command line with each `-c`/`--config` value resolved by `packaged_file`."""
    out, expecting = [], False
    for arg in argv:
        if expecting:
            arg, expecting = packaged_file(arg), False
        elif arg in ("-c", "--config"):
            expecting = True
        elif arg.startswith("--config="):
            arg = "--config=" + packaged_file(arg.removeprefix("--config="))
        out.append(arg)
    return out


def description(path: Path) -> str:
    """The first line of a config's leading comment."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="tsuite configs", description=__doc__)
    p.add_argument("--sweeps", action="store_true", help="list the sweeps instead")
    args = p.parse_args(argv)
    kind: Kind = "sweeps" if args.sweeps else "configs"
    root = PACKAGED / kind
    files = sorted(root.rglob("*.yaml"))
    width = max(len(str(f.relative_to(root).with_suffix(""))) for f in files)
    for file in files:
        name = str(file.relative_to(root).with_suffix(""))
        print(f"{name:<{width}}  {description(file)}")
    command = "tsuite sweep NAME" if args.sweeps else "tsuite fit -c NAME"
    print(f"\n{len(files)} {kind} in {root}; use one with: {command}")
