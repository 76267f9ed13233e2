"""What a chapter's first cell calls: pick the suite (and, on Colab, the data folder) for this session.

    from helpers.book import setup_notebook
    SUITE = setup_notebook()   # "pico" locally, "pythia-small" on a Colab GPU, "$BOOK_SUITE" when set

The first cell itself (installing the helpers on Colab) is written into every notebook by ``python -m helpers.notebooks``.
"""

from __future__ import annotations

import os
import sys

from .paths import DEFAULT_SUITE

GPU_SUITE = "pythia-small"  # the hub suite a Colab session with a GPU uses
COLAB_DATA = "/content/book-data"  # the data root on Colab (the package folder is no place for data)


def on_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def has_gpu() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_suite(env: dict, colab: bool, gpu: bool) -> str:
    """The suite of this session: ``$BOOK_SUITE`` if set; on Colab the hub suite with a GPU, ``pico`` without; else
    ``pico``."""
    chosen = env.get("BOOK_SUITE", "").strip()
    if chosen:
        return chosen
    if colab and gpu:
        return GPU_SUITE
    return DEFAULT_SUITE


def setup_notebook(verbose: bool = True) -> str:
    """Choose the suite for this session, export it as ``$BOOK_SUITE`` (so every helper agrees) and return its name.

    On Colab the data root defaults to ``/content/book-data``. Raises ``SuiteError`` (one line) for an unknown suite.
    """
    from .recipes import RECIPES
    from .suites import _SEEDS_SUITE, HUB_SUITES, PYTHIA_RUN, SuiteError, suite_names

    colab = on_colab()
    suite = choose_suite(os.environ, colab, colab and has_gpu())
    if suite not in RECIPES and suite not in HUB_SUITES and not PYTHIA_RUN.match(suite) and not _SEEDS_SUITE.match(suite):
        raise SuiteError(f"unknown suite {suite!r} in BOOK_SUITE; valid: {suite_names()}")
    os.environ["BOOK_SUITE"] = suite
    if colab:
        os.environ.setdefault("BOOK_DATA", COLAB_DATA)
    if verbose:
        print(f"suite: {suite}" + (" (Colab, data in $BOOK_DATA=" + os.environ["BOOK_DATA"] + ")" if colab else ""))
    return suite
