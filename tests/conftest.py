"""Shared fixtures. Every test runs against a temporary data root, never ``./data``.

Set ``BOOK_TEST_DATA=<dir>`` to keep the trained nano suite (and its losses) between test sessions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    root = os.environ.get("BOOK_TEST_DATA") or tempfile.mkdtemp(prefix="book-test-data-")
    os.environ["BOOK_DATA"] = str(Path(root).resolve())
    os.environ["BOOK_SUITE"] = "nano"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Path(os.environ["BOOK_DATA"])


@pytest.fixture(scope="session")
def nano(data_root):
    """The trained ``nano`` suite (trained once per session, or reused from BOOK_TEST_DATA)."""
    from helpers.suites import load_suite
    from helpers.train import train_suite

    train_suite("nano")
    return load_suite("nano")
