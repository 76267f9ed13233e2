"""Peak memory of the engine's sampled losses against full-logits losses on the same batch, Pythia-70m shape.

    python benchmarks/extract_memory.py [--batch 4] [--k 4]

A randomly initialised GPT-NeoX with Pythia-70m's config (6 layers, d 512, 8 heads, vocab 50304, context 1024,
rotary on 25% of head dims), fp32 on CPU, one batch of ``--batch`` windows of 1024 random tokens, targets every
``--k``-th position (k = 4 is what the default ``pico`` sampling uses: dense, the hard case for memory).

Each way runs in its own fresh subprocess, which builds the model, resets the kernel's RSS high-water mark
(``/proc/self/clear_refs``), computes the losses once, and reads the high-water mark (``VmHWM``). That sees every
allocation, torch's included (``tracemalloc`` does not). Reported per way: the peak RSS during the computation, and
the peak *added* by the computation (peak minus the RSS just before: the weights, ~282 MB, are the same in both).

- full: ``model(ids).logits`` ([batch, 1024, 50304] fp32) and ``F.cross_entropy`` over all positions (Michaud's loss,
  batched), then the sampled positions picked;
- sampled: :class:`helpers.extract.Engine` (output embedding at the sampled positions only, chunked).

``peak_ratio`` = added peak of sampled / added peak of full; ``peak_ratio_total_rss`` compares whole-process peaks.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def pythia_70m_config():
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
        max_position_embeddings=1024, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )


def child(way: str, batch: int, k: int, out: str) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import GPTNeoXForCausalLM

    from helpers.extract import Engine
    from helpers.samples import Documents

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(pythia_70m_config()).eval()
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, 50304, 1024, dtype=np.int64) for _ in range(batch)]
    docs = Documents("random", "test", 1024, np.arange(batch), ["random"] * batch, tokens)
    window = np.repeat(np.arange(batch), 1023)
    position = np.tile(np.arange(1, 1024), batch)
    window, position = window[::k], position[::k]
    ids = torch.from_numpy(np.stack(tokens))
    with torch.inference_mode():  # warm up kernels on a short input, so one-off allocations are not counted
        model(ids[:1, :16])
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status_kb("VmRSS")
    t0 = time.perf_counter()
    if way == "full":
        with torch.inference_mode():
            logits = model(input_ids=ids, use_cache=False).logits  # Float[Tensor, "batch seq vocab"]
            all_losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
            losses = all_losses.view(batch, 1023)[torch.from_numpy(window), torch.from_numpy(position - 1)].numpy()
    else:
        losses = Engine("cpu", "fp32", batch_size=batch).losses(model, docs, window, position)
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    np.save(out, losses)
    print(json.dumps({"way": way, "rss_before_mb": before / 1024, "peak_rss_mb": peak / 1024, "added_peak_mb": (peak - before) / 1024,
                      "seconds": seconds, "samples": int(len(losses))}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="windows of 1024 tokens in the batch")
    parser.add_argument("--k", type=int, default=4, help="a target every k positions")
    parser.add_argument("--child", choices=["full", "sampled"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.k, args.out)
        return 0
    import numpy as np

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("full", "sampled"):
            out = f"{tmp}/{way}.npy"
            proc = subprocess.run([sys.executable, __file__, "--child", way, "--batch", str(args.batch), "--k", str(args.k), "--out", out],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                return 1
            results[way] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[way]["losses"] = np.load(out)
            r = results[way]
            print(f"{way:8s} peak RSS {r['peak_rss_mb']:8.1f} MB (before {r['rss_before_mb']:.1f} MB, added {r['added_peak_mb']:.1f} MB), "
                  f"{r['seconds']:.1f} s, {r['samples']} samples")
    diff = float(np.abs(results["full"]["losses"] - results["sampled"]["losses"]).max())
    full, sampled = results["full"], results["sampled"]
    logits_mb = args.batch * 1024 * 50304 * 4 / 2**20
    print(f"max |sampled - full| = {diff:.2e} nats; one [batch, seq, vocab] fp32 logits tensor is {logits_mb:.0f} MB")
    print(json.dumps({
        "benchmark": "extract_memory",
        "config": "pythia-70m (random init): 6 layers, d 512, 8 heads, vocab 50304, context 1024, rotary 25%",
        "batch": args.batch, "seq": 1024, "k": args.k, "samples": sampled["samples"],
        "full_peak_rss_mb": round(full["peak_rss_mb"], 1), "sampled_peak_rss_mb": round(sampled["peak_rss_mb"], 1),
        "full_added_peak_mb": round(full["added_peak_mb"], 1), "sampled_added_peak_mb": round(sampled["added_peak_mb"], 1),
        "peak_ratio": round(sampled["added_peak_mb"] / full["added_peak_mb"], 4),
        "peak_ratio_total_rss": round(sampled["peak_rss_mb"] / full["peak_rss_mb"], 4),
        "max_abs_diff_nats": diff,
        "full_seconds": round(full["seconds"], 2), "sampled_seconds": round(sampled["seconds"], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
