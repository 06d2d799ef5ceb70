"""Every shipped experiment config parses and runs a fast_dev_run at tiny size; hub configs
run against local fixture files with the hub data set's columns."""

from pathlib import Path

import pytest

from tests.cli_helpers import CONFIGS, experiment_configs, run_cli, tiny_args

CONFIG_FILES = experiment_configs()


def test_every_family_and_task_has_a_config():
    names = {str(p.relative_to(CONFIGS)) for p in CONFIG_FILES}
    for expected in (
        "default.yaml",
        "translation/multi30k.yaml",
        "translation/iwslt14.yaml",
        "translation/wmt14-base.yaml",
        "translation/wmt14-big.yaml",
        "gpt/pydocs-tiny.yaml",
        "gpt/shakespeare-char.yaml",
        "gpt/gpt2-small.yaml",
        "bert/pydocs-mlm.yaml",
        "bert/wikitext103-mlm.yaml",
        "bert/sst2-minilm.yaml",
        "bert/squad-minilm.yaml",
        "xlnet/pydocs-plm.yaml",
        "xlnet/wikitext103-plm.yaml",
        "summarization/aeslc.yaml",
        "summarization/aeslc-minilm.yaml",
        "summarization/gigaword.yaml",
        "summarization/xsum.yaml",
        "summarization/cnn-dailymail.yaml",
    ):
        assert expected in names
    for preset in ("cpu", "gpu", "ddp", "fsdp"):
        assert (CONFIGS / "trainer" / f"{preset}.yaml").is_file()


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_runs_fast_dev_run(config: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TSUITE_RUN_DIR", raising=False)
    args = ["fit", "-c", str(config), "--trainer.fast_dev_run=true", *tiny_args(config, tmp_path)]
    run_cli(args)
    run_dirs = list((tmp_path / "runs").rglob("config.yaml"))
    assert len(run_dirs) == 1


@pytest.mark.parametrize("preset", ["cpu", "gpu", "ddp", "fsdp"])
def test_trainer_presets_compose(preset: str, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as done:
        run_cli(
            [
                "fit",
                "-c",
                str(CONFIGS / "default.yaml"),
                "-c",
                str(CONFIGS / "trainer" / f"{preset}.yaml"),
                "--print_config",
            ]
        )
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "TranslationModule" in printed and "precision" in printed
