"""The loss engine against a naive reference, the position convention, resume after SIGKILL, stale settings, bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from helpers import extract as X
from helpers.losses import load_losses, make_layout
from helpers.paths import REPO_ROOT
from helpers.samples import tokenize_split
from helpers.suites import load_suite

RUNS = ["nano-20k", "nano-60k"]
STEPS = [0, 48]
KILL_STEPS = [0, 8, 48]


def naive_losses(model, tokens: np.ndarray) -> np.ndarray:
    """Michaud's loop for one document: full logits, F.cross_entropy; entry j is the loss of token j + 1."""
    ids = torch.from_numpy(tokens)[None]
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    return F.cross_entropy(logits, ids[0, 1:], reduction="none").numpy()


@pytest.mark.parametrize("mode", ["every_k", "all_positions"])
def test_engine_matches_naive_reference(nano, tmp_path, mode):
    table = X.extract("nano", runs=RUNS, steps=STEPS, mode=mode, n_samples=300, n_documents=40, root=tmp_path, progress=False)
    samples = table.samples
    docs = tokenize_split(nano, "test", n_documents=40)
    val = tokenize_split(nano, "validation")
    index = {d: i for i, d in enumerate(docs.doc_ids.tolist())}
    worst = 0.0
    for run in RUNS:
        losses, steps = table.matrix(run)
        assert steps == STEPS and losses.shape == (samples.height, 2) and losses.dtype == np.float32
        for j, step in enumerate(STEPS):
            model, _ = nano.load(run, step)
            ref = [naive_losses(model, t) for t in docs.tokens]
            expected = np.array([ref[index[d]][p - 1] for d, p in samples.select("doc_id", "position").iter_rows()])
            worst = max(worst, float(np.abs(losses[:, j] - expected).max()))
    # validation: the mean over every position of the validation split (one checkpoint, to keep the test fast)
    model, _ = nano.load(RUNS[1], STEPS[1])
    vref = np.concatenate([naive_losses(model, t) for t in val.tokens]).astype(np.float64).mean()
    got = table.validation().filter((pl.col("run") == RUNS[1]) & (pl.col("step") == STEPS[1]))["loss"].item()
    assert abs(got - vref) <= 1e-4
    assert worst <= 1e-4, worst
    if mode == "all_positions":
        assert samples.height == docs.n_predictions


def test_position_convention(nano, tmp_path):
    """loss at ``position`` = -log p(token[position] | token[:position]), checked with a forward pass over exactly the
    prefix token[:position] (no shifting anywhere); the off-by-one alternatives give different numbers."""
    table = X.extract("nano", runs=["nano-60k"], steps=[48], mode="all_positions", n_documents=2, root=tmp_path, validation=False, progress=False)
    samples = table.samples
    losses, _ = table.matrix("nano-60k")
    tokens = tokenize_split(nano, "test", n_documents=2).tokens[0]
    model, _ = nano.load("nano-60k", 48)
    first = samples.filter(pl.col("doc_id") == samples["doc_id"][0])
    assert first["position"].min() == 1  # token 0 has no context and no loss
    for row in first.filter(pl.col("position").is_in([1, 2, 10, 30])).iter_rows(named=True):
        p = row["position"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.from_numpy(tokens[:p])[None]).logits[0, -1], -1)
        right = -logp[tokens[p]].item()
        assert row["target_id"] == tokens[p]
        assert abs(losses[row["sample_id"], 0] - right) <= 1e-4
        # what an off-by-one would report instead: the token at p - 1 (already in the context), or the token p + 1
        assert abs(-logp[tokens[p - 1]].item() - right) > 1e-3 or tokens[p - 1] == tokens[p]
        assert abs(-logp[tokens[p + 1]].item() - right) > 1e-3 or tokens[p + 1] == tokens[p]


def _cli(root: Path, *extra, env=None, runs=RUNS, steps=KILL_STEPS, **kw):
    cmd = [sys.executable, "-m", "helpers.extract", "--suite", "nano", "--runs", *runs, "--steps", *map(str, steps),
           "--n-samples", "2000", "--out", str(root), "--quiet", *extra]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _table(root: Path) -> pl.DataFrame:
    table = load_losses("nano", runs=RUNS, steps=KILL_STEPS, n_samples=2000, root=root, extract_missing=False)
    return table.frame().sort("run", "step", "sample_id"), table.validation().sort("run", "step"), table.samples


