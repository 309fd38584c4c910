"""The subword tokenizer: trained on the train split only, round-trips text, cached, reloaded with a
saved model; bad vocabulary sizes are one line."""

import json

import pytest
from omegaconf import OmegaConf

from clex.commands import run
from clex.data.bpe import bpe_tokenizer
from clex.data.corpus import load_corpus
from clex.errors import ConfigError

STDLIB = OmegaConf.create({"name": "stdlib", "validation_fraction": 0.05, "test_fraction": 0.05, "max_documents": 120})


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(STDLIB)


def test_trained_on_the_train_split_only(corpus, tmp_path, monkeypatch):
    import clex.data.bpe as bpe

    seen = []
    original = bpe.train_bpe
    monkeypatch.setattr(bpe, "train_bpe", lambda texts, size: original(seen.extend(texts) or seen, size))
    bpe_tokenizer(corpus, 400, tmp_path)
    train = [text for _, text in corpus.documents["train"]]
    assert seen == train
    held_out = {text for split in ("validation", "test") for _, text in corpus.documents[split]}
    assert not held_out & set(seen)


def test_round_trips_and_is_reused_from_the_cache(corpus, tmp_path, monkeypatch):
    tokenizer = bpe_tokenizer(corpus, 400, tmp_path)
    text = corpus.documents["test"][0][1][:2000]
    ids = tokenizer.encode(text)
    assert tokenizer.vocab_size == 400 and ids.max() < 400 and len(ids) < len(text.encode()) / 2  # merges happened
    assert tokenizer.decode(ids) == text
    import clex.data.bpe as bpe

    monkeypatch.setattr(bpe, "train_bpe", lambda *a: pytest.fail("trained again instead of reusing the cache"))
    again = bpe_tokenizer(corpus, 400, tmp_path)
    assert list(again.encode(text)) == list(ids)


def test_a_vocabulary_the_text_cannot_fill_is_one_clear_error(tmp_path):
    tiny = OmegaConf.merge(STDLIB, {"max_documents": 3, "split": "position"})
    corpus = load_corpus(tiny)
    with pytest.raises(ConfigError, match="data.vocab_size 200000: the train split supports only"):
        bpe_tokenizer(corpus, 200_000, tmp_path)


@pytest.mark.parametrize("value", ["0", "100", "x"])
def test_bad_vocab_size_is_exit_2(tmp_path, capsys, value):
    assert run.main([f"out_dir={tmp_path}", "data.tokenizer=bpe", f"data.vocab_size={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.vocab_size" in err


@pytest.mark.slow
def test_a_bpe_run_records_its_tokenizer_and_reloads_through_model_hf(tmp_path):
    common = [
        f"out_dir={tmp_path}",
        "data.tokenizer=bpe",
        "data.vocab_size=400",
        "data.max_documents=120",
        "train.steps=2",
        "train.batch_size=2",
        "train.val_every=2",
        "train.val_batches=1",
        "eval.multipliers=[1,2]",
        "eval.max_tokens=256",
        "trainer.enable_progress_bar=false",
    ]
    assert (
        run.main(
            [
                *common,
                "base.steps=2",
                "base.batch_size=2",
                "model.hidden_size=32",
                "model.intermediate_size=64",
                "model.num_layers=1",
                "model.num_heads=2",
                "train.length=32",
            ]
        )
        == 0
    )
    [path] = list(tmp_path.glob("clex-*/results.json"))
    result = json.loads(path.read_text())
    assert result["tokenizer"]["kind"] == "bpe" and result["tokenizer"]["vocab_size"] == 400
    model_dir = path.parent / "model"
    assert (model_dir / "tokenizer.json").is_file()
    reloaded = [
        f"out_dir={tmp_path / 'again'}",
        "model=hf",
        f"model.path={model_dir}",
        "data.max_documents=120",
        "train.length=32",
        "train.steps=1",
        "train.batch_size=2",
        "train.val_every=1",
        "train.val_batches=1",
        "eval.multipliers=[1,2]",
        "eval.max_tokens=256",
        "trainer.enable_progress_bar=false",
        "strategy.max_scale=4",
    ]
    assert run.main(reloaded) == 0
    [again] = [json.loads(p.read_text()) for p in (tmp_path / "again").glob("*/results.json")]
    assert again["tokenizer"]["kind"] == "pretrained" and again["tokenizer"]["vocab_size"] == 400
