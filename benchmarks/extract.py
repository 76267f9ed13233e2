"""Throughput of the loss engine against Michaud's loop and against the bare batched forward pass, side by side.

    python benchmarks/extract.py --suite pico [--runs pico-0.6m pico-2.2m] [--steps 0 30 150 300 450 600]

All three do the same work: the same checkpoints, the same token windows (the test split's documents, truncated to
the context), the losses of the same sampled targets.

- engine: ``helpers.extract.extract`` into a fresh folder, timed end to end (checkpoint loading on its background
  thread, forward passes, losses, atomic parquet writes); the validation pass is off so the work is the same.
- naive: Michaud's ``eval_losses.py`` loop: load each checkpoint, one document per forward pass, fp32, full logits,
  ``F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")``, then pick the sampled positions.
- bare forward: the checkpoints already in memory, ``model(input_ids)`` (full logits) over the same batches as the
  engine, nothing else: no loss, no I/O. The base model alone (no output embedding) is reported too.

Tokens/s count the tokens of the windows times checkpoints. The last line is one JSON object.

What bounds the speed-up over the naive loop: the engine runs the same forward passes as the bare forward (minus the
output embedding at unsampled positions), so ``base_model_only_vs_naive`` is about the most that any engine running
the model's own forward pass can gain here. On a GPU the gain is larger: one short document per forward pass leaves
most of the device idle, and batching fills it; on a CPU a single document already keeps a core busy.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.extract import Engine, extract  # noqa: E402
from helpers.samples import select_targets, tokenize_split  # noqa: E402
from helpers.suites import load_suite  # noqa: E402


def batches(documents, batch_size):
    order = np.argsort(-documents.lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        ws = order[i : i + batch_size]
        width = max(len(documents.tokens[w]) for w in ws)
        ids = np.zeros((len(ws), width), dtype=np.int64)
        for j, w in enumerate(ws):
            ids[j, : len(documents.tokens[w])] = documents.tokens[w]
        yield torch.from_numpy(ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="pico")
    parser.add_argument("--runs", nargs="*", default=["pico-0.6m", "pico-2.2m"])
    parser.add_argument("--steps", nargs="*", type=int, default=[0, 30, 150, 300, 450, 600])
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all three (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    suite = load_suite(args.suite)
    tasks = [(r, s) for r in args.runs for s in args.steps]
    docs = tokenize_split(suite, "test")
    window, position, k = select_targets(docs, "every_k", args.n_samples)
    tokens = int(docs.lengths.sum()) * len(tasks)
    print(f"{args.suite}: {len(tasks)} checkpoints ({', '.join(args.runs)} at steps {args.steps}); {len(docs)} windows, "
          f"{docs.lengths.sum():,} tokens each; {len(window):,} samples (k={k}); torch threads {torch.get_num_threads()}")

    # warm-up, untimed: imports, kernel selection (the first of the three would otherwise pay for them)
    with torch.inference_mode():
        model, _ = suite.load(*tasks[0])
        model(input_ids=torch.from_numpy(docs.tokens[0])[None])
        model.base_model(input_ids=torch.from_numpy(docs.tokens[0])[None])

    # engine, end to end
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        table = extract(args.suite, runs=args.runs, steps=args.steps, n_samples=args.n_samples, batch_size=args.batch_size,
                        device="cpu", validation=False, progress=False, root=root)
        engine_s = time.perf_counter() - t0
        engine_losses = {r: table.matrix(r)[0] for r in args.runs}
    batch_size = args.batch_size or Engine("cpu").default_batch_size(docs.context)
    print(f"engine: {engine_s:.1f} s, {tokens / engine_s:,.0f} tokens/s (batch {batch_size} windows)")

    # Michaud's loop
    worst = 0.0
    t0 = time.perf_counter()
    for run, step in tasks:
        model, _ = suite.load(run, step)
        per_doc = []
        with torch.no_grad():
            for t in docs.tokens:
                ids = torch.from_numpy(t)[None]
                logits = model(ids).logits
                per_doc.append(F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none").numpy())
        naive = np.array([per_doc[w][p - 1] for w, p in zip(window, position)], dtype=np.float32)
        worst = max(worst, float(np.abs(naive - engine_losses[run][:, args.steps.index(step)]).max()))
    naive_s = time.perf_counter() - t0
    print(f"naive: {naive_s:.1f} s, {tokens / naive_s:,.0f} tokens/s; max |engine - naive| = {worst:.2e} nats")

    # bare batched forward over the same windows, models in memory, no loss, no I/O
    models = {(r, s): suite.load(r, s)[0] for r, s in tasks}
    prepared = list(batches(docs, batch_size))
    with torch.inference_mode():
        for ids in prepared[:2]:  # warm-up
            models[tasks[0]](input_ids=ids)
        t0 = time.perf_counter()
        for key in tasks:
            for ids in prepared:
                models[key](input_ids=ids, use_cache=False)
        bare_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for key in tasks:
            for ids in prepared:
                models[key].base_model(input_ids=ids, use_cache=False)
        base_s = time.perf_counter() - t0
        # bf16 autocast on this CPU, for the choice of fp32 as the CPU default
        model = models[tasks[-1]]
        t0 = time.perf_counter()
        for ids in prepared:
            model(input_ids=ids, use_cache=False)
        fp32_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for ids in prepared:
                model(input_ids=ids, use_cache=False)
        bf16_one = time.perf_counter() - t0
    print(f"bare forward (full logits): {bare_s:.1f} s, {tokens / bare_s:,.0f} tokens/s; "
          f"base model only: {base_s:.1f} s, {tokens / base_s:,.0f} tokens/s")
    print(f"CPU bf16 autocast vs fp32 forward on {tasks[-1][0]}: {fp32_one / bf16_one:.2f}x the speed")

    result = {
        "benchmark": "extract",
        "suite": args.suite,
        "runs": args.runs,
        "steps": args.steps,
        "checkpoints": len(tasks),
        "windows": len(docs),
        "samples": len(window),
        "k": k,
        "tokens": tokens,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "engine_tokens_per_s": round(tokens / engine_s),
        "naive_tokens_per_s": round(tokens / naive_s),
        "bare_forward_tokens_per_s": round(tokens / bare_s),
        "base_model_only_tokens_per_s": round(tokens / base_s),
        "speedup_vs_naive": round(naive_s / engine_s, 2),
        "bare_forward_vs_naive": round(naive_s / bare_s, 2),
        "base_model_only_vs_naive": round(naive_s / base_s, 2),
        "fraction_of_bare_forward": round(bare_s / engine_s, 3),
        "fraction_of_base_model_only": round(base_s / engine_s, 3),
        "max_abs_diff_vs_naive_nats": worst,
        "cpu_bf16_speed_vs_fp32": round(fp32_one / bf16_one, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
