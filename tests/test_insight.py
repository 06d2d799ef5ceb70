"""Seeing inside and comparing: tsuite compare, offline sweeps, attention maps, inspect."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from experiments.architecture import architecture, load_from_config, sample_batch
from experiments.attention_maps import attention_maps
from tests.cli_helpers import CONFIGS, fit_once, run_cli
from tests.test_training import lm_config, numbers_config, only_run


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    return tmp_path


def test_compare_two_variants_offline(isolated: Path, capsys, monkeypatch):
    config = lm_config(isolated)
    for lr in ("0.001", "0.01"):
        monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
        run_cli(
            [
                "fit",
                "-c",
                str(config),
                f"--runs_dir={isolated / 'runs'}",
                f"--model.init_args.optim.lr={lr}",
            ]
        )
    capsys.readouterr()
    run_cli(["compare", str(isolated / "runs"), "--out", str(isolated / "cmp")])
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert "optim.lr" in header and "runs_dir" not in header and "val/loss best/final" in header
    assert (
        "0.001" in printed
        and "0.01" in printed
        and "version_0" in printed
        and "version_1" in printed
    )
    assert (isolated / "cmp" / "compare.txt").read_text().startswith("run")
    assert (isolated / "cmp" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_offline_sweep_runs_the_grid_then_compares(isolated: Path):
    config = lm_config(isolated)
    sweep = isolated / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "tiny-heads",
                "method": "grid",
                "parameters": {"model.init_args.arch.n_heads": {"values": [2, 4]}},
                "command": [
                    "${env}",
                    "tsuite",
                    "fit",
                    "-c",
                    str(config),
                    "--experiment",
                    "sweeps/tiny",
                    "${args}",
                ],
            }
        )
    )
    run_cli(
        [
            "sweep",
            str(sweep),
            f"--runs_dir={isolated / 'runs'}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
        ]
    )
    experiment = isolated / "runs" / "sweeps" / "tiny"
    configs = [yaml.safe_load(p.read_text()) for p in experiment.glob("version_*/config.yaml")]
    assert sorted(c["model"]["init_args"]["arch"]["n_heads"] for c in configs) == [2, 4]
    assert "arch.n_heads" in (experiment / "compare" / "compare.txt").read_text()


def test_shipped_sweeps_cover_table_3():
    sweeps = {p.stem for p in (CONFIGS.parent / "sweeps" / "numbers").glob("*.yaml")}
    assert {"heads", "key-size", "dropout", "label-smoothing", "positions", "norm"} <= sweeps
    for path in (CONFIGS.parent / "sweeps").rglob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        assert spec["method"] == "grid" and "${args}" in spec["command"], path
        base = Path(spec["command"][spec["command"].index("-c") + 1])
        assert (CONFIGS.parents[1] / base).is_file(), path


@pytest.mark.slow
def test_attention_maps_during_training_and_for_any_text(isolated: Path):
    config = yaml.safe_load(numbers_config(isolated).read_text())
    assert any("AttentionMaps" in c["class_path"] for c in config["trainer"]["callbacks"])
    config["trainer"]["callbacks"][0]["init_args"]["every_n_validations"] = 1
    path = isolated / "maps.yaml"
    path.write_text(yaml.safe_dump(config))
    run_cli(["fit", "-c", str(path), f"--runs_dir={isolated / 'runs'}", "--trainer.max_steps=4"])
    run = only_run(isolated / "runs")
    pictures = {p.name for p in (run / "attention" / "step-4").glob("*.png")}
    assert {
        "encoder-blocks-0-self_attn.png",
        "decoder-blocks-0-self_attn.png",
        "decoder-blocks-0-cross_attn.png",
    } <= pictures
    out = isolated / "maps"
    run_cli(
        [
            "attention",
            str(run / "checkpoints" / "last.ckpt"),
            "three hundred and one",
            "--out",
            str(out),
            "--target",
            "dreihunderteins",
        ]
    )
    assert (out / "decoder-blocks-0-cross_attn.png").read_bytes()[:4] == b"\x89PNG"

    from modules.tasks import load_task

    task = load_task(run / "checkpoints" / "last.ckpt")
    maps = attention_maps(task, task.text_batch("three hundred and one", "dreihunderteins"))
    weights, queries, keys = maps["decoder.blocks.0.self_attn"]
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-5)
    assert torch.triu(weights, diagonal=1).abs().max() == 0  # masked self-attention looks back only
    cross, cross_queries, cross_keys = maps["decoder.blocks.0.cross_attn"]
    assert cross.shape[1:] == (len(cross_queries), len(cross_keys)) and cross_queries[0] == "<s>"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "default.yaml",
            ["cross-attention", "causal mask", "key padding mask", "sinusoidal positions", "tied"],
        ),
        ("gpt/pydocs-tiny.yaml", ["causal mask", "pre-LN", "learned positions"]),
        ("bert/pydocs-mlm.yaml", ["key padding mask", "post-LN", "token types"]),
        (
            "xlnet/pydocs-plm.yaml",
            ["pre-LN", "rotary positions", "task.query_stream", "QueryStream"],
        ),
    ],
)
def test_inspect_maps_the_three_families(config: str, expected: list[str], tmp_path: Path, capsys):
    # --vocab_size: no data loaded or tokenizer trained (the next test covers that path)
    run_cli(["inspect", str(CONFIGS / config), "--out", str(tmp_path / "arch"), "--vocab_size=500"])
    printed = capsys.readouterr().out
    for needle in expected:
        assert needle in printed, needle
    name = f"architecture-{Path(config).stem}"
    pictures = [tmp_path / "arch" / f"{name}.svg", tmp_path / "arch" / f"{name}.png"]
    assert all(f"written: {path}" in printed for path in pictures)
    assert pictures[1].read_bytes()[:4] == b"\x89PNG"
    task = load_from_config(CONFIGS / config, 500)
    parts = architecture(task, sample_batch(task, 2, 16))
    assert sum(p.params for p in parts) == sum(p.numel() for p in task.parameters())
    attending = ("self-attention", "cross-attention", "feed-forward")
    assert all(p.flops > 0 for p in parts if p.kind.startswith(attending))
    json.dumps([p.__dict__ for p in parts])  # plain data


def test_inspect_of_a_config_counts_the_model_fit_trains(isolated: Path, capsys):
    """The vocabulary (and the rest the data module links in) comes from the config's data."""
    config = lm_config(isolated, max_steps=1, val_check_interval=1)
    run = fit_once(isolated, config)
    trained = json.loads((run / "summary.json").read_text())["parameters"]
    inspected = load_from_config(config)
    assert sum(p.numel() for p in inspected.parameters()) == trained
    assert (run / "architecture.svg").is_file()  # the run drew its model once
