"""`tsuite prepare -c CONFIG [-c ...] [--data.init_args.KEY=VALUE ...]`: only the data
preparation of an experiment: tokenise its data into the cache (on a CPU machine ahead of a
GPU job, or once for every node of a cluster with a shared cache folder, TSUITE_CACHE).

The data module is built from the configs' `data:` sections and the `--data...` arguments
by LightningCLI's own parser for the `data` group, so it is the data module `tsuite fit`
builds, and `tsuite fit` with the same configs finds what this wrote (the same cache key).
The model and the trainer are not built; their arguments are accepted and ignored, so a
`tsuite fit` command line works unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser

from datamodules.token_store import read_manifest, store_bytes
from experiments.user_files import load_yaml


def data_arguments(argv: list[str]) -> list[str]:
    """The data part of a `tsuite fit` command line: each config's `data:` section, in order,
    as a --data argument, and the --data... arguments."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--config") or arg.startswith("--config="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            config = load_yaml(Path(value))
            if not isinstance(config, dict):
                raise ValueError(f"{value}: a config file maps keys to values, not a {config!r}")
            if "data" in config:
                out.append(f"--data={json.dumps(config['data'])}")
        elif arg == "--data" or arg.startswith(("--data.", "--data=")):
            out.append(arg if "=" in arg else f"{arg}={next(args, '')}")
    if not out:
        raise ValueError("tsuite prepare: no data: section in the configs (give -c CONFIG)")
    return out


def build_data(argv: list[str]) -> L.LightningDataModule:
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True)
    settings = parser.parse_args(data_arguments(argv))
    return parser.instantiate_classes(settings).data


def summary(data: Any, seconds: float) -> str:
    folder = Path(data.cache_folder)
    lines = [
        f"[tsuite] prepared the data of {data.source.describe()} in {seconds:.1f} s",
        f"  cache   {folder} ({store_bytes(folder) / 2**20:,.1f} MiB)",
    ]
    if (folder / "manifest.json").is_file():
        for split, entry in read_manifest(folder)["splits"].items():
            dtype = next(iter(entry["columns"].values()))
            lines.append(
                f"  {split:<10} {entry['tokens']:,} tokens ({dtype}) in {len(entry['shards'])} "
                f"shard(s), {entry['rows']:,} rows"
            )
    else:
        lines += [f"  {split:<10} {len(rows):,} rows" for split, rows in data.raw.items()]
    lines.append("`tsuite fit` with the same configs reads it from there.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    data = build_data(argv)
    start = time.monotonic()
    data.prepare_data()
    print(summary(data, time.monotonic() - start), flush=True)


if __name__ == "__main__":
    main()
