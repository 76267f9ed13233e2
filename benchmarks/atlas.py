"""Time the atlas of 10,000 per-token curves cold: UMAP (Michaud's metric via sqrt(w) scaling) + HDBSCAN + labels.

    python benchmarks/atlas.py [--n 10000] [--suite pico --run pico-0.6m] [--repeats 1]

Each measurement runs in a fresh Python process, and the timer starts before ``import umap``, so numba's JIT
compilation counts. Two cases:

- ``cold_empty_cache``: numba's on-disk cache pointed at an empty folder (``NUMBA_CACHE_DIR``): the very first run on a
  machine, everything compiled;
- ``cold_process``: a fresh process with numba's usual on-disk cache (what every later notebook run costs).

Curves: the suite's loss table if it is on disk (``--suite``; the first ``--n`` samples of ``--run``), else synthetic
curves of the same shape on the pico schedule (45 checkpoints). Target: ≤ 60 s for 10,000 curves on 2 cores.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 60.0


def _curves(n: int, suite: str | None, run: str | None):
    """``(matrix, steps, source)``: the first ``n`` curves of ``run`` from the loss table on disk, else synthetic."""
    import numpy as np

    if suite:
        try:
            from helpers.losses import load_losses

            table = load_losses(suite, extract_missing=False)
            m, steps = table.matrix(run or table.runs[0])
            if len(steps) == len(table.suite.run(run or table.runs[0]).steps) and len(m) >= n:
                return np.ascontiguousarray(m[:n]), steps, f"{suite}/{run or table.runs[0]}"
        except Exception as e:  # no trained suite or no losses yet
            print(f"no loss table for {suite} ({type(e).__name__}: {e}); using synthetic curves", file=sys.stderr)
    from helpers.atlas import synthetic_curves
    from helpers.recipes import RECIPES

    steps = RECIPES["pico"].steps
    m, _, _ = synthetic_curves(steps, n=n, seed=0, noise=0.15)
    return m, steps, "synthetic (pico schedule)"


def child(n: int, suite: str | None, run: str | None) -> dict:
    """One measurement, in this (fresh) process."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO))
    import numpy as np  # noqa: F401

    from helpers.atlas import embed, find_clusters, shape_labels

    t_import = time.perf_counter()
    m, steps, source = _curves(n, suite, run)
    t_data = time.perf_counter()
    xy = embed(m, steps)
    t_embed = time.perf_counter()
    labels = find_clusters(xy)
    t_cluster = time.perf_counter()
    shapes = shape_labels(m, steps)
    t_shapes = time.perf_counter()
    return {
        "source": source,
        "n": int(len(m)),
        "n_steps": len(steps),
        "import_s": round(t_import - t0, 2),
        "load_s": round(t_data - t_import, 2),
        "umap_s": round(t_embed - t_data, 2),
        "hdbscan_s": round(t_cluster - t_embed, 2),
        "shapes_s": round(t_shapes - t_cluster, 2),
        "atlas_s": round((t_shapes - t0) - (t_data - t_import), 2),  # everything but reading the curves
        "clusters": int(labels.max() + 1),
        "noise_share": round(float((labels < 0).mean()), 4),
        "distinct_shapes": int(len(set(shapes.tolist()))),
    }


def run_fresh(n: int, suite: str | None, run: str | None, empty_cache: bool) -> dict:
    env = dict(os.environ)
    tmp = None
    if empty_cache:
        tmp = tempfile.TemporaryDirectory(prefix="numba-cache-")
        env["NUMBA_CACHE_DIR"] = tmp.name
    cmd = [sys.executable, __file__, "--child", "--n", str(n)] + (["--suite", suite] if suite else []) + (["--run", run] if run else [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    if tmp:
        tmp.cleanup()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--suite", default="pico", help="read curves from this suite's loss table if present ('' for synthetic)")
    p.add_argument("--run", default=None)
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per case (the median is reported)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.n, a.suite or None, a.run)))
        return 0
    cases = {}
    for name, empty in (("cold_empty_cache", True), ("cold_process", False)):
        runs = [run_fresh(a.n, a.suite or None, a.run, empty) for _ in range(a.repeats)]
        runs.sort(key=lambda r: r["process_wall_s"])
        cases[name] = runs[len(runs) // 2]
        print(f"{name}: {json.dumps(cases[name])}")
    worst = max(c["process_wall_s"] for c in cases.values())
    summary = {
        "benchmark": "atlas",
        "n": cases["cold_process"]["n"],
        "source": cases["cold_process"]["source"],
        "cpu_count": os.cpu_count(),
        "cold_empty_cache_s": cases["cold_empty_cache"]["process_wall_s"],
        "cold_process_s": cases["cold_process"]["process_wall_s"],
        "umap_s": cases["cold_process"]["umap_s"],
        "hdbscan_s": cases["cold_process"]["hdbscan_s"],
        "clusters": cases["cold_process"]["clusters"],
        "target_s": TARGET_SECONDS,
        "meets_target": worst <= TARGET_SECONDS,
    }
    print(json.dumps(summary))
    return 0 if summary["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
