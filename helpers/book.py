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
COLAB_DATA = "/content/book-data"  # the data root on Colab (the package folder is no place for data) ...
COLAB_DRIVE = "/content/drive/MyDrive"  # ... or, with Google Drive mounted, a folder on it that outlives the session


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


def colab_data_root(drive: str = COLAB_DRIVE) -> str:
    """The data root on Colab: a folder on Google Drive when it is mounted (the suite and the loss tables then serve
    every chapter and later sessions), else ``/content/book-data`` (gone when the runtime is)."""
    return os.path.join(drive, "book-data") if os.path.isdir(drive) else COLAB_DATA


def fetch_note(suite) -> str:
    """What computing a hub suite's loss table costs to download (16-bit weights, every checkpoint of every run)."""
    if getattr(suite, "kind", "") != "hub":
        return ""
    checkpoints = sum(len(r.steps) for r in suite.runs)
    gigabytes = sum(2 * r.params * len(r.steps) for r in suite.runs) / 1e9
    return (f"{suite.name}: a loss table reads {len(suite.runs)} runs x {len(suite.runs[0].steps)} checkpoints "
            f"({checkpoints} in all, about {gigabytes:,.0f} GB of weights, about {gigabytes / 0.1 / 3600:.1f} h at "
            f"100 MB/s) unless it is in $BOOK_DATA already; each revision leaves the HF cache once its losses are written")


def setup_notebook(verbose: bool = True) -> str:
    """Choose the suite for this session, export it as ``$BOOK_SUITE`` (so every helper agrees) and return its name.

    On Colab the data root is a folder on Google Drive when Drive is mounted, else ``/content/book-data``. Raises
    ``SuiteError`` (one line) for an unknown suite.
    """
    from .recipes import RECIPES
    from .suites import load_suite

    colab = on_colab()
    suite = choose_suite(os.environ, colab, colab and has_gpu())
    hub = None if suite in RECIPES else load_suite(suite)  # a hub suite by name (no download); else a one-line error
    os.environ["BOOK_SUITE"] = suite
    if colab:
        os.environ.setdefault("BOOK_DATA", colab_data_root())
    if verbose:
        print(f"suite: {suite}")
        if colab:
            print(f"data: $BOOK_DATA={os.environ['BOOK_DATA']}")
            if not os.environ["BOOK_DATA"].startswith(COLAB_DRIVE):
                print("to keep the suite and its loss tables for the other chapters and later sessions, mount Google Drive "
                      "(from google.colab import drive; drive.mount('/content/drive')) and run this cell again")
        if hub is not None:
            print(fetch_note(hub))
    return suite
