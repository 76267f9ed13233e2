"""Documents and sampled targets: which tokens the loss table follows.

A document is tokenized with the suite's tokenizer, with no BOS token, and truncated to the model's context. Each
document is one *window*: the engine runs it once per checkpoint and gathers the losses of all its sampled targets.

**Position convention** (fixed, see DESIGN.md): ``position`` is the index of the target token in its document's
token sequence (``position >= 1``); its loss is ``-log p(token[position] | token[:position])`` in nats. So the
logits that predict it come from the hidden state at index ``position - 1``.

Two ways to choose targets::

    make_samples(suite, mode="every_k", n_samples=10_000)   # Michaud: every k-th prediction of the flattened split
    make_samples(suite, mode="all_positions", n_documents=50)  # every position of the first 50 documents

The samples table has the fixed columns ``sample_id, doc_id, domain, position, target_id, target_text,
context_text`` plus ``k`` (the stride; 1 in all-positions mode), ``prev_id`` and ``prev_text`` (the token before
the target).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

MODES = ("every_k", "all_positions")
SAMPLE_COLUMNS = ["sample_id", "doc_id", "domain", "position", "target_id", "target_text", "context_text"]
CONTEXT_TOKENS = 150  # context_text keeps at most this many preceding tokens (Michaud's viewer shows 150)
DEFAULT_CORPUS = "pico-pile"
PYTHIA_CONTEXT = 2048


class SamplesError(ValueError):
    """An empty split, no usable documents, or an unknown mode. The message is one line."""


class ShortDocumentsWarning(UserWarning):
    """Some documents had fewer than two tokens (nothing to predict) and were skipped."""


@dataclass
class Documents:
    """Tokenized documents of one corpus split, each truncated to ``context`` tokens (at least two tokens each).

    ``tokens[i]`` is an int64 array of document ``doc_ids[i]``; ``skipped`` counts documents with fewer than two
    tokens, left out.
    """

    corpus: str
    split: str
    context: int
    doc_ids: np.ndarray  # int64 [n_documents]
    domains: list[str]
    tokens: list[np.ndarray]  # int64 [length_i], 2 <= length_i <= context
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    @property
    def n_predictions(self) -> int:
        """Predictions in all windows: ``sum(length - 1)``."""
        return int((self.lengths - 1).sum())


def suite_corpus(suite) -> str:
    """The corpus a suite is evaluated on: the one it was trained on (local suites), else ``pico-pile``."""
    return getattr(suite, "meta", {}).get("corpus", DEFAULT_CORPUS)


def suite_context(suite, cap: int | None = None) -> int:
    """The model context of a suite (``suite.json`` "context", or the hub config's ``max_position_embeddings``),
    capped at ``cap`` if given (Michaud used 1024 for Pythia, whose context is 2048)."""
    meta = getattr(suite, "meta", None)
    if meta and "context" in meta:
        context = int(meta["context"])
    elif all(r.name.startswith("pythia-") for r in suite.runs):
        context = PYTHIA_CONTEXT
    else:
        context = _hub_context(suite)
    if cap is not None:
        if cap < 2:
            raise SamplesError(f"context cap {cap} is too small: need at least two tokens")
        context = min(context, int(cap))
    return context


def _hub_context(suite) -> int:
    from .suites import SuiteError

    try:
        config = suite.config()
    except SuiteError as e:
        raise SamplesError(f"{e} (needed for the context length)") from None
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise SamplesError(f"cannot tell the context length of {suite.runs[0].source}: pass context=")


def tokenizer_fingerprint(suite) -> str:
    """A short hash that changes when the suite's tokenizer changes (local: tokenizer.json; hub: repo names)."""
    root = getattr(suite, "root", None)
    if root is not None and (Path(root) / "tokenizer.json").exists():
        from .atomic import sha256_file

        return sha256_file(Path(root) / "tokenizer.json")[:16]
    return hashlib.sha256(",".join(sorted({r.source for r in suite.runs})).encode()).hexdigest()[:16]


def check_corpus(suite, corpus: str) -> None:
    """Raise :class:`SamplesError` if ``corpus`` on disk is not the one a local suite was trained on (the sha256 in
    its ``suite.json``): its test and validation documents would not be the held-out ones."""
    from .atomic import sha256_file
    from .corpus import build_corpus

    expected = (getattr(suite, "meta", None) or {}).get("corpus_sha256")
    if not expected or corpus != suite_corpus(suite):
        return
    path = build_corpus(corpus)
    if sha256_file(path) != expected:
        raise SamplesError(
            f"corpus file {path} is not the one suite {suite.name!r} was trained on (sha256 differs from its suite.json): "
            f"rebuild the corpus with the Python the suite was trained with (the code domain is its standard library), "
            f"or retrain the suite"
        )


def tokenize_split(
    suite, split: str = "test", context: int | None = None, n_documents: int | None = None, corpus: str | None = None
) -> Documents:
    """Tokenize the first ``n_documents`` documents (all if None) of ``split``, no BOS, truncated to ``context``
    tokens (default: the suite's context). Documents with fewer than two tokens are skipped and counted
    (``Documents.skipped``, with a :class:`ShortDocumentsWarning`)."""
    from .corpus import load_documents

    corpus = corpus or suite_corpus(suite)
    context = int(context or suite_context(suite))
    check_corpus(suite, corpus)
    frame = load_documents(corpus, split).sort("doc_id")
    if n_documents is not None:
        if n_documents < 1:
            raise SamplesError(f"n_documents must be at least 1, got {n_documents}")
        frame = frame.head(n_documents)
    if frame.height == 0:
        raise SamplesError(f"split {split!r} of corpus {corpus!r} has no documents")
    tokenizer = suite.tokenizer()
    encoded = tokenizer(frame["text"].to_list(), add_special_tokens=False)["input_ids"]
    keep, tokens = [], []
    for i, ids in enumerate(encoded):
        if len(ids) >= 2:
            keep.append(i)
            tokens.append(np.asarray(ids[:context], dtype=np.int64))
    skipped = frame.height - len(keep)
    if not keep:
        raise SamplesError(f"split {split!r} of corpus {corpus!r}: all {frame.height} documents have fewer than two tokens")
    if skipped:
        warnings.warn(f"{split} split: skipped {skipped} documents with fewer than two tokens", ShortDocumentsWarning, stacklevel=2)
    return Documents(
        corpus=corpus,
        split=split,
        context=context,
        doc_ids=frame["doc_id"].to_numpy()[keep].astype(np.int64),
        domains=[frame["domain"][i] for i in keep],
        tokens=tokens,
        skipped=skipped,
    )


def choose_k(n_predictions: int, n_samples: int) -> int:
    """The stride of Michaud's sampling: the largest k whose every-k-th selection still gives ``n_samples`` or more
    (k = 1 if there are fewer predictions than requested)."""
    if n_samples < 1:
        raise SamplesError(f"n_samples must be at least 1, got {n_samples}")
    return max(1, n_predictions // n_samples)


def select_targets(documents: Documents, mode: str = "every_k", n_samples: int = 10_000) -> tuple[np.ndarray, np.ndarray, int]:
    """``(window, position, k)``: for each sample the index of its document in ``documents`` and the target's
    position (>= 1). every_k: flattened predictions 0, k, 2k, ... over the split (prediction j of a document of
    length n is position j + 1, j < n - 1); all_positions: every position 1 .. n - 1 of every document."""
    if mode not in MODES:
        raise SamplesError(f"unknown sampling mode {mode!r}; valid: {list(MODES)}")
    lengths = documents.lengths
    n_pred = lengths - 1
    window = np.repeat(np.arange(len(lengths), dtype=np.int64), n_pred)
    starts = np.concatenate([[0], np.cumsum(n_pred)[:-1]])
    position = np.arange(int(n_pred.sum()), dtype=np.int64) - np.repeat(starts, n_pred) + 1
    k = 1
    if mode == "every_k":
        k = choose_k(int(n_pred.sum()), n_samples)
        window, position = window[::k], position[::k]
    return window, position, k


def make_samples(
    suite,
    split: str = "test",
    mode: str = "every_k",
    n_samples: int = 10_000,
    n_documents: int | None = None,
    context: int | None = None,
    documents: Documents | None = None,
    context_tokens: int | None = CONTEXT_TOKENS,
) -> pl.DataFrame:
    """The samples table of ``suite`` (a :class:`~helpers.suites.Suite` or its name) on ``split``.

    every_k: Michaud's sampling, every k-th prediction over the flattened split, k chosen to give about
    ``n_samples``; all_positions: every position of the documents. ``n_documents`` limits either mode to the first
    N documents of the split; ``context`` caps the context (default: the model's). ``context_text`` is the text of
    the (at most ``context_tokens``) tokens before the target.

    Columns: sample_id (0..n-1), doc_id, domain, position (index of the target in its document, >= 1), target_id,
    target_text, context_text, k, prev_id, prev_text.
    """
    if isinstance(suite, str):
        from .suites import load_suite

        suite = load_suite(suite)
    if mode not in MODES:
        raise SamplesError(f"unknown sampling mode {mode!r}; valid: {list(MODES)}")
    if documents is None:
        documents = tokenize_split(suite, split, context, n_documents)
    window, position, k = select_targets(documents, mode, n_samples)
    return samples_frame(documents, window, position, k, suite.tokenizer(), context_tokens)


def samples_frame(documents: Documents, window: np.ndarray, position: np.ndarray, k: int, tokenizer, context_tokens=CONTEXT_TOKENS) -> pl.DataFrame:
    target_id = np.array([documents.tokens[w][p] for w, p in zip(window, position)], dtype=np.int64)
    prev_id = np.array([documents.tokens[w][p - 1] for w, p in zip(window, position)], dtype=np.int64)
    vocab = np.unique(np.concatenate([target_id, prev_id]))
    text_of = dict(zip(vocab.tolist(), tokenizer.batch_decode([[int(i)] for i in vocab])))
    keep = context_tokens if context_tokens is not None else 1 << 62
    contexts = tokenizer.batch_decode([documents.tokens[w][max(0, p - keep) : p].tolist() for w, p in zip(window, position)])
    return pl.DataFrame(
        {
            "sample_id": np.arange(len(window), dtype=np.int64),
            "doc_id": documents.doc_ids[window],
            "domain": [documents.domains[w] for w in window],
            "position": position,
            "target_id": target_id,
            "target_text": [text_of[i] for i in target_id.tolist()],
            "context_text": contexts,
            "k": np.full(len(window), k, dtype=np.int64),
            "prev_id": prev_id,
            "prev_text": [text_of[i] for i in prev_id.tolist()],
        }
    )
