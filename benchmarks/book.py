"""Wall time of a cold build of the book and of a warm rebuild.

    python benchmarks/book.py [--suite pico] [--keep DIR]

Cold: a fresh data root and a fresh output folder, so everything is computed: the corpus, the suite (trained),
the per-token losses (extracted), every notebook (executed) and the HTML. This is ``make data`` followed by the
``make book`` build command, pointed at the fresh folders. Warm: the same two commands again on the same folders —
nothing changed, so training, extraction and execution are all cache hits.

Targets on 2 CPU cores with pico: cold <= 30 min, warm <= 2 min. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict, log: Path) -> float:
    """Run ``cmd`` in the repository, appending its output to ``log``; return the wall time in seconds."""
    start = time.perf_counter()
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: `{' '.join(cmd)}` failed with exit code {proc.returncode} after {seconds:.0f} s (log: {log})")
    return seconds


def build_once(suite: str, data: Path, out: Path, log: Path, source: Path = REPO) -> dict[str, float]:
    env = {**os.environ, "BOOK_SUITE": suite, "BOOK_DATA": str(data), "BOOK_BUILD": "1"}
    jupyter_book = str(REPO / ".venv" / "bin" / "jupyter-book")
    if not Path(jupyter_book).exists():
        jupyter_book = shutil.which("jupyter-book") or "jupyter-book"
    times = {"data_s": run(["make", "data"], env, log)}
    times["build_s"] = run([jupyter_book, "build", str(source), "--path-output", str(out), "-W", "-n", "--keep-going"], env, log)
    times["total_s"] = times["data_s"] + times["build_s"]
    pages = list((out / "_build" / "html").rglob("*.html"))
    if not pages:
        sys.exit(f"error: the build wrote no HTML under {out} (log: {log})")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="pico", help="suite to build the book on (default: pico)")
    parser.add_argument("--source", type=Path, default=REPO, help="the book to build (default: this checkout)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the data and the build (default: a temporary one, deleted)")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="book-benchmark-"))
    if args.keep and any(args.keep.iterdir() if args.keep.exists() else []):
        sys.exit(f"error: {args.keep} is not empty; a cold build needs a fresh folder")
    root.mkdir(parents=True, exist_ok=True)
    data, out, log = root / "data", root / "out", root / "build.log"
    chapters = sorted(p.name for p in (args.source / "notebooks").glob("*.ipynb"))
    print(f"suite {args.suite}, book {args.source} ({len(chapters)} notebooks), data and build in {root}, log {log}", flush=True)
    try:
        cold = build_once(args.suite, data, out, log, args.source)
        print(f"cold build: {cold['total_s']:.0f} s (data {cold['data_s']:.0f} s, book {cold['build_s']:.0f} s)", flush=True)
        warm = build_once(args.suite, data, out, log, args.source)
        print(f"warm rebuild: {warm['total_s']:.0f} s (data {warm['data_s']:.0f} s, book {warm['build_s']:.0f} s)", flush=True)
    finally:
        if log.exists():
            shutil.copy(log, REPO / "benchmarks" / "results" / f"book_{args.suite}.log")
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "suite": args.suite,
        "cold_s": round(cold["total_s"], 1),
        "warm_s": round(warm["total_s"], 1),
        "cold_data_s": round(cold["data_s"], 1),
        "cold_book_s": round(cold["build_s"], 1),
        "warm_data_s": round(warm["data_s"], 1),
        "warm_book_s": round(warm["build_s"], 1),
        "cpus": os.cpu_count(),
        "notebooks": len(chapters),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
