"""Probes of what a checkpoint can do: the repeated-random-tokens test for induction heads (Olsson et al., 2022).

A sequence of ``length`` random token ids followed by the same ids again. A model that only uses the current token
(and the statistics of the language) cannot predict random tokens, in the first copy or in the second. A model with
induction heads finds the earlier occurrence of the current token and copies what followed it, so the second copy
becomes much cheaper than the first::

    tokens = repeated_tokens(vocab_size=4096, n_sequences=32, length=32, seed=0)   # int64 [32, 64]
    copy_gap(model, tokens)            # {"first_copy": nats, "second_copy": nats, "gap": second - first}
    induction_probe(suite, runs=["pico-2.2m"])   # one row per (run, step): the gap over training

The two halves are scored on the same targets: the first copy at positions ``1 .. length-1`` (token ``i`` given
tokens ``0 .. i-1``), the second copy at positions ``length+1 .. 2*length-1`` (the same tokens, now also given the
whole first copy). Position ``length`` (the first token of the second copy) is left out: nothing before it says
that the sequence is about to repeat. So a model that ignores its context has a gap of exactly 0, and a perfect
copier a gap of about ``-ln V``.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SEQUENCES = 32
DEFAULT_LENGTH = 32
DEFAULT_SEED = 0
COPY_GAP = -1.0  # nats: a second copy at least this much cheaper than the first means the model copies


def repeated_tokens(vocab_size: int, n_sequences: int = DEFAULT_SEQUENCES, length: int = DEFAULT_LENGTH, seed: int = DEFAULT_SEED, exclude=()):
    """int64 tensor [n_sequences, 2 * length]: each row ``length`` distinct random ids from ``range(vocab_size)``
    (minus ``exclude``, e.g. the tokenizer's special tokens), then the same ids again. Deterministic for a seed."""
    import torch

    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(list(exclude), dtype=np.int64))
    if length < 2 or n_sequences < 1:
        raise ValueError(f"need length >= 2 and n_sequences >= 1, got length={length}, n_sequences={n_sequences}")
    if len(allowed) < length:
        raise ValueError(f"cannot draw {length} distinct tokens from {len(allowed)} allowed ids")
    rng = np.random.default_rng(seed)
    # distinct ids within a row: the first copy then holds no repeat a model could exploit
    first = allowed[np.argsort(rng.random((n_sequences, len(allowed))), axis=1)[:, :length]]
    return torch.from_numpy(np.concatenate([first, first], axis=1).astype(np.int64))


def token_losses(model, tokens, batch_size: int = 32):
    """Next-token losses (nats), float32 numpy [n_sequences, seq_len - 1]: entry ``[b, i]`` is the loss of
    ``tokens[b, i + 1]`` given ``tokens[b, :i + 1]``. Batched, under ``torch.inference_mode``, on the model's device."""
    import torch

    device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    out = []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            ids = tokens[start : start + batch_size].to(device)
            logits = model(ids).logits[:, :-1].float()  # [b, L-1, V]
            logp = torch.log_softmax(logits, dim=-1)
            out.append(-logp.gather(-1, ids[:, 1:, None])[..., 0].cpu())
    return torch.cat(out).numpy()


def copy_gap(model, tokens, batch_size: int = 32) -> dict:
    """Mean loss (nats) on the first and on the second copy of ``tokens`` ([n, 2 * length], from
    :func:`repeated_tokens`) and ``gap = second_copy - first_copy``; targets as in the module docstring."""
    n, total = tokens.shape
    if total % 2 or total < 4:
        raise ValueError(f"tokens must be [n, 2 * length] with length >= 2, got shape {tuple(tokens.shape)}")
    length = total // 2
    losses = token_losses(model, tokens, batch_size)  # column i scores position i + 1
    first = losses[:, : length - 1]  # positions 1 .. length-1
    second = losses[:, length:]  # positions length+1 .. 2*length-1
    return {
        "first_copy": float(first.mean()),
        "second_copy": float(second.mean()),
        "gap": float(second.mean() - first.mean()),
    }


def probe_runs(run_names) -> list[str]:
    """The runs worth probing: every size's default-seed run, plus one other seed of the first size that has one."""
    from .figures import parse_run, sort_runs

    names = sort_runs(run_names)
    out, extra = [], None
    for name in names:
        group, _, seed = parse_run(name)
        if seed == 0:
            out.append(name)
        elif extra is None:
            extra = name
    if not out:  # no default-seed run at all: one run per group
        seen = set()
        out = [n for n in names if not (parse_run(n)[0] in seen or seen.add(parse_run(n)[0]))]
    return sort_runs(out + ([extra] if extra and extra not in out else []))


def spaced_steps(steps, n: int) -> list[int]:
    """At most ``n`` of ``steps`` spread evenly on a log axis (step 0 counted at 0.5), the first and last included."""
    steps = sorted(int(s) for s in steps)
    if len(steps) <= n:
        return steps
    x = np.log10(np.maximum(np.asarray(steps, dtype=np.float64), 0.5))
    targets = np.linspace(x[0], x[-1], n)
    picked = sorted({int(np.argmin(np.abs(x - t))) for t in targets})
    return [steps[i] for i in picked]


