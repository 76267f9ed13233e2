"""Atomic writes: a reader sees either the old file (or none) or the complete new one, never a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    Works for files and directories. On error the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: clean_stale_temporaries never removes a live writer's temporary
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if target.is_dir():
            for f in target.iterdir():
                _fsync(f)
        else:
            _fsync(target)
        if path.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


STALE_AFTER_S = 3600.0  # a temporary this old is stale even if a process with its writer's pid is alive


def clean_stale_temporaries(folder: str | os.PathLike, stale_after_s: float = STALE_AFTER_S) -> None:
    """Remove temporaries left by interrupted writers (``.<name>.<pid>.<random>.tmp`` folders).

    A temporary whose writer is still running on this machine is kept (several processes, e.g. ``--shard`` workers,
    may write into one folder), unless it is older than ``stale_after_s`` (a writer on another machine, or a pid
    that was reused).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        pid = _writer_pid(tmp)
        if pid == os.getpid():
            continue
        try:
            age = now - tmp.stat().st_mtime
        except FileNotFoundError:
            continue  # its writer finished meanwhile
        if pid is not None and _alive(pid) and age < stale_after_s:
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _writer_pid(tmp: Path) -> int | None:
    parts = tmp.name.split(".")
    return int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
