"""Run folders: runs/<experiment>/<version>/ with config.yaml, checkpoints/, metrics.csv,
wandb/. Which folder an invocation uses, creating it with its resolved config, and removing it
again when the run fails before its first checkpoint."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

RUN_DIR_ENV = "TSUITE_RUN_DIR"  # set by rank 0 so spawned ranks log into the same folder


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


@dataclass
class RunFolder:
    experiment: str
    path: Path
    resuming: bool  # a fit continued from a checkpoint of this folder

    created_here: ClassVar[list[Path]] = []  # folders this invocation made

    @classmethod
    def resolve(cls, settings: Any, subcommand: str | None) -> RunFolder:
        """The folder of this invocation: the one of the rank that spawned this one, an exact
        --run_dir, the folder a resumed checkpoint lives in (other commands get a subfolder of
        it), or a new version of the experiment."""
        experiment = settings.experiment or experiment_name(
            [Path(str(c)) for c in settings.get("config") or []]
        )
        root = Path(settings.runs_dir) / experiment
        checkpoint = settings.get("ckpt_path")
        if checkpoint == "last":
            found = latest_checkpoint(root)
            if found is None:
                raise FileNotFoundError(
                    f"--ckpt_path last: no {root}/version_*/checkpoints/last.ckpt to resume"
                )
            settings.ckpt_path = checkpoint = str(found)
        resuming = checkpoint is not None
        if os.environ.get(RUN_DIR_ENV):
            return cls(experiment, Path(os.environ[RUN_DIR_ENV]), resuming)
        if settings.run_dir:
            return cls(experiment, Path(settings.run_dir), resuming)
        if checkpoint:
            previous = run_dir_of_checkpoint(Path(checkpoint))
            if previous is not None:
                if subcommand == "fit":
                    return cls(experiment, previous, True)
                return cls(experiment, previous / f"{subcommand}-{uuid.uuid4().hex[:6]}", False)
        if not is_global_rank_zero():
            raise RuntimeError(
                f"rank > 0 started without a run folder: launchers that start every rank "
                f"(torchrun, SLURM) need --run_dir or {RUN_DIR_ENV} set to the same folder"
            )
        return cls(experiment, new_version(root), False)

    def create(self, config: str, subcommand: str | None) -> None:
        """Make the folder (rank 0) with the resolved config; a second command in the same
        folder writes its config beside the first."""
        if not self.path.exists():
            RunFolder.created_here.append(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(self.path)
        name = "config.yaml"
        if (self.path / name).exists():
            name = f"config.{subcommand}-{uuid.uuid4().hex[:6]}.yaml"
        (self.path / name).write_text(config)

    @classmethod
    def remove_unfinished(cls) -> None:
        """A run that failed before its first checkpoint leaves no folder behind."""
        for path in cls.created_here:
            if not any(path.glob("checkpoints/*.ckpt")):
                shutil.rmtree(path, ignore_errors=True)
        cls.created_here.clear()
