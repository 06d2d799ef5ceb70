"""`just bench --quick`: every benchmark row runs in its tiny form and reports finite figures
(the figures themselves mean nothing at these sizes)."""

import json
import math

import pytest
import torch

pytest.importorskip("transformers")

from benchmarks import memory  # noqa: E402
from benchmarks.__main__ import main, parse_rows, table  # noqa: E402


def test_quick_rows_run_and_give_finite_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    # row 6 measures each side in a process of its own: start them first, they run meanwhile
    sides = memory.start_sides("train:decoder:tiny", "cpu", threads=1)
    threads = torch.get_num_threads()
    assert main(["--quick", "--rows", "1,2,3,4,5", "--out", str(tmp_path / "out")]) == 0
    assert torch.get_num_threads() == threads  # later tests must not run on fewer threads
    [written] = (tmp_path / "out").glob("bench-*-quick.json")
    rows = json.loads(written.read_text())["rows"]
    assert {r["number"] for r in rows} == {1, 2, 3, 4, 5}
    for r in rows:
        assert "error" not in r, r
        figures = [r["ours"]] + [r[k] for k in ("reference", "ratio") if r.get(k) is not None]
        assert all(math.isfinite(f) and f >= 0 for f in figures), r
    assert "waiting for data" in table(rows)
    peaks = memory.collect_sides("train:decoder:tiny", sides)
    assert all(math.isfinite(p["peak_mb"]) and p["peak_mb"] > 0 for p in peaks.values())


def test_rows_option_names_the_rows_it_takes():
    assert parse_rows("2,4") == [2, 4]
    with pytest.raises(Exception, match="row numbers from"):
        parse_rows("2,9")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_shakespeare_side_by_side_runs_on_a_small_text(tmp_path, monkeypatch):
    from benchmarks import shakespeare_char

    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "ROMEO:", "JULIET:"]
    g = torch.Generator().manual_seed(0)
    text = "\n".join(
        " ".join(words[i] for i in torch.randint(len(words), (8,), generator=g).tolist())
        for _ in range(600)
    )
    (tmp_path / "input.txt").write_text(text)
    out = tmp_path / "out"
    shakespeare_char.main(
        ["--data", str(tmp_path / "input.txt"), "--steps", "3", "--draws", "3", "--out", str(out)]
        + ["--equal-validation"]
    )
    [written] = out.glob("shakespeare-char-*.json")
    rows = json.loads(written.read_text())
    assert [r["side"] for r in rows] == ["tsuite fit", "plain loop (nanoGPT's way)"]
    for r in rows:
        figures = [r["whole"], r["estimate_mean"], r["estimate_std"], r["seconds"]]
        assert all(math.isfinite(f) and f > 0 for f in figures), r


def test_whole_sentences_are_the_rows_no_other_row_contains():
    from benchmarks.objectives import whole_sentences

    rows = [
        "a good film",
        "good",  # inside rows 0 and 4
        "it is a good film .",
        "goodness",  # "good" is not a word of it; nothing contains it
        "it is  a good film .",  # the same words as row 2: row 2 counts, this one not
        "film . and",
        "is a",
        "",
    ]
    assert whole_sentences(rows) == [2, 3, 5]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_objectives_benchmark_runs_on_a_small_sst2(tmp_path, monkeypatch):
    from benchmarks import objectives

    monkeypatch.setenv("TSUITE_CACHE", str(tmp_path / "cache"))
    words = ["a", "good", "bad", "film", "really", "not", "fun", "dull", "the", "plot", "is"]
    g = torch.Generator().manual_seed(0)
    for name, rows in (("train.tsv", 200), ("dev.tsv", 40), ("test.tsv", 40)):
        lines = ["sentence\tlabel"]
        for _ in range(rows):
            picked = [words[i] for i in torch.randint(len(words), (6,), generator=g).tolist()]
            lines.append(f"{' '.join(picked)}\t{int('good' in picked)}")
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    objectives.main(
        [
            *("--data", str(tmp_path), "--preset", "tiny", "--out", str(out)),
            *("--pretrain_steps", "2", "--finetune_steps", "2", "--sentence_seeds", "0", "1"),
        ]
    )
    [written] = out.glob("objectives-*.json")
    rows = json.loads(written.read_text())["rows"]
    assert [r["objective"].split()[0] for r in rows] == [
        "random",
        "masked",
        "causal",
        "permutation",
    ]
    for r in rows:
        assert len(r["phrases"]["accuracy"]) == 1 and len(r["sentences"]["accuracy"]) == 2
        for setting in ("phrases", "sentences"):
            assert all(0 <= a <= 100 for a in r[setting]["accuracy"])
            assert r[setting]["steps"] == 2
        assert "pretrain_loss" not in r or math.isfinite(r["pretrain_loss"])
