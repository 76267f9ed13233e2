"""Where the book keeps its data, and which suite a build uses.

Everything that is computed (corpus, suites, loss tables) lives under one data root, ``$BOOK_DATA``
(default ``./data`` at the repository root). The suite a build uses is ``$BOOK_SUITE`` (default ``pico``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITE = "pico"


def data_root() -> Path:
    """The data root: ``$BOOK_DATA`` if set, else ``<repo>/data``."""
    return Path(os.environ.get("BOOK_DATA", REPO_ROOT / "data")).expanduser().resolve()


def book_suite() -> str:
    """The suite this build of the book uses: ``$BOOK_SUITE`` if set, else ``pico``."""
    return os.environ.get("BOOK_SUITE", "").strip() or DEFAULT_SUITE


def corpus_dir(name: str) -> Path:
    return data_root() / "corpus" / name


def suite_dir(name: str) -> Path:
    return data_root() / "suites" / name


def cache_dir() -> Path:
    return data_root() / "cache"
