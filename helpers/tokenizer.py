"""Byte-level BPE tokenizer of a suite, trained on the corpus's train split with ``tokenizers``."""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_path, write_json

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int, path: str | Path) -> Path:
    """Train a byte-level BPE (GPT-2/Pythia style) with one special token, ``<|endoftext|>`` (id 0).

    Deterministic for the same texts and vocab size. Writes ``tokenizer.json`` atomically and returns its path.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    write_tokenizer_config(Path(path).parent)
    return Path(path)


def write_tokenizer_config(folder: str | Path) -> None:
    """``tokenizer_config.json`` beside ``tokenizer.json``, so ``AutoTokenizer.from_pretrained(folder)`` works."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    write_json(Path(folder) / "tokenizer_config.json", config)


def load_tokenizer(path: str | Path):
    """A ``PreTrainedTokenizerFast`` from ``tokenizer.json`` with ``<|endoftext|>`` as bos/eos/unk/pad."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file {path} is missing")
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT, pad_token=END_OF_TEXT
    )
