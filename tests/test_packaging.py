"""The pure-torch layer stays importable without Lightning; the console script works."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PURE = [
    "modules.attention",
    "modules.batch",
    "modules.codec",
    "modules.lightning_compat",
    "modules.seq2seq",
    "modules.masks",
    "modules.layers",
    "modules.models",
    "modules.interop",
    "modules.generation",
    "modules.schedules",
    "modules.positions",
    "modules.config",
]


def test_pure_torch_layer_never_imports_lightning():
    code = (
        f"import sys; import {', '.join(PURE)}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'datamodules'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_tsuite_help_lists_subcommands():
    script = Path(sysconfig.get_path("scripts")) / "tsuite"  # the installed console script
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_runs_away_from_the_repository(tmp_path: Path):
    """The wheel built from pyproject.toml, installed (not editable) into a fresh virtual
    environment, trains the packaged default from an empty folder and lists its configs. The
    environment borrows the dependencies of this one (a path entry to its site-packages, whose
    editable install of the suite is a .pth file a path entry does not run), so nothing is
    downloaded; the suite itself comes only from the wheel."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "modules", "datamodules", "experiments"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **IGNORED if (ROOT / name).is_dir() else {})
    pip = [sys.executable, "-m", "pip", "-q"]
    run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)])
    [wheel] = tmp_path.glob("transformer_suite-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(site.stdout.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"])
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TSUITE_RUN_DIR")}
    env.update(TSUITE_CACHE=str(tmp_path / "cache"), WANDB_MODE="disabled")
    where = run([str(python), "-c", "import modules; print(modules.__file__)"], empty, env)
    assert str(venv) in where.stdout  # the installed copy, not the repository
    listed = run([str(venv / "bin" / "tsuite"), "configs"], empty, env)
    assert "default" in listed.stdout and "translation/multi30k" in listed.stdout
    fit = [str(venv / "bin" / "tsuite"), "fit", "-c", "default", "--trainer.max_steps=2"]
    run([*fit, "--trainer.enable_progress_bar=false"], empty, env)
    assert list((empty / "runs" / "default").glob("version_0/checkpoints/last.ckpt"))


IGNORED = {"ignore": shutil.ignore_patterns("__pycache__", "*.pyc")}


def run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done
