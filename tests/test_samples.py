"""Samples: tokenization (no BOS, truncated), Michaud's every-k sampling, all positions, bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from helpers import samples as S


@pytest.fixture(scope="module")
def docs(nano):
    return S.tokenize_split(nano, "test")


def test_documents_are_tokenized_without_bos_and_truncated(nano, docs):
    from helpers.corpus import load_documents

    assert docs.context == 64 == S.suite_context(nano)
    text = load_documents("pico-pile", "test").sort("doc_id").filter(pl.col("doc_id") == int(docs.doc_ids[0]))["text"][0]
    ids = nano.tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert docs.tokens[0].tolist() == ids[:64]
    assert docs.lengths.max() <= 64 and docs.lengths.min() >= 2
    assert S.suite_context(nano, cap=32) == 32


def test_every_k_takes_every_kth_flattened_prediction(nano, docs):
    frame = S.make_samples(nano, n_samples=3000, documents=docs)
    n_pred = docs.n_predictions
    k = n_pred // 3000
    assert (frame["k"] == k).all() and frame.height == -(-n_pred // k) >= 3000
    assert frame.columns[:7] == S.SAMPLE_COLUMNS and frame["sample_id"].to_list() == list(range(frame.height))
    # flattened prediction index of each sample: offset of its document + position - 1
    offsets = dict(zip(docs.doc_ids.tolist(), np.concatenate([[0], np.cumsum(docs.lengths - 1)[:-1]]).tolist()))
    flat = np.array([offsets[d] for d in frame["doc_id"].to_list()]) + frame["position"].to_numpy() - 1
    assert (flat == np.arange(frame.height) * k).all()
    tokens = dict(zip(docs.doc_ids.tolist(), docs.tokens))
    for row in frame.sample(50, seed=0).iter_rows(named=True):
        t = tokens[row["doc_id"]]
        assert 1 <= row["position"] < len(t)
        assert row["target_id"] == t[row["position"]] and row["prev_id"] == t[row["position"] - 1]
        assert row["context_text"] == nano.tokenizer().decode(t[max(0, row["position"] - S.CONTEXT_TOKENS) : row["position"]].tolist())


def test_all_positions_of_the_first_documents(nano):
    frame = S.make_samples(nano, mode="all_positions", n_documents=3)
    docs = S.tokenize_split(nano, "test", n_documents=3)
    assert frame.height == docs.n_predictions and (frame["k"] == 1).all()
    for d, t in zip(docs.doc_ids, docs.tokens):
        rows = frame.filter(pl.col("doc_id") == int(d))
        assert rows["position"].to_list() == list(range(1, len(t)))
        assert rows["target_id"].to_list() == t[1:].tolist()


def test_fewer_predictions_than_requested_gives_k_1(nano):
    frame = S.make_samples(nano, n_samples=10**9, n_documents=2)
    assert (frame["k"] == 1).all()


def _fake_corpus(monkeypatch, texts):
    frame = pl.DataFrame({"doc_id": list(range(len(texts))), "domain": ["code"] * len(texts), "split": ["test"] * len(texts), "text": texts},
                         schema={"doc_id": pl.Int64, "domain": pl.String, "split": pl.String, "text": pl.String})
    import helpers.corpus

    monkeypatch.setattr(helpers.corpus, "load_documents", lambda name, split=None: frame)


def test_empty_split_is_a_clear_error(nano, monkeypatch):
    _fake_corpus(monkeypatch, [])
    with pytest.raises(S.SamplesError, match="no documents"):
        S.make_samples(nano)


def test_short_documents_are_skipped_and_counted(nano, monkeypatch):
    _fake_corpus(monkeypatch, ["", "a", "def f(x):\n    return x + 1\n"])
    with pytest.warns(S.ShortDocumentsWarning, match="skipped 2 documents"):
        docs = S.tokenize_split(nano, "test")
    assert docs.skipped == 2 and docs.doc_ids.tolist() == [2]
    _fake_corpus(monkeypatch, ["", "a"])
    with pytest.raises(S.SamplesError, match="fewer than two tokens"):
        S.tokenize_split(nano, "test")


def test_unknown_mode(nano):
    with pytest.raises(S.SamplesError, match="unknown sampling mode"):
        S.make_samples(nano, mode="every_other")
