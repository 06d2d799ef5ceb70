"""Run folders: runs/<experiment>/<version>/ with config.yaml, checkpoints/, metrics.csv, wandb/."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from experiments.checkpoints import checkpoint_header

CONFIG_ROOT = Path("experiments") / "configs"


def experiment_name(config_files: list[Path]) -> str:
    """The first experiment config's path under experiments/configs, without .yaml
    (trainer presets under configs/trainer/ are skipped)."""
    for file in config_files:
        parts = Path(file).with_suffix("").parts
        if "configs" in parts:
            rest = parts[len(parts) - parts[::-1].index("configs") :]
            if rest and rest[0] != "trainer":
                return "/".join(rest)
        elif parts:
            return parts[-1]
    return "unnamed"


def is_global_rank_zero() -> bool:
    """Before a Trainer exists: rank 0 unless a launcher says otherwise."""
    for variable in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        if int(os.environ.get(variable, "0")) != 0:
            return False
    return True


def new_version(experiment_dir: Path) -> Path:
    versions = [
        int(p.name.removeprefix("version_"))
        for p in experiment_dir.glob("version_*")
        if p.name.removeprefix("version_").isdigit()
    ]
    return experiment_dir / f"version_{max(versions, default=-1) + 1}"


def latest_checkpoint(experiment_dir: Path) -> Path | None:
    """last.ckpt of the newest version of an experiment that has one."""
    candidates = sorted(
        experiment_dir.glob("version_*/checkpoints/last.ckpt"),
        key=lambda p: int(p.parent.parent.name.removeprefix("version_")),
    )
    return candidates[-1] if candidates else None


def run_dir_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint lives in (…/<version>/checkpoints/x.ckpt), if any."""
    folder = checkpoint.resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").exists():
        return folder.parent
    return None


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_run_id(checkpoint: Path) -> str | None:
    """The W&B run id stored in a checkpoint by `ResumeState`."""
    return checkpoint_header(checkpoint).get("wandb_run_id")
