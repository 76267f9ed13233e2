"""Train a whole suite from scratch and compare its throughput with a bare PyTorch training loop.

    python benchmarks/train_suite.py --suite pico [--data-root DIR]

The suite trains into ``--data-root`` (default: a fresh temporary folder) exactly as ``python -m helpers.train``
does: corpus, tokenizer, every run in parallel single-thread processes, checkpoints and logs. The bare loop runs
the same models on the same batch shape (forward, backward, clip, AdamW step; no data pipeline, no logging, no
checkpoints) for ``--bare-steps`` steps each, in the same parallel processes with the same assignment of runs, and
its tokens/s is what the whole suite would reach with that loop. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare_loop_seconds_per_step(recipe_name: str, run_names: list[str], steps: int) -> dict[str, float]:
    """Seconds per step of a bare training loop for each run (1 thread)."""
    import torch

    from helpers.train import build_model, get_recipe, make_optimizer

    torch.set_num_threads(1)
    recipe = get_recipe(recipe_name)
    specs = {s.name: s for s in recipe.runs()}
    out = {}
    for name in run_names:
        model = build_model(recipe, specs[name])
        optimizer = make_optimizer(recipe, model)
        x = torch.randint(0, recipe.vocab_size, (recipe.batch_size, recipe.context))
        for i in range(steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        out[name] = (time.perf_counter() - t0) / steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", default="pico")
    parser.add_argument("--data-root", help="where to train (default: a fresh temporary folder)")
    parser.add_argument("--bare-steps", type=int, default=40)
    args = parser.parse_args()
    root = Path(args.data_root or tempfile.mkdtemp(prefix="book-bench-")).resolve()
    os.environ["BOOK_DATA"] = str(root)
    if (root / "suites" / args.suite / "suite.json").exists():
        sys.exit(f"error: {root}/suites/{args.suite} is already trained; the benchmark needs a fresh data root")

    from helpers.train import estimated_cost, get_recipe, partition, train_suite

    recipe = get_recipe(args.suite)
    specs = recipe.runs()
    t0 = time.perf_counter()
    train_suite(args.suite)
    wall = time.perf_counter() - t0
    total_tokens = len(specs) * recipe.total_steps * recipe.tokens_per_step

    workers = min(len(specs), os.cpu_count() or 1, 2)
    groups = partition([estimated_cost(recipe, s) for s in specs], workers)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(groups)) as pool:
        per_step = pool.starmap(
            bare_loop_seconds_per_step, [(args.suite, [specs[j].name for j in g], args.bare_steps) for g in groups]
        )
    bare_wall = max(sum(t for t in d.values()) * recipe.total_steps for d in per_step)
    runs = {}
    for spec in specs:
        record = json.loads((root / "suites" / args.suite / spec.name / "run.json").read_text())
        bare = next(d[spec.name] for d in per_step if spec.name in d)
        runs[spec.name] = {
            "train_s": record["train_seconds"],
            "tokens_per_s": round(recipe.total_steps * recipe.tokens_per_step / record["train_seconds"]),
            "bare_loop_tokens_per_s": round(recipe.tokens_per_step / bare),
            "final_train_loss": round(record["final_train_loss"], 3),
        }
    for name, r in runs.items():
        print(f"{name:>18}: {r['train_s']:7.1f} s  {r['tokens_per_s']:6d} tok/s (bare {r['bare_loop_tokens_per_s']:6d})  loss {r['final_train_loss']}")
    print(f"data root: {root}")
    print(
        json.dumps(
            {
                "suite": args.suite,
                "runs": len(specs),
                "workers": len(groups),
                "wall_s": round(wall, 1),
                "tokens": total_tokens,
                "tokens_per_s": round(total_tokens / wall),
                "bare_loop_tokens_per_s": round(total_tokens / bare_wall),
                "ratio": round(bare_wall / wall, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
