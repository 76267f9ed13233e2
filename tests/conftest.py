"""Shared fixtures. Every test runs against a temporary data root, never ``./data``.

Set ``BOOK_TEST_DATA=<dir>`` to keep the trained nano suite (and its losses, and the book built on it) between test
sessions, ``BOOK_SOURCE=<dir>`` to build another checkout of the book.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE = Path(os.environ.get("BOOK_SOURCE", REPO)).resolve()  # the book to build: this checkout unless set
BUILD_LOG = REPO / "test-artifacts" / "book" / "build.log"


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


def build_book(out: Path, log: Path, env: dict | None = None, timeout: int = 3600) -> Path:
    """``jupyter-book build`` of the book into ``out``, as ``make book`` runs it; returns the HTML folder.
    Raises (with the build's warnings and errors) on a failed build."""
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe), "build", str(SOURCE), "--path-output", str(out), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, env={**os.environ, **(env or {}), "BOOK_BUILD": "1"}, capture_output=True, text=True,
                          timeout=timeout)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln or "ERROR" in ln or "Error" in ln]
        raise AssertionError(f"jupyter-book build failed (log: {log}):\n" + "\n".join(lines[-30:]))
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def built_book(nano, data_root, tmp_path_factory) -> Path:
    """The HTML folder of the book built on the nano suite, once per session (kept under $BOOK_TEST_DATA/book-build
    when that is set); the build log goes to test-artifacts/book/build.log."""
    keep = os.environ.get("BOOK_TEST_DATA")
    out = Path(keep) / "book-build" if keep else tmp_path_factory.mktemp("book")
    return build_book(out, BUILD_LOG, env={"BOOK_SUITE": "nano", "BOOK_DATA": str(data_root)})
