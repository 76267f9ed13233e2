"""The trainer: schedule of checkpoints, resume after a SIGKILL, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers.recipes import RECIPES
from helpers.train import BatchOrder, learning_rate, partition

ROOT = Path(__file__).resolve().parent.parent


def _train(data_root: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, BOOK_DATA=str(data_root))
    cmd = [sys.executable, "-m", "helpers.train", "--suite", "nano", "--runs", "nano-60k", "--workers", "1", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _seed_corpus(nano, root: Path):
    """Share the built corpus (and tokenizer) with a fresh data root, as a second machine would rebuild it."""
    root.mkdir(parents=True)
    (root / "corpus").symlink_to(Path(os.environ["BOOK_DATA"]) / "corpus")
    (root / "suites" / "nano").mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (root / "suites" / "nano" / f).write_bytes((nano.root / f).read_bytes())


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(nano, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for root in (straight, resumed):
        _seed_corpus(nano, root)
    assert _train(straight).wait(timeout=300) == 0

    run_dir = resumed / "suites" / "nano" / "nano-60k"
    proc = _train(resumed)
    deadline = time.time() + 120
    while not (run_dir / "step16").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "run.json").exists()
    assert _train(resumed).wait(timeout=300) == 0

    a = json.loads((straight / "suites/nano/nano-60k/run.json").read_text())
    b = json.loads((resumed / "suites/nano/nano-60k/run.json").read_text())
    assert a["sha256"] == b["sha256"]  # every checkpoint identical, byte for byte
    log_a = pl.read_parquet(straight / "suites/nano/nano-60k/train_log.parquet")
    log_b = pl.read_parquet(resumed / "suites/nano/nano-60k/train_log.parquet")
    assert log_a.equals(log_b) and log_a["step"].to_list() == list(range(1, 49))
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "resume.pt").exists()
    suite = json.loads((resumed / "suites/nano/suite.json").read_text())
    assert [r["name"] for r in suite["runs"]] == ["nano-60k"]


def test_unknown_suite_and_run_are_one_line_errors(tmp_path):
    for args, words in [(["--suite", "huge"], "unknown suite 'huge'"), (["--suite", "nano", "--runs", "nano-1b"], "unknown run 'nano-1b'")]:
        out = subprocess.run([sys.executable, "-m", "helpers.train", *args], cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, BOOK_DATA=str(tmp_path)))
        assert out.returncode == 2
        assert out.stderr.strip().count("\n") == 0 and words in out.stderr and "valid" in out.stderr


def test_batch_order_depends_only_on_step_and_data_seed():
    stream = np.arange(10_000, dtype=np.uint16)
    a, b = BatchOrder(stream, 16, 4, data_seed=0), BatchOrder(stream, 16, 4, data_seed=0)
    assert np.array_equal(a.batch(200), b.batch(200))  # b never saw steps 0..199
    assert not np.array_equal(a.batch(3), BatchOrder(stream, 16, 4, data_seed=1).batch(3))
    epoch = np.concatenate([a.batch(s) for s in range(10_000 // 16 // 4)])
    assert len(np.unique(epoch[:, 0])) == len(epoch)  # no sequence twice within an epoch


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    pico = RECIPES["pico"]
    lrs = [learning_rate(pico, s) for s in range(pico.total_steps)]
    warmup = round(0.01 * pico.total_steps)
    assert lrs[0] == pytest.approx(pico.lr / warmup) and max(lrs) == pytest.approx(pico.lr)
    assert lrs[-1] == pytest.approx(0.1 * pico.lr, rel=1e-3)
    assert all(x >= y for x, y in zip(lrs[warmup:], lrs[warmup + 1 :]))


def test_partition_balances_work():
    costs = [10, 5, 3, 3, 3, 3]
    groups = partition(costs, 2)
    loads = sorted(sum(costs[j] for j in g) for g in groups)
    assert loads == [13, 14] and sorted(j for g in groups for j in g) == list(range(6))


def test_suite_progress_counts_tokens_of_every_run():
    from helpers.recipes import RECIPES
    from helpers.train import _SuiteProgress

    recipe = RECIPES["nano"]
    specs = recipe.runs()
    progress = _SuiteProgress(recipe, specs, finished=[specs[0].name], show=True)
    per_run = recipe.total_steps * recipe.tokens_per_step
    assert progress.bar.n == per_run and progress.bar.total == len(specs) * per_run
    progress[specs[1].name] = 10  # the single-process path reports each update here
    assert progress.bar.n == per_run + 10 * recipe.tokens_per_step
    progress.refresh({specs[0].name: recipe.total_steps, specs[1].name: 10, specs[2].name: recipe.total_steps})
    assert progress.bar.n == 2 * per_run + 10 * recipe.tokens_per_step