def test_sigkill_then_rerun_gives_the_uninterrupted_table(nano, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _cli(whole).wait(timeout=120) == 0
    proc = _cli(killed, env={"BOOK_EXTRACT_DELAY": "0.4"})
    layout_files = lambda: list(killed.rglob("every_k-*/*/step*.parquet"))  # noqa: E731
    deadline = time.time() + 120
    while len(layout_files()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(layout_files())
    assert 2 <= partial < 6
    assert _cli(killed).wait(timeout=120) == 0
    for a, b in zip(_table(whole), _table(killed)):
        assert a.equals(b)
    assert len(layout_files()) == 6 and not list(killed.rglob(".*.tmp"))


def test_rerun_skips_finished_files(nano, tmp_path, monkeypatch):
    X.extract("nano", runs=RUNS, steps=STEPS, n_samples=2000, root=tmp_path, progress=False)
    files = sorted(tmp_path.rglob("step*.parquet"))
    stamps = [f.stat().st_mtime_ns for f in files]

    def no_loading(*a, **k):
        raise AssertionError("a finished step was loaded again")

    monkeypatch.setattr(type(nano), "load", no_loading)
    table = X.extract("nano", runs=RUNS, steps=STEPS, n_samples=2000, root=tmp_path, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps and table.missing() == []


def test_changed_settings_never_reuse_files(nano, tmp_path):
    base = make_layout(nano, n_samples=2000, root=tmp_path)
    assert make_layout(nano, n_samples=2000, root=tmp_path).folder == base.folder
    for other in (
        make_layout(nano, n_samples=1000, root=tmp_path),
        make_layout(nano, mode="all_positions", root=tmp_path),
        make_layout(nano, n_samples=2000, split="validation", root=tmp_path),
        make_layout(nano, n_samples=2000, context=32, root=tmp_path),
        make_layout(nano, n_samples=2000, precision="bf16", root=tmp_path),
        make_layout(nano, n_samples=2000, device_type="cuda", root=tmp_path),
    ):
        assert other.folder != base.folder
    assert make_layout(nano, context=32, root=tmp_path).validation_folder != base.validation_folder
    # a retrained checkpoint (other weights at the same step) gets a new file, so old losses are not read
    fresh = load_suite("nano")
    before = make_layout(fresh, n_samples=2000, root=tmp_path).loss_file("nano-20k", 8)
    fresh.run("nano-20k").sha256[8] = "0" * 64
    assert make_layout(fresh, n_samples=2000, root=tmp_path).loss_file("nano-20k", 8) != before


@pytest.fixture
def broken_suite(nano, data_root, tmp_path, monkeypatch):
    """A copy of the nano suite in its own data root, for breaking checkpoints."""
    root = tmp_path / "data"
    shutil.copytree(data_root / "suites" / "nano", root / "suites" / "nano")
    (root / "corpus").mkdir()
    (root / "corpus" / "pico-pile").symlink_to(data_root / "corpus" / "pico-pile")
    monkeypatch.setenv("BOOK_DATA", str(root))
    return root / "suites" / "nano"


def test_missing_and_corrupt_checkpoints(broken_suite, tmp_path):
    weights = broken_suite / "nano-20k" / "step8" / "model.safetensors"
    saved = weights.read_bytes()
    weights.unlink()
    corrupt = broken_suite / "nano-60k" / "step24" / "model.safetensors"
    good = corrupt.read_bytes()
    corrupt.write_bytes(good[: len(good) // 2])
    kw = dict(runs=RUNS, steps=[0, 8, 24], n_samples=2000, root=tmp_path / "losses", progress=False, validation=False)
    with pytest.raises(X.ExtractionError) as info:
        X.extract("nano", **kw)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("nano-20k step 8: ") and "missing" in lines[0]
    assert lines[1].startswith("nano-60k step 24: ") and "corrupt" in lines[1]
    table = load_losses("nano", extract_missing=False, **{k: v for k, v in kw.items() if k not in ("progress", "validation")})
    assert table.steps("nano-20k") == [0, 24] and table.steps("nano-60k") == [0, 8]
    weights.write_bytes(saved)
    corrupt.write_bytes(good)
    table = X.extract("nano", **kw)
    assert table.steps("nano-20k") == [0, 8, 24] and table.steps("nano-60k") == [0, 8, 24]


def test_cli_error_is_one_line(broken_suite, tmp_path):
    (broken_suite / "nano-20k" / "step8" / "model.safetensors").unlink()
    proc = _cli(tmp_path / "losses", "--no-validation", runs=["nano-20k"], steps=[0, 8])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.decode().strip().splitlines()[-1].startswith("error: nano-20k step 8: ")
    proc = subprocess.run([sys.executable, "-m", "helpers.extract", "--suite", "nope"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "unknown suite" in proc.stderr


def test_non_finite_losses_are_flagged_not_written(nano, tmp_path, monkeypatch):
    real = X.Engine.losses

    def poisoned(self, model, documents, window, position):
        out = real(self, model, documents, window, position)
        if model.config.num_hidden_layers == 2:  # nano-60k
            out[:3] = np.nan
            out[3] = np.inf
        return out

    monkeypatch.setattr(X.Engine, "losses", poisoned)
    with pytest.raises(X.ExtractionError) as info:
        X.extract("nano", runs=RUNS, steps=[48], n_samples=2000, root=tmp_path, progress=False, validation=False)
    assert str(info.value).startswith("nano-60k step 48: 4 of ") and "NaN or infinite" in str(info.value)
    table = load_losses("nano", runs=RUNS, steps=[48], n_samples=2000, root=tmp_path, extract_missing=False)
    assert table.steps("nano-20k") == [48] and table.steps("nano-60k") == []


def test_out_of_memory_halves_the_batch(nano, tmp_path, monkeypatch):
    docs = tokenize_split(nano, "test", n_documents=20)
    from helpers.samples import select_targets

    window, position, _ = select_targets(docs, "every_k", 300)
    model, _ = nano.load("nano-60k", 48)
    expected = X.Engine(batch_size=16).losses(model, docs, window, position)
    real = X.Engine._batch

    def small_memory(self, model, windows, *rest):
        if len(windows) > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, windows, *rest)

    monkeypatch.setattr(X.Engine, "_batch", small_memory)
    engine = X.Engine(batch_size=16)
    with pytest.warns(UserWarning, match="out of memory at batch size 16"):
        got = engine.losses(model, docs, window, position)
    assert engine.batch_size == 2
    np.testing.assert_allclose(got, expected, atol=1e-5)

    def always(self, *a):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(X.Engine, "_batch", always)
    with pytest.raises(RuntimeError), pytest.warns(UserWarning):
        X.Engine(batch_size=2).losses(model, docs, window, position)


def test_shards_split_the_work(nano, tmp_path):
    kw = dict(runs=RUNS, steps=STEPS, n_samples=2000, root=tmp_path, progress=False, validation=False)
    X.extract("nano", shard="0/2", **kw)
    first = {p.name for p in tmp_path.rglob("every_k-*/*/step*.parquet")}
    X.extract("nano", shard="1/2", **kw)
    every = {p.name for p in tmp_path.rglob("every_k-*/*/step*.parquet")}
    assert len(first) == 2 and len(every) == 4
    with pytest.raises(ValueError, match="0 <= i < n"):
        X.parse_shard("2/2")


def test_device_and_precision_logic():
    """The choices a GPU session makes, checked on the CPU (``available=False`` names a device without asking for it)."""
    assert X.resolve_device("cpu") == ("cpu", "fp32")
    assert X.resolve_device("cuda", available=False) == ("cuda", "bf16")
    assert X.resolve_device("cuda:1", "fp32", available=False) == ("cuda:1", "fp32")
    engine = X.Engine("cpu")
    engine.device = "cuda"
    assert engine.default_batch_size(2048) == 16
    with pytest.raises(ValueError):
        X.resolve_device("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            X.resolve_device("cuda")


def test_bf16_autocast_path_runs_on_cpu(nano):
    """The CUDA path's bf16 autocast, exercised on CPU: close to fp32, not equal."""
    docs = tokenize_split(nano, "test", n_documents=10)
    from helpers.samples import select_targets

    window, position, _ = select_targets(docs, "all_positions")
    model, _ = nano.load("nano-60k", 48)
    fp32 = X.Engine("cpu", "fp32").losses(model, docs, window, position)
    bf16 = X.Engine("cpu", "bf16").losses(model, docs, window, position)
    assert np.isfinite(bf16).all() and 0 < np.abs(bf16 - fp32).max() < 0.1


def test_hub_suite_through_a_stand_in_mirror(nano, tmp_path, monkeypatch):
    """A hub suite (any repo with a revision list): context from the hub config, capped; losses match the naive loop."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from helpers.samples import suite_context
    from helpers.suites import revision_suite

    mirror = tmp_path / "mirror"
    for revision, seed in {"checkpoint-0": 0, "checkpoint-10": 1}.items():
        folder = mirror / "org/tiny" / revision
        torch.manual_seed(seed)
        config = GPTNeoXConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128)
        GPTNeoXForCausalLM(config).save_pretrained(folder)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(nano.root / f, folder / f)
    monkeypatch.setenv("BOOK_HUB_MIRROR", str(mirror))
    suite = revision_suite("tiny-hub", {"tiny": "org/tiny"}, {0: "checkpoint-0", 10: "checkpoint-10"}, size="tiny",
                           params=1, non_embedding_params=1, tokens_per_step=1)
    assert suite_context(suite) == 2048 and suite_context(suite, cap=48) == 48
    table = X.extract(suite, mode="all_positions", n_documents=5, context=48, root=tmp_path / "losses", progress=False)
    losses, steps = table.matrix("tiny")
    assert steps == [0, 10] and table.settings["context"] == 48
    docs = tokenize_split(suite, "test", context=48, n_documents=5)
    model, _ = suite.load("tiny", 10)
    expected = np.concatenate([naive_losses(model, t) for t in docs.tokens])
    assert np.abs(losses[:, 1] - expected).max() <= 1e-4
    assert table.validation()["step"].to_list() == [0, 10]


def _cache_revision(cache: Path, repo: str, refs: list[str], commit: str, files: dict[str, bytes]) -> None:
    """One revision of ``repo`` in the Hugging Face cache's on-disk layout: blobs, a snapshot of symlinks, refs."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (folder / "refs" / ref).write_text(commit)


def _cached_refs(cache: Path) -> list[tuple[str, str]]:
    from huggingface_hub import scan_cache_dir

    return sorted((r.repo_id, ref) for r in scan_cache_dir(cache).repos for rev in r.revisions for ref in rev.refs)


def test_hub_cache_drops_only_the_revisions_asked_for(tmp_path, monkeypatch):
    """On a real cache folder: a revision is dropped whole, other revisions and repos stay, a snapshot that another
    ref (main) shares stays, and a broken cache warns instead of failing the extraction."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    for repo, refs, commit in [("EleutherAI/pythia-70m", ["step1000"], "a"), ("EleutherAI/pythia-70m", ["step2000"], "b"),
                               ("EleutherAI/pythia-70m", ["step143000", "main"], "c"), ("EleutherAI/pythia-160m", ["step1000"], "d")]:
        _cache_revision(cache, repo, refs, commit * 40, {"config.json": commit.encode(), "model.safetensors": commit.encode() * 99})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("BOOK_HUB_MIRROR", raising=False)

    assert X._in_hub_cache("EleutherAI/pythia-70m", "step1000")
    assert not X._in_hub_cache("EleutherAI/pythia-70m", "step3000")
    X._drop_hub_revision("EleutherAI/pythia-70m", "step1000")
    X._drop_hub_revision("EleutherAI/pythia-70m", "step143000")  # the same snapshot as main: kept
    assert _cached_refs(cache) == [("EleutherAI/pythia-160m", "step1000"), ("EleutherAI/pythia-70m", "main"),
                                   ("EleutherAI/pythia-70m", "step143000"), ("EleutherAI/pythia-70m", "step2000")]
    assert not (cache / "models--EleutherAI--pythia-70m" / "snapshots" / ("a" * 40)).exists()
    assert not X._in_hub_cache("EleutherAI/pythia-70m", "step1000")

    monkeypatch.setenv("BOOK_HUB_MIRROR", str(tmp_path / "mirror"))  # a mirror is not the cache: never dropped
    assert X._in_hub_cache("EleutherAI/pythia-70m", "step3000")

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "not-a-folder"))
    with pytest.warns(UserWarning, match="could not drop the cache"):
        X._drop_hub_revision("EleutherAI/pythia-70m", "step2000")


def test_extraction_drops_only_revisions_it_downloaded(nano, tmp_path, monkeypatch):
    """Checkpoints read through a real (offline) Hugging Face cache. drop_cache=None, the default, drops a revision
    once its losses are written only if the extraction downloaded it; True drops every one, False none."""
    from huggingface_hub import constants

    from helpers.suites import revision_suite

    monkeypatch.delenv("BOOK_HUB_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    suite = revision_suite("tiny-hub", {"tiny": "org/tiny"}, {0: "r0", 48: "r48"}, size="tiny", params=1,
                           non_embedding_params=1, tokens_per_step=1)
    before = {"r0"}  # the revisions in the cache before the extraction; it "downloads" the others
    monkeypatch.setattr(X, "_in_hub_cache", lambda repo, revision: revision in before)
    for drop, left in ((None, ["r0"]), (True, []), (False, ["r0", "r48"])):
        shutil.rmtree(cache, ignore_errors=True)
        for step, commit in ((0, "0"), (48, "4")):
            files = {f.name: f.read_bytes() for f in (nano.root / "nano-20k" / f"step{step}").iterdir()}
            files.update({f: (nano.root / f).read_bytes() for f in ("tokenizer.json", "tokenizer_config.json")})
            _cache_revision(cache, "org/tiny", [f"r{step}"], commit * 40, files)
        table = X.extract(suite, mode="all_positions", n_documents=2, context=32, root=tmp_path / f"losses-{drop}",
                          progress=False, validation=False, drop_cache=drop)
        assert table.steps("tiny") == [0, 48]
        assert [ref for _, ref in _cached_refs(cache)] == left, drop
