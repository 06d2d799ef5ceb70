"""Mistakes a user can make, across the CLI (fit, translate, generate, compare, embed): every
case exits with code 2 and a few lines that name the key, file or line (no traceback), and
leaves the run folders and caches as they were.

The cases run in-process (a subprocess costs seconds of imports each); one runs as a real
process to show the same from the outside."""

import json
from pathlib import Path

import pytest

from experiments.cli import main
from tests.cli_helpers import CONFIGS, fit_once, run_cli_process
from tests.test_training import lm_config

DEFAULT = str(CONFIGS / "default.yaml")
PAIRS = [{"en": f"number {i} and {i + 1}", "de": f"zahl {i} und {i + 1}"} for i in range(60)]
TINY_ARCH = '--model.init_args.arch={"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_length": 64}'


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def source(folder: Path) -> str:
    return "--data.init_args.source=" + json.dumps({"kind": "local", "name": str(folder)})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Two finished runs, each with its run folder and cache: a character GPT (lm/) and a
    tiny translation model (mt/)."""
    root = tmp_path_factory.mktemp("world")
    (root / "lm").mkdir()
    fit_once(root / "lm", lm_config(root / "lm", max_steps=2, val_check_interval=2))
    (root / "pairs").mkdir()
    (root / "pairs" / "train.jsonl").write_text(jsonl(PAIRS))
    (root / "pairs" / "validation.jsonl").write_text(jsonl(PAIRS[:8]))
    fit_once(
        root / "mt",
        Path(DEFAULT),
        source(root / "pairs"),
        TINY_ARCH,
        '--data.init_args.tokenizer={"kind": "bpe", "vocab_size": 120}',
        "--data.init_args.max_length=64",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.callbacks=[]",
    )
    return root


def files(tmp: Path, world: Path) -> dict[str, str]:
    """The bad inputs, written under `tmp`; the names that the cases' arguments use."""
    lm = next((world / "lm" / "runs").rglob("last.ckpt"))
    mt = next((world / "mt" / "runs").rglob("last.ckpt"))
    content: dict[str, str | bytes] = {
        "bad.yaml": "model:\n  class_path: [unclosed\n",
        "unknown.yaml": "model:\n  init_args:\n    label_smothing: 0.1\n",
        "type.yaml": "trainer:\n  max_steps: many\n",
        "empty.yaml": "",
        "bytes.yaml": b"trainer:\n  max_steps: 3\xff\n",
        "list.yaml": "- trainer\n- model\n",
        "garbage.ckpt": b"not a checkpoint",
        "truncated.ckpt": lm.read_bytes()[: lm.stat().st_size // 2],
        "badtok.json": "{not json",
        "text.txt": "one\ntwo\n",
        "text.ckpt": "one\ntwo\n",
        "empty.txt": "",
        "bytes.txt": b"one\ntw\xff\n",
        "long.txt": "one\n" + "number " * 100 + "\n",
        "columns/train.jsonl": '{"english": "one", "de": "eins"}\n',
        "columns/validation.jsonl": '{"english": "two", "de": "zwei"}\n',
        "nosplit/train.jsonl": '{"en": "one", "de": "eins"}\n',
        "nosplit/validation.jsonl": "",
        "undecodable/train.jsonl": b'{"en": "one", "de": "eins"}\n{"en": "tw\xff", "de": "zwei"}\n',
        "undecodable/validation.jsonl": '{"en": "one", "de": "eins"}\n',
        "run_yaml/config.yaml": "model: [unclosed\n",
        "run_yaml/metrics.csv": "step,val/loss\n0,1.0\n",
        "run_number/config.yaml": "seed_everything: 1\n",
        "run_number/metrics.csv": "step,val/loss\n0,1.0\n1,abc\n",
        "run_bytes/config.yaml": "seed_everything: 1\n",
        "run_bytes/metrics.csv": b"step,val/loss\n0,1\xff\n",
        "run_empty/config.yaml": "",
        "run_empty/metrics.csv": "step,val/loss\n0,1.0\n",
        "no_runs/notes.txt": "nothing here\n",
    }
    for name, data in content.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return {"tmp": str(tmp), "world": str(world), "lm": str(lm), "mt": str(mt), "default": DEFAULT}


# The data and tokenizer of the translation run in `world` (already cached), so that a case
# found after tokenising finds the cache as it was.
FIT = [
    "fit",
    "-c",
    "{default}",
    '--data.init_args.source={"kind": "local", "name": "{world}/pairs"}',
    '--data.init_args.tokenizer={"kind": "bpe", "vocab_size": 120}',
    "--data.init_args.max_length=64",
]
SOURCE = '--data.init_args.source={"kind": "local", "name": "{tmp}/%s"}'
# (command line, what the message must name)
CASES = {
    # fit: configs
    "fit/malformed-yaml": (["fit", "-c", "{tmp}/bad.yaml"], ["bad.yaml, line 3, column 1"]),
    "fit/unknown-key-in-yaml": ([*FIT, "-c", "{tmp}/unknown.yaml"], ["'label_smothing'"]),
    "fit/unknown-key": ([*FIT, "--model.init_args.label_smothing=0.1"], ["label_smothing"]),
    "fit/unknown-optim-key": ([*FIT, "--model.init_args.optim.lrr=0.1"], ["optim.lrr"]),
    "fit/unknown-trainer-key": ([*FIT, "--trainer.max_stepz=3"], ["max_stepz"]),
    "fit/wrong-type-in-yaml": ([*FIT, "-c", "{tmp}/type.yaml"], ['"trainer.max_steps"', "many"]),
    "fit/wrong-type": ([*FIT, "--data.init_args.max_tokens=lots"], ["max_tokens", "lots"]),
    "fit/bad-choice": ([*FIT, "--data.init_args.source.kind=ftp"], ["kind", "ftp"]),
    "fit/impossible-arch": (
        [*FIT, '--model.init_args.arch={"d_model": 100, "n_heads": 8}'],
        ["d_model=100 is not divisible by n_heads=8"],
    ),
    "fit/impossible-option": (
        [*FIT, "--model.init_args.optim.max_nonfinite_steps=0"],
        ["optim.max_nonfinite_steps=0"],
    ),
    "fit/missing-config": (["fit", "-c", "{tmp}/absent.yaml"], ["absent.yaml does not exist"]),
    "fit/empty-config": (["fit", "-c", "{tmp}/empty.yaml"], ["empty.yaml is empty"]),
    "fit/undecodable-config": (["fit", "-c", "{tmp}/bytes.yaml"], ["bytes.yaml, line 2: not"]),
    "fit/config-not-a-mapping": (["fit", "-c", "{tmp}/list.yaml"], ["list.yaml: a config file"]),
    # fit: checkpoints and tokenizers
    "fit/missing-checkpoint": ([*FIT, "--ckpt_path={tmp}/absent.ckpt"], ["absent.ckpt does not"]),
    "fit/garbage-checkpoint": (
        [*FIT, "--ckpt_path", "{tmp}/garbage.ckpt"],
        ["garbage.ckpt is not"],
    ),
    "fit/truncated-checkpoint": ([*FIT, "--ckpt_path={tmp}/truncated.ckpt"], ["truncated.ckpt"]),
    "fit/nothing-to-resume": (
        [*FIT, "--experiment=nothing", "--ckpt_path=last"],
        ["nothing/version_*/checkpoints/last.ckpt to resume"],
    ),
    "fit/missing-tokenizer": (
        [*FIT, "--data.init_args.tokenizer.path={tmp}/tok.json"],
        ["tok.json does not exist", "data.tokenizer.path"],
    ),
    "fit/damaged-tokenizer": (
        [*FIT, "--data.init_args.tokenizer.path={tmp}/badtok.json"],
        ["badtok.json"],
    ),
    # fit: data
    "fit/missing-data": ([*FIT, SOURCE % "absent"], ["absent does not exist"]),
    "fit/missing-column": (
        [*FIT, SOURCE % "columns"],
        ["lacks column(s) ['en']", "source.columns"],
    ),
    "fit/empty-split": ([*FIT, SOURCE % "nosplit"], ["validation.jsonl is empty"]),
    "fit/undecodable-data": ([*FIT, SOURCE % "undecodable"], ["train.jsonl, line 2: not valid"]),
    "fit/input-longer-than-model": (
        [*FIT, TINY_ARCH.replace('"max_length": 64', '"max_length": 4')],
        ["data.init_args.max_length=64", "model.init_args.arch.max_length=4"],
    ),
    # fit: optimizer and schedule settings, named when the config is read
    "fit/negative-lr": ([*FIT, "--model.init_args.optim.lr=-1"], ["model.init_args.optim.lr=-1"]),
    "fit/bad-betas": ([*FIT, "--model.init_args.optim.betas=[0.9, 1.5]"], ["optim.betas="]),
    "fit/zero-eps": ([*FIT, "--model.init_args.optim.eps=0"], ["model.init_args.optim.eps=0"]),
    "fit/negative-decay": ([*FIT, "--model.init_args.optim.weight_decay=-0.1"], ["weight_decay"]),
    "fit/negative-warmup": ([*FIT, "--model.init_args.optim.warmup_steps=-5"], ["warmup_steps"]),
    "fit/min-ratio": ([*FIT, "--model.init_args.optim.min_lr_ratio=2"], ["min_lr_ratio=2"]),
    # a checkpoint of another task, in every command that takes one
    **{
        f"{command}/checkpoint-of-another-task": (
            [command, *FIT[1:], "--ckpt_path={lm}"],
            ["lm", "holds a CausalLMModule (decoder", "trains a TranslationModule"],
        )
        for command in ("fit", "validate", "test", "predict")
    },
    "fit/text-named-ckpt": ([*FIT, "--ckpt_path={tmp}/text.ckpt"], ["text.ckpt is not a readable"]),
    "evaluate/other-model": (
        ["evaluate", "{lm}", "--source", "{tmp}/text.txt", "--reference", "{tmp}/text.txt"],
        ["holds a CausalLMModule (decoder"],
    ),
    "attention/truncated-checkpoint": (
        ["attention", "{tmp}/truncated.ckpt", "one"],
        ["truncated.ckpt is not a readable checkpoint: truncated"],
    ),
    "inspect/text-named-ckpt": (["inspect", "{tmp}/text.ckpt"], ["text.ckpt is not a readable"]),
    "average/truncated-checkpoint": (
        ["average", "{mt}", "{tmp}/truncated.ckpt", "--out", "{tmp}/avg.ckpt"],
        ["truncated.ckpt is not a readable checkpoint: truncated"],
    ),
    "upgrade/text-named-ckpt": (
        ["upgrade", "{tmp}/text.ckpt", "--out", "{tmp}/new.ckpt"],
        ["text.ckpt is not a readable checkpoint"],
    ),
    # translate
    "translate/missing-checkpoint": (["translate", "{tmp}/absent.ckpt"], ["absent.ckpt does not"]),
    "translate/garbage-checkpoint": (
        ["translate", "{tmp}/garbage.ckpt", "--input", "{tmp}/text.txt"],
        ["garbage.ckpt is not a readable checkpoint"],
    ),
    "translate/truncated-checkpoint": (
        ["translate", "{tmp}/truncated.ckpt", "--input", "{tmp}/text.txt"],
        ["truncated.ckpt is not a readable checkpoint"],
    ),
    "translate/other-model": (
        ["translate", "{lm}", "--input", "{tmp}/text.txt"],
        ["holds a CausalLMModule (decoder", "needs an encoder-decoder translation model"],
    ),
    "translate/missing-input": (["translate", "{mt}", "--input", "{tmp}/no.txt"], ["no.txt does"]),
    "translate/empty-input": (
        ["translate", "{mt}", "--input", "{tmp}/empty.txt"],
        ["empty.txt is"],
    ),
    "translate/undecodable-input": (
        ["translate", "{mt}", "--input", "{tmp}/bytes.txt"],
        ["bytes.txt, line 2: not valid UTF-8"],
    ),
    "translate/line-too-long": (
        ["translate", "{mt}", "--input", "{tmp}/long.txt"],
        ["line 2 has", "the model reads at most 64"],
    ),
    "translate/zero-beam": (["translate", "{mt}", "--beam", "0"], ["--beam 0: must be at least"]),
    "translate/wrong-type": (["translate", "{mt}", "--beam", "four"], ["--beam", "'four'"]),
    # generate
    "generate/missing-checkpoint": (
        ["generate", "{tmp}/absent.ckpt", "--prompt", "It"],
        ["absent.ckpt does not exist"],
    ),
    "generate/garbage-checkpoint": (
        ["generate", "{tmp}/garbage.ckpt", "--prompt", "It"],
        ["garbage.ckpt is not a readable checkpoint"],
    ),
    "generate/other-model": (
        ["generate", "{mt}", "--prompt", "It"],
        ["holds a TranslationModule (encoder-decoder", "decoder-only"],
    ),
    "generate/empty-prompt": (["generate", "{lm}", "--prompt", ""], ["--prompt is empty"]),
    "generate/prompt-too-long": (
        ["generate", "{lm}", "--prompt", "x" * 60, "--max_new_tokens", "10"],
        ["exceeds the model's context of 64"],
    ),
    "generate/no-new-tokens": (
        ["generate", "{lm}", "--prompt", "It", "--max_new_tokens", "-3"],
        ["max_new_tokens=-3"],
    ),
    "generate/bad-top-p": (["generate", "{lm}", "--prompt", "It", "--top_p", "2"], ["top_p=2.0"]),
    "generate/wrong-type": (
        ["generate", "{lm}", "--prompt", "It", "--max_new_tokens", "ten"],
        ["--max_new_tokens", "'ten'"],
    ),
    "generate/unknown-option": (
        ["generate", "{lm}", "--prompt", "It", "--temprature", "1"],
        ["unrecognized arguments: --temprature"],
    ),
    # compare
    "compare/missing-folder": (["compare", "{tmp}/absent"], ["absent"]),
    "compare/no-runs": (["compare", "{tmp}/no_runs"], ["no run folders", "no_runs"]),
    "compare/malformed-config": (["compare", "{tmp}/run_yaml"], ["config.yaml, line 2, column 1"]),
    "compare/empty-config": (["compare", "{tmp}/run_empty"], ["run_empty/config.yaml is empty"]),
    "compare/not-a-number": (["compare", "{tmp}/run_number"], ["metrics.csv, line 3: val/loss"]),
    "compare/undecodable-metrics": (
        ["compare", "{tmp}/run_bytes"],
        ["metrics.csv, line 2: not valid UTF-8"],
    ),
    # embed
    "embed/missing-checkpoint": (
        ["embed", "{tmp}/absent.ckpt", "--input", "{tmp}/text.txt"],
        ["absent.ckpt does not exist"],
    ),
    "embed/garbage-checkpoint": (
        ["embed", "{tmp}/garbage.ckpt", "--input", "{tmp}/text.txt"],
        ["garbage.ckpt is not a readable checkpoint"],
    ),
    "embed/other-model": (
        ["embed", "{lm}", "--input", "{tmp}/text.txt"],
        ["holds a CausalLMModule (decoder", "embeddings need an encoder"],
    ),
    "embed/missing-input": (["embed", "{lm}", "--input", "{tmp}/no.txt"], ["no.txt does not"]),
    "embed/empty-input": (["embed", "{lm}", "--input", "{tmp}/empty.txt"], ["empty.txt is empty"]),
    "embed/undecodable-input": (
        ["embed", "{lm}", "--input", "{tmp}/bytes.txt"],
        ["bytes.txt, line 2: not valid UTF-8"],
    ),
    "embed/two-models": (["embed", "{lm}", "--pretrained", "x"], ["give either a checkpoint"]),
    "embed/missing-pretrained": (
        ["embed", "--pretrained", "{tmp}/nofolder", "--input", "{tmp}/text.txt"],
        ["nofolder is not a saved HF model folder"],
    ),
}


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, modification time) and folder under `root`."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, world: Path, tmp_path: Path, monkeypatch, capsys):
    arguments, needles = CASES[case]
    names = files(tmp_path, world)
    args = []
    for argument in arguments:
        for name, value in names.items():
            argument = argument.replace("{" + name + "}", value)
        args.append(argument)
    if args[0] == "fit":
        args.append(f"--runs_dir={world / 'mt' / 'runs'}")
    monkeypatch.setenv("TSUITE_CACHE", str(world / "mt" / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    before = snapshot(world)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(args)
    error = capsys.readouterr().err
    assert stopped.value.code == 2, error
    assert "Traceback" not in error
    for needle in needles:
        assert needle in error, error
    lines = [line for line in error.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) <= 12, error  # a paragraph, not a usage dump
    assert snapshot(world) == before  # no run folder, cache entry or file touched


@pytest.mark.slow
def test_bad_input_in_a_real_process(tmp_path: Path):
    """The same from the outside: exit code 2, the message, no traceback, no folder."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_bytes(b'{"en": "one", "de": "eins"}\n{"en": "tw\xff"}\n')
    (data / "validation.jsonl").write_text('{"en": "one", "de": "eins"}\n')
    env = {"TSUITE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    done = run_cli_process(
        ["fit", "-c", DEFAULT, f"--runs_dir={tmp_path / 'runs'}", source(data)], env, timeout=120
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "train.jsonl, line 2: not valid UTF-8" in done.stderr
    assert not (tmp_path / "runs").exists() and not list((tmp_path / "cache").rglob("*.arrow"))