def induction_probe(
    suite,
    runs: list[str] | None = None,
    steps: list[int] | None = None,
    n_sequences: int = DEFAULT_SEQUENCES,
    length: int = DEFAULT_LENGTH,
    seed: int = DEFAULT_SEED,
    device: str | None = None,
    batch_size: int = 32,
):
    """The repeated-random-tokens probe at checkpoints of a suite (local or hub; models come from ``suite.load``).

    ``runs``: default :func:`probe_runs`; ``steps``: default every checkpoint of each run (a list limits them to those
    steps each run has). The same token sequences (one draw, ``seed``) are used for every checkpoint. Returns a polars
    DataFrame with one row per (run, step): run, step, first_copy, second_copy, gap (nats).
    """
    import polars as pl
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs = runs or probe_runs(suite.run_names)
    tokenizer = suite.tokenizer()
    special = getattr(tokenizer, "all_special_ids", []) or []
    rows, tokens = [], None
    for run in runs:
        r = suite.run(run)
        for step in [s for s in r.steps if steps is None or s in steps]:
            model, _ = suite.load(run, step, device=device)
            if tokens is None:
                vocab = min(len(tokenizer), int(model.config.vocab_size))
                context = int(getattr(model.config, "max_position_embeddings", 2 * length))
                if 2 * length > context:
                    raise ValueError(f"2 x length = {2 * length} tokens exceed the model's context of {context}")
                tokens = repeated_tokens(vocab, n_sequences, length, seed, exclude=special)
            rows.append({"run": run, "step": int(step), **copy_gap(model, tokens, batch_size)})
            del model
    return pl.DataFrame(rows, schema={"run": pl.String, "step": pl.Int64, "first_copy": pl.Float64, "second_copy": pl.Float64, "gap": pl.Float64})


def copying_onset(probe, threshold: float = COPY_GAP) -> dict[str, int | None]:
    """``{run: step}``: the first checkpoint of each run of an :func:`induction_probe` table whose gap is at most
    ``threshold`` (the second copy at least 1 nat cheaper by default), or None where no checkpoint gets there."""
    out = {}
    for run in probe["run"].unique(maintain_order=True).to_list():
        part = probe.filter(probe["run"] == run).sort("step")
        hit = part.filter(part["gap"] <= threshold)
        out[run] = int(hit["step"][0]) if hit.height else None
    return out


def probe_summary(probe) -> dict:
    """The numbers the chapter states about an :func:`induction_probe` table: the range of the gap and of the
    first-copy loss at each run's last checkpoint (``last_gap``, ``last_first_copy``: (min, max)), the largest saving
    at any checkpoint (``best``: run, step, gap) and :func:`copying_onset` (``onset``; ``copies``: the runs that copy)."""
    last = probe.sort("step").group_by("run", maintain_order=True).last()
    best = probe.sort("gap").row(0, named=True)
    onset = copying_onset(probe)
    return {
        "runs": probe["run"].unique(maintain_order=True).to_list(),
        "checkpoints": probe.group_by("run").len()["len"].max(),
        "last_gap": (float(last["gap"].min()), float(last["gap"].max())),
        "last_first_copy": (float(last["first_copy"].min()), float(last["first_copy"].max())),
        "best": {"run": best["run"], "step": int(best["step"]), "gap": float(best["gap"])},
        "onset": onset,
        "copies": {r: s for r, s in onset.items() if s is not None},
    }


def describe_probe(probe, vocab_size: int) -> str:
    """:func:`probe_summary` in a Markdown paragraph."""
    s = probe_summary(probe)
    text = (
        f"At the last checkpoint the second copy costs {s['last_gap'][0]:+.2f} to {s['last_gap'][1]:+.2f} nats relative to "
        f"the first, which costs {s['last_first_copy'][0]:.1f} to {s['last_first_copy'][1]:.1f} nats (ln V = "
        f"{np.log(vocab_size):.2f}). The largest saving at any checkpoint is {-s['best']['gap']:.2f} nats "
        f"(`{s['best']['run']}`, step {s['best']['step']:,})."
    )
    if s["copies"]:
        return text + " " + ", ".join(f"`{r}` copies from step {step:,}" for r, step in s["copies"].items()) + (
            f" (the first checkpoint where the repeat is at least {-COPY_GAP:g} nat cheaper)."
        )
    return text + f" No probed run gets within {-COPY_GAP:g} nat of copying: these models learn no induction heads."


def probe_figure(probe, title: str):
    """The gap (second copy minus first, nats) against the step, one line per run in its run colour, on a log step
    axis; hover gives both copies' losses."""
    import plotly.graph_objects as go

    from .figures import log_step_axis, run_colors, step_x, style

    runs = probe["run"].unique(maintain_order=True).to_list()
    colours = run_colors(runs)
    fig = go.Figure()
    for run in runs:
        part = probe.filter(probe["run"] == run).sort("step")
        fig.add_scatter(
            x=step_x(part["step"]), y=part["gap"], name=run, mode="lines+markers", line=dict(color=colours[run]),
            marker=dict(size=4), customdata=part.select("step", "first_copy", "second_copy").to_numpy(),
            hovertemplate=run + "<br>step %{customdata[0]:,}: gap %{y:+.3f} nats<br>first copy %{customdata[1]:.2f}, "
            "second %{customdata[2]:.2f}<extra></extra>",
        )
    fig.add_hline(y=0, line=dict(dash="dot", color="#888"))
    style(fig, title=title, x="step", y="loss gap (nats; below 0: the repeat is cheaper)", legend="run")
    return log_step_axis(fig, probe["step"].max())
