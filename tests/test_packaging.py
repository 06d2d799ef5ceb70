"""The pure-torch layer stays importable without Lightning; the console script works."""

import subprocess
import sys
import sysconfig
from pathlib import Path

PURE = [
    "modules.attention",
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
