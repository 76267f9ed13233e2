"""Checkpoint schedules: Pythia's, and the Pythia-shaped schedule of our own suites."""

from __future__ import annotations

# Pythia v1: step 0, powers of two up to 512, then every 1000 steps to 143000 (154 checkpoints).
# Revision ``step<N>`` on the hub; ``step143000`` is also ``main``. Each step is 1024 sequences x 2048 tokens.
PYTHIA_CHECKPOINTS: list[int] = [0] + [2**i for i in range(10)] + list(range(1000, 144000, 1000))
PYTHIA_TOKENS_PER_STEP = 2_097_152

# Known quirks of Pythia's published checkpoints, by (model prefix, step): a warning when loaded.
PYTHIA_KNOWN_ISSUES: dict[int, str] = {
    1: "Pythia's step1 weights equal step0 (EleutherAI/pythia#83)",
    2: "some Pythia models' step2 weights equal step0 (EleutherAI/pythia#198)",
}


def pythia_shaped_schedule(total_steps: int, interval: int) -> list[int]:
    """Step 0, powers of two below ``interval``, then every ``interval`` steps up to ``total_steps``.

    >>> pythia_shaped_schedule(64, 16)
    [0, 1, 2, 4, 8, 16, 32, 48, 64]
    """
    if total_steps < 1 or interval < 1 or total_steps % interval:
        raise ValueError(f"total_steps ({total_steps}) must be a positive multiple of interval ({interval})")
    log_part = [0] + [2**i for i in range(total_steps.bit_length()) if 2**i < interval]
    return log_part + list(range(interval, total_steps + 1, interval))


def log_step_weights(steps: list[int]):
    """Michaud's curve-distance weights: spacing of the checkpoints in log10(step), normalised to sum 1.

    ``w[i]`` for step ``i``: the log10 spacings of steps[1:], the first spacing repeated for step 0 (log 0 is
    undefined) and the last spacing repeated at the end; so dense late checkpoints do not dominate a distance.
    Returns a float64 array of len(steps).
    """
    import numpy as np

    s = np.asarray(steps, dtype=np.float64)
    if len(s) < 3 or s[0] != 0 or np.any(np.diff(s) <= 0):
        raise ValueError("steps must start at 0, increase, and have at least 3 entries")
    d = np.diff(np.log10(s[1:]))
    w = np.concatenate([[d[0]], d, [d[-1]]])
    return w / w.sum()
